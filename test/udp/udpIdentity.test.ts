import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { DropReason, UdpProxy, decodeProxyHeader } from '../../src/index.js';
import type { UdpDrop } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { closeSocket, request, udpEcho, udpSocket } from './helpers.js';
import { startDnsdist } from '../helpers/dnsdist.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

/** A UDP upstream that decodes the PROXY v2 header of each datagram and answers with what it saw. */
async function proxyAwareUpstream(): Promise<{ port: number; close(): Promise<void> }> {
  const socket = await udpSocket();
  socket.on('message', (msg, rinfo) => {
    let reply: string;
    try {
      const { header, rest } = decodeProxyHeader(msg);
      const source = 'source' in header && 'address' in header.source ? header.source : undefined;
      reply = `${header.protocol} ${source?.address}:${source?.port} ${rest.toString()}`;
    } catch (err) {
      reply = `error ${(err as Error).message}`;
    }
    socket.send(reply, rinfo.port, rinfo.address);
  });
  return { port: socket.address().port, close: () => closeSocket(socket) };
}

/** The next `dropped` event, bounded in time. */
function nextDrop(proxy: UdpProxy): Promise<UdpDrop> {
  return withTimeout(
    new Promise<UdpDrop>((resolve) => proxy.once('dropped', resolve)),
    3_000,
    'a dropped datagram',
  );
}

/** A client socket bound to a given loopback address (127.0.0.0/8 all reach this host). */
async function clientFrom(address: string): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  socket.bind(0, address);
  await once(socket, 'listening');
  return socket;
}

/**
 * Client sockets on one port number, one per loopback address: the port is the first one's
 * ephemeral port, tried again with a new one (3 times at most) when another address has it in use.
 */
async function clientsOnOnePort(addresses: readonly string[]): Promise<dgram.Socket[]> {
  for (let attempt = 1; ; attempt++) {
    const first = await clientFrom(addresses[0] as string);
    const sockets = [first];
    try {
      for (const address of addresses.slice(1)) {
        const socket = dgram.createSocket('udp4');
        sockets.push(socket);
        socket.on('error', () => undefined);
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject);
          socket.bind(first.address().port, address, () => {
            socket.off('error', reject);
            resolve();
          });
        });
      }
      return sockets;
    } catch (err) {
      await Promise.all(sockets.map((socket) => closeSocket(socket).catch(() => undefined)));
      if (attempt >= 3) throw err;
    }
  }
}

