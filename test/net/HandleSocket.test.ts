import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { CloseReason } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { HandleSocket, handleBindings } from '../../src/net/HandleSocket.js';
import { handlePort, recordHandleWrites } from '../helpers/handleWrites.js';
import type { HandleWrite, WrittenHandle } from '../helpers/handleWrites.js';
import {
  closed,
  connect,
  echoServer,
  readAll,
  refusedPort,
  waitFor,
  withTimeout,
} from '../helpers/net.js';
import { openHandles, startProxy } from '../helpers/proxy.js';

const MiB = 1024 * 1024;

/** The ports of every TCP handle of this process that asks libuv for a shutdown, in order. */
function recordShutdowns(
  t: TestContext,
): { local: number | undefined; remote: number | undefined }[] {
  const binding = (
    process as unknown as { binding(name: string): Record<string, unknown> }
  ).binding('tcp_wrap');
  type Shutdown = (this: WrittenHandle, request: unknown) => number;
  const proto = (binding.TCP as { prototype: { shutdown: Shutdown } }).prototype;
  const { shutdown } = proto;
  const handles: { local: number | undefined; remote: number | undefined }[] = [];
  proto.shutdown = function (this: WrittenHandle, request) {
    handles.push({ local: handlePort(this, 'local'), remote: handlePort(this, 'remote') });
    return shutdown.call(this, request);
  };
  t.after(() => {
    proto.shutdown = shutdown;
  });
  return handles;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** What drove the writes toward `port`: the relay's bare handles, Node's net.Socket, or both. */
function drivers(writes: readonly HandleWrite[]): Set<string> {
  return new Set(
    writes.map((write) => (write.owner instanceof net.Socket ? 'net.Socket' : 'handle')),
  );
}

/** Echoes one exchange through a proxy with `options`; returns who wrote to each side. */
async function exchange(
  t: Parameters<typeof recordHandleWrites>[0],
  options: Omit<TcpProxyOptions, 'upstreams'>,
  payload = Buffer.from('one exchange'),
): Promise<{ toUpstream: Set<string>; toClient: Set<string>; reply: Buffer }> {
  const echo = await echoServer();
  t.after(() => echo.close());
  const { proxy, port } = await startProxy({
    ...options,
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
  });
  t.after(() => proxy.close());
  const toUpstream = recordHandleWrites(t, (h) => handlePort(h, 'remote') === echo.port);
  const toClient = recordHandleWrites(t, (h) => handlePort(h, 'local') === port);
  const client = await connect(port);
  const reply = readAll(client);
  client.end(payload);
  const received = await reply;
  return { toUpstream: drivers(toUpstream), toClient: drivers(toClient), reply: received };
}

describe("relay: 'handle' (the default): plain TCP on bare libuv handles", () => {
  test('the handle bindings are found on this Node', () => {
    assert.notEqual(handleBindings(), null, `process.binding('tcp_wrap') on ${process.version}`);
  });

  test('by default both sides of a plain connection are driven by the relay, not net.Socket', async (t) => {
    const { toUpstream, toClient, reply } = await exchange(t, {});
    assert.equal(reply.toString(), 'one exchange');
    assert.deepEqual([...toUpstream], ['handle']);
    assert.deepEqual([...toClient], ['handle']);
  });

  test("relay: 'onread' keeps net.Socket on both sides", async (t) => {
    const { toUpstream, toClient } = await exchange(t, { relay: 'onread' });
    assert.deepEqual([...toUpstream], ['net.Socket']);
    assert.deepEqual([...toClient], ['net.Socket']);
  });

  test('a client read before the relay (PROXY headers accepted) stays a net.Socket; its upstream is a handle', async (t) => {
    const { toUpstream, toClient, reply } = await exchange(t, {
      acceptProxyProtocol: { trusted: ['10.0.0.0/8'] },
    });
    assert.equal(reply.toString(), 'one exchange');
    assert.deepEqual([...toUpstream], ['handle']);
    assert.deepEqual([...toClient], ['net.Socket']);
  });

  test('16 MiB each way arrive byte-exact and the connection completes', async (t) => {
    const payload = randomBytes(16 * MiB);
    const { reply } = await exchange(t, {}, payload);
    assert.equal(sha256(reply), sha256(payload));
  });

  test('a refused upstream is a connect failure with the system error, and the client is reset', async () => {
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: await refusedPort() }],
      maxConnectAttempts: 1,
    });
    try {
      const client = await connect(port);
      const error = await closed(client);
      assert.equal((error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
      const [summary] = await closes(1);
      assert.ok(summary !== undefined);
      assert.equal(summary.reason, CloseReason.CONNECT_FAILED);
      const cause = summary.error?.cause;
      assert.ok(cause instanceof Error);
      assert.equal((cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
      assert.match(cause.message, /^connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
    } finally {
      await proxy.close();
    }
  });

  test('every handle is released once the connections and the proxy are closed', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const before = openHandles().TCPSocketWrap ?? 0;
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    const clients = await Promise.all(Array.from({ length: 20 }, () => connect(port)));
    await Promise.all(
      clients.map(async (client, i) => {
        const reply = readAll(client);
        client.end(`client ${String(i)}`);
        assert.equal((await reply).toString(), `client ${String(i)}`);
      }),
    );
    await closes(20);
    // One that stays open until close() ends it.
    const lingering = await connect(port);
    lingering.on('error', () => undefined);
    await proxy.close({ drainTimeout: 0 });
    await closed(lingering);
    for (const client of echo.sockets) client.destroy();
    // Closed handles leave the active list once their close callbacks ran.
    for (let i = 0; i < 100 && (openHandles().TCPSocketWrap ?? 0) > before; i++)
      await new Promise((resolve) => setImmediate(resolve));
    assert.equal(openHandles().TCPSocketWrap ?? 0, before);
  });

  test('a clean end is passed on without a zero-length write to check it', async (t) => {
    // The check is for an end libuv made up from a reset right after a read; an end read as
    // such (read returned 0) is a FIN and costs no system call to check.
    const echo = await echoServer();
    t.after(() => echo.close());
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    t.after(() => proxy.close());
    const toClient = recordHandleWrites(t, (h) => handlePort(h, 'local') === port);
    const toUpstream = recordHandleWrites(t, (h) => handlePort(h, 'remote') === echo.port);
    const client = await connect(port);
    const reply = readAll(client);
    // The reply first, then the FIN: the end comes on its own read.
    const echoed = waitFor(client, 'data');
    client.write('ping');
    await echoed;
    client.end();
    assert.equal((await reply).toString(), 'ping');
    assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
    const empty = (writes: readonly HandleWrite[]): number =>
      writes.filter((w) => w.chunks.every((chunk) => chunk.length === 0)).length;
    assert.equal(empty(toClient), 0, 'zero-length writes to the client');
    assert.equal(empty(toUpstream), 0, 'zero-length writes to the upstream');
    assert.equal(toClient.length + toUpstream.length, 2);
  });

  test('a socket read to its end is closed without a shutdown(2) first; the peer still gets its FIN', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    t.after(() => proxy.close());
    const shutdowns = recordShutdowns(t);
    const client = await connect(port);
    const reply = readAll(client);
    const ended = waitFor(client, 'end');
    const clientClosed = closed(client);
    const echoed = waitFor(client, 'data');
    client.write('ping');
    await echoed;
    // The client's FIN goes on to the echo server (a shutdown: the reply may still come), whose
    // own FIN then ends the client, whose side of the proxy has nothing left to read or write.
    client.end();
    await ended;
    assert.equal((await reply).toString(), 'ping');
    assert.equal(await clientClosed, undefined);
    assert.equal((await closes(1))[0]?.reason, CloseReason.COMPLETED);
    // The proxy's own sockets: to the echo server, and the one it accepted from the client.
    const proxySide = shutdowns.flatMap((h) =>
      h.remote === echo.port ? ['upstream'] : h.local === port ? ['client'] : [],
    );
    assert.deepEqual(proxySide, ['upstream']);
  });

  test('a write after end, and a destroy twice, neither throw nor emit', async () => {
    const echo = await echoServer();
    try {
      const socket = HandleSocket.connect('127.0.0.1', echo.port, true, () => true);
      const errors: Error[] = [];
      socket.on('error', (err: Error) => errors.push(err));
      await withTimeout(
        new Promise((resolve) => socket.once('connect', resolve)),
        5_000,
        'connect',
      );
      socket.end();
      assert.equal(socket.write(Buffer.from('late')), false);
      const closing = new Promise((resolve) => socket.once('close', resolve));
      socket.destroy();
      socket.destroy();
      await withTimeout(closing, 5_000, 'close');
      assert.deepEqual(errors, []);
    } finally {
      await echo.close();
    }
  });
});
