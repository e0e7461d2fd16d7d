import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import type { ListenerStats } from '../../src/cli/Listener.js';
import { formatRate, StatusLine, statusTotals } from '../../src/cli/statusLine.js';
import type { StatusTotals } from '../../src/cli/statusLine.js';
import { withTimeout } from '../helpers/net.js';

async function snapshots(): Promise<ListenerStats[]> {
  await using tcp = new TcpProxy();
  await using udp = new UdpProxy();
  return [
    {
      name: 'a',
      protocol: 'tcp',
      stats: { ...tcp.stats(), downstream_cx_active: 3, downstream_cx_rx_bytes_total: 100 },
    },
    {
      name: 'b',
      protocol: 'udp',
      stats: { ...udp.stats(), downstream_sess_active: 2, downstream_sess_tx_bytes: 50 },
    },
  ];
}

test('status totals add connections, sessions and bytes across listeners', async () => {
  assert.deepEqual(statusTotals(await snapshots()), {
    listeners: 2,
    tcpActive: 3,
    udpActive: 2,
    bytes: 150,
  });
  assert.equal(formatRate(0), '0 B/s');
  assert.equal(formatRate(1_500), '1.5 kB/s');
  assert.equal(formatRate(48_200_000), '48 MB/s');
});

test('on a terminal the status line is rewritten in place; otherwise it is logged', async () => {
  const stats = await snapshots();
  const written: string[] = [];
  let wake: (() => void) | undefined;
  const tty = new StatusLine(
    {
      isTTY: true,
      write: (text) => {
        written.push(text);
        wake?.();
        return true;
      },
    },
    () => Promise.resolve(stats),
    () => assert.fail('a terminal gets no log line'),
  );
  const shown = new Promise<void>((resolve) => (wake = resolve));
  tty.start(5);
  await withTimeout(shown, 2_000, 'a status line');
  tty.stop();
  assert.ok(
    (written[0] ?? '').startsWith(
      '\r\x1b[2Kl4proxy: 2 listeners · 3 tcp connections · 2 udp sessions · ',
    ),
    JSON.stringify(written[0]),
  );
  assert.equal(written.at(-1), '\r\x1b[2K', 'stop() erases the line');

  const logged = await withTimeout(
    new Promise<StatusTotals>((resolve) => {
      const plain = new StatusLine(
        { isTTY: false, write: () => assert.fail('no terminal output') },
        () => Promise.resolve(stats),
        (totals) => {
          plain.stop();
          resolve(totals);
        },
      );
      plain.start(5);
    }),
    2_000,
    'a status log line',
  );
  assert.equal(logged.tcpActive, 3);
});
