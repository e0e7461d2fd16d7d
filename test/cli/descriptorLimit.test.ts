import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { chmodSync } from 'node:fs';
import { adminRequest } from '../helpers/adminClient.js';
import { httpGet } from '../helpers/httpGet.js';
import { connect } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { startDnsmasq } from '../udp/helpers.js';
import { configDir, listenPort, metricsAddress, runCli, startCli } from './cli.js';
import type { CliProcess, LogLine } from './cli.js';
import { digAnswer, floodFromSources } from './udpFlood.js';

/*
 * The CLI under a low open-files limit (`prlimit`, always lower than the test's own), its UDP
 * listener flooded from many sources: one socket per session, so a flood can take every
 * descriptor of the process.
 */

/** `prlimit --nofile=limit:limit --`, or undefined (the test skipped) where it cannot be had. */
function lowLimit(t: TestContext, limit: number): string[] | undefined {
  if (process.platform !== 'linux') {
    t.skip('needs the whole 127.0.0.0/8 on loopback and prlimit (Linux)');
    return undefined;
  }
  const prlimit = tool(t, 'prlimit');
  return prlimit === undefined
    ? undefined
    : [prlimit, `--nofile=${String(limit)}:${String(limit)}`, '--'];
}

/** The value of the `dns` listener's sample of `name` in `/metrics`, or 0. */
function sample(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{listener="dns"} `));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** dig until it is answered (the flood's sessions idled out), bounded in count and time. */
async function answeredAgain(dig: string, port: number, name: string): Promise<string> {
  let answer = '';
  for (let attempt = 0; attempt < 10 && answer === ''; attempt++) {
    answer = await digAnswer(dig, port, name, 1).catch(() => '');
  }
  return answer;
}

/**
 * `/metrics` once it answers: while the flood's sessions hold every descriptor, its connections
 * are reset. Tries again at each access line (a session ended, freeing its socket), bounded in
 * count and time.
 */
async function metricsOnceServed(cli: CliProcess, url: string): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (let attempt = 0; attempt < 100 && Date.now() < deadline; attempt++) {
    try {
      return (await httpGet(url)).body;
    } catch {
      // Reset: still out of descriptors.
    }
    const seen = cli.stdout.length;
    await cli.waitLines('stdout', () => true, seen + 1, 2_000).catch(() => undefined);
  }
  throw new Error(`${url} did not answer within 10 s`);
}

function isShortage(line: LogLine): boolean {
  return (
    line.msg === 'proxy error' &&
    line.listener === 'dns' &&
    (line.err as { code?: string } | undefined)?.code === 'ERR_L4_RESOURCE_EXHAUSTED'
  );
}

async function startDnsCli(
  t: TestContext,
  wrapper: string[],
  dnsPort: number,
  udpOptions: Record<string, unknown>,
): Promise<{ cli: CliProcess; port: number; metrics: string }> {
  const file = configDir(t).write('l4proxy.json', {
    listeners: [
      {
        name: 'dns',
        protocol: 'udp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: dnsPort }],
        idleTimeout: 1_500,
        ...udpOptions,
      },
    ],
  });
  const args = ['--config', file, '--status-interval', '0', '--metrics', '127.0.0.1:0'];
  const cli = startCli(t, args, [], wrapper);
  const port = await listenPort(cli, 'dns');
  const metrics = `http://${await metricsAddress(cli)}/metrics`;
  return { cli, port, metrics };
}

