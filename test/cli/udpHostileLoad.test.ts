import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { httpGet } from '../helpers/httpGet.js';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { startDnsmasq } from '../udp/helpers.js';
import { configDir, listenPort, metricsAddress, startCli } from './cli.js';

const SOURCES = 2_000;
const BATCH = 200;

/** A DNS query (A, recursion desired) for `name`, with id `id`. */
function dnsQuery(id: number, name: string): Buffer {
  const labels = name
    .split('.')
    .map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]));
  return Buffer.concat([
    Buffer.from([id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...labels,
    Buffer.from([0, 0, 1, 0, 1]),
  ]);
}

/**
 * One query from each of `count` source addresses (127.3.x.y, one socket each, `BATCH` at a
 * time, each closed once its query is sent): what a flood of forged sources looks like to the
 * proxy, each opening a session. Returns the datagrams sent.
 */
async function floodFromSources(port: number, count: number, name: string): Promise<number> {
  let sent = 0;
  for (let first = 0; first < count; first += BATCH) {
    const sockets: dgram.Socket[] = [];
    for (let i = first; i < Math.min(count, first + BATCH); i++) {
      const socket = dgram.createSocket('udp4');
      socket.on('error', () => undefined);
      socket.bind(0, `127.3.${String(i >> 7)}.${String((i & 0x7f) + 1)}`);
      sockets.push(socket);
    }
    await withTimeout(Promise.all(sockets.map((s) => once(s, 'listening'))), 5_000, 'binds');
    await Promise.all(
      sockets.map(
        (socket, i) =>
          new Promise<void>((resolve) => {
            socket.send(dnsQuery(first + i, name), port, '127.0.0.1', () => {
              sent++;
              resolve();
            });
          }),
      ),
    );
    for (const socket of sockets) socket.close();
  }
  return sent;
}

/** dig as a well-behaved resolver does it: up to 3 tries, 1 s each. */
function digAnswer(digPath: string, port: number, name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const args = ['@127.0.0.1', '-p', String(port), name, '+short', '+tries=3', '+time=1'];
    execFile(digPath, args, { timeout: 10_000 }, (err, stdout) => {
      if (err !== null) reject(new Error(`dig failed: ${err.message}`, { cause: err }));
      else resolve(stdout.trim());
    });
  });
}

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
