import assert from 'node:assert/strict';
import { test } from 'node:test';
import { httpGet } from '../helpers/httpGet.js';
import { testDnsmasq } from '../upstream/dnsmasq.js';
import { configDir, configErrorOf, metricsAddress, startCli } from './cli.js';

/*
 * Health-check probes with bytes from 0x80 up, written in a JSON config file as { hex } and
 * { base64 } (a JSON string is sent as its UTF-8 bytes, so it cannot carry them), checked against
 * a real dnsmasq: a DNS query whose id is 0xc0de, over UDP and over TCP (length-prefixed).
 */

/** A DNS query for `name` (A, IN), id 0xc0de, recursion desired. */
function dnsQuery(name: string): Buffer {
  const labels = name
    .split('.')
    .map((label) => Buffer.concat([Buffer.of(label.length), Buffer.from(label)]));
  return Buffer.concat([
    Buffer.from('c0de01000001000000000000', 'hex'),
    ...labels,
    Buffer.from('0000010001', 'hex'),
  ]);
}

/** The value of `name`'s sample for `listener` in a /metrics text, or undefined. */
function sample(text: string, name: string, listener: string): number | undefined {
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && l.includes(`listener="${listener}"`));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

test('a config file gives binary health-check probes as { hex } and { base64 }: a DNS query with a high-bit id passes against dnsmasq over UDP and TCP, a wrong expect fails', async (t) => {
  const dns = await testDnsmasq(t, { hosts: { 'probe.example.test': ['127.0.0.9'] } });
  if (dns === undefined) return;
  const query = dnsQuery('probe.example.test');
  const length = Buffer.alloc(2);
  length.writeUInt16BE(query.length);
  const upstreams = [{ id: 'dnsmasq', host: '127.0.0.1', port: dns.port }];
  // dnsmasq answers with the query's id, then QR, AA, RD, RA and NOERROR: c0de 8580.
  const udpCheck = (expect: string) => ({
    interval: 100,
    timeout: 1_000,
    udp: { send: { hex: query.toString('hex') }, expect: { hex: expect } },
  });
  const file = configDir(t).write('l4proxy.json', {
    listeners: [
      {
        name: 'udp-probe',
        protocol: 'udp',
        listen: '127.0.0.1:0',
        upstreams,
        healthCheck: udpCheck('c0de 8580'),
      },
      {
        name: 'tcp-probe',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams,
        healthCheck: {
          interval: 100,
          timeout: 1_000,
          tcp: {
            send: { base64: Buffer.concat([length, query]).toString('base64') },
            expect: { hex: 'C0DE8580' },
          },
        },
      },
      // NXDOMAIN is not what dnsmasq answers: this check fails, so the others really compare.
      {
        name: 'udp-wrong',
        protocol: 'udp',
        listen: '127.0.0.1:0',
        upstreams,
        healthCheck: udpCheck('c0de 8583'),
      },
    ],
  });
  const cli = startCli(t, ['--config', file, '--status-interval', '0', '--metrics', '127.0.0.1:0']);
  const metrics = `http://${await metricsAddress(cli)}/metrics`;
  const unhealthy = await cli.waitLine(
    'stderr',
    (l) => l.msg === 'upstream unhealthy' && l.listener === 'udp-wrong',
  );
  assert.equal(unhealthy.upstream, 'dnsmasq');

  // Every check of the other two passes: wait (bounded) until each has made three.
  const attempts = (text: string, protocol: string, listener: string): number =>
    sample(text, `l4proxy_${protocol}_upstream_host_health_check_attempts_total`, listener) ?? 0;
  let text = '';
  const deadline = Date.now() + 10_000;
  for (let i = 0; i < 100 && Date.now() < deadline; i++) {
    text = (await httpGet(metrics)).body;
    if (attempts(text, 'udp', 'udp-probe') >= 3 && attempts(text, 'tcp', 'tcp-probe') >= 3) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  for (const [protocol, listener] of [
    ['udp', 'udp-probe'],
    ['tcp', 'tcp-probe'],
  ] as const) {
    assert.ok(attempts(text, protocol, listener) >= 3, `${listener} checked three times:\n${text}`);
    const failures = `l4proxy_${protocol}_upstream_host_health_check_failures_total`;
    assert.equal(sample(text, failures, listener), 0, `${listener}: no failed check`);
    const healthy = `l4proxy_${protocol}_upstream_host_health_check_healthy`;
    assert.equal(sample(text, healthy, listener), 1, `${listener}: healthy`);
  }
  assert.ok(!cli.stderr.some((l) => l.msg === 'upstream unhealthy' && l.listener !== 'udp-wrong'));
  const failed = 'l4proxy_udp_upstream_host_health_check_failures_total';
  assert.ok((sample(text, failed, 'udp-wrong') ?? 0) >= 1);
});

test('a config file with an odd number of hex digits in a probe is refused naming the key', () => {
  const message = configErrorOf({
    listeners: [
      {
        protocol: 'udp',
        listen: '127.0.0.1:0',
        upstreams: ['127.0.0.1:53'],
        healthCheck: { udp: { send: { hex: '04d216f' } } },
      },
    ],
  });
  assert.match(message, /listeners\[0\]\.healthCheck\.udp\.send\.hex/);
  assert.match(
    message,
    /hex digits only \(0-9, a-f; spaces between bytes allowed\), an even number of them/,
  );
});
