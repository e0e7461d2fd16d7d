import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { httpGet } from '../helpers/httpGet.js';
import { tool } from '../helpers/tools.js';
import { startDnsmasq } from '../udp/helpers.js';
import { configDir, listenPort, metricsAddress, startCli } from './cli.js';
import { digAnswer, floodFromSources } from './udpFlood.js';

const SOURCES = 2_000;

/** The value of the listener's sample of `name` in `/metrics` (`labels` after its own), or 0. */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{listener="dns"${labels}} `));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** Datagrams dropped by reason, from the `reason`-labelled family. */
function droppedByReason(text: string): Record<string, number> {
  const found: Record<string, number> = {};
  const pattern = /^l4proxy_udp_datagrams_dropped_total\{listener="dns",reason="(\w+)"\} (\d+)$/gm;
  for (const [, reason, value] of text.matchAll(pattern)) {
    if (Number(value) > 0) found[reason ?? ''] = Number(value);
  }
  return found;
}

describe('l4proxy udp listener under a flood of sources', () => {
  test('2 000 sources against maxSessions and maxResponses 1: dig beside them is answered, and every datagram is forwarded or counted in /metrics', async (t) => {
    if (process.platform !== 'linux') {
      t.skip('needs the whole 127.0.0.0/8 on loopback (Linux)');
      return;
    }
    const digPath = tool(t, 'dig');
    if (digPath === undefined) return;
    const dns = await startDnsmasq(t, 'flood.test', '192.0.2.9');
    if (dns === undefined) return;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        {
          name: 'dns',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: dns.port }],
          maxSessions: 200,
          maxResponses: 1,
          idleTimeout: 5_000,
          recvBufferSize: 4 * 1024 * 1024,
        },
      ],
    });
    const cli = startCli(t, [
      '--config',
      file,
      '--status-interval',
      '0',
      '--metrics',
      '127.0.0.1:0',
    ]);
    const port = await listenPort(cli, 'dns');
    const metrics = `http://${await metricsAddress(cli)}/metrics`;
    const [sent, ...during] = await Promise.all([
      floodFromSources(port, SOURCES, 'flood.test'),
      digAnswer(digPath, port, 'flood.test'),
      digAnswer(digPath, port, 'flood.test'),
    ]);
    assert.equal(sent, SOURCES);
    assert.deepEqual(during, ['192.0.2.9', '192.0.2.9'], 'answered during the flood');
    assert.equal(await digAnswer(digPath, port, 'flood.test'), '192.0.2.9', 'and after it');
    // Every datagram the proxy read went upstream or is counted as dropped (max_sessions);
    // those the kernel dropped before it read them are counted too. Bounded wait for the tail.
    let text = '';
    const deadline = Date.now() + 5_000;
    const read = (name: string): number => sample(text, `l4proxy_udp_${name}`);
    do {
      text = (await httpGet(metrics)).body;
      if (
        read('downstream_sess_rx_datagrams_total') + read('downstream_rx_datagram_dropped_total') >=
        SOURCES + 3
      )
        break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    } while (Date.now() < deadline);
    const rx = read('downstream_sess_rx_datagrams_total');
    const kernel = read('downstream_rx_datagram_dropped_total');
    const byReason = droppedByReason(text);
    const dropped = Object.values(byReason).reduce((a, b) => a + b, 0);
    t.diagnostic(
      `read ${String(rx)}, kernel-dropped ${String(kernel)}, dropped ${JSON.stringify(byReason)}`,
    );
    assert.ok(rx + kernel >= SOURCES + 3, `read ${rx} + kernel ${kernel}`);
    assert.equal(read('upstream_sess_tx_datagrams_total') + dropped, rx);
    assert.deepEqual(
      Object.keys(byReason).filter((reason) => reason !== 'max_sessions'),
      [],
    );
    assert.ok(read('downstream_sess_active') <= 200);
    assert.equal(cli.child.exitCode, null, 'still running');
    cli.child.kill('SIGTERM');
    await cli.exited();
  });
});
