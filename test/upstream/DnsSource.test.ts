import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import {
  CloseReason,
  DnsSource,
  InvalidOptionError,
  UpstreamSourceError,
} from '../../src/index.js';
import type { DnsSourceOptions, Upstream } from '../../src/index.js';
import { closed, connect, dial, readAll, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';
import { testDnsmasq } from './dnsmasq.js';
import { closeSocket, freeUdpPort, udpSocket } from '../udp/helpers.js';
import { nextEvent, trackResources } from './helpers.js';

const NAME = 'web.example.test';

/** Echo servers on several loopback addresses sharing one port (A records carry no port). */
async function echoOnOnePort(hosts: readonly string[]): Promise<{
  port: number;
  accepted: Map<string, number>;
  close(): Promise<void>;
}> {
  const accepted = new Map<string, number>(hosts.map((host) => [host, 0]));
  const sockets = new Set<Socket>();
  const servers: Server[] = [];
  const closeAll = async (): Promise<void> => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(
      servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))),
    );
  };
  for (let attempt = 0; attempt < 10; attempt++) {
    let port = 0;
    try {
      for (const host of hosts) {
        const server = net.createServer({ allowHalfOpen: true }, (socket) => {
          accepted.set(host, (accepted.get(host) ?? 0) + 1);
          sockets.add(socket);
          socket.on('error', () => undefined);
          socket.on('close', () => sockets.delete(socket));
          socket.pipe(socket);
        });
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, host, () => {
            resolve();
          });
        });
        servers.push(server);
        port = (server.address() as AddressInfo).port;
      }
      return { port, accepted, close: closeAll };
    } catch {
      await closeAll();
    }
  }
  throw new Error('no common free port on the loopback addresses');
}

function ids(upstreams: readonly { id: string }[]): string[] {
  return upstreams.map((u) => u.id).sort();
}

async function echoes(port: number, text: string): Promise<string> {
  const client = await connect(port);
  const reply = readAll(client);
  client.end(text);
  return (await reply).toString();
}

/** Collects every list and error a source delivers. */
function sink(): {
  lists: (readonly Upstream[])[];
  errors: Error[];
  update(list: readonly Upstream[]): void;
  error(err: Error): void;
  next(what: 'list' | 'error', ms?: number): Promise<void>;
} {
  const waiters: { what: 'list' | 'error'; resolve: () => void }[] = [];
  const wake = (what: 'list' | 'error'): void => {
    for (const waiter of waiters.splice(0)) {
      if (waiter.what === what) waiter.resolve();
      else waiters.push(waiter);
    }
  };
  const s = {
    lists: [] as (readonly Upstream[])[],
    errors: [] as Error[],
    update(list: readonly Upstream[]) {
      s.lists.push(list);
      wake('list');
    },
    error(err: Error) {
      s.errors.push(err);
      wake('error');
    },
    next(what: 'list' | 'error', ms = 5_000) {
      return withTimeout(
        new Promise<void>((resolve) => waiters.push({ what, resolve })),
        ms,
        `a DnsSource ${what}`,
      );
    },
  };
  return s;
}

/**
 * Echo servers on 127.0.0.2 and .3, a dnsmasq naming only .2, and a proxy whose `DnsSource`
 * follows it; all closed after the test. Resolves once the proxy has its first list; undefined
 * (the test skipped) without dnsmasq.
 */
async function proxyOnDnsmasq(t: TestContext, refreshInterval: number, timeout: number) {
  const dns = await testDnsmasq(t, { hosts: { [NAME]: ['127.0.0.2'] } });
  if (dns === undefined) return undefined;
  const echo = await echoOnOnePort(['127.0.0.2', '127.0.0.3']);
  t.after(() => echo.close());
  const source = new DnsSource({
    name: NAME,
    port: echo.port,
    servers: [dns.server],
    refreshInterval,
    timeout,
    tries: 1,
  });
  const { proxy } = await startProxyWith(source);
  t.after(() => proxy.close());
  if (proxy.upstreams().length === 0) await nextEvent(proxy, 'upstreamsChange');
  return { echo, dns, source, proxy };
}

