import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { setImmediate as turn } from 'node:timers/promises';
import { holdUntilEnd } from '../helpers/filters.js';
import { closed, echoServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

/**
 * A client whose FIN reaches the proxy before its connection starts (it sent its PROXY header,
 * its request and its FIN together, or all of it while it waited in the queue): the connection
 * starts with the client already ended, and a data filter that held the request until the end
 * (`onClientEnd`) must still hand it to the upstream. It did not: the request was lost and the
 * connection closed `completed` with `bytesToUpstream` 0 (found by the TCP interleaving harness).
 */

/** Waits (bounded: 2 000 turns of the loop) until `condition()` holds. */
async function turnsUntil(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2_000 && !condition(); i++) await turn();
  assert.ok(condition(), `waited 2 000 loop turns for ${what}`);
}

describe('a client that ended before its connection started', () => {
  for (const relay of ['handle', 'onread', 'stream'] as const) {
    for (const proxyHeader of [true, false]) {
      test(`a holding filter's bytes still reach the upstream (relay ${relay}${proxyHeader ? ', PROXY header' : ''}, queued)`, async (t) => {
        const upstream = await echoServer();
        t.after(() => upstream.close());
        const { proxy, port, closes } = await startProxy({
          upstreams: [{ host: '127.0.0.1', port: upstream.port, maxConnections: 1 }],
          relay,
          queue: { maxLength: 4, timeout: 5_000 },
          filters: [holdUntilEnd],
          ...(proxyHeader && { acceptProxyProtocol: { trusted: ['127.0.0.1'], timeout: 5_000 } }),
        });
        t.after(() => proxy.close({ drainTimeout: 0 }));
        const header = (socket: net.Socket): string =>
          proxyHeader
            ? `PROXY TCP4 127.0.0.1 127.0.0.1 ${String(socket.localPort)} ${String(port)}\r\n`
            : '';
        // The first client takes the upstream's only slot and keeps it.
        const first = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
        first.on('error', () => undefined);
        t.after(() => first.destroy());
        await withTimeout(
          new Promise((resolve) => first.once('connect', resolve)),
          5_000,
          'connect',
        );
        first.write(`${header(first)}first`);
        await turnsUntil(() => proxy.stats().upstream_cx_active === 1, 'the first upstream');
        // The second sends everything and its FIN while it waits behind the cap.
        const second = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
        second.on('error', () => undefined);
        t.after(() => second.destroy());
        const echoed: Buffer[] = [];
        second.on('data', (chunk: Buffer) => echoed.push(chunk));
        second.on('end', () => second.end());
        await withTimeout(
          new Promise((resolve) => second.once('connect', resolve)),
          5_000,
          'connect',
        );
        const request = Buffer.alloc(5_000, 7);
        second.end(Buffer.concat([Buffer.from(header(second)), request]));
        await turnsUntil(
          () => proxy.stats().downstream_cx_queued_active === 1,
          'the queued client',
        );
        // Turns for the proxy to read the queued client's FIN before the slot frees.
        for (let i = 0; i < 20; i++) await turn();
        first.end();
        await closed(second);
        const summaries = await closes(2);
        const summary = summaries.find((s) => s.bytesFromClient === request.length);
        assert.ok(
          summary !== undefined,
          `the second connection's summary: ${JSON.stringify(summaries)}`,
        );
        assert.equal(summary.reason, 'completed');
        assert.equal(summary.bytesToUpstream, request.length, 'the held request went upstream');
        assert.equal(Buffer.concat(echoed).length, request.length, 'and came back');
      });
    }
  }
});
