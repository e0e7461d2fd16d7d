import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import http2 from 'node:http2';
import type { ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { after, before, describe, test } from 'node:test';
import { UdpProxy } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';
import { closed, connect, echoServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import type { Squid } from '../helpers/squid.js';
import { startSquid } from '../helpers/squid.js';
import { findTool, requireTools } from '../helpers/tools.js';

const missing = findTool('squid') === undefined ? 'squid is not installed' : undefined;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

/**
 * Writes `payload` through the proxy on `port` and reads until as many bytes came back or the
 * connection closed, then ends (squid closes a tunnel at the client's FIN: it must come last).
 */
async function roundTrip(port: number, payload: string): Promise<string> {
  const client = await connect(port);
  let text = '';
  const done = new Promise<void>((resolve) => {
    client.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.length >= payload.length) resolve();
    });
    client.once('close', resolve);
  });
  client.write(payload);
  await withTimeout(done, 10_000, 'the echo');
  client.end();
  await closed(client);
  return text;
}

/**
 * A node:http2 proxy answering every CONNECT (and CONNECT-UDP) stream 200 and echoing it, that
 * records the address each session came from.
 */
async function h2Proxy(t: TestContext): Promise<{ port: number; peers: string[] }> {
  const peers: string[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  const server = http2.createServer({ settings: { enableConnectProtocol: true } });
  server.on('session', (session) => {
    session.on('error', () => undefined);
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    peers.push(session.socket.remoteAddress ?? '');
  });
  server.on('stream', (stream: ServerHttp2Stream) => {
    stream.on('error', () => undefined);
    stream.respond({ ':status': 200 });
    stream.pipe(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        for (const session of sessions) session.destroy();
      }),
  );
  return { port: (server.address() as AddressInfo).port, peers };
}

// The connection to the HTTP proxy is what leaves this host: it is made from sourceAddress.
describe('tunnel upstreams are connected to from sourceAddress', () => {
  describe('HTTP/1.1 CONNECT through squid admitting only 127.0.0.2', { skip: missing }, () => {
    let squid: Squid;
    let echo: TestServer;

    before(async () => {
      echo = await echoServer();
      // From any other address (127.0.0.1, the system's choice), squid answers 403.
      squid = await startSquid([
        'acl from_source src 127.0.0.2/32',
        'http_access allow CONNECT from_source',
        'http_access deny all',
      ]);
    });

    after(async () => {
      await squid.stop();
      await echo.close();
    });

    const viaSquid = (): Upstream => ({
      host: '127.0.0.1',
      port: squid.port,
      tunnel: { target: `127.0.0.1:${echo.port}` },
    });

    for (const sourceAddress of ['127.0.0.2', ['::1', '127.0.0.2']])
      test(`sourceAddress ${JSON.stringify(sourceAddress)}: the tunnel opens`, async (t) => {
        const { proxy, port, closes } = await startProxy({
          upstreams: [viaSquid()],
          sourceAddress,
          maxConnectAttempts: 1,
        });
        t.after(() => proxy.close());
        assert.equal(await roundTrip(port, 'through squid'), 'through squid');
        const [summary] = await closes(1);
        assert.equal(summary?.reason, 'completed');
        assert.equal(proxy.stats().tunnels?.tunnel_opened_total, 1);
      });

    test('without sourceAddress, squid refuses the system address (the check is real)', async (t) => {
      const { proxy, port, closes } = await startProxy({
        upstreams: [viaSquid()],
        maxConnectAttempts: 1,
      });
      t.after(() => proxy.close());
      assert.equal(await roundTrip(port, 'refused'), '');
      await closes(1);
      assert.equal(proxy.stats().tunnels?.tunnel_refused['4xx'], 1);
    });
  });

  test('HTTP/2 CONNECT: the shared session comes from sourceAddress', async (t) => {
    const h2 = await h2Proxy(t);
    const { proxy, port } = await startProxy({
      upstreams: [
        {
          host: '127.0.0.1',
          port: h2.port,
          tunnel: { protocol: 'h2', target: '127.0.0.1:9' },
        },
      ],
      sourceAddress: ['127.0.0.2', '::1'],
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await roundTrip(port, 'first'), 'first');
    assert.equal(await roundTrip(port, 'second'), 'second');
    assert.deepEqual(h2.peers, ['127.0.0.2']);
  });

  test('CONNECT-UDP: the session to the proxy comes from sourceAddress', async (t) => {
    const h2 = await h2Proxy(t);
    const proxy = new UdpProxy({
      upstreams: [
        { host: '127.0.0.1', port: h2.port, tunnel: { protocol: 'h2', target: '127.0.0.1:53' } },
      ],
      sourceAddress: '127.0.0.2',
    });
    const client = dgram.createSocket('udp4');
    t.after(async () => {
      client.close();
      await proxy.close();
    });
    const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const reply = new Promise<Buffer>((resolve) => client.once('message', resolve));
    client.send('hello', address.port, '127.0.0.1');
    // The proxy echoes the DATAGRAM capsule back: the client gets its datagram.
    assert.equal((await withTimeout(reply, 5_000, 'the echoed datagram')).toString(), 'hello');
    assert.deepEqual(h2.peers, ['127.0.0.2']);
  });
});
