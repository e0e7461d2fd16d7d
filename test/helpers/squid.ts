import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './tools.js';
import type { PeerProcess } from './peerProcess.js';
import { freePort, startPeerIn } from './peerProcess.js';

/** Squid's test credentials helper: accepts any user and password (so a 407 is testable). */
export const FAKE_AUTH = '/usr/lib/squid/basic_fake_auth';

/** A squid forward proxy listening on 127.0.0.1:`port`. */
export interface Squid extends PeerProcess {
  readonly port: number;
}

/**
 * Runs squid in the foreground (`-N`) as an HTTP/1.1 CONNECT proxy on 127.0.0.1, caching nothing,
 * with `rules` (squid `acl`/`http_access` lines) before a final `http_access allow localhost`.
 * Its files live in a temp dir, writable by squid's unprivileged `cache_effective_user`.
 *
 * @example
 * const squid = await startSquid([`acl blocked port ${port}`, 'http_access deny CONNECT blocked']);
 */
export async function startSquid(rules: readonly string[] = []): Promise<Squid> {
  const squid = findTool('squid');
  if (squid === undefined) throw new Error('squid is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-squid-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const file = join(dir, 'squid.conf');
  const auth = rules.some((rule) => rule.includes('proxy_auth')) && existsSync(FAKE_AUTH);
  writeFileSync(
    file,
    [
      `http_port 127.0.0.1:${port}`,
      ...(auth
        ? [
            `auth_param basic program ${FAKE_AUTH}`,
            'auth_param basic children 1 startup=1',
            'auth_param basic realm l4proxy-test',
          ]
        : []),
      'acl localhost_client src 127.0.0.1/32',
      'acl CONNECT method CONNECT',
      ...rules,
      'http_access allow localhost_client',
      'http_access deny all',
      'cache deny all',
      'cache_mem 4 MB',
      'pinger_enable off',
      'dns_nameservers 127.0.0.1',
      `pid_filename ${join(dir, 'squid.pid')}`,
      `access_log stdio:${join(dir, 'access.log')}`,
      `cache_log ${join(dir, 'cache.log')}`,
      'cache_store_log none',
      `coredump_dir ${dir}`,
      'shutdown_lifetime 0 seconds',
      'logfile_rotate 0',
      // Running as root (CI): squid drops to this user; its files are in the 0777 temp dir.
      ...(process.getuid?.() === 0 ? ['cache_effective_user proxy'] : []),
      '',
    ].join('\n'),
  );
  return { ...(await startPeerIn(dir, squid, ['-N', '-f', file], port)), port };
}
