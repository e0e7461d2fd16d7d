/*
 * docs/tcp.md, "Resets", on a TLS `net.Socket` side (a `TLSSocket`): a peer that answers, then
 * closes with bytes it never read makes its kernel send a reset; the proxy's next write to it
 * fails (EPIPE, ECONNRESET) while the answer waits, encrypted, in the proxy's receive queue. Node
 * destroys a socket whose write failed, descriptor and queue with it: the answer was lost. The
 * queue is now read into the socket's TLS layer when the write fails, before Node destroys it
 * (src/tls/decryptBeforeReset.ts), and what it decrypts is relayed before the reset, as the relay
 * handle does. On the old code 6 ('onread'), 178 ('stream'), 5 (sourceAddress), 41 (filters) and
 * 200 (the TLS client) of 200 answers were lost.
 *
 * Upstream: redis-server on its TLS port only (QUIT answers +OK and closes, the bytes behind it
 * unread), as test/net/writeFailure.test.ts for plain TCP. Client: a node:tls client that answers
 * a request the same way, behind TLS termination read by an `admit` hook (a `TLSSocket` client).
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import type { TcpProxyOptions } from '../../src/index.js';
import { lostAnswers, socketServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { tlsRedisPerFile } from '../helpers/tlsRedis.js';
import { until } from '../helpers/until.js';

const getPki = sharedPki(issueServerAndClient);

const ROUNDS = 200;
const REPLIES = '+PONG\r\n+OK\r\n';
/** QUIT, then more than one read of redis (16 KiB) and one of the proxy (64 KiB) behind it. */
const REQUEST = Buffer.concat([Buffer.from('PING\r\nQUIT\r\n'), Buffer.alloc(192 * 1024, 'x')]);

const tlsRedis = tlsRedisPerFile(getPki);

/**
 * 200 clients through a proxy originating TLS with `options` to redis: each gets the answers to
 * the commands before QUIT, and each connection ends as redis's reset (or cleanly: it read every
 * byte).
 */
async function answersDelivered(
  t: TestContext,
  options: Partial<TcpProxyOptions>,
  mayLose = 0,
): Promise<void> {
  const peer = await tlsRedis(t);
  if (peer === undefined) return;
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: peer.port }],
    tls: { ca: peer.ca },
    ...options,
  });
  try {
    const lost = await lostAnswers(port, ROUNDS, REQUEST, (reply) => reply === REPLIES);
    const summaries = await closes(ROUNDS, 20_000);
    t.diagnostic(`${String(lost.length)} of ${String(ROUNDS)} answers lost`);
    // What reaches a client is the answer or a part of it, never other bytes: a drain that took
    // the whole buffer Node passes to a stream's reader sent process memory on (Node 26).
    for (const reply of lost)
      assert.ok(REPLIES.startsWith(JSON.parse(reply) as string), `not the answer: ${reply}`);
    if (mayLose === 0)
      assert.deepEqual(lost, [], `${String(lost.length)} of ${String(ROUNDS)} answers lost`);
    else
      assert.ok(
        lost.length <= mayLose,
        `${String(lost.length)} of ${String(ROUNDS)} answers lost (at most ${String(mayLose)})`,
      );
    // Where some may be lost, a connection that relayed nothing is one of them (counted above).
    const relayed = summaries.filter((summary) => mayLose === 0 || summary.bytesToClient > 0);
    assert.ok(ROUNDS - relayed.length <= mayLose, 'connections that relayed nothing');
    for (const summary of relayed) {
      assert.equal(summary.bytesFromUpstream, REPLIES.length, summary.reason);
      assert.equal(summary.bytesToClient, REPLIES.length, summary.reason);
      assert.ok(['upstream_reset', 'completed'].includes(summary.reason), summary.reason);
    }
  } finally {
    await proxy.close({ drainTimeout: 0 });
  }
}

/** Passes every byte on: the relay then runs through its data filters. */
const passThrough = () => ({ onClientData: (chunk: Buffer) => chunk });

describe("TLS origination on a net.Socket: a write that fails on the upstream's reset, its answer unread", () => {
  test(`relay 'onread': each of ${String(ROUNDS)} clients gets redis's answer to the commands before QUIT`, async (t) => {
    await answersDelivered(t, { relay: 'onread' });
  });

  test(`relay 'stream': each of ${String(ROUNDS)} clients gets redis's answer`, async (t) => {
    // The relay's pipe queues its writes, and a queued write that fails later is reported and
    // destroys the socket in one step, its answer unread (docs/tcp.md): up to 12 of 200 lost on
    // Node 26 alone, 8 and 14 on Node 22 under CI's load, 0 on Node 20 and 22 alone; 172 to 178
    // without the drain, on every Node.
    await answersDelivered(t, { relay: 'stream' }, 40);
  });

  test(`a sourceAddress (a TLSSocket upstream under the relay handle): each of ${String(ROUNDS)} clients gets redis's answer`, async (t) => {
    await answersDelivered(t, { sourceAddress: '127.0.0.1' });
  });

  test(`data filters: each of ${String(ROUNDS)} clients gets redis's answer`, async (t) => {
    await answersDelivered(t, { filters: [passThrough] });
  });
});

/**
 * One TLS client that answers as redis does: when the request has come to its `QUIT`, it writes
 * its replies and closes at once, the rest of the request unread (its kernel resets). Resolves
 * when it has closed.
 */
async function answeringClient(port: number, ca: string): Promise<void> {
  const client = tls.connect({ port, host: '127.0.0.1', ca, servername: 'localhost' });
  client.on('error', () => undefined);
  let seen = '';
  client.on('data', (chunk: Buffer) => {
    if (seen.includes('QUIT\r\n')) return;
    seen += chunk.toString('latin1', 0, Math.min(chunk.length, 64));
    if (!seen.includes('QUIT\r\n')) return;
    client.write(REPLIES);
    client.destroy();
  });
  await withTimeout(
    new Promise((resolve) => client.once('close', resolve)),
    10_000,
    'the client closed',
  );
}

describe("TLS termination, a TLSSocket client: a write that fails on the client's reset, its answer unread", () => {
  test(`an admit hook: each of ${String(ROUNDS)} upstreams gets the answer the client sent before its reset`, async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const received: string[] = [];
    const upstream = await socketServer((socket: Socket) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      socket.once('close', () => received.push(text));
      // A client that closed cleanly (it read every byte) ends; so does this side.
      socket.once('end', () => socket.end());
      socket.write(REQUEST);
    });
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      terminateTls: { cert: p.server.cert, key: p.server.key },
      admit: () => true,
    });
    try {
      for (let i = 0; i < ROUNDS; i++) await answeringClient(port, p.ca.cert);
      const summaries = await closes(ROUNDS, 20_000);
      await until(() => received.length === ROUNDS, `${String(ROUNDS)} upstream sockets closed`);
      const lost = received.filter((text) => text !== REPLIES);
      // Only the answer or a part of it reaches the upstream, never other bytes (see above).
      for (const text of lost) assert.ok(REPLIES.startsWith(text), `not the answer: ${text}`);
      assert.deepEqual(lost, [], `${String(lost.length)} of ${String(ROUNDS)} answers lost`);
      for (const summary of summaries) {
        assert.equal(summary.bytesFromClient, REPLIES.length, summary.reason);
        assert.equal(summary.bytesToUpstream, REPLIES.length, summary.reason);
        assert.ok(['downstream_reset', 'completed'].includes(summary.reason), summary.reason);
      }
    } finally {
      await proxy.close({ drainTimeout: 0 });
      await upstream.close();
    }
  });
});
