/**
 * Routes passthrough TLS by server name (SNI), as nginx `ssl_preread` does: the proxy peeks at the
 * ClientHello, never terminates TLS, and forwards every byte unchanged to the backend the name
 * maps to, balancing inside that backend group.
 *
 *   npm run build:test && node build/examples/sni-router/main.js [--openssl /usr/bin/openssl]
 *
 * Self-contained: it makes a throwaway self-signed certificate with openssl, starts three local
 * TLS backends (two for alpha.test, one for beta.test), puts a TcpProxy in front, sends a few TLS
 * clients and one plain-text client through it, prints one JSON line per event, closes everything
 * and exits 0.
 * (In your own code, import from 'l4proxy' instead of the source tree.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { TcpProxy, roundRobin, withCandidates } from '../../src/index.js';
import type { UpstreamCandidate, UpstreamSelector } from '../../src/index.js';

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

/** A throwaway P-256 self-signed certificate (the backends' own; the proxy never sees keys). */
function selfSigned(openssl: string): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sni-router-'));
  try {
    execFileSync(
      openssl,
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
      ].concat(
        ['-subj', '/CN=sni-router', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')],
        ['-days', '1'],
      ),
      { stdio: 'ignore', timeout: 20_000 },
    );
    return {
      key: readFileSync(join(dir, 'k.pem'), 'utf8'),
      cert: readFileSync(join(dir, 'c.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A TLS backend that greets each client with its name. */
async function backend(
  name: string,
  credentials: { key: string; cert: string },
): Promise<tls.Server> {
  const server = tls.createServer(
    { ...credentials, ALPNProtocols: ['h2', 'http/1.1'] },
    (socket) => {
      socket.on('error', () => undefined);
      socket.end(`${name}\n`);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/**
 * Picks the group whose `metadata.names` holds the requested name, then lets round robin choose
 * inside it. Groups are cached per candidate array (stable until the set or health changes), so
 * round robin's own per-set cache works.
 */
function bySni(): UpstreamSelector {
  const inner = roundRobin();
  const groups = new WeakMap<readonly UpstreamCandidate[], Map<string, UpstreamCandidate[]>>();
  return (ctx) => {
    const name = ctx.serverName;
    if (name === undefined) return undefined; // sni.required refuses these before we are asked
    let byName = groups.get(ctx.candidates);
    if (!byName) groups.set(ctx.candidates, (byName = new Map<string, UpstreamCandidate[]>()));
    let group = byName.get(name);
    if (!group) {
      group = ctx.candidates.filter((c) =>
        (c.metadata?.names as string[] | undefined)?.includes(name),
      );
      byName.set(name, group);
    }
    return group.length === 0 ? undefined : inner(withCandidates(ctx, group));
  };
}

/** A TLS client through the proxy: which backend answered, and the ALPN protocol agreed with it. */
function visit(
  port: number,
  servername: string,
): Promise<{ backend: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername,
      ALPNProtocols: ['h2'],
      // Demo certificate: self-signed, so not verified here. Verify yours.
      rejectUnauthorized: false,
    });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      resolve({ backend: text.trim(), alpn: socket.alpnProtocol });
    });
  });
}

/** A client that does not speak TLS: the proxy resets it (`sni_required`). */
function plainText(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port }, () =>
      socket.write('GET / HTTP/1.0\r\n\r\n'),
    );
    socket.on('error', (err: NodeJS.ErrnoException) => {
      resolve(err.code ?? err.message);
    });
    socket.on('close', () => {
      resolve('closed');
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { openssl: { type: 'string', default: 'openssl' } } });
  const credentials = selfSigned(values.openssl);
  const backends = {
    'alpha-1': await backend('alpha-1', credentials),
    'alpha-2': await backend('alpha-2', credentials),
    beta: await backend('beta', credentials),
  };
  const portOf = (server: tls.Server): number => (server.address() as AddressInfo).port;

  const proxy = new TcpProxy({
    upstreams: [
      {
        id: 'alpha-1',
        host: '127.0.0.1',
        port: portOf(backends['alpha-1']),
        metadata: { names: ['alpha.test'] },
      },
      {
        id: 'alpha-2',
        host: '127.0.0.1',
        port: portOf(backends['alpha-2']),
        metadata: { names: ['alpha.test'] },
      },
      {
        id: 'beta',
        host: '127.0.0.1',
        port: portOf(backends.beta),
        metadata: { names: ['beta.test'] },
      },
    ],
    sni: { required: true, timeout: 2_000 },
    selector: bySni(),
  });
  proxy.on('connectionClose', (s) => {
    log('connection', { serverName: s.serverName, upstream: s.upstream?.id, reason: s.reason });
  });
  proxy.on('rejected', (r) => {
    log('rejected', { reason: r.reason, client: r.clientAddress });
  });
  proxy.on('error', (err) => {
    log('error', { message: err.message });
  });
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  log('listening', { port });

  for (const name of ['alpha.test', 'beta.test', 'alpha.test']) {
    const seen = await visit(port, name);
    log('visit', { servername: name, ...seen });
  }
  log('plain', { outcome: await plainText(port) });

  await proxy.close({ drainTimeout: 2_000 });
  await Promise.all(
    Object.values(backends).map((server) => new Promise((resolve) => server.close(resolve))),
  );
  const stats = proxy.stats();
  log('closed', {
    admitted: stats.downstream_cx_total,
    rejected: Object.fromEntries(Object.entries(stats.rejected_reasons).filter(([, n]) => n > 0)),
    upstreams: Object.fromEntries(
      Object.entries(stats.upstreams).map(([id, u]) => [id, u.upstream_cx_total]),
    ),
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
