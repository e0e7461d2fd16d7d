import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { describe, test } from 'node:test';
import tls from 'node:tls';
import type { TestContext } from 'node:test';
import { readSlowly, withTimeout } from '../helpers/net.js';
import type { TcpProxy } from '../../src/index.js';
import { startProxy } from '../helpers/proxy.js';
import { testServer } from '../helpers/testServer.js';
import { handlePort, recordHandleWrites } from '../helpers/handleWrites.js';
import { sharedReadBuffer } from '../../src/net/sharedReadBuffer.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import type { WrittenHandle } from '../helpers/handleWrites.js';

const MiB = 1024 * 1024;

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A client of a TcpProxy in front of 127.0.0.1:`backendPort`; both closed after the test. */
async function clientThroughProxy(
  t: TestContext,
  backendPort: number,
): Promise<{ proxy: TcpProxy; client: Socket }> {
  const { proxy, port } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: backendPort }],
  });
  t.after(() => proxy.close());
  const client = net.connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  t.after(() => client.destroy());
  return { proxy, client };
}

test('bytes relayed while writes go pending arrive intact, both ways (the copy block is never reused under a pending write)', async (t) => {
  const up = randomBytes(24 * MiB);
  const down = randomBytes(24 * MiB);
  let received: Promise<Buffer> | undefined;
  const backendPort = await testServer(t, (socket) => {
    received = readSlowly(socket, 256 * 1024);
    socket.end(down);
  });
  const { proxy, client } = await clientThroughProxy(t, backendPort);
  const downloaded = readSlowly(client, 256 * 1024);
  client.end(up);
  assert.equal(sha256(await downloaded), sha256(down), 'backend → client');
  assert.ok(received !== undefined);
  assert.equal(sha256(await received), sha256(up), 'client → backend');
  const stats = proxy.stats();
  // Both readers stalled the proxy's writes: the pending path was taken, and paused the sources.
  assert.ok(stats.downstream_flow_control_paused_reading_total > 0, 'client paused');
  assert.ok(stats.upstream_flow_control_paused_reading_total > 0, 'upstream paused');
});

/** The memory blocks behind the chunks `matches` handles are given to write, in this process. */
function writtenBlocks(
  t: TestContext,
  matches: (handle: WrittenHandle) => boolean,
): { readonly blocks: ArrayBufferLike[] } {
  const writes = recordHandleWrites(t, matches);
  return {
    get blocks() {
      return writes.flatMap((write) =>
        write.chunks.filter((chunk) => chunk.length > 0).map((chunk) => chunk.buffer),
      );
    },
  };
}

test('while its writes complete at once, a relay copies every chunk into the same block', async (t) => {
  const data = randomBytes(16 * MiB);
  let received: Promise<Buffer> | undefined;
  const backendPort = await testServer(t, (socket) => {
    received = new Promise((resolve) => {
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => {
        resolve(Buffer.concat(chunks));
        socket.end();
      });
    });
  });
  const written = writtenBlocks(t, (handle) => handlePort(handle, 'remote') === backendPort);
  const { client } = await clientThroughProxy(t, backendPort);
  // Paced by the proxy's progress, so that most of its writes find an empty socket.
  for (let offset = 0; offset < data.length; offset += 64 * 1024) {
    if (!client.write(data.subarray(offset, offset + 64 * 1024)))
      await withTimeout(new Promise((resolve) => client.once('drain', resolve)), 10_000, 'drain');
  }
  client.end();
  assert.ok(received !== undefined);
  assert.equal(sha256(await withTimeout(received, 30_000, 'the upload')), sha256(data));
  const blocks = written.blocks;
  const distinct = new Set(blocks).size;
  assert.ok(blocks.length >= 32, `${blocks.length} writes`);
  assert.ok(
    distinct * 4 <= blocks.length,
    `${blocks.length} writes used ${distinct} blocks (a fresh block per chunk would be one each)`,
  );
});

