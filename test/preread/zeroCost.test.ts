import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientPreface } from '../../src/tcp/ClientPreface.js';
import { TcpConnection } from '../../src/tcp/TcpConnection.js';
import { TcpProxy } from '../../src/tcp/TcpProxy.js';
import { PrereadStage } from '../../src/preread/PrereadStage.js';
import { postgresStartup, tlsClientHello } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { connect, echoServer, readAll } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

type Method = (this: unknown, ...args: unknown[]) => unknown;

/**
 * Counts calls of the methods every programmable-path object goes through: a preface (the stage
 * that holds the preread), an inspection, the filter chain of a connection, an admission check.
 */
function spyOnProgrammablePath(): { calls: Record<string, number>; restore: () => void } {
  const targets: [string, Record<string, Method>, string][] = [
    ['preface', ClientPreface.prototype as unknown as Record<string, Method>, 'start'],
    ['inspection', PrereadStage.prototype as unknown as Record<string, Method>, 'inspect'],
    ['filters', TcpConnection.prototype as unknown as Record<string, Method>, 'openFilters'],
    ['admission', TcpProxy.prototype as unknown as Record<string, Method>, 'checkAdmission'],
  ];
  const calls: Record<string, number> = {};
  const originals: (() => void)[] = [];
  for (const [label, prototype, name] of targets) {
    const original = prototype[name];
    assert.equal(typeof original, 'function', `${name} exists`);
    if (original === undefined) continue;
    calls[label] = 0;
    prototype[name] = function (this: unknown, ...args: unknown[]): unknown {
      calls[label] = (calls[label] ?? 0) + 1;
      return original.apply(this, args);
    };
    originals.push(() => {
      prototype[name] = original;
    });
  }
  return {
    calls,
    restore: () => {
      for (const undo of originals) undo();
    },
  };
}

async function echoThrough(options: TcpProxyOptions, connections: number): Promise<void> {
  const { proxy, port, closes } = await startProxy(options);
  try {
    for (let i = 0; i < connections; i++) {
      const client = await connect(port);
      const echoed = readAll(client);
      client.end(`request ${i}`);
      assert.equal((await echoed).toString(), `request ${i}`);
    }
    await closes(connections);
  } finally {
    await proxy.close({ drainTimeout: 0 });
  }
}

test('a proxy without preread, admit and filters never enters the programmable path; one with them does', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const upstreams = [{ host: '127.0.0.1', port: echo.port }];
  const spy = spyOnProgrammablePath();
  t.after(spy.restore);

  await echoThrough({ upstreams }, 5);
  assert.deepEqual(spy.calls, { preface: 0, inspection: 0, filters: 0, admission: 0 });

  // The same spies see every stage of a proxy that configures them (so the zero above can fail).
  await echoThrough(
    {
      upstreams,
      preread: { inspectors: { tls: tlsClientHello(), pg: postgresStartup() }, timeout: 2_000 },
      admit: () => true,
      filters: [() => ({})],
    },
    5,
  );
  for (const [label, count] of Object.entries(spy.calls))
    assert.ok(count >= 5, `${label}: ${count}`);
});
