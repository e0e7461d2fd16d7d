/*
 * docs/tcp.md, "Resets": an upstream that accepts, sends a greeting or a refusal, and resets at
 * once (a server turning clients away at accept). libuv reads a connect's result from SO_ERROR
 * when it gets to it: a reset that came before then shows as a connect that failed ECONNRESET,
 * though the handshake completed and the greeting waits in the kernel. The relay handle took it
 * for a failed connect: the greeting was dropped and the connection, retried, ended
 * `connect_failed`: 188 and 192 of 200 greetings lost on the old code (the others ended
 * `upstream_reset`, the greeting relayed). It now connects, relays the greeting, then ends as that reset, as
 * HAProxy delivers it (`mode tcp`). A `net.Socket` upstream (relays 'onread' and 'stream', a
 * `sourceAddress`) did the same, Node destroying it at the failed connect: 181 to 190 of 200
 * lost; its receive queue is now read as it is destroyed (src/net/readBeforeReset.ts).
 *
 * The peer is a python3 process of its own (Node cannot close with a reset at once after a
 * write): accept, write the greeting, close with SO_LINGER 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { lostAnswers, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { tool } from '../helpers/tools.js';

const ROUNDS = 200;
const GREETING = '-ERR max number of clients reached\r\n';

const PEER = `
import socket, struct, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(${JSON.stringify(GREETING)}.encode())
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
`;

/** One python3 peer for the file, killed after it. */
let shared: Promise<number> | undefined;
let peerProcess: ReturnType<typeof spawn> | undefined;
after(() => peerProcess?.kill());

async function peerPort(t: TestContext): Promise<number | undefined> {
  const python = tool(t, 'python3');
  if (python === undefined) return undefined;
  shared ??= (() => {
    const peer = spawn(python, ['-c', PEER], { stdio: ['ignore', 'pipe', 'inherit'] });
    peerProcess = peer;
    peer.on('error', () => undefined);
    return withTimeout(
      new Promise<number>((resolve) => {
        peer.stdout.once('data', (data: Buffer) => {
          resolve(Number(data.toString().trim()));
        });
      }),
      10_000,
      'the python3 peer',
    );
  })();
  return shared;
}

/** 200 clients through a proxy with `options`: each gets the greeting, each ends upstream_reset. */
async function greetingsDelivered(
  t: TestContext,
  options: Partial<TcpProxyOptions>,
): Promise<void> {
  const upstreamPort = await peerPort(t);
  if (upstreamPort === undefined) return;
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
    ...options,
  });
  try {
    const lost = await lostAnswers(port, ROUNDS, undefined, (reply) => reply === GREETING);
    const summaries = await closes(ROUNDS, 20_000);
    assert.deepEqual(lost, [], `${String(lost.length)} of ${String(ROUNDS)} greetings lost`);
    const reasons = new Map<string, number>();
    for (const summary of summaries) {
      reasons.set(summary.reason, (reasons.get(summary.reason) ?? 0) + 1);
      assert.equal(summary.bytesFromUpstream, GREETING.length, summary.reason);
      assert.equal(summary.attempts, 1, summary.reason);
    }
    assert.deepEqual([...reasons], [['upstream_reset', ROUNDS]]);
    assert.equal(proxy.stats().upstream_cx_connect_fail, 0);
  } finally {
    await proxy.close({ drainTimeout: 0 });
  }
}

describe("an upstream that resets right after its greeting, before the proxy's connect completes", () => {
  test(`relay 'handle': each of ${String(ROUNDS)} clients gets the greeting, and the end is upstream_reset`, async (t) => {
    await greetingsDelivered(t, { relay: 'handle' });
  });

  test(`relay 'onread': each of ${String(ROUNDS)} clients gets the greeting`, async (t) => {
    await greetingsDelivered(t, { relay: 'onread' });
  });

  test(`relay 'stream': each of ${String(ROUNDS)} clients gets the greeting`, async (t) => {
    await greetingsDelivered(t, { relay: 'stream' });
  });

  test(`relay 'handle' with a sourceAddress (a net.Socket upstream): each of ${String(ROUNDS)} clients gets the greeting`, async (t) => {
    await greetingsDelivered(t, { relay: 'handle', sourceAddress: '127.0.0.1' });
  });
});