/** The chunks this process writes to Node's TLS streams (`TLSWrap`), as the relay hands them over. */
function tlsStreamWrites(t: TestContext): Uint8Array[] {
  const binding = (
    process as unknown as { binding(name: string): Record<string, unknown> }
  ).binding('tls_wrap');
  const proto = (binding.TLSWrap as { prototype: Record<string, unknown> }).prototype;
  type Write = (this: unknown, request: unknown, data: unknown, all?: boolean) => number;
  const writeBuffer = proto.writeBuffer as Write;
  const writev = proto.writev as Write;
  const chunks: Uint8Array[] = [];
  proto.writeBuffer = function (this: unknown, request: unknown, chunk: unknown) {
    chunks.push(chunk as Uint8Array);
    return writeBuffer.call(this, request, chunk);
  };
  proto.writev = function (this: unknown, request: unknown, list: unknown, all?: boolean) {
    chunks.push(...(list as Uint8Array[]).filter((item) => item instanceof Uint8Array));
    return writev.call(this, request, list, all);
  };
  t.after(() => {
    proto.writeBuffer = writeBuffer;
    proto.writev = writev;
  });
  return chunks;
}

/** A test CA's certificate for localhost; undefined when openssl is missing (skipped). */
async function localhostCert(t: TestContext) {
  const openssl = tool(t, 'openssl');
  if (!openssl) return undefined;
  const ca = await testCa(t, openssl);
  return { ca, cert: await ca.issue('localhost', ['localhost', '127.0.0.1']) };
}

/** Three transfers at once: one's reads overwrite the shared buffer while another's wait. */
const STREAMS = 3;

describe('a TLS stream on a bare handle takes relayed bytes straight from the shared read buffer', () => {
  test('plain clients to an originated TLS upstream: intact while writes go pending, most without a copy', async (t) => {
    const pki = await localhostCert(t);
    if (!pki) return;
    const uploads = Array.from({ length: STREAMS }, () => randomBytes(6 * MiB));
    const server = tls.createServer({ cert: pki.cert.cert, key: pki.cert.key });
    const received: Promise<Buffer>[] = [];
    server.on('secureConnection', (socket) => {
      // Slow: the proxy's TLS writes stay in flight and what it reads meanwhile is held.
      received.push(readSlowly(socket, 256 * 1024));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const { port: upstreamPort } = server.address() as AddressInfo;
    const chunks = tlsStreamWrites(t);
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
      tls: { ca: pki.ca.cert, servername: 'localhost' },
    });
    t.after(() => proxy.close());
    const closed = uploads.map((data) => {
      const client = net.connect(port, '127.0.0.1');
      client.on('error', () => undefined);
      t.after(() => client.destroy());
      client.resume();
      client.end(data);
      return new Promise((resolve) => client.once('close', resolve));
    });
    await withTimeout(Promise.all(closed), 60_000, 'the clients to close');
    assert.equal(received.length, STREAMS);
    const got = (await Promise.all(received)).map(sha256).sort();
    assert.deepEqual(got, uploads.map(sha256).sort());
    const direct = chunks.filter((chunk) => chunk.buffer === sharedReadBuffer().buffer).length;
    assert.ok(direct * 2 >= chunks.length, `${direct} of ${chunks.length} writes from the buffer`);
  });

  test('a plain upstream to terminated TLS clients: intact while writes go pending, most without a copy', async (t) => {
    const pki = await localhostCert(t);
    if (!pki) return;
    const downloads = Array.from({ length: STREAMS }, () => randomBytes(6 * MiB));
    let next = 0;
    const backendPort = await testServer(t, (socket) => {
      socket.on('error', () => undefined);
      socket.end(downloads[next++ % STREAMS] ?? Buffer.alloc(0));
    });
    const chunks = tlsStreamWrites(t);
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: backendPort }],
      terminateTls: { cert: pki.cert.cert, key: pki.cert.key },
    });
    t.after(() => proxy.close());
    const received = downloads.map(() => {
      const client = tls.connect({
        port,
        host: '127.0.0.1',
        ca: pki.ca.cert,
        servername: 'localhost',
      });
      client.on('error', () => undefined);
      t.after(() => client.destroy());
      return readSlowly(client, 256 * 1024);
    });
    const got = (await Promise.all(received)).map(sha256).sort();
    assert.deepEqual(got, downloads.map(sha256).sort());
    const direct = chunks.filter((chunk) => chunk.buffer === sharedReadBuffer().buffer).length;
    assert.ok(direct * 2 >= chunks.length, `${direct} of ${chunks.length} writes from the buffer`);
  });
});