describe('UdpProxy client identity', () => {
  test("proxyProtocol 'v2' prepends a UDP4 header naming the client to every datagram", async () => {
    const upstream = await proxyAwareUpstream();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      proxyProtocol: 'v2',
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    const me = client.address();
    for (const payload of ['first', 'second', '']) {
      const reply = await request(client, port, payload);
      assert.equal(reply.toString(), `UDP4 127.0.0.1:${me.port} ${payload}`);
    }
    await closeSocket(client);
    await proxy.close();
    await upstream.close();
  });

  test("proxyProtocol 'v2' names an IPv6 client with a UDP6 header", async (t) => {
    let client: dgram.Socket;
    try {
      client = await udpSocket('::1');
    } catch {
      t.skip('IPv6 loopback (::1) is not available');
      return;
    }
    const upstream = await proxyAwareUpstream();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      proxyProtocol: 'v2',
    });
    const { port } = await proxy.bind({ port: 0, address: '::1' });
    const reply = await request(client, port, 'six', '::1');
    assert.equal(reply.toString(), `UDP6 ::1:${client.address().port} six`);
    await closeSocket(client);
    await proxy.close();
    await upstream.close();
  });

  test("proxyProtocol 'v2': UDP health checks open with a LOCAL header, so dnsdist requiring the header keeps the upstream healthy", async (t) => {
    if (tool(t, 'dnsdist') === undefined) return;
    // dnsdist drops a datagram from a source in its PROXY ACL that carries no header: a bare
    // probe failed every check, and the upstream was taken out of rotation (no_upstream).
    const port = await freePort();
    const dnsdist = await startDnsdist(
      port,
      [
        "setProxyProtocolACL({'127.0.0.1/32'})",
        "addAction(AllRule(), SpoofAction('192.0.2.9'))",
      ].join('\n'),
    );
    t.after(() => dnsdist.stop());
    // A query for a.test/A with id 0x1234.
    const query = Buffer.from('123401000001000000000000016104746573740000010001', 'hex');
    const proxy = new UdpProxy({
      upstreams: [{ id: 'dnsdist', host: '127.0.0.1', port }],
      proxyProtocol: 'v2',
      healthCheck: {
        interval: 20,
        jitter: 0,
        timeout: 1_000,
        unhealthyThreshold: 1,
        udp: { send: query, expect: Buffer.from('1234', 'hex') },
      },
    });
    t.after(() => proxy.close());
    const changes: boolean[] = [];
    proxy.on('upstreamHealth', (_upstream, healthy) => changes.push(healthy));
    const { port: front } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const health = () => proxy.stats().upstreams.dnsdist;
    // Three checks started: at least two completed (checks of an upstream never overlap).
    for (let i = 0; i < 500 && (health()?.health_check_attempts ?? 0) < 3; i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok((health()?.health_check_attempts ?? 0) >= 3, 'three checks ran');
    assert.equal(health()?.health_check_failures, 0);
    assert.deepEqual(changes, []);
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const answer = await request(client, front, query);
    // The spoofed A record's address closes the answer.
    assert.deepEqual([...answer.subarray(-4)], [192, 0, 2, 9]);
  });

  for (const relay of ['handle', 'dgram'] as const) {
    test(`proxyProtocol 'v2' (relay '${relay}'): a datagram that the header would push past the UDP maximum is dropped as oversized, not sent`, async (t) => {
      // Answers with the header's protocol and the payload's length: a reply as long as the
      // datagram would itself be too large to send back.
      const upstream = await udpSocket();
      t.after(() => closeSocket(upstream));
      upstream.on('message', (msg, rinfo) => {
        const { header, rest } = decodeProxyHeader(msg);
        upstream.send(`${header.protocol} ${rest.length}`, rinfo.port, rinfo.address);
      });
      const proxy = new UdpProxy({
        upstreams: [{ host: '127.0.0.1', port: upstream.address().port }],
        proxyProtocol: 'v2',
        relay,
      });
      t.after(() => proxy.close());
      const errors: Error[] = [];
      proxy.on('upstreamError', (_session, _upstream, err) => errors.push(err));
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const client = await udpSocket();
      t.after(() => closeSocket(client));
      // 65 507 is the largest UDP payload over IPv4; a UDP4 header takes 28 bytes of it.
      const fits = 65_507 - 28;
      assert.equal((await request(client, port, Buffer.alloc(fits))).toString(), `UDP4 ${fits}`);
      const dropped = nextDrop(proxy);
      client.send(Buffer.alloc(fits + 1), port, '127.0.0.1');
      const drop = await dropped;
      assert.equal(drop.reason, DropReason.OVERSIZED);
      assert.equal(drop.from, 'client');
      assert.equal(drop.size, fits + 1);
      // The session goes on, and nothing failed on the way.
      assert.equal((await request(client, port, 'after')).toString(), 'UDP4 5');
      const stats = proxy.stats();
      assert.equal(stats.dropped.oversized, 1);
      assert.equal(stats.upstream_sess_tx_errors, 0);
      assert.equal(stats.upstream_sess_tx_datagrams, 2);
      assert.equal(stats.downstream_sess_total, 1);
      assert.deepEqual(errors, []);
    });
  }

  test('proxyProtocol accepts only v2', () => {
    assert.throws(() => new UdpProxy({ proxyProtocol: 'v1' as 'v2' }), {
      code: 'ERR_L4_INVALID_OPTION',
      option: 'proxyProtocol',
    });
  });

  test('deny drops new clients from a denied address; others keep their sessions', async () => {
    const echo = await udpEcho();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      deny: ['127.0.0.2/32'],
    });
    const drops: UdpDrop[] = [];
    proxy.on('dropped', (d) => drops.push(d));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const good = await clientFrom('127.0.0.1');
    const bad = await clientFrom('127.0.0.2');
    assert.equal((await request(good, port, 'ok')).toString(), 'ok');
    const dropped = nextDrop(proxy);
    bad.send('let me in', port, '127.0.0.1');
    await dropped;
    assert.equal(drops[0]?.reason, DropReason.DENIED);
    assert.equal(drops[0].clientAddress, '127.0.0.2');
    assert.equal(proxy.stats().dropped.denied, 1);
    assert.equal((await request(good, port, 'still ok')).toString(), 'still ok');
    assert.equal(proxy.stats().downstream_sess_total, 1);
    await closeSocket(good);
    await closeSocket(bad);
    await proxy.close();
    await echo.close();
  });

  test('allow admits only listed clients (IPv4 rules match IPv4-mapped clients on a dual-stack socket)', async (t) => {
    const echo = await udpEcho();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      allow: ['127.0.0.1'],
    });
    let port: number;
    try {
      ({ port } = await proxy.bind({ port: 0, address: '::' }));
    } catch {
      t.skip('cannot bind a dual-stack socket on ::');
      await proxy.close();
      await echo.close();
      return;
    }
    const drops: UdpDrop[] = [];
    proxy.on('dropped', (d) => drops.push(d));
    const allowed = await clientFrom('127.0.0.1');
    const other = await clientFrom('127.0.0.3');
    assert.equal((await request(allowed, port, 'mapped')).toString(), 'mapped');
    const dropped = nextDrop(proxy);
    other.send('nope', port, '127.0.0.1');
    await dropped;
    assert.equal(drops[0]?.reason, DropReason.DENIED);
    assert.equal(drops[0].clientAddress, '::ffff:127.0.0.3');
    await closeSocket(allowed);
    await closeSocket(other);
    await proxy.close();
    await echo.close();
  });

  test('perClient.maxSessions caps sessions per client address, not per port', async () => {
    const echo = await udpEcho();
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perClient: { maxSessions: 2 },
    });
    const drops: UdpDrop[] = [];
    proxy.on('dropped', (d) => drops.push(d));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const a = await clientFrom('127.0.0.1');
    const b = await clientFrom('127.0.0.1');
    const c = await clientFrom('127.0.0.1');
    const elsewhere = await clientFrom('127.0.0.2');
    assert.equal((await request(a, port, 'a')).toString(), 'a');
    assert.equal((await request(b, port, 'b')).toString(), 'b');
    let answered = false;
    c.on('message', () => (answered = true));
    const dropped = nextDrop(proxy);
    c.send('c', port, '127.0.0.1');
    assert.equal((await dropped).reason, DropReason.CLIENT_LIMIT);
    assert.equal(drops[0]?.reason, DropReason.CLIENT_LIMIT);
    assert.equal((await request(elsewhere, port, 'other address')).toString(), 'other address');
    assert.equal(proxy.stats().dropped.client_limit, 1);
    assert.equal(answered, false, 'the refused client got no reply');
    assert.equal(proxy.stats().downstream_sess_active, 3);
    for (const s of [a, b, c, elsewhere]) await closeSocket(s);
    await proxy.close();
    await echo.close();
  });

  test('clients on one port from three addresses each keep their own session, as sessions come and go', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const clients = await clientsOnOnePort(['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    t.after(() => Promise.all(clients.map(closeSocket)));
    const [a, b, c] = clients as [dgram.Socket, dgram.Socket, dgram.Socket];
    const shared = a.address().port;
    for (const [client, name] of [
      [a, 'a'],
      [b, 'b'],
      [c, 'c'],
      [a, 'a2'],
      [c, 'c2'],
    ] as const)
      assert.equal((await request(client, port, name)).toString(), name);
    const byAddress = (): string[] =>
      proxy
        .sessions()
        .map((s) => `${s.clientAddress}:${String(s.clientPort)}`)
        .sort();
    const three = ['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((ip) => `${ip}:${String(shared)}`);
    assert.deepEqual(byAddress(), three);
    // The first client's session ends: the two others are still found, no new session opens.
    proxy
      .sessions()
      .find((s) => s.clientAddress === '127.0.0.2')
      ?.close();
    for (const [client, name] of [
      [b, 'b3'],
      [c, 'c3'],
    ] as const)
      assert.equal((await request(client, port, name)).toString(), name);
    assert.equal(proxy.stats().downstream_sess_total, 3);
    // It comes back: a new session of its own, beside the others.
    assert.equal((await request(a, port, 'a4')).toString(), 'a4');
    assert.equal(proxy.stats().downstream_sess_total, 4);
    assert.deepEqual(byAddress(), three);
  });

  test('perClient.ipv4Prefix 24: sessions from 127.0.0.2 and 127.0.0.3 count as one client', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perClient: { maxSessions: 1, ipv4Prefix: 24 },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const a = await clientFrom('127.0.0.2');
    const b = await clientFrom('127.0.0.3');
    t.after(() => Promise.all([a, b].map(closeSocket)));
    assert.equal((await request(a, port, 'a')).toString(), 'a');
    const dropped = nextDrop(proxy);
    b.send('b', port, '127.0.0.1');
    assert.equal((await dropped).reason, DropReason.CLIENT_LIMIT);
    assert.equal(proxy.stats().dropped.client_limit, 1);
  });

  test('perClient.sessionsPerSecond with burst drops new sessions beyond the burst (rate_limited), per client address', async () => {
    const echo = await udpEcho();
    // One new session per second, burst 2: a third session within the same second finds no token.
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perClient: { sessionsPerSecond: 1, burst: 2 },
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const a = await clientFrom('127.0.0.1');
    const b = await clientFrom('127.0.0.1');
    const c = await clientFrom('127.0.0.1');
    const elsewhere = await clientFrom('127.0.0.2');
    assert.equal((await request(a, port, 'a')).toString(), 'a');
    assert.equal((await request(b, port, 'b')).toString(), 'b');
    const dropped = nextDrop(proxy);
    c.send('c', port, '127.0.0.1');
    assert.equal((await dropped).reason, DropReason.RATE_LIMITED);
    assert.equal((await request(elsewhere, port, 'other address')).toString(), 'other address');
    // A live session is not a new one: it keeps going with the bucket empty.
    assert.equal((await request(a, port, 'again')).toString(), 'again');
    assert.equal(proxy.stats().dropped.rate_limited, 1);
    assert.equal(proxy.stats().downstream_sess_active, 3);
    for (const s of [a, b, c, elsewhere]) await closeSocket(s);
    await proxy.close();
    await echo.close();
  });

  test('perClient.tableSize bounds the clients remembered under a flood of distinct source addresses (127.1.x.y)', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    // Each session ends at its reply with its bucket spent: its client stays remembered (until
    // the bucket refills and the sweep runs), unless the table is full.
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxResponses: 1,
      perClient: { sessionsPerSecond: 1, tableSize: 200 },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const sources = 600;
    for (let batch = 0; batch < sources; batch += 50) {
      const clients = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          clientFrom(`127.1.${String((batch + i) >> 8)}.${String((batch + i) & 255)}`),
        ),
      );
      try {
        const replies = await Promise.all(clients.map((client) => request(client, port, 'q')));
        assert.ok(replies.every((reply) => reply.toString() === 'q'));
      } finally {
        await Promise.all(clients.map(closeSocket));
      }
    }
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, sources, 'every source admitted');
    assert.equal(stats.per_client_table_active, 200);
    assert.equal(stats.per_client_table_evicted, sources - 200);
    assert.match(proxy.metrics(), /^l4proxy_udp_per_client_table_active 200$/m);
    assert.match(proxy.metrics(), /^l4proxy_udp_per_client_table_evicted_total 400$/m);
  });
});
