import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { TcpProxyOptions } from '../../src/index.js';
import { echoServer } from '../helpers/net.js';
import { dialFrom, received, recordingProxy } from '../helpers/recordingProxy.js';
import type { ClientRun, RecordingProxy } from '../helpers/recordingProxy.js';

/** An echo upstream counting the connections it accepted, and a proxy in front of it. */
async function rig(
  t: TestContext,
  options: TcpProxyOptions,
  listen: { host?: string; ipv6Only?: boolean } = {},
): Promise<{ proxy: RecordingProxy; accepted: () => number }> {
  const echo = await echoServer();
  t.after(() => echo.close());
  let accepted = 0;
  echo.server.on('connection', () => {
    accepted++;
  });
  const proxy = await recordingProxy(
    { upstreams: [{ host: '127.0.0.1', port: echo.port }], ...options },
    listen,
  );
  t.after(() => proxy.close());
  return { proxy, accepted: () => accepted };
}

/** A client from `from` whose bytes come back: it was admitted and relayed. */
async function admitted(
  proxy: RecordingProxy,
  from?: string,
  host = '127.0.0.1',
): Promise<ClientRun> {
  const client = dialFrom(proxy.port, host, from);
  client.socket.write('ping');
  assert.equal((await received(client.socket, 4)).toString(), 'ping', `${from ?? host} admitted`);
  return client;
}

/** A client from `from` that is reset without a byte. */
async function refused(proxy: RecordingProxy, from?: string, host = '127.0.0.1'): Promise<void> {
  const client = dialFrom(proxy.port, host, from);
  client.socket.write('ping');
  const { data, error } = await client.done;
  assert.equal(error?.code, 'ECONNRESET', `${from ?? host} is reset`);
  assert.equal(data.length, 0);
}

async function finish(client: ClientRun): Promise<void> {
  client.socket.end();
  await client.done;
}

describe('allow / deny', () => {
  test('IPv4: deny refuses a listed client (denied, reset, nothing dialled, counted); others pass', async (t) => {
    const { proxy, accepted } = await rig(t, { deny: ['127.0.0.2'] });
    await refused(proxy, '127.0.0.2');
    await finish(await admitted(proxy, '127.0.0.1'));
    const [rejection] = await proxy.rejected(1);
    assert.equal(rejection?.reason, 'denied');
    assert.equal(rejection.clientAddress, '127.0.0.2');
    assert.equal(rejection.peerAddress, '127.0.0.2');
    assert.equal(accepted(), 1, 'the refused client caused no upstream connection');
    const stats = proxy.proxy.stats();
    assert.equal(stats.downstream_cx_rejected, 1);
    assert.equal(stats.rejected_reasons.denied, 1);
    assert.equal(stats.downstream_cx_total, 1);
  });

  test('IPv4: allow admits only listed clients, and deny wins over allow', async (t) => {
    const { proxy } = await rig(t, { allow: ['127.0.0.0/30'], deny: ['127.0.0.2/32'] });
    await finish(await admitted(proxy, '127.0.0.1'));
    await finish(await admitted(proxy, '127.0.0.3'));
    await refused(proxy, '127.0.0.2');
    await refused(proxy, '127.0.0.4');
    const rejections = await proxy.rejected(2);
    assert.deepEqual(
      rejections.map((r) => [r.reason, r.clientAddress]),
      [
        ['denied', '127.0.0.2'],
        ['denied', '127.0.0.4'],
      ],
    );
  });

  test('IPv6: rules on ::1 admit or refuse IPv6 clients; IPv4 rules never match them', async (t) => {
    for (const [options, outcome] of [
      [{ deny: ['::1/128'] }, 'refused'],
      [{ allow: ['::1'] }, 'admitted'],
      [{ allow: ['fe80::/10'] }, 'refused'],
      [{ allow: ['127.0.0.0/8'] }, 'refused'],
      [{ deny: ['127.0.0.0/8'] }, 'admitted'],
    ] as const) {
      const { proxy } = await rig(t, options, { host: '::1' });
      if (outcome === 'admitted') await finish(await admitted(proxy, undefined, '::1'));
      else {
        await refused(proxy, undefined, '::1');
        assert.equal((await proxy.rejected(1))[0]?.clientAddress, '::1');
      }
    }
  });

  test('IPv4-mapped: on a dual-stack (::) listener 127.0.0.1 shows as ::ffff:127.0.0.1 and matches IPv4 rules', async (t) => {
    let deny: { proxy: RecordingProxy };
    try {
      // allow keeps the test's listener on every interface closed to anyone but loopback.
      deny = await rig(
        t,
        { allow: ['127.0.0.0/8', '::1'], deny: ['127.0.0.0/8'] },
        {
          host: '::',
          ipv6Only: false,
        },
      );
    } catch (error) {
      t.skip(`cannot listen on [::] dual-stack here: ${String(error)}`);
      return;
    }
    await refused(deny.proxy, '127.0.0.1');
    const [rejection] = await deny.proxy.rejected(1);
    assert.equal(rejection?.reason, 'denied');
    assert.equal(rejection.clientAddress, '::ffff:127.0.0.1');
    await finish(await admitted(deny.proxy, undefined, '::1'));

    const allow = await rig(t, { allow: ['127.0.0.1'] }, { host: '::', ipv6Only: false });
    await finish(await admitted(allow.proxy, '127.0.0.1'));
    await refused(allow.proxy, '127.0.0.2');
    const [summary] = await allow.proxy.closed(1);
    assert.equal(summary?.clientAddress, '::ffff:127.0.0.1');
  });
});

