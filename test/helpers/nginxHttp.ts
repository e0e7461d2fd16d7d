import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './tools.js';
import type { PeerProcess } from './peerProcess.js';
import { freePort, startPeerIn } from './peerProcess.js';

/**
 * Runs nginx in the foreground with `serverBlocks` inside `http { ... }` (access log off, temp
 * paths, pid and error log in a temp dir), plus a readiness server probed before resolving.
 * `files` are written into the temp dir first (certificates); `dir` in the blocks is replaced by
 * that directory.
 */
export async function startNginxHttp(
  serverBlocks: string,
  files: Readonly<Record<string, string>> = {},
): Promise<PeerProcess> {
  const nginx = findTool('nginx');
  if (nginx === undefined) throw new Error('nginx is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-nginx-http-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const ready = await freePort();
  const file = join(dir, 'nginx.conf');
  writeFileSync(
    file,
    [
      `error_log ${join(dir, 'error.log')} info;`,
      `pid ${join(dir, 'nginx.pid')};`,
      'worker_processes 1;',
      'events { worker_connections 64; }',
      'http {',
      '  access_log off;',
      `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;`,
      `  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
      serverBlocks.replaceAll('$DIR', dir),
      `  server { listen 127.0.0.1:${ready}; return 204; }`,
      '}',
      '',
    ].join('\n'),
  );
  return startPeerIn(dir, nginx, ['-c', file, '-p', dir, '-g', 'daemon off;'], ready);
}
