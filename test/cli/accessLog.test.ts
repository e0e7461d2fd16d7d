import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { DnsSource, TcpProxy, UdpProxy } from '../../src/index.js';
import { observeProxy, sourceErrorLogger } from '../../src/cli/accessLog.js';
import type { AccessLogSettings } from '../../src/cli/accessLogFormat.js';
import type { ListenerConfig } from '../../src/cli/config.js';
import { Logger } from '../../src/cli/jsonLogger.js';
import net from 'node:net';
import type { TcpConnectionSummary, UdpSessionSummary } from '../../src/index.js';
import {
  connect,
  dial,
  echoServer,
  listen,
  readAll,
  refusedPort,
  waitFor,
  withTimeout,
} from '../helpers/net.js';
import { closeSocket, freeUdpPort, request, udpEcho, udpSocket } from '../udp/helpers.js';

function listenerConfig(protocol: 'tcp' | 'udp'): ListenerConfig {
  return {
    name: `${protocol}-test`,
    protocol,
    listen: { host: '127.0.0.1', port: 0, ipv6Only: false },
    path: 'listeners[0]',
    raw: {},
    backlog: undefined,
  };
}

/** An operations log at debug whose lines a test can wait for, by message. */
function opsLog(): {
  logs: { access: Logger; ops: Logger };
  line: (msg: string) => Promise<unknown>;
  lines: Record<string, unknown>[];
} {
  const lines: Record<string, unknown>[] = [];
  const waiting = new Map<string, (line: unknown) => void>();
  const ops = new Logger('debug', (text) => {
    const line = JSON.parse(text) as Record<string, unknown>;
    lines.push(line);
    waiting.get(String(line.msg))?.(line);
  });
  return {
    // The access log is muted: these tests read the operations log only.
    logs: { access: new Logger('silent', () => undefined), ops },
    lines,
    line: (msg) =>
      withTimeout(
        new Promise((resolve) => {
          const seen = lines.find((line) => line.msg === msg);
          if (seen !== undefined) resolve(seen);
          else waiting.set(msg, resolve);
        }),
        5_000,
        `the ops line "${msg}"`,
      ),
  };
}

const variants: readonly [string, AccessLogSettings | undefined][] = [
  ['the default access log', undefined],
  ['accessLog settings', { fields: ['msg'] }],
];

describe('observeProxy: rejections and upstream errors on the operations log, at debug', () => {
  for (const [name, settings] of variants) {
    test(`TCP, ${name}: a denied client and a refused upstream`, async (t: TestContext) => {
      const { logs, line } = opsLog();
      const port = await refusedPort();
      const denying = new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port }],
        deny: ['127.0.0.1'],
      });
      const failing = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port }] });
      for (const proxy of [denying, failing]) {
        t.after(() => proxy.close({ drainTimeout: 0 }));
        observeProxy(logs, listenerConfig('tcp'), proxy, settings);
      }
      const denied = await denying.listen({ port: 0, host: '127.0.0.1' });
      const failed = await failing.listen({ port: 0, host: '127.0.0.1' });
      for (const client of [dial(denied.port), dial(failed.port)]) t.after(() => client.destroy());
      assert.deepEqual(
        pick(await line('connection rejected'), ['listener', 'protocol', 'reason']),
        { listener: 'tcp-test', protocol: 'tcp', reason: 'denied' },
      );
      assert.deepEqual(
        pick(await line('upstream connect failed'), ['listener', 'protocol', 'upstream']),
        { listener: 'tcp-test', protocol: 'tcp', upstream: `127.0.0.1:${String(port)}` },
      );
    });

    test(`UDP, ${name}: an unreachable upstream (ICMP port unreachable)`, async (t: TestContext) => {
      const { logs, line } = opsLog();
      const port = await freeUdpPort();
      const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port }] });
      t.after(() => proxy.close());
      observeProxy(logs, listenerConfig('udp'), proxy, settings);
      const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const client = await udpSocket();
      t.after(() => closeSocket(client));
      client.send('ping', address.port, '127.0.0.1');
      assert.deepEqual(pick(await line('upstream error'), ['listener', 'protocol', 'upstream']), {
        listener: 'udp-test',
        protocol: 'udp',
        upstream: `127.0.0.1:${String(port)}`,
      });
    });
  }
});

