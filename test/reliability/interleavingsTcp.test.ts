import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import { TcpProxy } from '../../src/index.js';
import type {
  DataFilterFactory,
  TcpConnectionSummary,
  TcpProxyOptions,
  TcpProxyStats,
  TcpRejection,
  Upstream,
} from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { holdUntilEnd } from '../helpers/filters.js';
import { refusedPorts, socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import type { TestCert } from '../helpers/tlsPeers.js';
import { findTool } from '../helpers/tools.js';
import { scheduleUpstreamChanges } from '../helpers/upstreamChanges.js';
import type { AdminRoute } from '../helpers/upstreamChanges.js';
import {
  adminOver,
  assertMetricsAgree,
  assertReasonsMatch,
  Rng,
  RUNS,
  runSequences,
  SEED,
  sum,
} from './interleavingHarness.js';
import type { Sequence } from './interleavingHarness.js';

/**
 * Random interleavings of public operations on a TcpProxy over real loopback sockets: clients
 * that send, half-close or reset at each stage (before their PROXY header is complete, during the
 * TLS handshake, while the upstream is dialled, while bytes flow), upstreams that refuse, reset,
 * answer slowly, half-close or stay silent (over TLS when the proxy originates it), data filters
 * that pass, hold or end a direction, and `setUpstreams()`, overrides (direct or through the
 * admin API), `/stats` reads, health checks, outlier ejection and `close({ drainTimeout })`
 * landing anywhere among them. After each sequence the invariants below must hold; a failure
 * prints its seed, plan and invariant (replay: L4PROXY_STRESS_SEED=<seed> L4PROXY_STRESS_RUNS=1).
 */

type UpstreamKind = 'echo' | 'reset' | 'slow' | 'halfclose' | 'silent';
type ClientAction =
  'echo' | 'resetAtOnce' | 'resetLater' | 'halfCloseOnly' | 'partialHeader' | 'abortHandshake';
/** `hold` keeps the client's bytes until its FIN; `end` ends the reply after its first chunk. */
type FilterKind = 'pass' | 'hold' | 'end';

interface UpstreamPeer {
  kind: UpstreamKind | 'refused';
  port: number;
  server?: TestServer;
}

interface ClientRecord {
  action: ClientAction;
  localPort?: number;
  written: number;
  received: number;
}

/** Serves one accepted upstream socket (`tcp` is the raw socket under a TLS one). */
function serveUpstream(kind: UpstreamKind, rng: Rng, socket: Socket, tcp: Socket): void {
  if (kind === 'reset') {
    setTimeout(() => tcp.resetAndDestroy(), rng.int(0, 10));
    return;
  }
  if (kind === 'silent') {
    socket.resume();
    return;
  }
  const echo = (): void => {
    socket.on('data', (chunk: Buffer) => {
      if (!socket.writableEnded) socket.write(chunk);
      if (kind === 'halfclose' && !socket.writableEnded) socket.end();
    });
    socket.on('end', () => {
      if (!socket.writableEnded) socket.end();
    });
  };
  if (kind === 'slow') setTimeout(echo, rng.int(5, 40));
  else echo();
}

/** An upstream of `kind`; speaking TLS with `cert` when the proxy originates TLS. */
async function upstreamPeer(kind: UpstreamKind, rng: Rng, cert?: TestCert): Promise<UpstreamPeer> {
  const server = await socketServer((tcp) => {
    if (cert === undefined) {
      serveUpstream(kind, rng, tcp, tcp);
      return;
    }
    const secure = new tls.TLSSocket(tcp, { isServer: true, key: cert.key, cert: cert.cert });
    secure.on('error', () => undefined);
    serveUpstream(kind, rng, secure, tcp);
  });
  return { kind, port: server.port, server };
}

/** A data filter of `kind`, for every connection. */
function filterOf(kind: FilterKind): DataFilterFactory {
  if (kind === 'pass') return () => ({ onClientData: () => undefined });
  if (kind === 'end') return () => ({ onUpstreamData: (chunk) => ({ end: true, data: chunk }) });
  return holdUntilEnd;
}

/**
 * A random proxy configuration over `upstreams`; TLS to them when `originate`, a data filter of
 * the kind given.
 */
function proxyOptions(
  rng: Rng,
  upstreams: Upstream[],
  cert: TestCert | undefined,
  originate: boolean,
  filter: FilterKind | undefined,
): TcpProxyOptions {
  const options: Record<string, unknown> = {
    upstreams,
    relay: rng.pick(['handle', 'onread', 'stream'] as const),
    connectTimeout: 500,
    maxConnectAttempts: rng.int(1, 3),
    upstreamDrainTimeout: rng.int(0, 100),
  };
  if (rng.chance(0.25)) options.acceptProxyProtocol = { trusted: ['127.0.0.1'], timeout: 300 };
  if (cert !== undefined && rng.chance(0.25))
    options.terminateTls = { cert: cert.cert, key: cert.key, handshakeTimeout: 500 };
  if (originate && cert !== undefined)
    options.tls = { ca: cert.cert, servername: 'test', handshakeTimeout: 500 };
  if (filter !== undefined) options.filters = [filterOf(filter)];
  if (rng.chance(0.2)) options.maxConnections = rng.int(1, 4);
  if (rng.chance(0.2)) options.idleTimeout = rng.int(50, 300);
  if (rng.chance(0.2)) options.halfCloseTimeout = rng.int(50, 300);
  if (rng.chance(0.2))
    options.outlierDetection = { consecutiveFailures: 1, baseEjectionTime: rng.int(20, 200) };
  if (rng.chance(0.2))
    options.healthCheck = {
      interval: 30,
      timeout: 100,
      unhealthyThreshold: 1,
      healthyThreshold: 1,
    };
  if (rng.chance(0.2)) options.queue = { maxLength: rng.int(0, 3), timeout: rng.int(20, 200) };
  if (rng.chance(0.15)) options.closeOnHealthFailure = true;
  return options;
}

/** The PROXY v1 header naming the client as itself. */
function proxyHeader(socket: Socket, proxyPort: number): string {
  return `PROXY TCP4 127.0.0.1 127.0.0.1 ${String(socket.localPort)} ${String(proxyPort)}\r\n`;
}

/** One client: connects, acts, and resolves once its socket has closed (bounded). */
function runClient(
  rng: Rng,
  port: number,
  pp: boolean,
  useTls: boolean,
  record: ClientRecord,
): Promise<void> {
  const raw = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  raw.on('error', () => undefined);
  const closedRaw = new Promise<void>((resolve) =>
    raw.once('close', () => {
      resolve();
    }),
  );
  const payload = Buffer.alloc(rng.int(1, 40_000), rng.int(0, 255));
  const resetDelay = rng.int(0, 30);
  const { action } = record;
  raw.once('connect', () => {
    record.localPort = raw.localPort ?? 0;
    if (action === 'resetAtOnce') {
      raw.resetAndDestroy();
      return;
    }
    const header = proxyHeader(raw, port);
    if (action === 'partialHeader') {
      raw.write(pp ? header.slice(0, rng.int(1, header.length - 1)) : 'x');
      setTimeout(() => raw.resetAndDestroy(), resetDelay);
      return;
    }
    if (pp) raw.write(header);
    if (!useTls) {
      relay(raw, raw);
      return;
    }
    const secure = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'test' });
    secure.on('error', () => undefined);
    if (action === 'abortHandshake') {
      setTimeout(() => raw.resetAndDestroy(), resetDelay);
      return;
    }
    secure.once('secureConnect', () => {
      relay(secure, raw);
    });
  });

  function relay(stream: Socket, tcp: Socket): void {
    stream.on('data', (chunk: Buffer) => {
      record.received += chunk.length;
    });
    stream.on('end', () => {
      if (!stream.writableEnded) stream.end();
    });
    if (action === 'halfCloseOnly' || action === 'abortHandshake' || action === 'partialHeader') {
      stream.end();
      return;
    }
    stream.write(payload, () => {
      record.written += payload.length;
    });
    if (action === 'resetLater') setTimeout(() => tcp.resetAndDestroy(), resetDelay);
    else stream.end();
  }
  // Silent upstreams and drains may keep a client open: it gives up after a bound of its own.
  const giveUp = setTimeout(() => raw.resetAndDestroy(), 1_500);
  return closedRaw.finally(() => {
    clearTimeout(giveUp);
  });
}

