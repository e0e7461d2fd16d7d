import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import { TcpProxy } from '../../src/index.js';
import type {
  TcpConnectionSummary,
  TcpProxyOptions,
  TcpRejection,
  Upstream,
} from '../../src/index.js';
import { refusedPorts, socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import type { TestCert } from '../helpers/tlsPeers.js';
import { findTool } from '../helpers/tools.js';
import {
  after,
  assertBackTo,
  assertMetricsAgree,
  resources,
  Rng,
  RUNS,
  SEED,
  sum,
  trapProcessFailures,
} from './interleavingHarness.js';

/**
 * Random interleavings of public operations on a TcpProxy over real loopback sockets: clients
 * that send, half-close or reset at each stage (before their PROXY header is complete, during the
 * TLS handshake, while the upstream is dialled, while bytes flow), upstreams that refuse, reset,
 * answer slowly, half-close or stay silent, and `setUpstreams()`, admin overrides, health checks,
 * outlier ejection and `close({ drainTimeout })` landing anywhere among them. After each sequence
 * the invariants below must hold; a failure names its seed (replay: L4PROXY_STRESS_SEED=<seed>
 * L4PROXY_STRESS_RUNS=1).
 */

type UpstreamKind = 'echo' | 'reset' | 'slow' | 'halfclose' | 'silent';
type ClientAction =
  'echo' | 'resetAtOnce' | 'resetLater' | 'halfCloseOnly' | 'partialHeader' | 'abortHandshake';

interface UpstreamPeer {
  kind: UpstreamKind | 'refused';
  port: number;
  received: number;
  server?: TestServer;
}

interface ClientRecord {
  action: ClientAction;
  localPort?: number;
  written: number;
  received: number;
}

async function upstreamPeer(kind: UpstreamKind, rng: Rng): Promise<UpstreamPeer> {
  const peer: UpstreamPeer = { kind, port: 0, received: 0 };
  const delay = rng.int(5, 40);
  peer.server = await socketServer((socket) => {
    socket.on('data', (chunk: Buffer) => {
      peer.received += chunk.length;
    });
    if (kind === 'reset') {
      setTimeout(() => socket.resetAndDestroy(), rng.int(0, 10));
      return;
    }
    if (kind === 'silent') return;
    if (kind === 'slow') socket.pause();
    const echo = (): void => {
      socket.resume();
      socket.on('data', (chunk: Buffer) => {
        if (!socket.writableEnded) socket.write(chunk);
        if (kind === 'halfclose' && !socket.writableEnded) socket.end();
      });
      socket.on('end', () => {
        if (!socket.writableEnded) socket.end();
      });
    };
    if (kind === 'slow') setTimeout(echo, delay);
    else echo();
  });
  peer.port = peer.server.port;
  return peer;
}

/** A random proxy configuration over `peers`. */
function proxyOptions(
  rng: Rng,
  upstreams: Upstream[],
  cert: TestCert | undefined,
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

function checkInvariants(proxy: TcpProxy, seen: Observed, clients: ClientRecord[], what: string) {
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
  assert.equal(sum(stats.close_reasons), seen.closes.length, `${what}: close_reasons sum`);
  for (const [reason, count] of Object.entries(stats.close_reasons)) {
    const events = seen.closes.filter((summary) => summary.reason === reason).length;
    assert.equal(count, events, `${what}: close_reasons.${reason}`);
  }
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
      assert.equal(summary.bytesFromUpstream, summary.bytesToClient, `${label}: bytesFromUpstream`);
    }
  }
  assert.equal(stats.upstream_cx_tx_bytes_total, toUpstream, `${what}: upstream tx total`);
  assertMetricsAgree(stats, proxy.metrics(), 'l4proxy_tcp_', what);
  assert.deepEqual(seen.errors, [], `${what}: 'error' events`);
}

