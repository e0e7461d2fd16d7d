import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { readIntoSharedBuffer, sharedReadBuffer } from '../../src/net/sharedReadBuffer.js';
import { TcpProxy } from '../../src/index.js';
import { connect, echoServer, listen, readAll, waitFor, withTimeout } from '../helpers/net.js';

/** A server that hands its first accepted socket to the test. */
async function acceptOne(): Promise<{
  port: number;
  accepted: Promise<Socket>;
  close: () => Promise<void>;
}> {
  const server = net.createServer({ allowHalfOpen: true });
  const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
  const port = await listen(server);
  return {
    port,
    accepted,
    close: () =>
      new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      ),
  };
}

describe('shared read buffer', () => {
  test('an accepted TCP socket reads into the shared buffer; every byte reaches the callback in order', async () => {
    const server = await acceptOne();
    const client = await connect(server.port);
    const socket = await withTimeout(server.accepted, 5_000, 'accept');
    const chunks: Buffer[] = [];
    const buffers = new Set<Buffer>();
    assert.equal(
      readIntoSharedBuffer(socket, (bytes, buffer) => {
        buffers.add(buffer);
        chunks.push(Buffer.from(buffer.subarray(0, bytes)));
        return true;
      }),
      true,
    );
    const payload = randomBytes(1024 * 1024);
    client.end(payload);
    await withTimeout(waitFor(socket, 'end'), 10_000, 'end');
    assert.deepEqual(Buffer.concat(chunks), payload);
    assert.deepEqual([...buffers], [sharedReadBuffer()], 'one buffer for every read');
    socket.destroy();
    await server.close();
  });

  test('returning false stops reading until resume()', async () => {
    const server = await acceptOne();
    const client = await connect(server.port);
    const socket = await withTimeout(server.accepted, 5_000, 'accept');
    let reads = 0;
    let received = 0;
    readIntoSharedBuffer(socket, (bytes) => {
      reads++;
      received += bytes;
      return reads > 1; // stop after the first read only
    });
    client.write('first');
    await withTimeout(
      (async () => {
        for (let i = 0; i < 200 && reads === 0; i++) await new Promise((r) => setImmediate(r));
      })(),
      5_000,
      'first read',
    );
    assert.equal(reads, 1);
    const finished = waitFor(client, 'finish');
    client.end('second');
    await withTimeout(finished, 5_000, 'client finish');
    // 'second' and the FIN are in the proxy's socket buffer now (loopback delivers during the
    // write); a reading socket would see them within a loop turn or two. This one must not.
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(reads, 1);
    const ended = waitFor(socket, 'end');
    socket.resume();
    await withTimeout(ended, 5_000, 'end after resume');
    assert.equal(received, 'firstsecond'.length);
    socket.destroy();
    await server.close();
  });

  test('refuses sockets already read through the stream, and sockets without a handle', async () => {
    assert.equal(
      readIntoSharedBuffer(new net.Socket(), () => true),
      false,
    );
    const server = await acceptOne();
    const client = await connect(server.port);
    const socket = await withTimeout(server.accepted, 5_000, 'accept');
    socket.on('data', () => undefined);
    assert.equal(
      readIntoSharedBuffer(socket, () => true),
      false,
      'a data listener',
    );
    client.destroy();
    socket.destroy();
    await server.close();
  });

  test('the proxy relays accepted sockets through the shared buffer on this Node version', async () => {
    const echo = await echoServer();
    const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    const server = await acceptOne();
    const client = await connect(server.port);
    const socket = await withTimeout(server.accepted, 5_000, 'accept');
    proxy.handle(socket);
    // The fast path reads without a 'data' listener; a Node that renamed its fields would fall
    // back to the stream path, and this test would say so.
    assert.equal(socket.listenerCount('data'), 0, `shared-buffer relay on ${process.version}`);
    const reply = readAll(client);
    client.end('through the shared buffer');
    assert.equal((await reply).toString(), 'through the shared buffer');
    await proxy.close();
    await server.close();
    await echo.close();
  });

  test('64 concurrent connections each get exactly their own bytes back', async () => {
    const echo = await echoServer();
    const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
    assert.ok(typeof address !== 'string');
    const digest = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
    await withTimeout(
      Promise.all(
        Array.from({ length: 64 }, async () => {
          const payload = randomBytes(256 * 1024);
          const client = await connect(address.port);
          const reply = readAll(client);
          client.end(payload);
          assert.equal(digest(await reply), digest(payload));
        }),
      ),
      30_000,
      'all echoes',
    );
    await proxy.close();
    await echo.close();
  });
});