interface Observed {
  connections: number;
  closes: TcpConnectionSummary[];
  rejections: TcpRejection[];
  errors: Error[];
}

function observe(proxy: TcpProxy): Observed {
  const seen: Observed = { connections: 0, closes: [], rejections: [], errors: [] };
  proxy.on('connection', () => seen.connections++);
  proxy.on('connectionClose', (summary) => seen.closes.push(summary));
  proxy.on('rejected', (rejection) => seen.rejections.push(rejection));
  proxy.on('error', (error) => seen.errors.push(error));
  return seen;
}

function checkInvariants(
  proxy: TcpProxy,
  seen: Observed,
  clients: ClientRecord[],
  filter: FilterKind | undefined,
  what: string,
) {
  const stats = proxy.stats();
  // Every admitted connection closed exactly once, with one reason.
  const ids = new Set(seen.closes.map((summary) => summary.id));
  assert.equal(ids.size, seen.closes.length, `${what}: a connection closed twice`);
  assert.equal(seen.closes.length, seen.connections, `${what}: connections != closes`);
  assert.equal(stats.downstream_cx_total, seen.connections, `${what}: downstream_cx_total`);
  assert.equal(stats.downstream_cx_active, 0, `${what}: downstream_cx_active`);
  assert.equal(stats.upstream_cx_active, 0, `${what}: upstream_cx_active`);
  assert.equal(stats.downstream_cx_queued_active, 0, `${what}: queued_active`);
  for (const [id, upstream] of Object.entries(stats.upstreams))
    assert.equal(upstream.upstream_cx_active, 0, `${what}: upstream ${id} active`);
  assertReasonsMatch(stats.close_reasons, seen.closes, 'close_reasons', what);
  assert.equal(sum(stats.rejected_reasons), seen.rejections.length, `${what}: rejected sum`);
  assert.equal(stats.downstream_cx_rejected, seen.rejections.length, `${what}: rejected`);
  // Bytes: what the proxy reports is what the client's peers saw.
  let toUpstream = 0;
  for (const summary of seen.closes) toUpstream += summary.bytesToUpstream;
  // A port freed by one client may be handed to the next: such clients are not told apart.
  const sharing = new Map<number | undefined, number>();
  for (const client of clients)
    sharing.set(client.localPort, (sharing.get(client.localPort) ?? 0) + 1);
  for (const client of clients) {
    if (sharing.get(client.localPort) !== 1) continue;
    const mine = seen.closes.filter((summary) => summary.clientPort === client.localPort);
    assert.ok(mine.length <= 1, `${what}: client ${String(client.localPort)} closed twice`);
    const summary = mine[0];
    if (summary === undefined) continue;
    const label = `${what}: client ${String(client.localPort)} (${client.action}, ${summary.reason})`;
    assert.ok(summary.bytesToClient >= client.received, `${label}: bytesToClient < received`);
    assert.ok(summary.bytesToUpstream <= summary.bytesFromClient, `${label}: toUpstream`);
    assert.ok(summary.bytesToClient <= summary.bytesFromUpstream, `${label}: toClient`);
    if (summary.reason === 'completed') {
      assert.equal(summary.bytesFromClient, client.written, `${label}: bytesFromClient`);
      assert.equal(summary.bytesToClient, client.received, `${label}: bytesToClient`);
      assert.equal(summary.bytesToUpstream, summary.bytesFromClient, `${label}: bytesToUpstream`);
      // The `end` filter forwards the reply's first chunk only, by design.
      if (filter !== 'end')
        assert.equal(summary.bytesFromUpstream, summary.bytesToClient, `${label}: fromUpstream`);
    }
  }
  assert.equal(stats.upstream_cx_tx_bytes_total, toUpstream, `${what}: upstream tx total`);
  assertMetricsAgree(stats, proxy.metrics(), 'l4proxy_tcp_', what);
  assert.deepEqual(seen.errors, [], `${what}: 'error' events`);
}

