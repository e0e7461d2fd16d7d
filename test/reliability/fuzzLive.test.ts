/**
 * Random, mutated and truncated bytes sent to a live proxy that reads PROXY headers (from trusted
 * 127.0.0.1) and peeks SNI: only typed errors come out, nothing hangs, and every accepted socket
 * ends exactly once: one `rejected`, or one `connection` then one `connectionClose`.
 * Connections: L4PROXY_LIVE_FUZZ (CI 3 000; soak 50 000).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { ProxyProtocolError, TlsClientHelloError } from '../../src/errors.js';
import { TcpProxy } from '../../src/index.js';
import { closeAfter, echoServer, withTimeout } from '../helpers/net.js';
import { helloInput, proxyInput, randomBytes, validProxyHeader } from './fuzzInputs.js';
import { eventually, runPool, setting, SOAK } from './load.js';

const CONNECTIONS = setting('L4PROXY_LIVE_FUZZ', SOAK ? 50_000 : 3_000);
const PREFACE_TIMEOUT = 300;

/** What a client does after writing its bytes. */
type Ending = 'end' | 'hold' | 'reset' | 'trickle';

const clientInput = fc.record({
  proxy: fc.oneof(
    { arbitrary: validProxyHeader, weight: 2 },
    { arbitrary: proxyInput, weight: 2 },
    { arbitrary: fc.constant(Buffer.alloc(0)), weight: 1 },
  ),
  hello: fc.oneof(helloInput, fc.constant(Buffer.alloc(0))),
  tail: fc.oneof(fc.constant(Buffer.alloc(0)), randomBytes),
  ending: fc.constantFrom<Ending>('end', 'end', 'hold', 'reset', 'trickle'),
});

/** Writes `bytes` then ends as told; resolves when the socket has closed (bounded). */
async function client(port: number, bytes: Buffer, ending: Ending): Promise<void> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  socket.resume();
  socket.on('end', () => socket.end());
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      resolve();
    }),
  );
  let trickle: NodeJS.Timeout | undefined;
  socket.once('connect', () => {
    if (ending === 'trickle') {
      // One byte every 50 ms: slower than the preface timeout allows.
      let at = 0;
      trickle = setInterval(() => {
        if (at < bytes.length && !socket.destroyed) socket.write(bytes.subarray(at, ++at));
      }, 50);
      return;
    }
    socket.write(bytes);
    if (ending === 'end') socket.end();
    if (ending === 'reset') setImmediate(() => socket.resetAndDestroy());
  });
  try {
    await withTimeout(closed, 10_000, `close of a '${ending}' client`);
  } finally {
    clearInterval(trickle);
    socket.destroy();
  }
}

describe(`live proxy fuzz (${CONNECTIONS} connections)`, () => {
  test(
    'garbage on the wire yields typed rejections or proxied connections, each accepted socket ending exactly once',
    { timeout: 300_000 },
    async (t) => {
      const upstream = await echoServer();
      t.after(() => upstream.close());
      const proxy = new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        acceptProxyProtocol: { trusted: ['127.0.0.1'], timeout: PREFACE_TIMEOUT },
        sni: { timeout: PREFACE_TIMEOUT },
        idleTimeout: 1_000,
      });
      let accepted = 0;
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        accepted++;
        proxy.handle(socket);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      closeAfter(t, server);
      t.after(() => proxy.close({ drainTimeout: 0 }));
      const port = (server.address() as AddressInfo).port;

      const rejectReasons: Record<string, number> = {};
      const closeReasons: Record<string, number> = {};
      const untyped: string[] = [];
      const open = new Set<number>();
      let connections = 0;
      let rejected = 0;
      let duplicateCloses = 0;
      proxy.on('rejected', (rejection) => {
        rejected++;
        rejectReasons[rejection.reason] = (rejectReasons[rejection.reason] ?? 0) + 1;
        const error = rejection.error;
        if (
          error !== undefined &&
          !(error instanceof ProxyProtocolError) &&
          !(error instanceof TlsClientHelloError)
        )
          untyped.push(String(error));
      });
      proxy.on('connection', (connection) => {
        connections++;
        open.add(connection.id);
      });
      proxy.on('connectionClose', (summary) => {
        closeReasons[summary.reason] = (closeReasons[summary.reason] ?? 0) + 1;
        if (!open.delete(summary.id)) duplicateCloses++;
      });

      const seed = Number(process.env.L4PROXY_FUZZ_SEED ?? Date.now() % 2 ** 31);
      const inputs = fc.sample(clientInput, { numRuns: CONNECTIONS, seed });
      await runPool(inputs.length, 100, async (index) => {
        const input = inputs[index]!;
        await client(port, Buffer.concat([input.proxy, input.hello, input.tail]), input.ending);
      });
      await eventually(
        () => Promise.resolve(accepted === rejected + connections && open.size === 0),
        'every accepted socket accounted for',
        10_000,
      );
      t.diagnostic(
        `seed ${seed}; accepted ${accepted}, rejected ${rejected} ${JSON.stringify(rejectReasons)}, ` +
          `connections ${connections} ${JSON.stringify(closeReasons)}`,
      );
      assert.equal(accepted, CONNECTIONS);
      assert.deepEqual(untyped, []);
      assert.equal(duplicateCloses, 0);
      const closed = Object.values(closeReasons).reduce((a, b) => a + b, 0);
      assert.equal(closed, connections, 'one connectionClose per connection');
      const stats = proxy.stats();
      assert.equal(stats.downstream_cx_total, connections);
      assert.equal(stats.downstream_cx_rejected, rejected);
      assert.equal(stats.downstream_cx_active, 0);
      // The mix reaches both outcomes and the timeouts.
      assert.ok(connections > 0 && rejected > 0);
      assert.ok((rejectReasons.proxy_protocol_error ?? 0) > 0);
      assert.ok((rejectReasons.proxy_protocol_timeout ?? 0) > 0);
      assert.ok((closeReasons.completed ?? 0) > 0);
    },
  );
});
