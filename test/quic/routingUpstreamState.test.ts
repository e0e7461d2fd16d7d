/**
 * docs/quic.md: what an upstream's state does to the datagrams connection-ID and QUIC-LB routing
 * send it. Both route the datagrams of connections the upstream already holds (a DCID it
 * chose), so an operator's `drain` or `maint` (no new connections) does not stop them; QUIC-LB
 * honours health (an unhealthy upstream gets none: the selector chooses), connection-ID routing
 * keeps a tracked connection on its upstream whatever its health.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpSessionInfo, UdpSessionSummary } from '../../src/udp/events.js';
import { withTimeout } from '../helpers/net.js';
import { closeSocket, nextMessage, udpSocket } from '../udp/helpers.js';
import { V1_CLIENT_INITIAL } from '../protocol/quicVectors.js';

/**
 * A QUIC-ish upstream: a long-header datagram gets a Handshake-type long header whose SCID is
 * `cid`, anything else `tag:` + payload.
 */
async function fakeServer(tag: string, cid: Buffer) {
  const socket = await udpSocket();
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    if (((msg[0] ?? 0) & 0x80) !== 0) {
      const head = Buffer.from([0xe0, 0, 0, 0, 1, 0, cid.length]);
      socket.send(Buffer.concat([head, cid, Buffer.from(tag)]), rinfo.port, rinfo.address);
    } else socket.send(Buffer.concat([Buffer.from(`${tag}:`), msg]), rinfo.port, rinfo.address);
  });
  return { port: socket.address().port, close: () => closeSocket(socket) };
}

/** A health check responder: answers `pong` while `answering`. */
async function healthResponder() {
  const socket = await udpSocket();
  const state = { answering: true, port: socket.address().port, close: () => closeSocket(socket) };
  socket.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
    if (state.answering) socket.send('pong', rinfo.port, rinfo.address);
  });
  return state;
}

const cidA = Buffer.from('aa00112233445566', 'hex');
const cidB = Buffer.from('bb00112233445566', 'hex');
// draft-ietf-quic-load-balancers "Unencrypted CIDs", cr_bits 0: server ID c4605e, mapped to 'a'.
const lbCidA = Buffer.from('07c4605e4504cc4f', 'hex');

/** A short-header datagram to `cid`. */
const short = (cid: Buffer, text: string): Buffer =>
  Buffer.concat([Buffer.from([0x41]), cid, Buffer.from(text)]);

/**
 * Where a new client address's datagram goes: the upstream of the session it opens, or the
 * reason that session ended at once.
 */
async function upstreamFor(proxy: UdpProxy, port: number, datagram: Buffer): Promise<string> {
  const client = await udpSocket();
  let settle: (outcome: string) => void = () => undefined;
  const outcome = new Promise<string>((resolve) => {
    settle = resolve;
  });
  const onSession = (session: UdpSessionInfo): void => {
    settle(session.upstream?.id ?? 'none');
  };
  const onClose = (summary: UdpSessionSummary): void => {
    settle(summary.reason);
  };
  proxy.on('session', onSession);
  proxy.on('sessionClose', onClose);
  try {
    client.send(datagram, port, '127.0.0.1');
    return await withTimeout(outcome, 3_000, 'a session');
  } finally {
    proxy.off('session', onSession);
    proxy.off('sessionClose', onClose);
    await closeSocket(client);
  }
}

describe('QUIC routing and the upstream state', () => {
  test('connection-ID and QUIC-LB routing reach a draining or disabled upstream; only QUIC-LB skips an unhealthy one', async (t) => {
    const a = await fakeServer('A', cidA);
    t.after(() => a.close());
    const b = await fakeServer('B', cidB);
    t.after(() => b.close());
    const health = await healthResponder();
    t.after(() => health.close());
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'a', host: '127.0.0.1', port: a.port },
        { id: 'b', host: '127.0.0.1', port: b.port },
      ],
      // New connections go to a while it is a candidate, else to b.
      selector: (ctx) => ctx.candidates.find((c) => c.id === 'a') ?? ctx.candidates[0],
      quic: {
        sni: false,
        connectionIdRouting: true,
        quicLb: { serverIdLength: 3, servers: { c4605e: 'a' } },
      },
      healthCheck: {
        interval: 50,
        timeout: 100,
        unhealthyThreshold: 1,
        healthyThreshold: 1,
        port: health.port,
        udp: { send: 'ping', expect: 'pong' },
      },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });

    // A connection on a: its server's long header makes the proxy track cidA.
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
    assert.equal((await nextMessage(client)).subarray(-1).toString(), 'A');
    assert.equal(proxy.stats().quic?.quic_cids_active, 2);

    for (const mode of ['drain', 'maint'] as const) {
      proxy.overrideUpstream('a', { mode, weight: undefined });
      // No new connection goes to a...
      assert.equal(await upstreamFor(proxy, port, Buffer.from('not quic')), 'b', mode);
      // ...but its connections' datagrams still do, by either routing.
      assert.equal(await upstreamFor(proxy, port, short(cidA, 'cid')), 'a', mode);
      assert.equal(await upstreamFor(proxy, port, short(lbCidA, 'lb')), 'a', mode);
      proxy.overrideUpstream('a', undefined);
    }

    // Both upstreams unhealthy (their checks go to the one responder).
    const unhealthy = new Set<string>();
    const bothDown = new Promise<void>((resolve) => {
      proxy.on('upstreamHealth', (upstream, healthy) => {
        if (!healthy) unhealthy.add(upstream.id);
        if (unhealthy.size === 2) resolve();
      });
    });
    health.answering = false;
    await withTimeout(bothDown, 5_000, 'both upstreams unhealthy');
    // A tracked connection stays on its upstream; QUIC-LB does not route to an unhealthy one
    // (the selector then has no candidate).
    assert.equal(await upstreamFor(proxy, port, short(cidA, 'cid')), 'a');
    assert.equal(await upstreamFor(proxy, port, short(lbCidA, 'lb')), 'no_upstream');
  });

  test('connection-ID routing tracks no ID until the upstream sends a long header: a routed Initial alone is not tracked', async (t) => {
    // An upstream that reads and never answers.
    const silent = await udpSocket();
    t.after(() => closeSocket(silent));
    let received = 0;
    const got = new Promise<void>((resolve) => {
      silent.on('message', () => {
        if (++received === 2) resolve();
      });
    });
    const picked: string[] = [];
    const proxy = new UdpProxy({
      upstreams: [{ id: 'silent', host: '127.0.0.1', port: silent.address().port }],
      selector: (ctx) => {
        picked.push(String(ctx.clientPort));
        return ctx.candidates[0];
      },
      quic: { sni: false, connectionIdRouting: true },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const first = await udpSocket();
    t.after(() => closeSocket(first));
    const moved = await udpSocket();
    t.after(() => closeSocket(moved));
    first.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
    // The same Initial (same DCID) from another address: not known, so the selector chooses.
    moved.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
    await withTimeout(got, 3_000, 'both Initials upstream');
    const quic = proxy.stats().quic;
    assert.equal(quic?.quic_cids_active, 0);
    assert.equal(quic.quic_cid_routed, 0);
    assert.deepEqual(picked, [String(first.address().port), String(moved.address().port)]);
  });
});
