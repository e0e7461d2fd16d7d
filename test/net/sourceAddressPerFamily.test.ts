import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import dns from 'node:dns';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';
import { resolveSourceAddress } from '../../src/net/sourceAddress.js';
import { connect, readAll, socketServer } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { startNginx } from '../helpers/nginx.js';
import { freePort } from '../helpers/peerProcess.js';
import { startProxy } from '../helpers/proxy.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, freeUdpPort, hasIpv6Loopback, request, udpSocket } from '../udp/helpers.js';

/** A TCP upstream on `host` that answers each connection with the address it came from. */
function whoAmI(host: string): Promise<TestServer> {
  return socketServer((socket) => {
    socket.end(socket.remoteAddress ?? '');
  }, host);
}

/** A UDP upstream on `host` answering each datagram with the address it came from. */
async function udpWhoAmI(host: string): Promise<{ port: number; close(): Promise<void> }> {
  const socket = await udpSocket(host);
  socket.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
    socket.send(rinfo.address, rinfo.port, rinfo.address);
  });
  return { port: socket.address().port, close: () => closeSocket(socket) };
}

async function ipv6(t: TestContext): Promise<boolean> {
  if (await hasIpv6Loopback()) return true;
  t.skip('no IPv6 loopback (::1) on this machine');
  return false;
}

/** What the upstream on `port` of the proxy saw as the connection's source. */
async function sourceSeen(port: number): Promise<string> {
  const client = await connect(port);
  const reply = readAll(client);
  client.end();
  return (await reply).toString();
}

