import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { closeSocket, nextMessage, udpEcho, udpSocket } from '../udp/helpers.js';
import { V1_CLIENT_INITIAL } from '../protocol/quicVectors.js';

/** Datagrams that look like QUIC to different depths: random, mutated Initials, short headers. */
const datagram = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 1300 }).map((u) => Buffer.from(u)),
  fc
    .tuple(fc.nat(1199), fc.integer({ min: 1, max: 255 }), fc.integer({ min: 1, max: 1200 }))
    .map(([at, xor, cut]) => {
      const copy = Buffer.from(V1_CLIENT_INITIAL);
      copy[at] = (copy[at] ?? 0) ^ xor;
      return copy.subarray(0, cut);
    }),
  fc
    .uint8Array({ minLength: 0, maxLength: 40 })
    .map((u) => Buffer.concat([Buffer.from([0x40]), u])),
);

test('hostile datagrams to a UdpProxy with every quic feature: no error, no crash, still serving', async () => {
  const upstream = await udpEcho('U:');
  const proxy = new UdpProxy({
    upstreams: [{ id: 'u', host: '127.0.0.1', port: upstream.port }],
    idleTimeout: 2_000,
    quic: {
      fallback: 'drop',
      maxInitialWait: 20,
      connectionIdRouting: true,
      quicLb: { serverIdLength: 1, servers: { '01': 'u' } },
    },
  });
  const errors: Error[] = [];
  proxy.on('error', (e) => errors.push(e));
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const senders = await Promise.all([udpSocket(), udpSocket(), udpSocket()]);
  try {
    const samples = fc.sample(fc.array(datagram, { minLength: 1, maxLength: 4 }), fuzzRuns(60));
    for (const [i, batch] of samples.entries()) {
      const sender = senders[i % senders.length];
      for (const d of batch) sender?.send(d, port, '127.0.0.1');
    }
    // The proxy still serves a real Initial from a fresh client.
    const probe = await udpSocket();
    try {
      probe.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
      assert.equal((await nextMessage(probe)).subarray(0, 2).toString(), 'U:');
    } finally {
      await closeSocket(probe);
    }
    assert.deepEqual(errors, []);
    const stats = proxy.stats();
    assert.ok((stats.quic?.quic_initials_parsed ?? 0) >= 1);
    assert.ok(stats.downstream_sess_total >= 2);
  } finally {
    for (const s of senders) await closeSocket(s);
    await proxy.close();
    await upstream.close();
  }
});
