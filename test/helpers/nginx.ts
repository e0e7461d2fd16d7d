import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './tools.js';
import type { PeerProcess } from './peerProcess.js';
import { freePort, startPeerIn } from './peerProcess.js';

/** Where Debian's nginx keeps the dynamic stream module. */
export const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

/**
 * Runs nginx in the foreground with a standalone config holding `streamBlock` inside
 * `stream { ... }`: the stream module is loaded when it is dynamic, error log and pid live in a
 * temp dir, and a readiness server is added and probed before resolving. `output()` includes the
 * error log.
 *
 * @example
 * const nginx = await startNginx(`server { listen 127.0.0.1:${port} proxy_protocol; return "$proxy_protocol_addr\\n"; }`);
 */
export async function startNginx(streamBlock: string): Promise<PeerProcess> {
  const nginx = findTool('nginx');
  if (nginx === undefined) throw new Error('nginx is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-nginx-'));
  const ready = await freePort();
  const file = join(dir, 'nginx.conf');
  const errorLog = join(dir, 'error.log');
  writeFileSync(
    file,
    [
      existsSync(NGINX_STREAM_MODULE) ? `load_module ${NGINX_STREAM_MODULE};` : '',
      `error_log ${errorLog} info;`,
      `pid ${join(dir, 'nginx.pid')};`,
      'worker_processes 1;',
      'events { worker_connections 256; }',
      'stream {',
      streamBlock,
      `  server { listen 127.0.0.1:${ready}; return "ready\\n"; }`,
      '}',
      '',
    ].join('\n'),
  );
  const peer = await startPeerIn(dir, nginx, ['-c', file, '-p', dir, '-g', 'daemon off;'], ready);
  const log = (): string => (existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : '');
  return { ...peer, output: () => peer.output() + log() };
}