describe('perClient limits', () => {
  test('maxConnections refuses a client’s third concurrent connection (client_limit), not another client’s, and admits again after one closes', async (t) => {
    const { proxy, accepted } = await rig(t, { perClient: { maxConnections: 2 } });
    const first = await admitted(proxy, '127.0.0.1');
    const second = await admitted(proxy, '127.0.0.1');
    await refused(proxy, '127.0.0.1');
    const [rejection] = await proxy.rejected(1);
    assert.equal(rejection?.reason, 'client_limit');
    const other = await admitted(proxy, '127.0.0.2');
    assert.equal(accepted(), 3);

    await finish(first);
    await proxy.closed(1);
    const again = await admitted(proxy, '127.0.0.1');
    assert.equal(accepted(), 4);
    await Promise.all([finish(second), finish(other), finish(again)]);
    await proxy.closed(4);
    const stats = proxy.proxy.stats();
    assert.equal(stats.rejected_reasons.client_limit, 1);
    assert.equal(stats.downstream_cx_rejected, 1);
    assert.equal(stats.downstream_cx_total, 4);
  });

  test('connectionsPerSecond with burst refuses connections beyond the burst (rate_limited), per client', async (t) => {
    // 1 per second, burst 2: the third connection within the same second finds no token.
    const { proxy, accepted } = await rig(t, {
      perClient: { connectionsPerSecond: 1, burst: 2 },
    });
    const one = dialFrom(proxy.port);
    const two = dialFrom(proxy.port);
    const three = dialFrom(proxy.port);
    await proxy.decided(3);
    const rejections = await proxy.rejected(1);
    assert.deepEqual(
      rejections.map((r) => r.reason),
      ['rate_limited'],
    );
    assert.equal(proxy.connections.length, 2);
    const outcomes = await Promise.all(
      [one, two, three].map(async (client) => {
        client.socket.end();
        return (await client.done).error?.code;
      }),
    );
    assert.deepEqual(outcomes.filter((code) => code === 'ECONNRESET').length, 1);
    await finish(await admitted(proxy, '127.0.0.2'));
    await proxy.closed(3);
    assert.equal(accepted(), 3);
    assert.equal(proxy.proxy.stats().rejected_reasons.rate_limited, 1);
  });
});
