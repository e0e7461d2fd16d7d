import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { ProxyProtocolError, RejectReason, TlsClientHelloError } from '../../src/index.js';
import { encodeProxyHeader } from '../../src/protocol/encodeProxyHeader.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { echoServer, withTimeout } from '../helpers/net.js';
import { dialFrom, recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { anyHeader, chunksOf } from '../protocol/proxyArbitraries.js';
import {
  alpnExtension,
  buildHandshake,
  nodeHello,
  recordsOf,
  sniExtension,
} from '../protocol/tlsHelloFixtures.js';

const runs = fuzzRuns(200);

/** Bytes a client may open with: garbage, PROXY headers and ClientHellos, whole, cut or mutated. */
function openings(hellos: readonly Buffer[]): fc.Arbitrary<Buffer> {
  const hello = fc.constantFrom(...hellos);
  const header = anyHeader.map((h) => encodeProxyHeader(h));
  const whole = fc.oneof(
    fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    header,
    hello,
    fc.tuple(header, hello).map((parts) => Buffer.concat(parts)),
    fc.tuple(header, fc.uint8Array({ maxLength: 64 })).map(([h, tail]) => Buffer.concat([h, tail])),
  );
  return fc.oneof(
    whole,
    // Truncated at any point.
    fc.tuple(whole, fc.nat()).map(([b, n]) => b.subarray(0, n % (b.length + 1))),
    // One byte changed.
    fc.tuple(whole, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([b, at, x]) => {
      if (b.length === 0) return b;
      const copy = Buffer.from(b);
      const i = at % copy.length;
      copy[i] = (copy[i] ?? 0) ^ x;
      return copy;
    }),
  );
}

/** How the client behaves after writing: half-close, wait for the proxy's verdict, or reset. */
const endings = fc.constantFrom('end', 'hold', 'reset');

const REASONS = new Set<string>(Object.values(RejectReason));

/** Writes chunks in order, stopping quietly if the proxy already reset the socket. */
async function writeAll(socket: Socket, chunks: readonly Buffer[]): Promise<void> {
  for (const chunk of chunks) {
    if (socket.destroyed) return;
    const ok = await new Promise<boolean>((resolve) => {
      socket.write(chunk, (err) => {
        resolve(err == null);
      });
    });
    if (!ok) return;
  }
}

describe('ClientPreface through a live proxy (fast-check)', () => {
  test('random, truncated and mutated openings: each socket ends in exactly one of rejected / connection+connectionClose, with typed errors only, and nothing hangs', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const upstreams = [{ host: '127.0.0.1', port: echo.port }];
    const strict = await recordingProxy({
      upstreams,
      acceptProxyProtocol: { trusted: ['127.0.0.1'], timeout: 150 },
      sni: { timeout: 150, maxBytes: 2048 },
    });
    t.after(() => strict.close());
    const lenient = await recordingProxy({
      upstreams,
      acceptProxyProtocol: { trusted: ['127.0.0.1'], timeout: 150, required: false },
      sni: { timeout: 150, required: true },
    });
    t.after(() => lenient.close());
    const proxies = [strict, lenient];
    const hellos = [
      await nodeHello({ servername: 'a.test', ALPNProtocols: ['h2', 'http/1.1'] }),
      recordsOf(buildHandshake([sniExtension('b.test'), alpnExtension(['h2'])]), [7, 100]),
      recordsOf(buildHandshake(undefined), [16_384]),
    ];
    const sockets = [0, 0];

    await fc.assert(
      fc.asyncProperty(
        fc.nat({ max: 1 }),
        openings(hellos),
        fc.array(fc.nat(), { maxLength: 6 }),
        endings,
        async (which, bytes, cuts, ending) => {
          const proxy: RecordingProxy = proxies[which]!;
          const index = sockets[which]!++;
          const client = dialFrom(proxy.port);
          await client.connected;
          await writeAll(client.socket, chunksOf(bytes, cuts));
          if (ending === 'end') client.socket.end();
          if (ending === 'reset') client.socket.resetAndDestroy();
          // The verdict comes from the bytes, the client leaving, or a 150 ms timeout.
          await proxy.decided(index + 1, 5_000);
          if (ending === 'hold') client.socket.end();
          await client.done;
          await proxy.closed(proxy.connections.length, 5_000);

          assert.equal(proxy.rejections.length + proxy.connections.length, index + 1);
          assert.equal(proxy.summaries.length, proxy.connections.length);
          assert.deepEqual(proxy.errors, []);
        },
      ),
      { numRuns: runs },
    );

    for (const proxy of proxies) {
      for (const rejection of proxy.rejections) {
        assert.ok(REASONS.has(rejection.reason), rejection.reason);
        const error = rejection.error;
        assert.ok(
          error === undefined ||
            error instanceof ProxyProtocolError ||
            error instanceof TlsClientHelloError,
          `only typed errors (got ${String(error)})`,
        );
      }
      const ids = proxy.summaries.map((s) => s.id);
      assert.equal(new Set(ids).size, ids.length, 'one connectionClose per connection');
      assert.equal(proxy.proxy.stats().downstream_cx_active, 0);
      assert.equal(
        proxy.proxy.stats().downstream_cx_rejected,
        proxy.rejections.length,
        'every rejection counted',
      );
    }
    const total = proxies.reduce((n, p) => n + p.rejections.length + p.connections.length, 0);
    assert.equal(total, runs);
    t.diagnostic(
      `rejected ${proxies.map((p) => p.rejections.length).join('+')}, admitted ${proxies
        .map((p) => p.connections.length)
        .join('+')}`,
    );
    await withTimeout(Promise.all(proxies.map((p) => p.close())), 5_000, 'the proxies to close');
  });
});