describe('DnsSource against dnsmasq', () => {
  test('A records: the set follows the records within one refresh, and a live connection to a removed upstream keeps working', async (t) => {
    const rig = await proxyOnDnsmasq(t, 200, 500);
    if (rig === undefined) return;
    const { echo, dns, source, proxy } = rig;
    assert.deepEqual(ids(proxy.upstreams()), [`127.0.0.2:${echo.port}`]);
    const port = proxyPort(proxy);
    const live = await connect(port);
    live.write('before ');
    await withTimeout(
      new Promise((resolve) => live.once('data', resolve)),
      5_000,
      'the first echo',
    );

    const changed = nextEvent(proxy, 'upstreamsChange', (list) =>
      list.some((u) => u.host === '127.0.0.3'),
    );
    await dns.setHosts({ [NAME]: ['127.0.0.3'] });
    const lookupsWhenServed = source.stats().lookups;
    await changed;
    assert.ok(
      source.stats().lookups - lookupsWhenServed <= 1,
      'the change was picked up by the next lookup',
    );
    assert.deepEqual(ids(proxy.upstreams()), [`127.0.0.3:${echo.port}`]);
    assert.equal(await echoes(port, 'new'), 'new');
    assert.equal(echo.accepted.get('127.0.0.3'), 1, 'the new connection went to the new record');
    const reply = readAll(live);
    live.end('after');
    assert.equal((await reply).toString(), 'after', 'the live connection survived');
    assert.equal(echo.accepted.get('127.0.0.2'), 1);
    assert.ok(proxy.stats().upstream_source_updates >= 2);
    await proxy.close();
    await dns.close();
    await echo.close();
  });

  test('A records in rotating order: one update and one upstreamsChange over many lookups; a real change after rotation is delivered once', async (t) => {
    const hosts = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const dns = await testDnsmasq(t, { hosts: { [NAME]: hosts }, ttl: 1 });
    if (dns === undefined) return;
    const source = new DnsSource({
      name: NAME,
      port: 80,
      servers: [dns.server],
      refreshInterval: 100,
      timeout: 500,
      tries: 1,
    });
    const { proxy } = await startProxyWith(source);
    t.after(() => proxy.close());
    if (proxy.upstreams().length === 0) await nextEvent(proxy, 'upstreamsChange');
    let changes = 0;
    proxy.on('upstreamsChange', () => changes++);
    await lookupsReach(source, 12);
    assert.equal(source.stats().failures, 0);
    assert.equal(source.stats().updates, 1, 'the rotating answer is one set');
    assert.equal(changes, 0, 'no upstreamsChange after the first list');
    assert.equal(proxy.stats().upstream_source_updates, 1);
    assert.deepEqual(
      proxy.upstreams().map((u) => u.host),
      hosts,
      'the list is in a stable (sorted) order',
    );

    const changed = nextEvent(proxy, 'upstreamsChange');
    await dns.setHosts({ [NAME]: ['127.0.0.5', ...hosts] });
    await changed;
    const after = source.stats().lookups;
    await lookupsReach(source, after + 8);
    assert.equal(source.stats().updates, 2, 'the real change is one update');
    assert.equal(changes, 1, 'and one event');
    assert.deepEqual(
      proxy.upstreams().map((u) => u.host),
      [...hosts, '127.0.0.5'],
    );
    await proxy.close();
    await dns.close();
  });

  test('SRV targets with several rotating addresses: one list over many lookups', async (t) => {
    const srvName = '_web._tcp.example.test';
    const dns = await testDnsmasq(t, {
      hosts: {
        'a.example.test': ['127.0.0.2', '127.0.0.3', '127.0.0.4'],
        'b.example.test': ['127.0.0.5', '127.0.0.6'],
      },
      srv: [`${srvName},a.example.test,8080,0,10`, `${srvName},b.example.test,8081,1,10`],
    });
    if (dns === undefined) return;
    const s = sink();
    const source = new DnsSource({
      name: srvName,
      type: 'SRV',
      servers: [dns.server],
      refreshInterval: 100,
      timeout: 500,
      tries: 1,
    });
    t.after(() => {
      source.stop();
    });
    source.start(s);
    await lookupsReach(source, 12);
    source.stop();
    assert.deepEqual(s.errors, []);
    assert.equal(s.lists.length, 1, 'rotating target addresses are one set');
    assert.deepEqual(
      s.lists[0]?.map((u) => `${u.host}:${u.port} p${u.priority}`),
      [
        '127.0.0.2:8080 p0',
        '127.0.0.3:8080 p0',
        '127.0.0.4:8080 p0',
        '127.0.0.5:8081 p1',
        '127.0.0.6:8081 p1',
      ],
    );
    await dns.close();
  });

  test('failureRefreshInterval: a source that starts while its DNS server is down gets its upstreams soon after the server is back, not a refreshInterval later', async (t) => {
    const dns = await testDnsmasq(t, { hosts: { [NAME]: ['127.0.0.2'] } });
    if (dns === undefined) return;
    await dns.stop();
    const s = sink();
    const source = new DnsSource({
      name: NAME,
      port: 80,
      servers: [dns.server],
      refreshInterval: 600_000,
      failureRefreshInterval: 50,
      timeout: 200,
      tries: 1,
    });
    t.after(() => {
      source.stop();
    });
    source.start(s);
    // Lookups fail (the port refuses) and are retried after 50, 100, 200 ms...: not ten minutes.
    await lookupsReach(source, 3);
    assert.ok(source.stats().failures >= 3, 'each failed lookup counted');
    assert.equal(s.lists.length, 0);
    await dns.start();
    await s.next('list', 10_000);
    assert.deepEqual(
      s.lists[0]?.map((u) => `${u.host}:${String(u.port)}`),
      ['127.0.0.2:80'],
    );
  });

  test('respectTtl: a TTL shorter than refreshInterval brings the next lookup forward', async (t) => {
    const dns = await testDnsmasq(t, { hosts: { [NAME]: ['127.0.0.2'] }, ttl: 1 });
    if (dns === undefined) return;
    const make = (respectTtl: boolean): DnsSource =>
      new DnsSource({
        name: NAME,
        port: 80,
        servers: [dns.server],
        refreshInterval: 600_000,
        minRefreshInterval: 50,
        respectTtl,
      });
    const following = make(true);
    const ignoring = make(false);
    const s1 = sink();
    const s2 = sink();
    following.start(s1);
    ignoring.start(s2);
    await Promise.all([s1.next('list'), s2.next('list')]);
    // The TTL is 1 s: the next lookup comes after about a second instead of ten minutes.
    await until(() => following.stats().lookups >= 2, 'the second lookup, after the TTL');
    assert.equal(following.stats().lookups, 2);
    assert.equal(ignoring.stats().lookups, 1);
    following.stop();
    ignoring.stop();
    await dns.close();
  });

  test('SRV: priority and weight map to failover priority and weight, targets resolve through the same servers', async (t) => {
    const srvName = '_db._tcp.example.test';
    const dns = await testDnsmasq(t, {
      hosts: {
        'a.example.test': ['127.0.0.2'],
        'b.example.test': ['127.0.0.3'],
        'c.example.test': ['127.0.0.4', '127.0.0.5'],
      },
      srv: [
        `${srvName},a.example.test,5432,0,10`,
        `${srvName},b.example.test,5433,0,0`,
        `${srvName},c.example.test,5434,1,5`,
      ],
    });
    if (dns === undefined) return;
    const s = sink();
    const source = new DnsSource({ name: srvName, type: 'SRV', servers: [dns.server] });
    source.start(s);
    await s.next('list');
    const shape = (list: readonly Upstream[]): string[] =>
      list.map((u) => `${u.host}:${u.port} p${u.priority} w${u.weight}`).sort();
    assert.deepEqual(shape(s.lists[0] ?? []), [
      '127.0.0.2:5432 p0 w10',
      '127.0.0.3:5433 p0 w1',
      '127.0.0.4:5434 p1 w5',
      '127.0.0.5:5434 p1 w5',
    ]);
    assert.deepEqual(s.lists[0]?.[0]?.metadata, { dnsName: srvName, target: 'a.example.test' });
    source.stop();

    const names = sink();
    const byName = new DnsSource({
      name: srvName,
      type: 'SRV',
      srvTargets: 'hostname',
      servers: [dns.server],
    });
    byName.start(names);
    await names.next('list');
    assert.deepEqual(shape(names.lists[0] ?? []), [
      'a.example.test:5432 p0 w10',
      'b.example.test:5433 p0 w1',
      'c.example.test:5434 p1 w5',
    ]);
    byName.stop();
    await dns.close();
  });

  test('an SRV target whose lookup fails does not hold back the others: they are used at once, and its last good answer is kept while they change', async (t) => {
    const srvName = '_db._tcp.example.test';
    const srv = [`${srvName},a.example.test,5432,0,10`, `${srvName},b.example.test,5433,0,10`];
    // b.example.test forwarded to a server that is not there: its queries time out.
    const dead = [`--server=/b.example.test/127.0.0.1#${String(await freeUdpPort())}`];
    const dns = await testDnsmasq(t, {
      hosts: { 'a.example.test': ['127.0.0.2'] },
      srv,
      args: dead,
    });
    if (dns === undefined) return;
    const s = sink();
    const source = new DnsSource({
      name: srvName,
      type: 'SRV',
      servers: [dns.server],
      refreshInterval: 100,
      timeout: 300,
      tries: 1,
    });
    t.after(() => {
      source.stop();
    });
    const hosts = (list: readonly Upstream[] | undefined): string[] =>
      (list ?? []).map((u) => `${u.host}:${u.port}`).sort();
    const listOf = async (expected: string[]): Promise<void> => {
      for (let i = 0; i < 20 && hosts(s.lists.at(-1)).join() !== expected.join(); i++)
        await s.next('list');
      assert.deepEqual(hosts(s.lists.at(-1)), expected);
    };
    source.start(s);
    // Before, the whole lookup failed: no list at all while b.example.test did not resolve.
    await listOf(['127.0.0.2:5432']);
    assert.match(
      String(s.errors[0]?.message),
      /^DNS A lookup of b\.example\.test failed: \w+; using the other answers and the last good answer of the failed query$/,
    );
    assert.equal(source.stats().failures, s.errors.length);

    await dns.stop();
    await dns.setHosts({ 'a.example.test': ['127.0.0.2'], 'b.example.test': ['127.0.0.3'] }, false);
    await dns.start(srv, []);
    await listOf(['127.0.0.2:5432', '127.0.0.3:5433']);

    // b fails again while a gains an address: a's change is followed, b's last answer kept.
    await dns.stop();
    await dns.setHosts({ 'a.example.test': ['127.0.0.2', '127.0.0.4'] }, false);
    await dns.start(srv, dead);
    await listOf(['127.0.0.2:5432', '127.0.0.3:5433', '127.0.0.4:5432']);
    source.stop();
    await dns.close();
  });

  test('a failed lookup keeps the last good set and is reported; the set follows again once DNS is back', async (t) => {
    const rig = await proxyOnDnsmasq(t, 100, 200);
    if (rig === undefined) return;
    const { echo, dns, source, proxy } = rig;
    const failed = nextEvent(proxy, 'upstreamSourceError');
    await dns.stop();
    const [error] = await failed;
    assert.ok(error instanceof UpstreamSourceError);
    assert.equal(error.code, 'ERR_L4_UPSTREAM_SOURCE');
    assert.match(
      String((error.cause as NodeJS.ErrnoException | undefined)?.code),
      /ECONNREFUSED|ETIMEOUT/,
    );
    assert.deepEqual(ids(proxy.upstreams()), [`127.0.0.2:${echo.port}`], 'last good set kept');
    assert.equal(await echoes(proxyPort(proxy), 'still served'), 'still served');
    assert.ok(proxy.stats().upstream_source_errors >= 1);
    assert.ok(source.stats().failures >= 1);

    const back = nextEvent(proxy, 'upstreamsChange');
    await dns.setHosts({ [NAME]: ['127.0.0.3'] }, false);
    await dns.start();
    const [list] = await back;
    assert.deepEqual(ids(list), [`127.0.0.3:${echo.port}`]);
    await proxy.close();
    await dns.close();
    await echo.close();
  });

  test("an empty answer keeps the last set by default (reported), and empties it with onEmpty: 'clear'", async (t) => {
    const dns = await testDnsmasq(t, { hosts: { [NAME]: ['127.0.0.2'] } });
    if (dns === undefined) return;
    const options: DnsSourceOptions = {
      name: NAME,
      port: 9,
      servers: [dns.server],
      refreshInterval: 100,
      timeout: 500,
      tries: 1,
    };
    const { proxy: keeping } = await startProxyWith(new DnsSource(options));
    t.after(() => keeping.close());
    const { proxy: clearing, closes } = await startProxyWith(
      new DnsSource({ ...options, onEmpty: 'clear' }),
    );
    t.after(() => clearing.close());
    for (const proxy of [keeping, clearing]) {
      if (proxy.upstreams().length === 0) await nextEvent(proxy, 'upstreamsChange');
    }
    const reported = nextEvent(keeping, 'upstreamSourceError');
    const emptied = nextEvent(clearing, 'upstreamsChange', (list) => list.length === 0);
    await dns.setHosts({ [NAME]: [] });
    const [error] = await reported;
    assert.match(error.message, /returned no record; keeping the last 1 upstream/);
    await emptied;
    assert.equal(keeping.upstreams().length, 1);
    await closed(dial(proxyPort(clearing)));
    const [summary] = await closes(1);
    assert.equal(summary?.reason, CloseReason.NO_UPSTREAM);
    await keeping.close();
    await clearing.close();
    await dns.close();
  });
});

