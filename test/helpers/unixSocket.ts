import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { withTimeout } from './net.js';

/**
 * A private directory for socket files, removed after the test. Short (a Unix socket path has at
 * most 107 bytes): `prefix` says which test made it.
 */
export function socketDir(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Leaves a socket file nothing listens on, as a killed process does (SIGKILL: no cleanup). */
export async function staleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  // A Node start: seconds on a loaded machine (it ran past 5 s with four test files at once).
  await withTimeout(
    new Promise((resolve) => child.once('exit', resolve)),
    20_000,
    'the socket owner to die',
  );
}

/** Another process's socket at `path`: it answers "owner" to each client; closed after the test. */
export async function ownedSocket(t: TestContext, path: string): Promise<void> {
  const owner = net.createServer((socket) => {
    // The CLI's probe connects and hangs up at once.
    socket.on('error', () => undefined);
    socket.end('owner');
  });
  await new Promise<void>((resolve) => owner.listen(path, resolve));
  t.after(() => owner.close());
}

/** The umask of process `pid` ("self": this one) as /proc shows it, or undefined without /proc. */
export function umaskOf(pid: number | 'self'): string | undefined {
  try {
    return /^Umask:\s*([0-7]+)$/m.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}