/** `GET /stats` while traffic runs: answers, and never counts more closed than opened. */
async function readStats(admin: AdminRoute, what: string): Promise<void> {
  const reply = await adminRequest(admin.port, 'GET', '/stats', { token: admin.token });
  assert.equal(reply.status, 200, `${what}: GET /stats ${reply.text}`);
  const body = reply.json as { listeners: { tcp: { stats: TcpProxyStats } } };
  const stats = body.listeners.tcp.stats;
  assert.ok(
    sum(stats.close_reasons) <= stats.downstream_cx_total,
    `${what}: /stats closed > total`,
  );
  assert.equal(
    stats.downstream_cx_active,
    stats.downstream_cx_total - sum(stats.close_reasons),
    `${what}: /stats total != closed + active`,
  );
}

async function sequence(s: Sequence, cert: TestCert | undefined): Promise<void> {
  const { rng, what } = s;
  const originate = cert !== undefined && rng.chance(0.2);
  const filter = rng.chance(0.3) ? rng.pick(['pass', 'hold', 'end'] as const) : undefined;
  const kinds: UpstreamKind[] = ['echo', 'reset', 'slow', 'halfclose', 'silent'];
  const peers: UpstreamPeer[] = [];
  s.defer('upstream peers', async () => {
    for (const peer of peers) await peer.server?.close();
  });
  for (let i = rng.int(1, 3); i > 0; i--)
    peers.push(await upstreamPeer(rng.pick(kinds), rng, originate ? cert : undefined));
  if (rng.chance(0.4)) {
    const [port] = await refusedPorts(
      1,
      peers.map((peer) => peer.port),
    );
    peers.push({ kind: 'refused', port: port as number });
  }
  const upstreamsOf = (chosen: UpstreamPeer[]): Upstream[] =>
    chosen.map((peer) => ({
      host: '127.0.0.1',
      port: peer.port,
      ...(rng.chance(0.2) ? { maxConnections: rng.int(1, 2) } : {}),
    }));
  const options = proxyOptions(rng, upstreamsOf(peers), cert, originate, filter);
  s.note(`upstreams option ${JSON.stringify(options.upstreams)}`);
  s.note(`upstreams ${peers.map((p) => `${p.kind}:${String(p.port)}`).join(' ')}`);
  s.note(`options ${JSON.stringify(describe(options, filter))}`);
  if (options.terminateTls !== undefined) s.features.add('terminateTls');
  if (originate) s.features.add('originateTls');
  if (filter !== undefined) s.features.add(`filter ${filter}`);
  const proxy = new TcpProxy(options);
  s.defer('proxy.close()', () => proxy.close({ drainTimeout: 0 }));
  const seen = observe(proxy);
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  const port = typeof address === 'string' ? 0 : address.port;
  const admin = s.rng.chance(0.5) ? await adminOver(s, 'tcp', proxy) : undefined;
  const pp = options.acceptProxyProtocol !== undefined;
  const useTls = options.terminateTls !== undefined;
  const actions: ClientAction[] = ['echo', 'echo', 'resetAtOnce', 'resetLater', 'halfCloseOnly'];
  if (pp) actions.push('partialHeader');
  if (useTls) actions.push('abortHandshake');
  const clients: ClientRecord[] = [];
  const running: Promise<unknown>[] = [];
  for (let i = rng.int(1, 8); i > 0; i--) {
    const record: ClientRecord = { action: rng.pick(actions), written: 0, received: 0 };
    clients.push(record);
    const clientRng = new Rng(rng.int(0, 2 ** 31));
    running.push(
      s.at(rng.int(0, 40), `client ${record.action}`, () =>
        runClient(clientRng, port, pp, useTls, record),
      ),
    );
  }
  let closing: Promise<void> | undefined;
  running.push(
    ...scheduleUpstreamChanges({
      rng,
      count: rng.int(0, 4),
      window: 60,
      target: proxy,
      peers,
      idOf: (peer) => `127.0.0.1:${String(peer.port)}`,
      upstreamsOf,
      close: () => (closing ??= proxy.close({ drainTimeout: rng.int(0, 100) })),
      at: (delay, step, operation) => s.at(delay, step, operation),
      admin,
    }),
  );
  if (admin !== undefined)
    running.push(s.at(rng.int(0, 60), 'GET /stats', () => readStats(admin, what)));
  await withTimeout(Promise.all(running), 10_000, `${what}: clients`);
  s.note('clients done');
  await withTimeout(proxy.close({ drainTimeout: rng.int(0, 50) }), 5_000, `${what}: proxy.close()`);
  s.note('closed');
  checkInvariants(proxy, seen, clients, filter, what);
}

/** The options of a sequence, short enough for a failure message. */
function describe(
  options: TcpProxyOptions,
  filter: FilterKind | undefined,
): Record<string, unknown> {
  const {
    upstreams,
    terminateTls,
    tls: originate,
    filters,
    ...rest
  } = options as Record<string, unknown>;
  return {
    ...rest,
    terminateTls: terminateTls !== undefined,
    originateTls: originate !== undefined,
    ...(filters !== undefined && { filter }),
    upstreams: (upstreams as unknown[]).length,
  };
}

test(`TcpProxy under random interleavings: ${String(RUNS)} sequences from seed ${String(SEED)}`, async (t) => {
  const openssl = findTool('openssl');
  if (openssl === undefined) t.diagnostic('openssl missing: sequences run without TLS');
  const cert = openssl === undefined ? undefined : await selfSignedCert(openssl, 'test');
  t.diagnostic(await runSequences('TcpProxy', (s) => sequence(s, cert)));
});
