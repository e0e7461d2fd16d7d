/**
 * `perClient.ipv4Prefix` / `ipv6Prefix`: one client is a network, not an address. Distinct IPv6
 * sources come from PROXY v2 headers of a trusted peer on 127.0.0.1 (loopback has only ::1);
 * distinct IPv4 sources are 127.0.0.x, also reaching a dual-stack listener as `::ffff:127.0.0.x`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { encodeProxyHeader } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { echoServer } from '../helpers/net.js';
import { dialFrom, received, recordingProxy } from '../helpers/recordingProxy.js';
import type { ClientRun, RecordingProxy } from '../helpers/recordingProxy.js';

/** An echo upstream and a proxy in front of it, both closed after the test. */
async function rig(
  t: TestContext,
  options: Partial<TcpProxyOptions>,
  host = '127.0.0.1',
): Promise<RecordingProxy> {
  const echo = await echoServer();
  t.after(() => echo.close());
  const proxy = await recordingProxy(
    { upstreams: [{ host: '127.0.0.1', port: echo.port }], ...options },
    { host },
  );
  t.after(() => proxy.close());
  return proxy;
}

/** A PROXY v2 header claiming the IPv6 client `source`. */
function claim6(source: string): Buffer {
  return encodeProxyHeader({
    version: 2,
    command: 'PROXY',
    protocol: 'TCP6',
    source: { address: source, port: 40000 },
    destination: { address: '2001:db8:ffff::1', port: 443 },
  });
}

/** A client (from 127.0.0.1 with a PROXY header claiming `source`, or from `from`) echoed back. */
async function admitted(proxy: RecordingProxy, header: Buffer, from?: string): Promise<ClientRun> {
  const client = dialFrom(proxy.port, '127.0.0.1', from);
  client.socket.write(Buffer.concat([header, Buffer.from('ping')]));
  assert.equal((await received(client.socket, 4)).toString(), 'ping', 'admitted');
  return client;
}

/** A client reset without a byte. */
async function refused(proxy: RecordingProxy, header: Buffer, from?: string): Promise<void> {
  const client = dialFrom(proxy.port, '127.0.0.1', from);
  client.socket.write(Buffer.concat([header, Buffer.from('ping')]));
  const { data, error } = await client.done;
  assert.equal(error?.code, 'ECONNRESET', 'reset');
  assert.equal(data.length, 0);
}

async function finish(clients: readonly ClientRun[]): Promise<void> {
  await Promise.all(
    clients.map(async (client) => {
      client.socket.end();
      await client.done;
    }),
  );
}

const NONE = Buffer.alloc(0);

describe('perClient.ipv6Prefix / ipv4Prefix', () => {
  test('ipv6Prefix 64: two addresses of one /64 share one budget (client_limit), another /64 has its own', async (t) => {
    const proxy = await rig(t, {
      acceptProxyProtocol: { trusted: ['127.0.0.1'] },
      perClient: { maxConnections: 1, ipv6Prefix: 64 },
    });
    const first = await admitted(proxy, claim6('2001:db8:1:2::a'));
    await refused(proxy, claim6('2001:db8:1:2:ffff::b'));
    const [rejection] = await proxy.rejected(1);
    assert.equal(rejection?.reason, 'client_limit');
    assert.equal(
      rejection.clientAddress,
      '2001:db8:1:2:ffff::b',
      'the client is still its address',
    );
    const other = await admitted(proxy, claim6('2001:db8:1:3::a'));
    assert.equal(proxy.proxy.stats().rejected_reasons.client_limit, 1);
    await finish([first, other]);
    await proxy.closed(2);
    // Its budget came back with the connection: the /64 may connect again.
    await finish([await admitted(proxy, claim6('2001:db8:1:2::c'))]);
  });

  test('without ipv6Prefix each IPv6 address is one client (the default, 128)', async (t) => {
    const proxy = await rig(t, {
      acceptProxyProtocol: { trusted: ['127.0.0.1'] },
      perClient: { maxConnections: 1 },
    });
    const clients = [
      await admitted(proxy, claim6('2001:db8:1:2::a')),
      await admitted(proxy, claim6('2001:db8:1:2::b')),
    ];
    await refused(proxy, claim6('2001:db8:1:2::a'));
    await finish(clients);
  });

  test('ipv6Prefix 48 with connectionsPerSecond: the /48 shares one bucket (rate_limited)', async (t) => {
    const proxy = await rig(t, {
      acceptProxyProtocol: { trusted: ['127.0.0.1'] },
      perClient: { connectionsPerSecond: 1, burst: 2, ipv6Prefix: 48 },
    });
    const clients = [
      await admitted(proxy, claim6('2001:db8:7:1::1')),
      await admitted(proxy, claim6('2001:db8:7:ffff::1')),
    ];
    await refused(proxy, claim6('2001:db8:7:2::9'));
    assert.equal((await proxy.rejected(1))[0]?.reason, 'rate_limited');
    clients.push(await admitted(proxy, claim6('2001:db8:8::1')));
    assert.equal(proxy.proxy.stats().rejected_reasons.rate_limited, 1);
    await finish(clients);
  });

  test('ipv4Prefix 24 on a dual-stack listener: 127.0.0.2 and ::ffff:127.0.0.3 are one client, keyed as IPv4', async (t) => {
    const proxy = await rig(t, { perClient: { maxConnections: 2, ipv4Prefix: 24 } }, '::');
    const first = await admitted(proxy, NONE, '127.0.0.2');
    assert.equal(proxy.connections[0]?.clientAddress, '::ffff:127.0.0.2', 'an IPv4-mapped client');
    const second = await admitted(proxy, NONE, '127.0.0.3');
    await refused(proxy, NONE, '127.0.0.4');
    assert.equal((await proxy.rejected(1))[0]?.reason, 'client_limit');
    await finish([first, second]);
    await proxy.closed(2);
  });

  test('ipv6Prefix 64 on a real IPv6 socket (::1): the client is keyed by its /64, refusals counted', async (t) => {
    const proxy = await rig(t, { perClient: { maxConnections: 1, ipv6Prefix: 64 } }, '::1');
    const dial = (): ClientRun => dialFrom(proxy.port, '::1');
    const first = dial();
    first.socket.write('ping');
    assert.equal((await received(first.socket, 4)).toString(), 'ping');
    assert.equal(proxy.connections[0]?.clientAddress, '::1');
    const second = dial();
    second.socket.write('ping');
    assert.equal((await second.done).error?.code, 'ECONNRESET');
    assert.equal((await proxy.rejected(1))[0]?.reason, 'client_limit');
    assert.equal(proxy.proxy.stats().rejected_reasons.client_limit, 1);
    await finish([first]);
  });

  test('ipv6Prefix applies to IPv6 only: IPv4 clients stay one per address', async (t) => {
    const proxy = await rig(t, { perClient: { maxConnections: 1, ipv6Prefix: 1 } });
    const clients = [
      await admitted(proxy, NONE, '127.0.0.2'),
      await admitted(proxy, NONE, '127.0.0.3'),
    ];
    await refused(proxy, NONE, '127.0.0.2');
    await finish(clients);
  });
});
