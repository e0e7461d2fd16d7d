import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { TcpProxy, encodeProxyHeader } from '../../src/index.js';
import type { ProxyHeader, TcpConnectionSummary } from '../../src/index.js';
import { closed, socketServer, withTimeout } from '../helpers/net.js';
import { socketDir } from '../helpers/unixSocket.js';
import { until } from '../helpers/until.js';

/*
 * A reset is told from a FIN by the client's transport: a TCP client's end may hide a reset
 * (libuv reports bytes and a RST read together as an end), a Unix socket has no reset (a
 * zero-length write to one that closed fully fails EPIPE). An accepted PROXY header changes who
 * the client is, not its transport: a TCP load balancer's header may name a UNIX_STREAM client,
 * and a local HAProxy on a Unix socket (`trusted: ['unix:']`) names TCP clients. The checks
 * followed the header's family: the first one's reset went on as a FIN (`completed`, the
 * upstream served bytes from a client that failed), the second one's clean close as a reset
 * (`downstream_reset`, the upstream reset).
 */

/**
 * How an upstream connection ended: its bytes and 'fin', 'reset', or the error's code. This peer
 * is Node too: bytes and a RST read together are an end to it, which a zero-length write tells
 * from a FIN (it fails on a reset connection).
 */
interface Ending {
  bytes: number;
  how: string;
}

async function recordingUpstream(): Promise<{
  port: number;
  sockets: Set<Socket>;
  endings: Promise<Ending>[];
  close(): Promise<void>;
}> {
  const endings: Promise<Ending>[] = [];
  const server = await socketServer((socket) => {
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    endings.push(
      new Promise<Ending>((resolve) => {
        socket.on('end', () => {
          socket.write(Buffer.alloc(0));
          resolve({ bytes, how: socket.errored === null ? 'fin' : 'reset' });
          socket.end();
        });
        socket.on('error', (err: NodeJS.ErrnoException) => {
          resolve({ bytes, how: err.code ?? err.message });
        });
      }),
    );
  });
  return { ...server, endings };
}

function proxyWithSummaries(proxy: TcpProxy): TcpConnectionSummary[] {
  const summaries: TcpConnectionSummary[] = [];
  proxy.on('connectionClose', (summary) => summaries.push(summary));
  return summaries;
}

describe('an accepted PROXY header does not change how a reset is told', () => {
  for (const relay of ['handle', 'onread'] as const) {
    test(`relay ${relay}: a TCP client named UNIX_STREAM that sends and resets at once is downstream_reset`, async () => {
      const upstream = await recordingUpstream();
      const proxy = new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        acceptProxyProtocol: { trusted: ['127.0.0.1'] },
        relay,
      });
      const summaries = proxyWithSummaries(proxy);
      const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
      const header = encodeProxyHeader({
        version: 2,
        command: 'PROXY',
        protocol: 'UNIX_STREAM',
        source: { path: '/run/client.sock' },
        destination: { path: '/run/l4proxy.sock' },
      });
      try {
        const runs = 10;
        for (let i = 0; i < runs; i++) {
          const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
          client.on('error', () => undefined);
          client.write(header);
          // Relaying (the upstream accepted): then the bytes and the RST at once.
          await until(() => upstream.endings.length > i, 'the upstream connection');
          client.write(Buffer.alloc(1000, 2), () => client.resetAndDestroy());
          await closed(client);
        }
        await until(() => summaries.length === runs, 'every connection to close');
        assert.deepEqual(
          summaries.map((s) => s.reason),
          Array.from({ length: runs }, () => 'downstream_reset'),
        );
        assert.equal(summaries[0]?.clientFamily, 'unix');
        const endings = await withTimeout(Promise.all(upstream.endings), 10_000, 'upstream ends');
        assert.deepEqual(
          endings.filter((e) => e.how === 'fin'),
          [],
          'no upstream got a FIN from a client that reset',
        );
      } finally {
        await proxy.close({ drainTimeout: 0 });
        await upstream.close();
      }
    });

    test(`relay ${relay}: a Unix socket client named TCP4 that sends and closes is completed, its FIN passed on`, async (t) => {
      const upstream = await recordingUpstream();
      const path = join(socketDir(t, 'l4p-pht-'), 'proxy.sock');
      const proxy = new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        acceptProxyProtocol: { trusted: ['unix:'] },
        relay,
      });
      const summaries = proxyWithSummaries(proxy);
      await proxy.listen({ path });
      const header: ProxyHeader = {
        version: 2,
        command: 'PROXY',
        protocol: 'TCP4',
        source: { address: '192.0.2.7', port: 40000 },
        destination: { address: '192.0.2.1', port: 5000 },
      };
      try {
        const runs = 5;
        for (let i = 0; i < runs; i++) {
          const client = net.connect({ path, allowHalfOpen: true });
          client.on('error', () => undefined);
          client.write(encodeProxyHeader(header));
          await until(() => upstream.endings.length > i, 'the upstream connection');
          // Sends and closes fully (no half-close): a Unix socket's only way to end.
          client.write(Buffer.alloc(1000, 3), () => client.destroy());
          await closed(client);
          await until(() => summaries.length > i, 'the connection to close');
        }
        assert.deepEqual(
          summaries.map((s) => s.reason),
          Array.from({ length: runs }, () => 'completed'),
        );
        assert.equal(summaries[0]?.clientAddress, '192.0.2.7');
        const endings = await withTimeout(Promise.all(upstream.endings), 10_000, 'upstream ends');
        assert.deepEqual(
          endings,
          Array.from({ length: runs }, () => ({ bytes: 1000, how: 'fin' })),
        );
      } finally {
        await proxy.close({ drainTimeout: 0 });
        await upstream.close();
      }
    });
  }
});