/**
 * A DNS server on 127.0.0.1 answering every A query with `a` (127.0.0.9) and every AAAA query with
 * ::1 (TTL 1), or with SERVFAIL while `failAaaa` is set: what dnsmasq cannot do per record type
 * (a resolver whose AAAA path is broken).
 */
async function aaaaBreakingDns(): Promise<{
  server: string;
  failAaaa: boolean;
  a: number[];
  close(): Promise<void>;
}> {
  const socket = await udpSocket();
  const state = {
    server: `127.0.0.1:${String(socket.address().port)}`,
    failAaaa: false,
    a: [127, 0, 0, 9],
    close: () => closeSocket(socket),
  };
  socket.on('message', (query, from) => {
    let end = 12;
    while (end < query.length && query[end] !== 0) end += (query[end] ?? 0) + 1;
    const question = query.subarray(12, end + 5);
    const type = query.readUInt16BE(end + 1);
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2);
    header.writeUInt16BE(1, 4);
    if (type === 28 && state.failAaaa) {
      header.writeUInt16BE(0x8182, 2); // response, RD, RA, SERVFAIL
      socket.send(Buffer.concat([header, question]), from.port, from.address);
      return;
    }
    header.writeUInt16BE(0x8580, 2); // response, AA, RD, RA
    header.writeUInt16BE(1, 6);
    const data =
      type === 1 ? Buffer.from(state.a) : Buffer.from('00000000000000000000000000000001', 'hex');
    const record = Buffer.alloc(12);
    record.writeUInt16BE(0xc00c, 0);
    record.writeUInt16BE(type, 2);
    record.writeUInt16BE(1, 4);
    record.writeUInt32BE(1, 6);
    record.writeUInt16BE(data.length, 10);
    socket.send(Buffer.concat([header, question, record, data]), from.port, from.address);
  });
  return state;
}

