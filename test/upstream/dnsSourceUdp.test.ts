import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { Socket } from 'node:dgram';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { DnsSource, UdpProxy } from '../../src/index.js';
import type { UdpProxyEvents } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { closeSocket, nextMessage, udpSocket } from '../udp/helpers.js';
import { testDnsmasq } from './dnsmasq.js';

/**
 * A `UdpProxy` whose upstreams come from a `DnsSource` following a real dnsmasq: the records
 * change, dnsmasq stops, comes back, answers NXDOMAIN; and active checks of the addresses it
 * gives. The TCP proxy's side is in DnsSource.test.ts.
 */

const NAME = 'svc.example.test';

/**
 * UDP servers on several loopback addresses sharing one port (A records carry no port), each
 * answering `<its address> <datagram>`; `received` counts datagrams per address, `next(host)`
 * resolves at the next one there.
 */
async function taggedOnOnePort(hosts: readonly string[]): Promise<{
  port: number;
  received: Map<string, number>;
  next(host: string): Promise<void>;
  close(): Promise<void>;
}> {
  const received = new Map<string, number>(hosts.map((host) => [host, 0]));
  const waiters = new Map<string, (() => void)[]>();
  const next = (host: string): Promise<void> =>
    new Promise((resolve) => {
      waiters.set(host, [...(waiters.get(host) ?? []), resolve]);
    });
  const sockets: Socket[] = [];
  const closeAll = async (): Promise<void> => {
    for (const socket of sockets.splice(0)) await closeSocket(socket);
  };
  for (let attempt = 0; attempt < 10; attempt++) {
    let port = 0;
    try {
      for (const host of hosts) {
        const socket = dgram.createSocket('udp4');
        sockets.push(socket);
        socket.on('message', (msg, from) => {
          received.set(host, (received.get(host) ?? 0) + 1);
          for (const wake of waiters.get(host) ?? []) wake();
          waiters.delete(host);
          socket.send(`${host} ${msg.toString()}`, from.port, from.address);
        });
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject);
          socket.bind(port, host, () => {
            socket.removeListener('error', reject);
            socket.on('error', () => undefined);
            resolve();
          });
        });
        port = socket.address().port;
      }
      return { port, received, next, close: closeAll };
    } catch {
      await closeAll();
    }
  }
  throw new Error('no common free UDP port on the loopback addresses');
}

/** The first `event` of `proxy` whose arguments satisfy `accept` (bounded in time). */
function nextEvent<E extends keyof UdpProxyEvents>(
  proxy: UdpProxy,
  event: E,
  accept: (...args: Parameters<UdpProxyEvents[E]>) => boolean = () => true,
  ms = 10_000,
): Promise<Parameters<UdpProxyEvents[E]>> {
  const emitter = proxy as unknown as {
    on(event: string, listener: (...args: unknown[]) => void): unknown;
    off(event: string, listener: (...args: unknown[]) => void): unknown;
  };
  let listener: ((...args: unknown[]) => void) | undefined;
  const promise = new Promise<Parameters<UdpProxyEvents[E]>>((resolve) => {
    listener = (...args: unknown[]) => {
      const typed = args as Parameters<UdpProxyEvents[E]>;
      if (accept(...typed)) resolve(typed);
    };
    emitter.on(event, listener);
  });
  return withTimeout(promise, ms, `'${event}'`).finally(() => {
    if (listener) emitter.off(event, listener);
  });
}

/** A client socket (one session): sends `text` and returns the reply. */
async function client(t: TestContext, port: number): Promise<(text: string) => Promise<string>> {
  const socket = await udpSocket();
  t.after(() => closeSocket(socket));
  return async (text) => {
    const reply = nextMessage(socket, 10_000);
    socket.send(text, port, '127.0.0.1');
    return (await reply).toString();
  };
}

function ids(upstreams: readonly { id: string }[]): string[] {
  return upstreams.map((u) => u.id).sort();
}

