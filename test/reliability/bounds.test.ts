/**
 * Each bound stated in docs/security.md, checked against a live proxy: what a hostile client can
 * make the proxy hold is capped where the document says.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { ProxyProtocolError, TlsClientHelloError } from '../../src/errors.js';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import type { SelectionResult, TcpRejection, UdpDrop } from '../../src/index.js';
import { closed, echoServer, waitFor } from '../helpers/net.js';
import { eventually } from './load.js';

/** Writes `chunk` over and over (bounded) until the socket closes; resolves with bytes written. */
async function flood(port: number, first: Buffer, chunk: Buffer, limit: number): Promise<number> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  socket.on('error', () => undefined);
  socket.resume();
  let written = 0;
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      resolve();
    }),
  );
  socket.once('connect', () => {
    socket.write(first);
    written += first.length;
    const pump = (): void => {
      while (!socket.destroyed && written < limit) {
        written += chunk.length;
        if (!socket.write(chunk)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
  await closed;
  socket.destroy();
  return written;
}

async function listening(proxy: TcpProxy): Promise<number> {
  return (await proxy.listen({ port: 0, host: '127.0.0.1' })).port;
}

describe('stated bounds (docs/security.md)', () => {
  test('a never-ending PROXY v1 or v2 header is cut at acceptProxyProtocol.maxLength (too_long)', async (t) => {
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      acceptProxyProtocol: { trusted: ['127.0.0.1'], maxLength: 512 },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const port = await listening(proxy);
    const rejections: TcpRejection[] = [];
    proxy.on('rejected', (r) => rejections.push(r));
    // v1: a line that never ends (UNKNOWN allows any text up to CRLF; the spec caps it at 107).
    await flood(port, Buffer.from('PROXY UNKNOWN '), Buffer.alloc(64, 0x61), 1 << 20);
    // v2: a header that announces 65 535 bytes of addresses, then keeps sending.
    const v2 = Buffer.from('0d0a0d0a000d0a515549540a2111ffff', 'hex');
    await flood(port, v2, Buffer.alloc(64, 0), 1 << 20);
    await eventually(() => Promise.resolve(rejections.length === 2), 'two rejections');
    for (const rejection of rejections) {
      assert.equal(rejection.reason, 'proxy_protocol_error');
      assert.ok(rejection.error instanceof ProxyProtocolError);
      assert.equal(rejection.error.reason, 'too_long');
    }
    assert.equal(proxy.stats().downstream_cx_total, 0);
  });

  test('a ClientHello longer than sni.maxBytes is cut (tls_error too_long), a slow one at sni.timeout', async (t) => {
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      sni: { maxBytes: 1024, timeout: 500 },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const port = await listening(proxy);
    const rejections: TcpRejection[] = [];
    proxy.on('rejected', (r) => rejections.push(r));
    // A handshake record announcing a 16 MiB ClientHello, then endless record bodies.
    const head = Buffer.from([0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff]);
    await flood(port, head, Buffer.alloc(512, 0x41), 1 << 20);
    // Slow: a valid record header, then silence.
    const slow = net.connect({ port, host: '127.0.0.1' });
    slow.on('error', () => undefined);
    slow.write(Buffer.from([0x16, 3, 1, 0, 100, 1]));
    slow.resume();
    await closed(slow, 5_000);
    await eventually(() => Promise.resolve(rejections.length === 2), 'two rejections');
    assert.equal(rejections[0]?.reason, 'tls_error');
    assert.ok(rejections[0].error instanceof TlsClientHelloError);
    assert.equal(rejections[0].error.reason, 'too_long');
    assert.equal(rejections[1]?.reason, 'sni_timeout');
  });

  test('bytes held before the upstream connects stop being read at maxEarlyData (plus one read)', async (t) => {
    const maxEarlyData = 64 * 1024;
    let release: (value: SelectionResult) => void = () => undefined;
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      maxEarlyData,
      // Selection never finishes while the test floods: the client's bytes wait in early data.
      selector: () =>
        new Promise<SelectionResult>((resolve) => {
          release = resolve;
        }),
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const port = await listening(proxy);
    const client = net.connect({ port, host: '127.0.0.1' });
    client.on('error', () => undefined);
    await waitFor(client, 'connect');
    const chunk = Buffer.alloc(64 * 1024, 7);
    // Write far more than the bound (kernel buffers fill, then the client's own buffer grows).
    for (let i = 0; i < 256; i++) client.write(chunk);
    await eventually(
      () => Promise.resolve((proxy.connections()[0]?.bytesFromClient ?? 0) >= maxEarlyData),
      'early data at the bound',
    );
    // Give the relay time to (wrongly) read more: several event loop turns of socket reads.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const held = proxy.connections()[0]?.bytesFromClient ?? 0;
    assert.ok(held >= maxEarlyData && held <= maxEarlyData + 65_536, `held ${held}`);
    release(undefined);
    client.destroy();
  });

  test('a UDP session holds at most maxPendingDatagrams while its upstream is chosen; the rest are dropped and counted', async (t) => {
    const upstream = await echoServer();
    t.after(() => upstream.close());
    const held: ((value: SelectionResult) => void)[] = [];
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: 9 }],
      maxPendingDatagrams: 8,
      selector: () => new Promise<SelectionResult>((resolve) => held.push(resolve)),
    });
    t.after(() => proxy.close());
    const drops: UdpDrop[] = [];
    proxy.on('dropped', (drop) => drops.push(drop));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = dgram.createSocket('udp4');
    t.after(() => client.close());
    for (let i = 0; i < 50; i++) client.send(`d${i}`, port, '127.0.0.1');
    await eventually(
      () => Promise.resolve(proxy.stats().downstream_sess_rx_datagrams === 50),
      'all 50 datagrams received',
    );
    assert.equal(proxy.stats().dropped.pending_overflow, 42);
    assert.equal(drops.filter((d) => d.reason === 'pending_overflow').length, 42);
    for (const resolve of held) resolve(undefined);
  });
});