describe('sourceAddress: one address per family', () => {
  test('takes an IP literal or one per family; anything else is refused, naming the option', () => {
    assert.deepEqual(resolveSourceAddress(['127.0.0.2', '::1'], 'sourceAddress'), {
      ipv4: '127.0.0.2',
      ipv6: '::1',
    });
    assert.deepEqual(resolveSourceAddress(['::1'], 'sourceAddress'), {
      ipv4: undefined,
      ipv6: '::1',
    });
    // An IPv4-mapped address is the IPv4 address: only an IPv4 socket can use it.
    assert.deepEqual(resolveSourceAddress('::ffff:127.0.0.2', 'sourceAddress'), {
      ipv4: '127.0.0.2',
      ipv6: undefined,
    });
    for (const value of [
      [],
      ['127.0.0.1', '127.0.0.2'],
      ['::1', '::2'],
      ['127.0.0.1', '::1', '127.0.0.2'],
      ['127.0.0.1', 'localhost'],
      ['127.0.0.1', 4],
      { ipv4: '127.0.0.1' },
    ]) {
      for (const create of [
        () => new TcpProxy({ sourceAddress: value as string[] }),
        () => new UdpProxy({ sourceAddress: value as string[] }),
      ]) {
        assert.throws(
          create,
          (err: unknown) => err instanceof InvalidOptionError && err.option === 'sourceAddress',
          JSON.stringify(value),
        );
      }
    }
  });

  test('TCP: each upstream is connected to from the source of its family', async (t) => {
    if (!(await ipv6(t))) return;
    const v4 = await whoAmI('127.0.0.1');
    t.after(() => v4.close());
    const v6 = await whoAmI('::1');
    t.after(() => v6.close());
    const { proxy, port } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: v4.port, id: 'v4' },
        { host: '::1', port: v6.port, id: 'v6' },
      ],
      sourceAddress: ['127.0.0.2', '::1'],
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    // Round robin: two connections, one to each upstream.
    const seen = [await sourceSeen(port), await sourceSeen(port)].sort();
    assert.deepEqual(seen, ['127.0.0.2', '::1']);
    assert.equal(proxy.stats().upstream_cx_connect_fail, 0);
  });

  test('TCP: an upstream of a family without a source address gets the system choice', async (t) => {
    if (!(await ipv6(t))) return;
    const v4 = await whoAmI('127.0.0.1');
    t.after(() => v4.close());
    const v6 = await whoAmI('::1');
    t.after(() => v6.close());
    const { proxy, port } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: v4.port, id: 'v4' },
        { host: '::1', port: v6.port, id: 'v6' },
      ],
      sourceAddress: '127.0.0.2',
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    const seen = [await sourceSeen(port), await sourceSeen(port)].sort();
    assert.deepEqual(seen, ['127.0.0.2', '::1']);
    assert.equal(proxy.stats().upstream_cx_connect_fail, 0);
  });

  test('TCP: a host name upstream is reached from the source of the family it resolves to', async (t) => {
    // Resolved as the proxy resolves it (see test/net/sourceAddressHostName.test.ts).
    const { address, family } = await dns.promises.lookup('localhost', { hints: dns.ADDRCONFIG });
    if (family === 6 && !(await ipv6(t))) return;
    const upstream = await whoAmI(address);
    t.after(() => upstream.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: 'localhost', port: upstream.port }],
      sourceAddress: ['::1', '127.0.0.2'],
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await sourceSeen(port), family === 6 ? '::1' : '127.0.0.2');
  });

  test('UDP: each session socket is bound to the source of its upstream family', async (t) => {
    if (!(await ipv6(t))) return;
    const v4 = await udpWhoAmI('127.0.0.1');
    t.after(() => v4.close());
    const v6 = await udpWhoAmI('::1');
    t.after(() => v6.close());
    for (const relay of ['handle', 'dgram'] as const) {
      const proxy = new UdpProxy({
        upstreams: [
          { host: '127.0.0.1', port: v4.port, id: 'v4' },
          { host: '::1', port: v6.port, id: 'v6' },
        ],
        sourceAddress: ['127.0.0.2', '::1'],
        relay,
      });
      t.after(() => proxy.close());
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      // Two clients, two sessions: one to each upstream (round robin).
      const clients = [await udpSocket(), await udpSocket()];
      for (const client of clients) t.after(() => closeSocket(client));
      const seen: string[] = [];
      for (const client of clients) seen.push((await request(client, port, 'x')).toString());
      assert.deepEqual(seen.sort(), ['127.0.0.2', '::1'], relay);
      assert.equal(proxy.stats().session_close_reasons.socket_error, 0);
    }
  });

  test('UDP: an upstream of a family without a source address gets the system choice', async (t) => {
    if (!(await ipv6(t))) return;
    const v6 = await udpWhoAmI('::1');
    t.after(() => v6.close());
    const proxy = new UdpProxy({
      upstreams: [{ host: '::1', port: v6.port }],
      sourceAddress: '127.0.0.2',
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, port, 'x')).toString(), '::1');
  });

  test('nginx on 127.0.0.1 and ::1 sees each family from its own source (TCP and UDP)', async (t) => {
    if (tool(t, 'nginx') === undefined || !(await ipv6(t))) return;
    const [tcp4, tcp6, udp4, udp6] = [
      await freePort(),
      await freePort('::1'),
      await freeUdpPort(),
      await freeUdpPort('::1'),
    ];
    // nginx answers each connection (datagram) with the address it came from.
    const nginx = await startNginx(
      [
        `server { listen 127.0.0.1:${tcp4}; return "$remote_addr"; }`,
        `server { listen [::1]:${tcp6}; return "$remote_addr"; }`,
        `server { listen 127.0.0.1:${udp4} udp; return "$remote_addr"; }`,
        `server { listen [::1]:${udp6} udp; return "$remote_addr"; }`,
      ].join('\n'),
    );
    t.after(() => nginx.stop());
    const sourceAddress = ['127.0.0.2', '::1'];
    const { port } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: tcp4 },
        { host: '::1', port: tcp6 },
      ],
      sourceAddress,
    }).then((started) => {
      t.after(() => started.proxy.close());
      return started;
    });
    assert.deepEqual([await sourceSeen(port), await sourceSeen(port)].sort(), sourceAddress);
    const proxy = new UdpProxy({
      upstreams: [
        { host: '127.0.0.1', port: udp4 },
        { host: '::1', port: udp6 },
      ],
      sourceAddress,
    });
    t.after(() => proxy.close());
    const udpPort = (await proxy.bind({ port: 0, address: '127.0.0.1' })).port;
    const seen: string[] = [];
    for (let i = 0; i < 2; i++) {
      const client = await udpSocket();
      t.after(() => closeSocket(client));
      seen.push((await request(client, udpPort, 'x')).toString());
    }
    assert.deepEqual(seen.sort(), sourceAddress);
  });
});
