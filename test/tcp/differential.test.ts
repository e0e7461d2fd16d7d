import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { blackholePort } from '../helpers/blackhole.js';
import { startHaproxy } from '../helpers/haproxy.js';
import { dial, refusedPort, socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { startNginx } from '../helpers/nginx.js';
import type { PeerProcess } from '../helpers/peerProcess.js';
import { freePort } from '../helpers/peerProcess.js';
import { findTool, tool } from '../helpers/tools.js';

// The same TCP edge cases through HAProxy (`mode tcp`), nginx `stream` (with
// `proxy_half_close on`) and l4proxy, each in front of the same scripted upstream, with the same
// timeouts: what the client and the upstream see must match, or differ only as
// docs/migration.md says. docs/reliability.md has the full table (2026-12-05).

type Kind = 'l4proxy' | 'haproxy' | 'nginx';
const KINDS: readonly Kind[] = ['l4proxy', 'haproxy', 'nginx'];

/** What one peer saw: bytes, and how its connection ended (ms since the client connected). */
interface Seen {
  bytes: number;
  /** The peer read a FIN. */
  fin?: number;
  /** The peer's socket failed (a reset): its code. */
  error?: string;
  closed?: number;
  /** Resolves at the peer's FIN, error or close, whichever comes first. */
  ended: Promise<void>;
  /** When that was. */
  endedAt?: number;
}

function observe(socket: Socket, t0: number): Seen {
  let end = (): void => undefined;
  const seen: Seen = {
    bytes: 0,
    ended: new Promise((resolve) => {
      end = () => {
        seen.endedAt ??= Date.now() - t0;
        resolve();
      };
    }),
  };
  socket.on('data', (chunk: Buffer) => {
    seen.bytes += chunk.length;
  });
  socket.on('end', () => {
    seen.fin = Date.now() - t0;
  });
  socket.on('error', (error: NodeJS.ErrnoException) => {
    seen.error = error.code ?? error.message;
  });
  socket.on('close', () => {
    seen.closed = Date.now() - t0;
  });
  socket.once('end', end);
  socket.once('error', end);
  socket.once('close', end);
  return seen;
}

interface Scenario {
  /** The upstream's script for each connection it accepts. */
  upstream?: (socket: Socket) => void;
  /** An upstream where connects hang (needs python3), or one that refuses. */
  hole?: 'hang' | 'refuse';
  connectTimeout: number;
  idleTimeout: number;
  /** The client's script once it dialled. */
  client: (socket: Socket) => void;
}

const KIB64 = Buffer.alloc(65_536, 7);

const SCENARIOS = {
  // The client sends its request and FIN; the reply comes after the FIN, in pieces, then a FIN.
  clientHalfClose: {
    connectTimeout: 1_000,
    idleTimeout: 2_000,
    upstream: (socket) => {
      socket.resume();
      socket.on('end', () => {
        socket.write(KIB64);
        setImmediate(() => socket.end(KIB64));
      });
    },
    client: (socket) => {
      socket.end('request');
    },
  },
  // The upstream speaks first and half-closes; the client answers afterwards, then ends.
  upstreamHalfClose: {
    connectTimeout: 1_000,
    idleTimeout: 2_000,
    upstream: (socket) => {
      socket.resume();
      socket.end('banner');
      socket.on('end', () => socket.destroy());
    },
    client: (socket) => {
      socket.on('end', () => socket.end(KIB64));
    },
  },
  // Request and FIN sent before the upstream answered anything: all bytes, then the FIN.
  earlyDataAndFin: {
    connectTimeout: 1_000,
    idleTimeout: 2_000,
    upstream: (socket) => {
      socket.resume();
      socket.on('end', () => socket.end('ok'));
    },
    client: (socket) => {
      socket.write(KIB64);
      socket.end(KIB64);
    },
  },
  // The upstream never accepts: the connect timeout (400 ms), not the idle one (150 ms), ends it.
  connectOutlastsIdle: {
    hole: 'hang',
    connectTimeout: 400,
    idleTimeout: 150,
    client: (socket) => {
      socket.write('request');
    },
  },
  // The client half-closed, the upstream stays silent: the idle timeout ends it with a FIN.
  idleHalfClosed: {
    connectTimeout: 1_000,
    idleTimeout: 200,
    upstream: (socket) => {
      socket.resume();
    },
    client: (socket) => {
      socket.end('request');
    },
  },
  // The only upstream refuses: no retry that could succeed, the client hears at once.
  refused: {
    hole: 'refuse',
    connectTimeout: 1_000,
    idleTimeout: 2_000,
    client: (socket) => {
      socket.write('request');
    },
  },
} satisfies Record<string, Scenario>;
type Name = keyof typeof SCENARIOS;

interface Running {
  upstreams: Map<Name, { port: number; seen: Seen[]; t0: { at: number }; server?: TestServer }>;
  ports: Map<string, number>;
  peers: PeerProcess[];
  closers: (() => void)[];
}
const running: Running = { upstreams: new Map(), ports: new Map(), peers: [], closers: [] };

async function upstreamFor(name: Name, scenario: Scenario): Promise<void> {
  const seen: Seen[] = [];
  const t0 = { at: 0 };
  if (scenario.hole === 'refuse') {
    running.upstreams.set(name, { port: await refusedPort(), seen, t0 });
    return;
  }
  if (scenario.hole === 'hang') {
    const python = findTool('python3');
    if (python === undefined) return;
    const hole = await blackholePort(python);
    running.closers.push(() => {
      hole.close();
    });
    running.upstreams.set(name, { port: hole.port, seen, t0 });
    return;
  }
  const server = await socketServer((socket) => {
    seen.push(observe(socket, t0.at));
    scenario.upstream?.(socket);
  });
  running.upstreams.set(name, { port: server.port, seen, t0, server });
}

function haproxyConfig(ports: Map<string, number>): string {
  const sections: string[] = [];
  for (const [name, scenario] of Object.entries(SCENARIOS) as [Name, Scenario][]) {
    const upstream = running.upstreams.get(name);
    const port = ports.get(`haproxy:${name}`);
    if (upstream === undefined || port === undefined) continue;
    sections.push(
      `listen ${name}`,
      `  bind 127.0.0.1:${String(port)}`,
      `  timeout connect ${String(scenario.connectTimeout)}ms`,
      `  timeout client ${String(scenario.idleTimeout)}ms`,
      `  timeout server ${String(scenario.idleTimeout)}ms`,
      '  retries 0',
      `  server s 127.0.0.1:${String(upstream.port)}`,
    );
  }
  return sections.join('\n');
}

function nginxConfig(ports: Map<string, number>): string {
  const servers: string[] = [];
  for (const [name, scenario] of Object.entries(SCENARIOS) as [Name, Scenario][]) {
    const upstream = running.upstreams.get(name);
    const port = ports.get(`nginx:${name}`);
    if (upstream === undefined || port === undefined) continue;
    servers.push(
      `server { listen 127.0.0.1:${String(port)}; proxy_pass 127.0.0.1:${String(upstream.port)};`,
      `  proxy_connect_timeout ${String(scenario.connectTimeout)}ms;`,
      `  proxy_timeout ${String(scenario.idleTimeout)}ms; proxy_half_close on; }`,
    );
  }
  return servers.join('\n');
}

before(async () => {
  for (const [name, scenario] of Object.entries(SCENARIOS) as [Name, Scenario][])
    await upstreamFor(name, scenario);
  for (const kind of ['haproxy', 'nginx'] as const) {
    if (findTool(kind) === undefined) continue;
    const ports = new Map<string, number>();
    for (const name of running.upstreams.keys()) ports.set(`${kind}:${name}`, await freePort());
    const peer =
      kind === 'haproxy'
        ? await startHaproxy(haproxyConfig(ports))
        : await startNginx(nginxConfig(ports));
    running.peers.push(peer);
    for (const [key, port] of ports) running.ports.set(key, port);
  }
});

after(async () => {
  for (const peer of running.peers) await peer.stop();
  for (const upstream of running.upstreams.values()) await upstream.server?.close();
  for (const close of running.closers) close();
});

/** The proxy's port for `kind`, or undefined when the test skipped (tool or python3 missing). */
async function proxyPort(t: TestContext, kind: Kind, name: Name): Promise<number | undefined> {
  if (!running.upstreams.has(name)) {
    if (tool(t, 'python3') === undefined) return undefined;
  }
  if (kind !== 'l4proxy') {
    if (tool(t, kind) === undefined) return undefined;
    return running.ports.get(`${kind}:${name}`);
  }
  const upstream = running.upstreams.get(name);
  if (upstream === undefined) return undefined;
  const scenario: Scenario = SCENARIOS[name];
  const options: TcpProxyOptions = {
    upstreams: [{ host: '127.0.0.1', port: upstream.port }],
    connectTimeout: scenario.connectTimeout,
    idleTimeout: scenario.idleTimeout,
    maxConnectAttempts: 1,
  };
  const proxy = new TcpProxy(options);
  t.after(() => proxy.close({ drainTimeout: 0 }));
  return (await proxy.listen({ port: 0, host: '127.0.0.1' })).port;
}

/** Runs `name` through `kind`: what the client and the upstream saw once the client closed. */
async function run(
  t: TestContext,
  kind: Kind,
  name: Name,
): Promise<{ client: Seen; upstream: Seen | undefined } | undefined> {
  const port = await proxyPort(t, kind, name);
  if (port === undefined) return undefined;
  const upstream = running.upstreams.get(name);
  assert.ok(upstream);
  const before = upstream.seen.length;
  upstream.t0.at = Date.now();
  const socket = dial(port);
  t.after(() => socket.destroy());
  const client = observe(socket, upstream.t0.at);
  SCENARIOS[name].client(socket);
  await withTimeout(client.ended, 5_000, `${kind} ${name}: the client's FIN, reset or close`);
  // The upstream's side ends in the same exchange: its FIN or reset comes with the client's.
  const seen = upstream.seen[before];
  if (seen !== undefined)
    await withTimeout(seen.ended, 2_000, `${kind} ${name}: the upstream's end`);
  return { client, upstream: seen };
}

describe('differential: l4proxy, HAProxy and nginx seen from the peers', () => {
  for (const kind of KINDS) {
    test(`${kind}: a reply after the client's FIN arrives whole, then the FIN`, async (t) => {
      const seen = await run(t, kind, 'clientHalfClose');
      if (seen === undefined) return;
      assert.equal(seen.client.bytes, 2 * KIB64.length);
      assert.ok(seen.client.fin !== undefined && seen.client.error === undefined);
      assert.equal(seen.upstream?.bytes, 'request'.length);
      assert.ok(seen.upstream.fin !== undefined);
    });

    test(`${kind}: the client answers after the upstream's FIN, whole, then its FIN`, async (t) => {
      const seen = await run(t, kind, 'upstreamHalfClose');
      if (seen === undefined) return;
      assert.equal(seen.client.bytes, 'banner'.length);
      assert.ok(seen.client.fin !== undefined && seen.client.error === undefined);
      assert.equal(seen.upstream?.bytes, KIB64.length);
      assert.ok(seen.upstream.fin !== undefined && seen.upstream.error === undefined);
    });

    test(`${kind}: 128 KiB and a FIN sent at once reach the upstream in full`, async (t) => {
      const seen = await run(t, kind, 'earlyDataAndFin');
      if (seen === undefined) return;
      assert.equal(seen.upstream?.bytes, 2 * KIB64.length);
      assert.ok(seen.upstream.fin !== undefined);
      assert.equal(seen.client.bytes, 2);
      assert.ok(seen.client.fin !== undefined && seen.client.error === undefined);
    });

    test(`${kind}: a hanging connect ends at the connect timeout, not the idle one`, async (t) => {
      const seen = await run(t, kind, 'connectOutlastsIdle');
      if (seen === undefined) return;
      const at = seen.client.endedAt ?? 0;
      assert.ok(at >= 370 && at < 2_000, `ended after ${String(at)} ms`);
      // HAProxy closes with a FIN; l4proxy resets, so the client can tell a failure (nginx too,
      // here, as its close finds the client's bytes unread).
      if (kind === 'l4proxy') assert.equal(seen.client.error, 'ECONNRESET');
      if (kind === 'haproxy') assert.ok(seen.client.fin !== undefined);
    });

    test(`${kind}: a half-closed connection ends at the idle timeout, with a FIN`, async (t) => {
      const seen = await run(t, kind, 'idleHalfClosed');
      if (seen === undefined) return;
      const at = seen.client.fin ?? 0;
      assert.ok(at >= 170 && at < 2_000, `FIN after ${String(at)} ms`);
      assert.equal(seen.client.error, undefined);
      assert.equal(seen.upstream?.bytes, 'request'.length);
    });

    test(`${kind}: a refused upstream is reported to the client at once`, async (t) => {
      const seen = await run(t, kind, 'refused');
      if (seen === undefined) return;
      assert.ok((seen.client.endedAt ?? Infinity) < 500, JSON.stringify(seen));
      // HAProxy and nginx close (nginx's close resets when the client's bytes are still unread
      // in its socket); l4proxy always resets, so the client can tell (docs/migration.md).
      if (kind === 'l4proxy') assert.equal(seen.client.error, 'ECONNRESET');
      if (kind === 'haproxy') assert.ok(seen.client.fin !== undefined);
    });
  }
});