describe('UdpProxy with a DnsSource on dnsmasq', () => {
  test('new sessions follow the records, sessions opened before stay; dnsmasq stopped: the set is kept, counted, reported; back: followed again; NXDOMAIN: kept (onEmpty keep), reported', async (t) => {
    const dns = await testDnsmasq(t, { hosts: { [NAME]: ['127.0.0.2'] } });
    if (dns === undefined) return;
    const servers = await taggedOnOnePort(['127.0.0.2', '127.0.0.3']);
    t.after(() => servers.close());
    const source = new DnsSource({
      name: NAME,
      port: servers.port,
      servers: [dns.server],
      refreshInterval: 200,
      failureRefreshInterval: 100,
      timeout: 300,
      tries: 1,
    });
    const proxy = new UdpProxy({ upstreamSource: source, idleTimeout: 60_000 });
    t.after(() => proxy.close());
    const errors: Error[] = [];
    proxy.on('upstreamSourceError', (error) => errors.push(error));
    const first = nextEvent(proxy, 'upstreamsChange');
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    if (proxy.upstreams().length === 0) await first;
    const at2 = `127.0.0.2:${servers.port}`;
    const at3 = `127.0.0.3:${servers.port}`;
    assert.deepEqual(ids(proxy.upstreams()), [at2]);

    const early = await client(t, port);
    assert.equal(await early('a1'), '127.0.0.2 a1');

    // The record moves: the next lookup delivers it; the open session stays where it was.
    const moved = nextEvent(proxy, 'upstreamsChange', (list) => ids(list).includes(at3));
    await dns.setHosts({ [NAME]: ['127.0.0.3'] });
    await moved;
    assert.deepEqual(ids(proxy.upstreams()), [at3]);
    assert.equal(await early('a2'), '127.0.0.2 a2', 'the session opened before stays');
    assert.equal(await (await client(t, port))('b1'), '127.0.0.3 b1', 'a new session follows');

    // dnsmasq stopped: lookups fail (ECONNREFUSED), the last good set stays, counted.
    const errorsBefore = proxy.stats().upstream_source_errors;
    await dns.stop();
    const [failure] = await nextEvent(proxy, 'upstreamSourceError');
    assert.match(failure.message, /failed/);
    assert.ok(proxy.stats().upstream_source_errors > errorsBefore);
    assert.ok(source.stats().failures >= 1);
    assert.deepEqual(ids(proxy.upstreams()), [at3]);
    assert.equal(await (await client(t, port))('c1'), '127.0.0.3 c1');

    // Back, with the record moved back meanwhile: the failure schedule (100 ms, doubling up
    // to refreshInterval) picks it up.
    await dns.setHosts({ [NAME]: ['127.0.0.2'] }, false);
    const back = nextEvent(proxy, 'upstreamsChange', (list) => ids(list).includes(at2));
    await dns.start();
    await back;
    assert.equal(await (await client(t, port))('d1'), '127.0.0.2 d1');

    // NXDOMAIN (the name removed): the set stays (onEmpty 'keep'), reported, counted empty.
    const emptyBefore = source.stats().empty;
    const noRecord = nextEvent(proxy, 'upstreamSourceError', (error) =>
      /returned no record/.test(error.message),
    );
    await dns.setHosts({ other: ['127.0.0.9'] });
    await noRecord;
    assert.ok(source.stats().empty > emptyBefore);
    assert.deepEqual(ids(proxy.upstreams()), [at2]);
    assert.equal(await (await client(t, port))('e1'), '127.0.0.2 e1');
    assert.equal(await early('a3'), '127.0.0.2 a3', 'the first session lived through it all');
    assert.ok(errors.length >= 2);
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, 5);
    // .2 left the set and came back: its counters start again (d1, e1), as a new upstream's.
    assert.equal(stats.upstreams[at2]?.upstream_sess_total, 2);
  });

  test('active checks follow the re-resolved set: a dead address answered is checked out, one that replaces it is checked and used, the removed one no longer listed', async (t) => {
    const dns = await testDnsmasq(t, {
      hosts: { [NAME]: ['127.0.0.2', '127.0.0.3'] },
    });
    if (dns === undefined) return;
    // .2 and .4 answer; nothing listens on .3 (the probe gets ICMP port unreachable).
    const servers = await taggedOnOnePort(['127.0.0.2', '127.0.0.4']);
    t.after(() => servers.close());
    const source = new DnsSource({
      name: NAME,
      port: servers.port,
      servers: [dns.server],
      refreshInterval: 200,
      timeout: 300,
      tries: 1,
    });
    const proxy = new UdpProxy({
      upstreamSource: source,
      idleTimeout: 60_000,
      healthCheck: { interval: 100, timeout: 2_000, udp: { send: 'probe', expect: 'probe' } },
    });
    t.after(() => proxy.close());
    const at2 = `127.0.0.2:${servers.port}`;
    const at3 = `127.0.0.3:${servers.port}`;
    const at4 = `127.0.0.4:${servers.port}`;
    const down = nextEvent(proxy, 'upstreamHealth', (u, healthy) => u.id === at3 && !healthy);
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    await down;
    assert.deepEqual(ids(proxy.upstreams()), [at2, at3]);
    for (let i = 0; i < 4; i++)
      assert.equal(await (await client(t, port))(`x${i}`), `127.0.0.2 x${i}`);

    // .3 leaves the answer, .4 joins: .4 is checked (healthy until its first check, which
    // passes) and takes new sessions; .3 is gone from the set and its stats.
    const probesAt4 = servers.received.get('127.0.0.4') ?? 0;
    const changed = nextEvent(proxy, 'upstreamsChange', (list) => ids(list).includes(at4));
    await dns.setHosts({ [NAME]: ['127.0.0.2', '127.0.0.4'] });
    await changed;
    assert.deepEqual(ids(proxy.upstreams()), [at2, at4]);
    if ((servers.received.get('127.0.0.4') ?? 0) === probesAt4)
      await withTimeout(servers.next('127.0.0.4'), 10_000, 'a check of the new address');
    const replies = new Set<string>();
    for (let i = 0; i < 4; i++)
      replies.add((await (await client(t, port))(`y${i}`)).split(' ')[0] ?? '');
    assert.deepEqual([...replies].sort(), ['127.0.0.2', '127.0.0.4']);
    assert.equal(proxy.stats().upstreams[at3], undefined);
    assert.ok(proxy.upstreams().every((u) => u.healthy));
  });
});
