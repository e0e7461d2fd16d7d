import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './tools.js';
import type { PeerProcess } from './peerProcess.js';
import { freePort, startPeerIn } from './peerProcess.js';

/**
 * Runs haproxy in the foreground (`-db`) with `config` (proxies only: frontends, backends,
 * listens). The helper adds `global` (logs to stdout, so tests can read `output()`), `defaults`
 * (mode tcp, short timeouts) and a readiness listener it probes before resolving.
 *
 * @example
 * const haproxy = await startHaproxy(`listen in\n  bind 127.0.0.1:${port} accept-proxy\n  server s1 127.0.0.1:${echo}`);
 * try { ... } finally { await haproxy.stop(); }
 */
export async function startHaproxy(config: string): Promise<PeerProcess> {
  const haproxy = findTool('haproxy');
  if (haproxy === undefined) throw new Error('haproxy is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-haproxy-'));
  const ready = await freePort();
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(
    file,
    [
      'global',
      '  log stdout format raw local0',
      'defaults',
      '  mode tcp',
      '  log global',
      '  timeout connect 5s',
      '  timeout client 30s',
      '  timeout server 30s',
      config,
      'listen l4proxy_ready',
      `  bind 127.0.0.1:${ready}`,
      '  tcp-request connection reject',
      '',
    ].join('\n'),
  );
  return startPeerIn(dir, haproxy, ['-db', '-f', file], ready);
}