describe('DnsSource', () => {
  test("'A/AAAA': an AAAA query that fails while A answers keeps the AAAA addresses and follows A; reported, counted", async (t) => {
    const dns = await aaaaBreakingDns();
    t.after(() => dns.close());
    dns.failAaaa = true;
    const s = sink();
    const options = {
      name: 'x.test',
      type: 'A/AAAA',
      port: 80,
      servers: [dns.server],
      refreshInterval: 50,
      minRefreshInterval: 50,
      timeout: 500,
      tries: 1,
    } as const;
    // From the start: the A answer is used (before, no list at all while AAAA failed).
    const fresh = new DnsSource(options);
    t.after(() => {
      fresh.stop();
    });
    fresh.start(s);
    await s.next('list');
    assert.deepEqual(
      s.lists.at(-1)?.map((u) => u.host),
      ['127.0.0.9'],
    );
    assert.match(
      String(s.errors[0]?.message),
      /^DNS AAAA lookup of x\.test failed: ESERVFAIL; using the other answers/,
    );
    fresh.stop();

    // Once AAAA has answered, its addresses stay while it fails.
    dns.failAaaa = false;
    const later = sink();
    const source = new DnsSource(options);
    t.after(() => {
      source.stop();
    });
    source.start(later);
    await later.next('list');
    assert.deepEqual(
      later.lists.at(-1)?.map((u) => u.host),
      ['127.0.0.9', '::1'],
    );
    dns.failAaaa = true;
    await later.next('error');
    dns.a = [127, 0, 0, 8];
    await later.next('list');
    assert.deepEqual(
      later.lists.at(-1)?.map((u) => u.host),
      ['127.0.0.8', '::1'],
    );
    assert.ok(source.stats().failures >= 1);
    source.stop();
  });

  test('stop() cancels the lookup in flight: no list, no error, no timer or query left', async () => {
    const tracker = trackResources();
    // A DNS "server" that never answers.
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) =>
      silent.bind(0, '127.0.0.1', () => {
        resolve();
      }),
    );
    const s = sink();
    const source = new DnsSource({
      name: NAME,
      port: 80,
      servers: [`127.0.0.1:${silent.address().port}`],
      timeout: 10_000,
    });
    source.start(s);
    await withTimeout(
      new Promise((resolve) => silent.once('message', resolve)),
      5_000,
      'the query',
    );
    source.stop();
    await new Promise<void>((resolve) =>
      silent.close(() => {
        resolve();
      }),
    );
    assert.deepEqual(await tracker.settled(), {});
    tracker.stop();
    assert.deepEqual([s.lists.length, s.errors.length], [0, 0]);
  });

  test('closing the proxy stops its source', async () => {
    const tracker = trackResources();
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) =>
      silent.bind(0, '127.0.0.1', () => {
        resolve();
      }),
    );
    const source = new DnsSource({
      name: NAME,
      port: 80,
      servers: [`127.0.0.1:${silent.address().port}`],
    });
    const { proxy } = await startProxyWith(source);
    await withTimeout(
      new Promise((resolve) => silent.once('message', resolve)),
      5_000,
      'the query',
    );
    await proxy.close();
    await new Promise<void>((resolve) =>
      silent.close(() => {
        resolve();
      }),
    );
    assert.deepEqual(await tracker.settled(), {});
    tracker.stop();
  });

  const invalid: [Record<string, unknown>, string][] = [
    [{ port: 80 }, 'name'],
    [{ name: NAME }, 'port'],
    [{ name: NAME, type: 'SRV', port: 80 }, 'port'],
    [{ name: NAME, type: 'MX', port: 80 }, 'type'],
    [{ name: NAME, port: 80, servers: [] }, 'servers'],
    [{ name: NAME, port: 80, servers: [''] }, 'servers[0]'],
    [{ name: NAME, port: 80, servers: ['not an address'] }, 'servers'],
    [{ name: NAME, port: 80, refreshInterval: 0 }, 'refreshInterval'],
    [{ name: NAME, port: 80, failureRefreshInterval: 0 }, 'failureRefreshInterval'],
    [{ name: NAME, port: 80, failureRefreshInterval: 'soon' }, 'failureRefreshInterval'],
    [{ name: NAME, port: 80, respectTtl: 'yes' }, 'respectTtl'],
    [{ name: NAME, port: 80, tries: 0 }, 'tries'],
    [{ name: NAME, port: 80, onEmpty: 'drop' }, 'onEmpty'],
    [{ name: NAME, type: 'SRV', srvTargets: 'CNAME' }, 'srvTargets'],
    [{ name: NAME, port: 80, ttl: 5 }, 'ttl'],
  ];
  for (const [options, option] of invalid) {
    test(`rejects an invalid ${option} with ERR_L4_INVALID_OPTION naming it (${JSON.stringify(options)})`, () => {
      assert.throws(
        () => new DnsSource(options as unknown as DnsSourceOptions),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    });
  }
});

/**
 * Waits (bounded: 10 s) until `count` lookups of `source` have settled: a lookup starts only
 * after the previous one was answered and handled.
 */
async function lookupsReach(source: DnsSource, count: number): Promise<void> {
  await until(() => source.stats().lookups > count, `${count} lookups settled`, 10_000);
}

async function startProxyWith(source: DnsSource): Promise<Awaited<ReturnType<typeof startProxy>>> {
  return startProxy({ upstreamSource: source, connectTimeout: 1_000 });
}

function proxyPort(proxy: { addresses(): (AddressInfo | string)[] }): number {
  return (proxy.addresses()[0] as AddressInfo).port;
}
