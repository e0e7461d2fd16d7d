/**
 * Clients without an IP address (on a Unix socket listener): what `allow`/`deny`, the PROXY
 * protocol's `trusted`, `perClient` and the consistent-hash selector's default key do for them.
 * IP entries never match them; the `unix:` entry (nginx's `allow unix:`) does.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import {
  InvalidOptionError,
  TcpProxy,
  consistentHash,
  encodeProxyHeader,
} from '../../src/index.js';
import type { TcpConnectionInfo, TcpProxyOptions, TcpRejection } from '../../src/index.js';
import { echoServer, withTimeout } from '../helpers/net.js';
import { socketDir } from '../helpers/unixSocket.js';

/** A proxy on a Unix socket in a private directory, in front of an echo upstream. */
async function unixProxy(
  t: TestContext,
  options: Partial<TcpProxyOptions>,
): Promise<{ proxy: TcpProxy; path: string; rejections: TcpRejection[] }> {
  const echo = await echoServer();
  t.after(() => echo.close());
  const dir = socketDir(t, 'l4c-');
  const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }], ...options });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const rejections: TcpRejection[] = [];
  proxy.on('rejected', (rejection) => rejections.push(rejection));
  const path = join(dir, 'p.sock');
  await proxy.listen({ path });
  return { proxy, path, rejections };
}

/** What a client on `path` that sends `bytes` gets: the echo, or a refusal (nothing, closed). */
function exchange(t: TestContext, path: string, bytes: Buffer | string): Promise<string> {
  const client: Socket = net.connect({ path });
  t.after(() => client.destroy());
  let text = '';
  client.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    if (text.endsWith('ping')) client.end();
  });
  client.write(bytes);
  client.write('ping');
  return withTimeout(
    new Promise<string>((resolve) => {
      client.on('error', () => undefined);
      client.once('close', () => {
        resolve(text === '' ? 'refused' : text);
      });
    }),
    5_000,
    'the client to finish',
  );
}

describe('clients without an IP address (Unix socket listener)', () => {
  test("allow: IP entries never match a Unix client (denied); 'unix:' admits it", async (t) => {
    const ipOnly = await unixProxy(t, { allow: ['127.0.0.0/8', '::1'] });
    assert.equal(await exchange(t, ipOnly.path, ''), 'refused');
    assert.equal(ipOnly.rejections[0]?.reason, 'denied');
    assert.equal(ipOnly.rejections[0].clientAddress, '', 'it has no address');
    const withUnix = await unixProxy(t, { allow: ['127.0.0.0/8', 'unix:'] });
    assert.equal(await exchange(t, withUnix.path, ''), 'ping');
  });

  test("deny: 0.0.0.0/0 and ::/0 leave a Unix client alone; 'unix:' refuses it", async (t) => {
    const everyIp = await unixProxy(t, { deny: ['0.0.0.0/0', '::/0'] });
    assert.equal(await exchange(t, everyIp.path, ''), 'ping');
    const unix = await unixProxy(t, { deny: ['unix:'] });
    assert.equal(await exchange(t, unix.path, ''), 'refused');
    assert.equal(unix.rejections[0]?.reason, 'denied');
    assert.equal(unix.proxy.stats().rejected_reasons.denied, 1);
  });

  test("acceptProxyProtocol.trusted 'unix:' trusts Unix clients (a local HAProxy's send-proxy): the header's client is the client", async (t) => {
    const header = encodeProxyHeader({
      version: 1,
      command: 'PROXY',
      protocol: 'TCP4',
      source: { address: '198.51.100.7', port: 5555 },
      destination: { address: '198.51.100.1', port: 443 },
    });
    const trusted = await unixProxy(t, {
      acceptProxyProtocol: { trusted: ['unix:'] },
      deny: ['198.51.100.7'],
    });
    assert.equal(await exchange(t, trusted.path, header), 'refused');
    assert.equal(trusted.rejections[0]?.reason, 'denied');
    assert.equal(trusted.rejections[0].clientAddress, '198.51.100.7');
    // Not trusted (an IP list): the header is no header, so it is relayed as data.
    const untrusted = await unixProxy(t, { acceptProxyProtocol: { trusted: ['127.0.0.1'] } });
    assert.equal(await exchange(t, untrusted.path, header), `${header.toString()}ping`);
  });

  test('perClient: every Unix client is one client (client_limit for the second)', async (t) => {
    const { proxy, path, rejections } = await unixProxy(t, { perClient: { maxConnections: 1 } });
    const connected = new Promise<TcpConnectionInfo>((resolve) =>
      proxy.once('connection', resolve),
    );
    const first = net.connect({ path });
    t.after(() => first.destroy());
    first.on('error', () => undefined);
    await withTimeout(connected, 5_000, 'the first client');
    assert.equal(await exchange(t, path, ''), 'refused');
    assert.equal(rejections[0]?.reason, 'client_limit');
  });

  test('consistentHash (default key): Unix clients are spread (weighted random), not all sent to one upstream', async (t) => {
    const hits = new Map<number, number>();
    const upstreams = await Promise.all(
      [0, 1].map(async () => {
        const echo = await echoServer();
        t.after(() => echo.close());
        echo.server.on('connection', (socket: Socket) => {
          const port = (socket.address() as AddressInfo).port;
          hits.set(port, (hits.get(port) ?? 0) + 1);
        });
        return { host: '127.0.0.1', port: echo.port };
      }),
    );
    const { path } = await unixProxy(t, { upstreams, selector: consistentHash() });
    // Both of two equal upstreams within 40 clients: all on one has probability 2^-39.
    for (let i = 0; i < 40 && hits.size < 2; i++) assert.equal(await exchange(t, path, ''), 'ping');
    assert.equal(hits.size, 2, `upstreams reached: ${JSON.stringify([...hits])}`);
  });

  test("'unix:' is the one non-IP entry: 'unix' or 'unix:/path' are refused naming the entry", () => {
    for (const entry of ['unix', 'unix:/run/x.sock', 'UNIX:']) {
      assert.throws(
        () => new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: 9 }], allow: [entry] }),
        (error: unknown) => error instanceof InvalidOptionError && error.option === 'allow[0]',
        entry,
      );
    }
  });
});
