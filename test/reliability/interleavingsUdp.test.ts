import assert from 'node:assert/strict';
import type { Socket } from 'node:dgram';
import { test } from 'node:test';
import { UdpProxy } from '../../src/index.js';
import type { UdpProxyOptions, UdpSessionSummary, Upstream } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { scheduleUpstreamChanges } from '../helpers/upstreamChanges.js';
import { closeSocket, freeUdpPort, udpSocket } from '../udp/helpers.js';
import {
  after,
  adminOver,
  assertMetricsAgree,
  assertReasonsMatch,
  Rng,
  RUNS,
  runSequences,
  SEED,
  sum,
  until,
} from './interleavingHarness.js';
import type { Sequence } from './interleavingHarness.js';

/**
 * Random interleavings on a UdpProxy over real loopback sockets: datagrams from many sources,
 * upstreams that echo, stay silent or are closed (ICMP port unreachable), `maxSessions` reached,
 * sessions expiring, `setUpstreams()`, overrides (direct or through the admin API), health
 * checks and `close()` landing among them. A failure prints its seed, plan and invariant (replay:
 * L4PROXY_STRESS_SEED=<seed> L4PROXY_STRESS_RUNS=1).
 */

type PeerKind = 'echo' | 'silent' | 'closed';

interface UdpPeer {
  kind: PeerKind;
  port: number;
  received: number;
  socket?: Socket;
}

async function udpPeer(kind: PeerKind): Promise<UdpPeer> {
  if (kind === 'closed') return { kind, port: await freeUdpPort(), received: 0 };
  const socket = await udpSocket();
  const peer: UdpPeer = { kind, port: socket.address().port, received: 0, socket };
  socket.on('message', (msg: Buffer, rinfo) => {
    peer.received += msg.length;
    if (kind === 'echo') socket.send(msg, rinfo.port, rinfo.address);
  });
  return peer;
}

function proxyOptions(rng: Rng, upstreams: Upstream[]): UdpProxyOptions {
  const options: Record<string, unknown> = {
    upstreams,
    relay: rng.pick(['handle', 'dgram'] as const),
    idleTimeout: rng.int(20, 300),
  };
  if (rng.chance(0.3)) options.maxSessions = rng.int(1, 4);
  if (rng.chance(0.2)) options.maxResponses = rng.int(1, 3);
  if (rng.chance(0.2)) options.maxRequests = rng.int(1, 3);
  if (rng.chance(0.2))
    options.healthCheck = {
      interval: 30,
      timeout: 100,
      unhealthyThreshold: 1,
      healthyThreshold: 1,
      udp: { send: 'ping' },
    };
  if (rng.chance(0.2)) options.closeOnHealthFailure = true;
  if (rng.chance(0.2)) options.perPacketBalancing = true;
  return options;
}

interface Observed {
  sessions: number;
  closes: UdpSessionSummary[];
  errors: Error[];
}

function checkInvariants(
  proxy: UdpProxy,
  seen: Observed,
  clients: Map<number, Client>,
  what: string,
) {
  const stats = proxy.stats();
  const ids = new Set(seen.closes.map((summary) => summary.id));
  assert.equal(ids.size, seen.closes.length, `${what}: a session closed twice`);
  // A session that ends at once has no `session` event (docs/udp.md), but every one closes.
  assert.ok(seen.sessions <= seen.closes.length, `${what}: more session events than closes`);
  assert.equal(stats.downstream_sess_total, seen.closes.length, `${what}: downstream_sess_total`);
  assert.equal(stats.downstream_sess_active, 0, `${what}: downstream_sess_active`);
  assert.equal(stats.upstream_sess_active, 0, `${what}: upstream_sess_active`);
  for (const [id, upstream] of Object.entries(stats.upstreams))
    assert.equal(upstream.upstream_sess_active, 0, `${what}: upstream ${id} active`);
  assertReasonsMatch(stats.session_close_reasons, seen.closes, 'session_close_reasons', what);
  assert.equal(sum(stats.dropped), stats.datagrams_dropped, `${what}: dropped sum`);
  // What each client sent and read, against its sessions' summaries.
  for (const [port, client] of clients) {
    const mine = seen.closes.filter((summary) => summary.clientPort === port);
    let toClient = 0;
    let fromClient = 0;
    for (const summary of mine) {
      toClient += summary.bytesToClient;
      fromClient += summary.bytesFromClient;
    }
    assert.equal(toClient, client.received, `${what}: client ${String(port)} bytesToClient`);
    assert.ok(fromClient <= client.sent, `${what}: client ${String(port)} bytesFromClient`);
  }
  let fromClients = 0;
  for (const summary of seen.closes) fromClients += summary.bytesFromClient;
  assert.ok(fromClients <= stats.downstream_sess_rx_bytes, `${what}: rx bytes`);
  assertMetricsAgree(stats, proxy.metrics(), 'l4proxy_udp_', what);
  assert.deepEqual(seen.errors, [], `${what}: 'error' events`);
}

