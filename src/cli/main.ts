#!/usr/bin/env node
/*
 * The `l4proxy` command's entry point: installs the signal handlers, then loads the command.
 * See `l4proxy --help` and docs/operations.md.
 */
import { installSignals } from './signals.js';

// First of all: loading the command and the library takes a few hundred milliseconds on a busy
// machine, and a SIGTERM meanwhile (systemd's `stop` right after `start`) must find a handler
// rather than end the process (see signals.ts). Hence this small module and a dynamic import.
installSignals();
await import('./command.js');
