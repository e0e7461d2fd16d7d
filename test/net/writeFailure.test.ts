/*
 * docs/tcp.md, "Resets": an upstream that answers, then closes a socket with bytes it never read
 * (the rest of a request it refused, commands pipelined behind a QUIT), makes its kernel send a
 * reset. The proxy, still relaying the client's bytes, then writes into that reset: the write
 * fails (EPIPE, ECONNRESET) while the answer waits, unread, in the proxy's receive queue, which a
 * reset does not empty. The relay handle destroyed the socket at the write's failure, the answer
 * with it: the client got a reset and nothing. The reads now deliver the answer first, then the
 * reset ends the connection (`upstream_reset`), as HAProxy delivers it (`mode tcp`).
 *
 * redis-server is the peer, in its own process: QUIT answers +OK and closes, the bytes behind it
 * unread. On the old code 150 to 170 of 200 answers were lost.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { lostAnswers } from '../helpers/net.js';
import { freePort, startPeer } from '../helpers/peerProcess.js';
import type { PeerProcess } from '../helpers/peerProcess.js';
import { startProxy } from '../helpers/proxy.js';
import { tool } from '../helpers/tools.js';

const ROUNDS = 200;
const REPLIES = '+PONG\r\n+OK\r\n';
/** QUIT, then more than one read of redis (16 KiB) and one of the proxy (64 KiB) behind it. */
const REQUEST = Buffer.concat([Buffer.from('PING\r\nQUIT\r\n'), Buffer.alloc(192 * 1024, 'x')]);

/** One redis-server for the file, stopped after it. */
let shared: Promise<{ peer: PeerProcess; port: number }> | undefined;
after(async () => {
  if (shared !== undefined) await (await shared).peer.stop();
});

async function redis(t: TestContext): Promise<number | undefined> {
  const redisServer = tool(t, 'redis-server');
  if (redisServer === undefined) return undefined;
  shared ??= (async () => {
    const port = await freePort();
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly'];
    return { peer: await startPeer(redisServer, [...args, 'no'], port), port };
  })();
  return (await shared).port;
}

describe("a write that fails on the upstream's reset, its answer unread (relay: 'handle')", () => {
  test(`each of ${String(ROUNDS)} clients gets redis's answer to the commands before QUIT`, async (t) => {
    const upstreamPort = await redis(t);
    if (upstreamPort === undefined) return;
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
      relay: 'handle',
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    // One write the kernel takes whole: the client's own write never fails on the reset.
    const lost = await lostAnswers(port, ROUNDS, REQUEST, (reply) => reply === REPLIES);
    const summaries = await closes(ROUNDS, 20_000);
    assert.deepEqual(lost, [], `${String(lost.length)} of ${String(ROUNDS)} answers lost`);
    for (const summary of summaries) {
      assert.equal(summary.bytesFromUpstream, REPLIES.length, summary.reason);
      assert.equal(summary.bytesToClient, REPLIES.length, summary.reason);
      // A reset, or a clean close when redis read every byte before closing.
      assert.ok(['upstream_reset', 'completed'].includes(summary.reason), summary.reason);
    }
  });
});
