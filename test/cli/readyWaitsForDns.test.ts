import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { connect } from '../helpers/net.js';
import { gatedDns } from '../helpers/gatedDns.js';
import type { GatedDns } from '../helpers/gatedDns.js';
import { httpGet } from '../helpers/httpGet.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { eventually } from '../reliability/load.js';
import { configDir, listenPort, startCli } from './cli.js';
import type { CliProcess } from './cli.js';

/** A config with an admin API and one TCP listener, `web`, whose upstreams come from `name`. */
function config(dns: GatedDns, upstream: number, name: string, workers?: number): object {
  return {
    ...(workers !== undefined && { workers }),
    admin: { listen: '127.0.0.1:0' },
    listeners: [
      {
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        // One query per lookup, answered when the test says: no retry, no refresh meanwhile.
        dns: {
          name,
          type: 'A',
          port: upstream,
          servers: [dns.server],
          timeout: 30_000,
          tries: 1,
          refreshInterval: 600_000,
        },
      },
    ],
  };
}

async function ready(admin: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const reply = await httpGet(`http://${admin}/ready`);
  return { status: reply.status, body: JSON.parse(reply.body) as Record<string, unknown> };
}

/** Starts the CLI on `file` and waits for its `ready` line (not delayed by DNS): the admin address. */
async function start(
  t: TestContext,
  file: string,
  workers?: number,
): Promise<{ cli: CliProcess; admin: string }> {
  const cli = startCli(t, ['--config', file]);
  const listening = await cli.waitLine('stderr', (l) => l.msg === 'admin listening', 15_000);
  await cli.waitLine('stderr', (l) => l.msg === 'ready', workers === undefined ? 5_000 : 15_000);
  return { cli, admin: String(listening.address) };
}

describe('l4proxy /ready waits for the first DNS answer (Envoy cluster warming)', () => {
  for (const workers of [undefined, 2]) {
    const mode = workers === undefined ? 'single process' : `--workers ${String(workers)}`;
    test(`${mode}: 503 naming the listener until its first DNS answer, then 200, and still 200 across a reload whose lookups have not answered`, async (t) => {
      const dns = await gatedDns(t);
      const upstream = await taggedEcho(t, 'A:');
      const dir = configDir(t);
      const file = dir.write('l4proxy.json', config(dns, upstream, 'web.example.test', workers));
      const { cli, admin } = await start(t, file, workers);
      const processes = workers ?? 1;
      await dns.waitQueries('web.example.test', processes, 10_000);

      const cold = await ready(admin);
      assert.equal(cold.status, 503);
      assert.equal(cold.body.status, 'not ready');
      assert.match(String(cold.body.reason), /^waiting for the first DNS answer of listener web/);

      dns.set('answer');
      await eventually(async () => (await ready(admin)).status === 200, '/ready 200', 10_000);
      assert.deepEqual((await ready(admin)).body, { status: 'ready' });
      const client = await connect(await listenPort(cli));
      t.after(() => client.destroy());
      assert.equal(await roundTrip(client, 'x'), 'A:x', 'the discovered upstream serves');

      // A reload builds a new generation with a DNS source of its own, whose lookup is held.
      dns.set('hold');
      dir.write('l4proxy.json', config(dns, upstream, 'web2.example.test', workers));
      process.kill(cli.pid, 'SIGHUP');
      await cli.waitLines('stderr', (l) => l.msg.startsWith('config reloaded'), processes);
      await dns.waitQueries('web2.example.test', processes, 10_000);
      assert.deepEqual(await ready(admin), { status: 200, body: { status: 'ready' } });
      dns.set('answer');
      client.destroy();
      process.kill(cli.pid, 'SIGTERM');
      assert.equal(await cli.exited(15_000), 0);
    });
  }

  test('a tunnel listener with dns is waited for as well', async (t) => {
    const dns = await gatedDns(t);
    const upstream = await taggedEcho(t, 'A:');
    const [web] = (config(dns, upstream, 'egress.example.test') as { listeners: object[] })
      .listeners;
    const file = configDir(t).write('l4proxy.json', {
      admin: { listen: '127.0.0.1:0' },
      listeners: [
        // A listener without dns is warm from the start.
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream }],
        },
        { ...web, name: 'egress', protocol: 'tunnel' },
      ],
    });
    const { cli, admin } = await start(t, file);
    await dns.waitQueries('egress.example.test', 1);
    const cold = await ready(admin);
    assert.equal(cold.status, 503);
    assert.equal(cold.body.reason, 'waiting for the first DNS answer of listener egress');
    dns.set('answer');
    await eventually(async () => (await ready(admin)).status === 200, '/ready 200', 10_000);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('a first lookup that fails warms the listener too (Envoy), and is logged as before', async (t) => {
    const dns = await gatedDns(t);
    const upstream = await taggedEcho(t, 'A:');
    const file = configDir(t).write('l4proxy.json', config(dns, upstream, 'web.example.test'));
    const { cli, admin } = await start(t, file);
    await dns.waitQueries('web.example.test', 1);
    assert.equal((await ready(admin)).status, 503);
    dns.set('fail');
    await cli.waitLine('stderr', (l) => /ESERVFAIL/.test(JSON.stringify(l)));
    await eventually(async () => (await ready(admin)).status === 200, '/ready 200', 10_000);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });
});