describe('l4proxy under a low open-files limit', () => {
  test('a UDP flood past the limit (an explicit maxSessions above it): the shortage is logged once a second and counted, and dig is answered again once the sessions idle out', async (t) => {
    const wrapper = lowLimit(t, 200);
    if (wrapper === undefined) return;
    const dig = tool(t, 'dig');
    if (dig === undefined) return;
    const dns = await startDnsmasq(t, 'limit.test', '192.0.2.7');
    if (dns === undefined) return;
    const { cli, port, metrics } = await startDnsCli(t, wrapper, dns.port, { maxSessions: 10_000 });
    // Told at start, before any flood.
    const warning = await cli.waitLine('stderr', (l) => l.msg.startsWith('a listener cap exceeds'));
    assert.deepEqual(warning.listeners, [{ listener: 'dns', maxSessions: 10_000 }]);
    assert.equal(await digAnswer(dig, port, 'limit.test'), '192.0.2.7');
    const started = Date.now();
    assert.equal(await floodFromSources(port, 600, 'limit.test', 5), 600);
    // Sessions past the limit cannot get a socket: the operator hears of it, once a second.
    await cli.waitLine('stderr', isShortage, 5_000);
    assert.equal(await answeredAgain(dig, port, 'limit.test'), '192.0.2.7', 'served again');
    const shortages = cli.stderr.filter(isShortage).length;
    const seconds = (Date.now() - started) / 1_000;
    t.diagnostic(`${String(shortages)} shortage line(s) in ${seconds.toFixed(1)} s`);
    assert.ok(shortages <= Math.ceil(seconds) + 1, `${String(shortages)} lines`);
    const text = await metricsOnceServed(cli, metrics);
    const exhausted = sample(text, 'l4proxy_udp_resource_exhausted_total');
    t.diagnostic(`resource_exhausted ${String(exhausted)}`);
    assert.ok(exhausted > 0, 'counted in /metrics');
    assert.equal(cli.child.exitCode, null, 'still running');
    cli.child.kill('SIGTERM');
    await cli.exited();
  });

  test('no maxSessions nor maxConnections set: the CLI derives them from the open-files limit, so a UDP flood meets max_sessions while the TCP listener, the admin API and /metrics go on', async (t) => {
    const wrapper = lowLimit(t, 256);
    if (wrapper === undefined) return;
    const dig = tool(t, 'dig');
    if (dig === undefined) return;
    const dns = await startDnsmasq(t, 'limit.test', '192.0.2.7');
    if (dns === undefined) return;
    const echo = await taggedEcho(t, 'echo:');
    const dir = configDir(t);
    const token = 'a-token-of-more-than-sixteen-chars';
    const tokenFile = dir.write('token', `${token}\n`);
    chmodSync(tokenFile, 0o600);
    const file = dir.write('l4proxy.json', {
      admin: { listen: '127.0.0.1:0', tokenFile },
      listeners: [
        {
          name: 'app',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: echo }],
        },
        {
          name: 'dns',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: dns.port }],
          // Long enough to hold the flood's sessions while the test looks.
          idleTimeout: 4_000,
        },
      ],
    });
    const args = ['--config', file, '--status-interval', '0', '--metrics', '127.0.0.1:0'];
    const cli = startCli(t, args, [], wrapper);
    const admin = Number(
      /:(\d+)$/.exec(
        String((await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address),
      )?.[1],
    );
    const tcpPort = await listenPort(cli, 'app');
    const udpPort = await listenPort(cli, 'dns');
    const metrics = `http://${await metricsAddress(cli)}/metrics`;
    // The figures, logged at start: 256 - 128 reserved, split between the two listeners.
    const limits = await cli.waitLine('stderr', (l) => l.msg === 'open files limit');
    t.diagnostic(JSON.stringify(limits));
    assert.equal(limits.openFiles, 256);
    assert.deepEqual(limits.derived, [
      { listener: 'app', maxConnections: 32 },
      { listener: 'dns', maxSessions: 64 },
    ]);
    assert.equal(await floodFromSources(udpPort, 600, 'limit.test', 6), 600);
    // The flood holds the session table (as nginx's and Envoy's would), not every descriptor.
    const text = (await httpGet(metrics)).body;
    const dropped =
      /^l4proxy_udp_datagrams_dropped_total\{listener="dns",reason="max_sessions"\} (\d+)$/m;
    t.diagnostic(
      `active ${String(sample(text, 'l4proxy_udp_downstream_sess_active'))}, max_sessions ${dropped.exec(text)?.[1] ?? '?'}`,
    );
    assert.equal(sample(text, 'l4proxy_udp_downstream_sess_active'), 64);
    assert.ok(Number(dropped.exec(text)?.[1]) > 0, 'refused as max_sessions');
    assert.equal(sample(text, 'l4proxy_udp_resource_exhausted_total'), 0);
    assert.equal((await adminRequest(admin, 'GET', '/upstreams', { token })).status, 200);
    const client = await connect(tcpPort);
    t.after(() => client.destroy());
    assert.equal(await roundTrip(client, 'ping'), 'echo:ping');
    client.destroy();
    assert.deepEqual(
      cli.stderr.filter((l) => l.msg === 'proxy error'),
      [],
      'no descriptor shortage',
    );
    // Once the flood idles out, new clients get sessions again.
    assert.equal(await answeredAgain(dig, udpPort, 'limit.test'), '192.0.2.7');
    cli.child.kill('SIGTERM');
    await cli.exited();
  });

  test('--check shows the caps the start would derive, and not for a listener that sets its own', async (t) => {
    const wrapper = lowLimit(t, 512);
    if (wrapper === undefined) return;
    const upstreams = [{ host: '127.0.0.1', port: 1 }];
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        { name: 'web', protocol: 'tcp', listen: '127.0.0.1:0', upstreams },
        { name: 'dns', protocol: 'udp', listen: '127.0.0.1:0', upstreams },
        { name: 'own', protocol: 'udp', listen: '127.0.0.1:1', upstreams, maxSessions: 10 },
      ],
    });
    const checked = await runCli(['--config', file, '--check'], 10_000, wrapper);
    assert.equal(checked.code, 0, checked.stderr);
    // 512 - 128 reserved, split three ways: 128 each.
    assert.match(
      checked.stdout,
      /: ok, 3 listener\(s\): .*; open files 512: web maxConnections 64, dns maxSessions 128\n$/,
    );
  });

  test('a tunnel listener that sets no caps gets maxConnections and maxTunnels from its share: --check shows them, the start logs them', async (t) => {
    const wrapper = lowLimit(t, 384);
    if (wrapper === undefined) return;
    const upstreams = [{ host: '127.0.0.1', port: 1 }];
    const file = configDir(t).write('l4proxy.json', {
      listeners: [{ name: 'proxy', protocol: 'tunnel', listen: '127.0.0.1:0', upstreams }],
    });
    const checked = await runCli(['--config', file, '--check'], 10_000, wrapper);
    assert.equal(checked.code, 0, checked.stderr);
    // 384 - 128 reserved: 256, half a client connection each, half a tunnel's upstream each.
    assert.match(
      checked.stdout,
      /; open files 384: proxy maxConnections 128, proxy maxTunnels 128\n$/,
    );
    const cli = startCli(t, ['--config', file, '--status-interval', '0'], [], wrapper);
    const limits = await cli.waitLine('stderr', (l) => l.msg === 'open files limit');
    assert.deepEqual(limits.derived, [{ listener: 'proxy', maxConnections: 128, maxTunnels: 128 }]);
    cli.child.kill('SIGTERM');
    await cli.exited();
  });
});
