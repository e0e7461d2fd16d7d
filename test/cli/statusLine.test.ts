import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import type { ListenerStats } from '../../src/cli/Listener.js';
import { createOutputs } from '../../src/cli/outputs.js';
import { count, formatRate, StatusLine, statusTotals } from '../../src/cli/statusLine.js';
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

test('one listener, connection, session reads as singular', () => {
  assert.equal(count(1, 'listener'), '1 listener');
  assert.equal(count(0, 'tcp connection'), '0 tcp connections');
  assert.equal(count(2, 'udp session'), '2 udp sessions');
});

test('on a terminal, an access line or a log line first erases the status line', async () => {
  const stats = (await snapshots()).slice(0, 1);
  const terminal: string[] = [];
  let wake: (() => void) | undefined;
  const tty = (name: string) => ({
    isTTY: true,
    write: (text: string | Uint8Array) => {
      terminal.push(`${name}:${typeof text === 'string' ? text : Buffer.from(text).toString()}`);
      wake?.();
      return true;
    },
  });
  const { access, ops, status } = createOutputs('info', {}, () => Promise.resolve(stats), {
    stdout: tty('out'),
    stderr: tty('err'),
  });
  const shown = withTimeout(new Promise<void>((resolve) => (wake = resolve)), 2_000, 'a status');
  status.start(5);
  await shown;
  wake = undefined;
  // Synchronously after the status line was drawn: no tick can come in between.
  access.info('connection closed');
  ops.warn('something');
  // Access lines are buffered and written once per event-loop turn: let that turn pass.
  await new Promise((resolve) => setImmediate(resolve));
  status.stop();
  assert.ok(
    (terminal[0] ?? '').startsWith(
      'err:\r\x1b[2Kl4proxy: 1 listener · 3 tcp connections · 0 udp sessions · ',
    ),
    JSON.stringify(terminal[0]),
  );
  const erase = 'err:\r\x1b[2K';
  assert.equal(terminal[1], erase, JSON.stringify(terminal));
  assert.match(terminal[2] ?? '', /^err:\{.*"msg":"something"/);
  assert.match(terminal[3] ?? '', /^out:\{.*"msg":"connection closed"/);
  assert.equal(terminal.length, 4, 'nothing left to erase at stop()');
});

test('--workers: listeners are counted once, and a worker missing a tick or replaced bends no throughput', async () => {
  const [tcp] = await snapshots();
  assert.ok(tcp?.protocol === 'tcp');
  /** Listener `a` on workers 1 and 2, each having moved `bytes`. */
  const cluster = (...bytes: (number | undefined)[]): ListenerStats[] =>
    bytes.flatMap((moved, index) =>
      moved === undefined
        ? []
        : [
            {
              ...tcp,
              worker: index + 1,
              stats: { ...tcp.stats, downstream_cx_rx_bytes_total: moved },
            },
          ],
    );
  const ticks = [
    cluster(1_000, 1_000),
    cluster(2_000, 2_000), // +2000: both moved 1000
    cluster(3_000), // +1000: worker 2 missed the 1 s deadline (its bytes are not lost)
    cluster(4_000, 4_000), // +3000: worker 1 moved 1000, worker 2 2000 over two ticks
    cluster(5_000, 500), // +1500: worker 2 was replaced (a new process, counting from 0)
  ];
  assert.equal(statusTotals(ticks[0] ?? []).listeners, 1, 'one listener run by two workers');
  const logged: { bytes: number; throughput: number; listeners: number }[] = [];
  let at = 0;
  const done = withTimeout(
    new Promise<void>((resolve) => {
      const line = new StatusLine(
        { isTTY: false, write: () => assert.fail('no terminal output') },
        () => Promise.resolve(ticks[at++] ?? []),
        (totals) => {
          logged.push(totals);
          if (logged.length === ticks.length) {
            line.stop();
            resolve();
          }
        },
        () => 1_000 * at,
      );
      line.start(5);
    }),
    5_000,
    'five status lines',
  );
  await done;
  assert.deepEqual(
    logged.map((totals) => totals.throughput),
    [0, 2_000, 1_000, 3_000, 1_500],
  );
  assert.ok(logged.every((totals) => totals.listeners === 1));
});