describe('observeProxy: upstream health flips on the operations log', () => {
  for (const [name, settings] of variants) {
    test(`TCP, ${name}: an upstream going down is one warn line, coming back one info line (neither was logged)`, async (t: TestContext) => {
      const { logs, line, lines } = opsLog();
      const down = await refusedPort();
      const server = net.createServer((socket) => socket.destroy());
      const port = await listen(server);
      t.after(() => new Promise((resolve) => server.close(resolve)));
      const proxy = new TcpProxy({
        upstreams: [
          { id: 'a', host: '127.0.0.1', port },
          { id: 'b', host: '127.0.0.1', port: down },
        ],
        healthCheck: { interval: 100, unhealthyThreshold: 1, healthyThreshold: 1 },
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      observeProxy(logs, listenerConfig('tcp'), proxy, settings);
      await proxy.listen({ port: 0, host: '127.0.0.1' });
      const b = (await line('upstream unhealthy')) as Record<string, unknown>;
      assert.deepEqual(pick(b, ['level', 'listener', 'upstream', 'address', 'source']), {
        level: 40,
        listener: 'tcp-test',
        upstream: 'b',
        address: `127.0.0.1:${String(down)}`,
        source: 'active',
      });
      assert.equal(b.selectable, false);
      assert.match(String(b.detail), /ECONNREFUSED/);
      // a goes down, then comes back on its port.
      await new Promise((resolve) => server.close(resolve));
      const unhealthy = (): Record<string, unknown>[] =>
        lines.filter((l) => l.msg === 'upstream unhealthy');
      for (let i = 0; i < 100 && !unhealthy().some((l) => l.upstream === 'a'); i++)
        await new Promise((resolve) => setTimeout(resolve, 50));
      server.listen(port, '127.0.0.1');
      const a = (await line('upstream healthy')) as Record<string, unknown>;
      assert.deepEqual(pick(a, ['level', 'upstream', 'selectable']), {
        level: 30,
        upstream: 'a',
        selectable: true,
      });
      // Several checks failed on b meanwhile: still the one line.
      assert.deepEqual(
        unhealthy().map((l) => l.upstream),
        ['b', 'a'],
      );
    });
  }
});

describe('observeProxy: upstream source errors on the operations log, at warn', () => {
  test('a DNS server that does not answer is one warn line per listener, not one per lookup (it was not logged at all)', async (t: TestContext) => {
    const { logs, lines } = opsLog();
    const dnsPort = await freeUdpPort();
    const dns = (): DnsSource =>
      new DnsSource({
        name: 'web.example.test',
        port: 80,
        servers: [`127.0.0.1:${String(dnsPort)}`],
        refreshInterval: 10,
        timeout: 50,
        tries: 1,
      });
    const tcp = new TcpProxy({ upstreamSource: dns() });
    const udp = new UdpProxy({ upstreamSource: dns() });
    const failures = (proxy: TcpProxy | UdpProxy): Promise<void> =>
      withTimeout(
        new Promise<void>((resolve) => {
          let count = 0;
          const counted = (): void => {
            if (++count === 5) resolve();
          };
          if (proxy instanceof TcpProxy) proxy.on('upstreamSourceError', counted);
          else proxy.on('upstreamSourceError', counted);
        }),
        10_000,
        'five DNS failures',
      );
    const failed = [failures(tcp), failures(udp)];
    observeProxy(logs, listenerConfig('tcp'), tcp);
    observeProxy(logs, listenerConfig('udp'), udp, { fields: ['msg'] });
    t.after(() => tcp.close());
    t.after(() => udp.close());
    await Promise.all(failed);
    await Promise.all([tcp.close(), udp.close()]);
    const warned = lines.filter((line) => line.msg === 'upstream source error');
    assert.deepEqual(warned.map((line) => [line.level, line.listener, line.protocol]).sort(), [
      [40, 'tcp-test', 'tcp'],
      [40, 'udp-test', 'udp'],
    ]);
    for (const line of warned) {
      const err = line.err as { code: string; message: string };
      assert.equal(err.code, 'ERR_L4_UPSTREAM_SOURCE');
      assert.match(
        err.message,
        /DNS A lookup of web\.example\.test failed: (ECONNREFUSED|ETIMEOUT)/,
      );
    }
  });

  test('the same error again is logged once per interval with the count not logged; another error at once', () => {
    const { logs, lines } = opsLog();
    let now = 1_000;
    const log = sourceErrorLogger(logs.ops, { listener: 'l', protocol: 'tcp' }, 60_000, () => now);
    const timeout = new Error('DNS A lookup of x failed: ETIMEOUT');
    log(timeout);
    for (let i = 0; i < 10; i++) {
      now += 5_000;
      log(timeout);
    }
    now += 10_000; // 60 s after the first line
    log(timeout);
    log(new Error('DNS A lookup of x failed: ECONNREFUSED'));
    log(new Error('DNS A lookup of x failed: ECONNREFUSED'));
    assert.deepEqual(
      lines.map((line) => [(line.err as Error).message, line.repeated]),
      [
        ['DNS A lookup of x failed: ETIMEOUT', undefined],
        ['DNS A lookup of x failed: ETIMEOUT', 10],
        ['DNS A lookup of x failed: ECONNREFUSED', undefined],
      ],
    );
  });
});

describe('observeProxy: the access line', () => {
  /** An access log whose lines a test reads back, parsed. */
  function accessLog(): {
    logs: { access: Logger; ops: Logger };
    lines: Record<string, unknown>[];
  } {
    const lines: Record<string, unknown>[] = [];
    const access = new Logger('info', (text) => {
      lines.push(JSON.parse(text) as Record<string, unknown>);
    });
    return { logs: { access, ops: new Logger('silent', () => undefined) }, lines };
  }

  /** The summary again, one day earlier: a line written with the clock's time would not match. */
  const dayEarlier = <S extends { startTime: number }>(summary: S): S => ({
    ...summary,
    startTime: summary.startTime - 86_400_000,
  });

  test("TCP: the line's time is the close time its summary carries, no clock read of its own", async (t: TestContext) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const { logs, lines } = accessLog();
    observeProxy(logs, listenerConfig('tcp'), proxy);
    const closed = waitFor<[TcpConnectionSummary]>(proxy, 'connectionClose');
    const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
    const client = await connect(port);
    client.end('ping');
    assert.equal((await readAll(client)).toString(), 'ping');
    const [summary] = await closed;
    const earlier = dayEarlier(summary);
    proxy.emit('connectionClose', earlier);
    assert.deepEqual(
      lines.map((line) => [line.id, line.time]),
      [
        [summary.id, summary.startTime + summary.durationMs],
        [summary.id, earlier.startTime + earlier.durationMs],
      ],
    );
  });

  test("UDP: the line's time is the close time its summary carries, no clock read of its own", async (t: TestContext) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxResponses: 1,
    });
    t.after(() => proxy.close());
    const { logs, lines } = accessLog();
    observeProxy(logs, listenerConfig('udp'), proxy);
    const closed = waitFor<[UdpSessionSummary]>(proxy, 'sessionClose');
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    await request(client, port, 'ping');
    const [summary] = await closed;
    const earlier = dayEarlier(summary);
    proxy.emit('sessionClose', earlier);
    assert.deepEqual(
      lines.map((line) => [line.id, line.time]),
      [
        [summary.id, summary.startTime + summary.durationMs],
        [summary.id, earlier.startTime + earlier.durationMs],
      ],
    );
  });
});

function pick(line: unknown, keys: readonly string[]): Record<string, unknown> {
  const record = line as Record<string, unknown>;
  return Object.fromEntries(keys.map((key) => [key, record[key]]));
}
