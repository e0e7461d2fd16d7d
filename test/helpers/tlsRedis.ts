import { after } from 'node:test';
import type { TestContext } from 'node:test';
import { freePort, startPeer } from './peerProcess.js';
import type { PeerProcess } from './peerProcess.js';
import type { ServerAndClient, SharedPki } from './tlsCa.js';
import { tool } from './tools.js';

/** A redis-server listening on its TLS port only, with the CA that signed its certificate. */
export interface TlsRedis {
  readonly peer: PeerProcess;
  readonly port: number;
  /** The CA certificate (PEM) a client trusts it by. */
  readonly ca: string;
}

/**
 * One redis-server per test file (its TLS port only, no client certificates asked, nothing
 * saved), started by the first test that asks and stopped after the file; `extra` arguments are
 * added (`--enable-debug-command yes`). Resolves undefined (the test skipped with a reason) where
 * redis-server or the certificates are missing.
 */
export function tlsRedisPerFile(
  getPki: (t: TestContext) => Promise<SharedPki<ServerAndClient> | undefined>,
  extra: readonly string[] = [],
): (t: TestContext) => Promise<TlsRedis | undefined> {
  let shared: Promise<TlsRedis> | undefined;
  after(async () => {
    if (shared !== undefined) await (await shared).peer.stop();
  });
  return async (t) => {
    const p = await getPki(t);
    const redisServer = tool(t, 'redis-server');
    if (p === undefined || redisServer === undefined) return undefined;
    shared ??= (async () => {
      const port = await freePort();
      const args = [
        ...['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1'],
        ...['--tls-cert-file', p.server.certFile, '--tls-key-file', p.server.keyFile],
        ...['--tls-ca-cert-file', p.ca.certFile, '--tls-auth-clients', 'no'],
        ...['--save', '', '--appendonly', 'no', ...extra],
      ];
      return { peer: await startPeer(redisServer, args, port), port, ca: p.ca.cert };
    })();
    return shared;
  };
}
