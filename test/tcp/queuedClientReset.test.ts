import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { closed, connect, socketServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';

/*
 * A client waiting in the queue for an upstream slot is read (into its socket's buffer), not
 * relayed. One that sends bytes and then resets reads as bytes and an end (libuv reports bytes
 * and a RST that arrive together as an end). Once a slot freed, that end went on as a FIN after
 * the bytes: the upstream got a whole request from a client that failed. The relay must see the
 * reset (downstream_reset) and never give the upstream the bytes and a FIN.
 */

/** How each connection to the upstream ended: its bytes, and 'fin' or the error's code. */
interface Ending {
  bytes: string;
  how: string;
}

describe('a queued client that sends and resets', () => {
  for (const relay of ['handle', 'onread', 'stream'] as const) {
    test(`relay ${relay}: the upstream gets its bytes, then a reset, not a FIN`, async () => {
      const endings: Promise<Ending>[] = [];
      const held: Socket[] = [];
      const upstream = await socketServer((socket) => {
        held.push(socket);
        let bytes = '';
        socket.on('data', (chunk: Buffer) => (bytes += chunk.toString()));
        endings.push(
          new Promise<Ending>((resolve) => {
            socket.on('end', () => {
              resolve({ bytes, how: 'fin' });
              socket.end();
            });
            socket.on('error', (err: NodeJS.ErrnoException) => {
              resolve({ bytes, how: err.code ?? err.message });
            });
          }),
        );
      });
      const { proxy, port, closes, summaries } = await startProxy({
        upstreams: [{ host: '127.0.0.1', port: upstream.port, maxConnections: 1 }],
        queue: { maxLength: 1, timeout: 30_000 },
        relay,
      });
      try {
        const first = await connect(port);
        first.write('A');
        await until(() => held.length === 1, 'the first client upstream');
        const queued = await connect(port);
        await until(() => proxy.stats().downstream_cx_queued_active === 1, 'the client queued');
        queued.write('B');
        // Written before the reset: the proxy's kernel holds 'B' and then the RST.
        await new Promise<void>((resolve) => {
          queued.write('', () => {
            resolve();
          });
        });
        queued.resetAndDestroy();
        await closed(queued);
        // The slot frees: the first client ends, the upstream answers its FIN with its own.
        first.end();
        await closed(first);
        const [firstEnding] = await closes(1);
        assert.equal(firstEnding?.reason, 'completed');
        await until(
          () => summaries.length === 2 || proxy.stats().rejected_reasons.client_gone === 1,
          'the queued client closed or refused',
        );
        const second = summaries[1];
        if (second !== undefined) {
          assert.equal(second.reason, 'downstream_reset');
          assert.equal(second.bytesToUpstream, 0);
        }
        // Dialled before the reset was read, the upstream may have seen the connection: never
        // the client's bytes followed by a FIN (a request it would serve).
        if (held.length === 2) {
          const ending = await withTimeout(endings[1] as Promise<Ending>, 10_000, 'upstream end');
          assert.ok(ending.bytes === '' || ending.how === 'ECONNRESET', JSON.stringify(ending));
        }
      } finally {
        await proxy.close();
        await upstream.close();
      }
    });
  }
});
