import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import type { Server } from 'node:net';
import type { Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  InvalidOptionError,
  ListenError,
  TcpProxy,
  TunnelServer,
  UdpProxy,
} from '../../src/index.js';
import { connect, echoServer, readAll } from '../helpers/net.js';
import { Child } from '../udp/child.js';
import { closeSocket, hasIpv6Loopback, request, udpEcho, udpSocket } from '../udp/helpers.js';

const adoptChild = fileURLToPath(new URL('./fixtures/adoptChild.js', import.meta.url));

/** The descriptor under a listening `net.Server` or a bound `dgram` socket (Node's handle). */
function fdOf(socket: Server | UdpSocket): number {
  if (socket instanceof net.Server) {
    const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
    if (typeof fd === 'number') return fd;
  }
  for (const symbol of Object.getOwnPropertySymbols(socket)) {
    const state = (socket as unknown as Record<symbol, { handle?: { fd?: number } } | undefined>)[
      symbol
    ];
    if (typeof state?.handle?.fd === 'number') return state.handle.fd;
  }
  throw new Error('no fd');
}

async function tcpListener(): Promise<Server> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

function optionOf(err: unknown): string | undefined {
  return err instanceof InvalidOptionError ? err.option : undefined;
}

describe('listen({ fd }): adopting a bound socket', () => {
  test('fd that is not an integer, or given with an address, is an InvalidOptionError naming fd', async () => {
    const tcp = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 1 }] });
    const udp = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: 1 }] });
    const tunnel = new TunnelServer({});
    const refused = [
      tcp.listen({ fd: '3' as unknown as number }),
      tcp.listen({ fd: -1 }),
      tcp.listen({ fd: 3, port: 8080 }),
      tcp.listen({ fd: 3, path: '/tmp/x.sock' } as never),
      tcp.listen({ fd: 3, reusePort: false }),
      udp.bind({ fd: 1.5 }),
      udp.bind({ fd: 0 }),
      udp.bind({ fd: 4, address: '127.0.0.1' }),
      tunnel.listen({ fd: 5, host: '127.0.0.1' }),
    ];
    for (const attempt of refused) {
      const err = await attempt.then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.equal(optionOf(err), 'fd', String(err));
    }
    await Promise.all([tcp.close(), udp.close(), tunnel.close()]);
  });

  test('a UDP fd to TcpProxy, a TCP fd to UdpProxy, or a file is a ListenError; the socket given stays open', async () => {
    const upstream = await echoServer();
    const tcpServer = await tcpListener();
    const { port } = tcpServer.address() as net.AddressInfo;
    const udpEchoServer = await udpEcho('u:');
    const fileFd = openSync(fileURLToPath(import.meta.url), 'r');
    const tcp = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }] });
    const udp = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: 1 }] });
    const tunnel = new TunnelServer({});
    try {
      await assert.rejects(tcp.listen({ fd: fdOf(udpEchoServer.socket) }), (err: Error) => {
        assert.ok(err instanceof ListenError);
        assert.match(err.message, /fd \d+.*UDP socket/);
        return true;
      });
      await assert.rejects(tunnel.listen({ fd: fdOf(udpEchoServer.socket) }), ListenError);
      await assert.rejects(udp.bind({ fd: fdOf(tcpServer) }), (err: Error) => {
        assert.ok(err instanceof ListenError);
        assert.match(err.message, /fd \d+ as a UDP socket.*TCP/);
        return true;
      });
      for (const attempt of [tcp.listen({ fd: fileFd }), udp.bind({ fd: fileFd })])
        await assert.rejects(attempt, /not a socket/);
      // Neither socket was taken: both still work.
      const client = await udpSocket();
      assert.equal((await request(client, udpEchoServer.port, 'x')).toString(), 'u:x');
      await closeSocket(client);
      (await connect(port)).destroy();
      assert.deepEqual(tcp.addresses(), []);
      assert.deepEqual(udp.addresses(), []);
    } finally {
      closeSync(fileFd);
      await Promise.all([tcp.close(), udp.close(), tunnel.close()]);
      await udpEchoServer.close();
      await upstream.close();
      await new Promise((resolve) => tcpServer.close(resolve));
    }
  });

  test('a child adopts inherited TCP, UDP (IPv6) and tunnel sockets: queued clients are served, close() closes them', async (t) => {
    const v6 = await hasIpv6Loopback();
    if (!v6) {
      t.skip('no IPv6 loopback (::1)');
      return;
    }
    const upstream = await echoServer();
    const udpUpstream = await udpEcho('u:');
    const tcpServer = await tcpListener();
    const tunnelServer = await tcpListener();
    const udpBound = await udpSocket('::1');
    const tcpPort = (tcpServer.address() as net.AddressInfo).port;
    const tunnelPort = (tunnelServer.address() as net.AddressInfo).port;
    const udpPort = udpBound.address().port;
    const child = new Child(
      spawn(process.execPath, [adoptChild, `${upstream.port},${udpUpstream.port}`], {
        stdio: [
          'ignore',
          'inherit',
          'inherit',
          fdOf(tcpServer),
          fdOf(udpBound),
          fdOf(tunnelServer),
          'ipc',
        ],
      }),
    );
    try {
      // The parent lets go of its copies; a client connecting now waits in the kernel's queue.
      await new Promise((resolve) => tcpServer.close(resolve));
      await new Promise((resolve) => tunnelServer.close(resolve));
      await closeSocket(udpBound);
      const early = await connect(tcpPort);
      const earlyReply = readAll(early);
      early.end('queued before the child listened');
      const ready = (await child.next('ready', 20_000)) as unknown as {
        tcpAddress: net.AddressInfo;
        udpAddress: net.AddressInfo;
        tunnelAddress: net.AddressInfo;
      };
      assert.equal(ready.tcpAddress.port, tcpPort);
      assert.deepEqual(
        [ready.udpAddress.address, ready.udpAddress.port, ready.udpAddress.family],
        ['::1', udpPort, 'IPv6'],
      );
      assert.equal(ready.tunnelAddress.port, tunnelPort);
      assert.equal((await earlyReply).toString(), 'queued before the child listened');
      const client = await udpSocket('::1');
      assert.equal((await request(client, udpPort, 'over v6', '::1')).toString(), 'u:over v6');
      await closeSocket(client);
      const tunnelClient = await connect(tunnelPort);
      const answer = readAll(tunnelClient);
      const authority = `127.0.0.1:${upstream.port}`;
      tunnelClient.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      tunnelClient.end();
      assert.match((await answer).toString(), /^HTTP\/1\.1 200 /);
      child.process.send({ type: 'close' });
      await child.next('closed', 10_000);
      // close() closed the adopted descriptors: nothing listens there any more.
      await assert.rejects(connect(tcpPort), /ECONNREFUSED/);
    } finally {
      await child.stop();
      await udpUpstream.close();
      await upstream.close();
    }
  });
});