async function sequence(seed: number, cert: TestCert | undefined): Promise<void> {
  const what = `seed ${String(seed)}`;
  const rng = new Rng(seed);
  const baseline = resources();
  const kinds: UpstreamKind[] = ['echo', 'reset', 'slow', 'halfclose', 'silent'];
  const peers: UpstreamPeer[] = [];
  for (let i = rng.int(1, 3); i > 0; i--) peers.push(await upstreamPeer(rng.pick(kinds), rng));
  if (rng.chance(0.4)) {
    const [port] = await refusedPorts(
      1,
      peers.map((peer) => peer.port),
    );
    peers.push({ kind: 'refused', port: port as number, received: 0 });
  }
  const upstreamsOf = (chosen: UpstreamPeer[]): Upstream[] =>
    chosen.map((peer) => ({
      host: '127.0.0.1',
      port: peer.port,
      ...(rng.chance(0.2) ? { maxConnections: rng.int(1, 2) } : {}),
    }));
  const options = proxyOptions(rng, upstreamsOf(peers), cert);
  const proxy = new TcpProxy(options);
  const seen = observe(proxy);
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  const port = typeof address === 'string' ? 0 : address.port;
  const pp = options.acceptProxyProtocol !== undefined;
  const useTls = options.terminateTls !== undefined;
  const actions: ClientAction[] = ['echo', 'echo', 'resetAtOnce', 'resetLater', 'halfCloseOnly'];
  if (pp) actions.push('partialHeader');
  if (useTls) actions.push('abortHandshake');
  const clients: ClientRecord[] = [];
  const running: Promise<unknown>[] = [];
  let closing: Promise<void> | undefined;
  for (let i = rng.int(1, 8); i > 0; i--) {
    const record: ClientRecord = { action: rng.pick(actions), written: 0, received: 0 };
    clients.push(record);
    const clientRng = new Rng(rng.int(0, 2 ** 31));
    running.push(after(rng.int(0, 40)).then(() => runClient(clientRng, port, pp, useTls, record)));
  }
  for (let i = rng.int(0, 4); i > 0; i--) {
    const delay = rng.int(0, 60);
    const op = rng.int(0, 3);
    const chosen = rng.subset(peers);
    const id = `127.0.0.1:${String(rng.pick(peers).port)}`;
    const mode = rng.pick(['drain', 'maint', 'ready'] as const);
    running.push(
      after(delay).then(() => {
        if (op === 0) proxy.setUpstreams(upstreamsOf(chosen));
        else if (op === 1) proxy.overrideUpstream(id, { mode, weight: undefined });
        else if (op === 2) proxy.overrideUpstream(id, undefined);
        else closing ??= proxy.close({ drainTimeout: rng.int(0, 100) });
      }),
    );
  }
  try {
    await withTimeout(Promise.all(running), 10_000, `${what}: clients`);
    await withTimeout(
      proxy.close({ drainTimeout: rng.int(0, 50) }),
      5_000,
      `${what}: proxy.close()`,
    );
    checkInvariants(proxy, seen, clients, `${what} ${JSON.stringify(describe(options))}`);
  } finally {
    await proxy.close({ drainTimeout: 0 });
    for (const peer of peers) await peer.server?.close();
  }
  await assertBackTo(baseline, what);
}

/** The options of a sequence, short enough for a failure message. */
function describe(options: TcpProxyOptions): Record<string, unknown> {
  const { upstreams, terminateTls, ...rest } = options as Record<string, unknown>;
  return { ...rest, tls: terminateTls !== undefined, upstreams: (upstreams as unknown[]).length };
}

test(`TcpProxy under random interleavings: ${String(RUNS)} sequences from seed ${String(SEED)}`, async (t) => {
  const openssl = findTool('openssl');
  if (openssl === undefined) t.diagnostic('openssl missing: sequences run without TLS termination');
  const cert = openssl === undefined ? undefined : await selfSignedCert(openssl, 'test');
  const traps = trapProcessFailures();
  try {
    for (let run = 0; run < RUNS; run++) {
      const seed = SEED + run;
      try {
        await sequence(seed, cert);
      } catch (error) {
        throw new Error(
          `sequence failed; replay with L4PROXY_STRESS_SEED=${String(seed)} L4PROXY_STRESS_RUNS=1`,
          { cause: error },
        );
      }
      assert.deepEqual(traps.seen, [], `seed ${String(seed)}: process failures`);
    }
  } finally {
    traps.remove();
  }
});