interface Client {
  socket: Socket;
  sent: number;
  received: number;
}

async function sequence(s: Sequence): Promise<void> {
  const { rng, what } = s;
  const peers: UdpPeer[] = [];
  const clients = new Map<number, Client>();
  s.defer('peers and clients', async () => {
    for (const client of clients.values()) await closeSocket(client.socket);
    for (const peer of peers) if (peer.socket !== undefined) await closeSocket(peer.socket);
  });
  for (let i = rng.int(1, 3); i > 0; i--)
    peers.push(await udpPeer(rng.pick(['echo', 'echo', 'silent', 'closed'] as const)));
  const upstreamsOf = (chosen: UdpPeer[]): Upstream[] =>
    chosen.map((peer) => ({ host: '127.0.0.1', port: peer.port }));
  const options = proxyOptions(rng, upstreamsOf(peers));
  s.note(`options ${JSON.stringify({ ...options, upstreams: peers.map((p) => p.kind) })}`);
  const proxy = new UdpProxy(options);
  s.defer('proxy.close()', () => proxy.close());
  const seen: Observed = { sessions: 0, closes: [], errors: [] };
  proxy.on('session', () => seen.sessions++);
  proxy.on('sessionClose', (summary) => seen.closes.push(summary));
  proxy.on('error', (error) => seen.errors.push(error));
  const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const admin = s.rng.chance(0.5) ? await adminOver(s, 'udp', proxy) : undefined;
  for (let i = rng.int(1, 6); i > 0; i--) {
    const socket = await udpSocket();
    const client: Client = { socket, sent: 0, received: 0 };
    socket.on('message', (msg: Buffer) => {
      client.received += msg.length;
    });
    clients.set(socket.address().port, client);
  }
  const sentTo = (port: number): number =>
    seen.closes.reduce((total, c) => total + (c.clientPort === port ? c.bytesToClient : 0), 0);
  const running: Promise<unknown>[] = [];
  for (const [port, client] of clients) {
    for (let i = rng.int(1, 6); i > 0; i--) {
      const payload = Buffer.alloc(rng.int(1, 1200), 7);
      running.push(
        s.at(
          rng.int(0, 120),
          `client ${String(port)} sends ${String(payload.length)}`,
          () =>
            new Promise<void>((resolve) => {
              client.socket.send(payload, address.port, '127.0.0.1', (error) => {
                if (error === null) client.sent += payload.length;
                resolve();
              });
            }),
        ),
      );
    }
  }
  let closing: Promise<void> | undefined;
  running.push(
    ...scheduleUpstreamChanges({
      rng,
      count: rng.int(0, 4),
      window: 120,
      target: proxy,
      peers,
      idOf: (peer) => `127.0.0.1:${String(peer.port)}`,
      upstreamsOf,
      close: () => (closing ??= proxy.close()),
      at: (delay, step, operation) => s.at(delay, step, operation),
      admin,
    }),
  );
  await withTimeout(Promise.all(running), 10_000, `${what}: datagrams`);
  // Replies in flight: the proxy's own idle timeout is the bound; closing ends the rest.
  await after(rng.int(0, 50));
  await withTimeout(proxy.close(), 5_000, `${what}: proxy.close()`);
  s.note('closed');
  // A reply the proxy sent just before closing may still be on its way to the client socket.
  await until(() => [...clients].every(([port, client]) => client.received === sentTo(port)));
  checkInvariants(proxy, seen, clients, what);
}

test(`UdpProxy under random interleavings: ${String(RUNS)} sequences from seed ${String(SEED)}`, async (t) => {
  t.diagnostic(await runSequences('UdpProxy', sequence));
});
