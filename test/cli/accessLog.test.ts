import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import { observeProxy } from '../../src/cli/accessLog.js';
import type { AccessLogSettings } from '../../src/cli/accessLogFormat.js';
import type { ListenerConfig } from '../../src/cli/config.js';
import { Logger } from '../../src/cli/jsonLogger.js';
import { dial, refusedPort, withTimeout } from '../helpers/net.js';
import { closeSocket, freeUdpPort, udpSocket } from '../udp/helpers.js';

function listenerConfig(protocol: 'tcp' | 'udp'): ListenerConfig {
  return {
    name: `${protocol}-test`,
    protocol,
    listen: { host: '127.0.0.1', port: 0 },
    path: 'listeners[0]',
    raw: {},
    backlog: undefined,
  };
}

/** An operations log at debug whose lines a test can wait for, by message. */
function opsLog(): {
  logs: { access: Logger; ops: Logger };
  line: (msg: string) => Promise<unknown>;
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

function pick(line: unknown, keys: readonly string[]): Record<string, unknown> {
  const record = line as Record<string, unknown>;
  return Object.fromEntries(keys.map((key) => [key, record[key]]));
}
