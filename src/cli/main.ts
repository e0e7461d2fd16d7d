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
// Not a top-level await: src/ has none (a module with one cannot be `require()`d).
import('./command.js').catch((err: unknown) => {
  process.stderr.write(
    `l4proxy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
