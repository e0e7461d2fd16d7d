import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend } from './backends.js';
import { freePort, waitListening } from './net.js';
import { start, stop } from './processes.js';
import type { ToolName } from './tools.js';

/**
 * nginx as a tiny HTTP/1.1 server (a 3-byte 200 to every request, no access log) for the burst
 * scenario. Its own accept queue is 4096 deep so that the backend never drops the burst: what
 * the scenario sees is the proxy's queue.
 */
export async function startHttpBackend(tools: ReadonlyMap<ToolName, string>): Promise<Backend> {
  const nginx = tools.get('nginx');
  if (nginx === undefined) throw new Error('nginx is not installed');
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-bench-http-'));
  const file = join(dir, 'nginx.conf');
  writeFileSync(
    file,
    [
      `error_log ${join(dir, 'error.log')} error;`,
      `pid ${join(dir, 'nginx.pid')};`,
      // One process, so the backend's CPU is the one PID the harness measures.
      'master_process off;',
      'worker_processes 1;',
      'worker_rlimit_nofile 16000;',
      'events { worker_connections 12000; }',
      'http {',
      '  access_log off;',
      `  server { listen 127.0.0.1:${port} backlog=4096; location / { return 200 "ok\\n"; } }`,
      '}',
      '',
    ].join('\n'),
  );
  const child = start(nginx, ['-p', dir, '-c', file, '-g', 'daemon off;'], { stdio: 'ignore' });
  const done = async (): Promise<void> => {
    await stop(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitListening(port, () => child.exitCode === null && child.signalCode === null);
  } catch (error) {
    await done();
    throw error;
  }
  return { port, pid: child.pid!, stop: done };
}
