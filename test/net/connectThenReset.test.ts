/*
 * docs/tcp.md, "Resets": an upstream that accepts, sends a greeting or a refusal, and resets at
 * once (a server turning clients away at accept). libuv reads a connect's result from SO_ERROR
 * when it gets to it: a reset that came before then shows as a connect that failed ECONNRESET,
 * though the handshake completed and the greeting waits in the kernel. The relay handle took it
 * for a failed connect: the greeting was dropped and the connection, retried, ended
 * `connect_failed`: 188 and 192 of 200 greetings lost on the old code (the others ended
 * `upstream_reset`, the greeting relayed). It now connects, relays the greeting, then ends as that reset, as
 * HAProxy delivers it (`mode tcp`).
 *
 * The peer is a python3 process of its own (Node cannot close with a reset at once after a
 * write): accept, write the greeting, close with SO_LINGER 0.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import { lostAnswers, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
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

describe("an upstream that resets right after its greeting, before the proxy's connect completes (relay: 'handle')", () => {
  test(`each of ${String(ROUNDS)} clients gets the greeting, and the end is upstream_reset`, async (t) => {
    const python = tool(t, 'python3');
    if (python === undefined) return;
    const peer = spawn(python, ['-c', PEER], { stdio: ['ignore', 'pipe', 'inherit'] });
    peer.on('error', () => undefined);
    t.after(() => peer.kill());
    const upstreamPort = await withTimeout(
      new Promise<number>((resolve) => {
        peer.stdout.once('data', (data: Buffer) => {
          resolve(Number(data.toString().trim()));
        });
      }),
      10_000,
      'the python3 peer',
    );
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
      relay: 'handle',
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
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
  });
});
