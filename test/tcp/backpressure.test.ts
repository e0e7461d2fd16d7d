import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Socket } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { TcpProxyStats } from '../../src/index.js';
import { connect, listen, waitFor, withTimeout } from '../helpers/net.js';

const CHILD = fileURLToPath(new URL('../fixtures/tcpProxyChild.js', import.meta.url));
const TOTAL = 1024 * 1024 * 1024; // 1 GiB
const CHUNK = Buffer.alloc(1024 * 1024, 0x5a);
const MiB = 1024 * 1024;
/**
 * While the receiver does not read, the proxy holds at most a few 64 KiB chunks per direction:
 * "a few MiB" of RSS growth, whatever the sender pushes.
 */
const STALLED_BUDGET = 8 * MiB;
/**
 * While 1 GiB flows at full speed, RSS also holds read buffers that are garbage but not yet
 * collected (V8 collects external memory lazily); it must still stay bounded, far below 1 GiB.
 * The relays that allocate a buffer per read (`stream`, and any relay with a data filter) peaked
 * at 35–40 MiB on Node 20 and at 70–110 MiB on Node 24 and 26 (2026-12-05): their V8 lets more
 * of that garbage gather before collecting it; the relays that reuse their buffers stay at
 * 10–21 MiB everywhere.
 */
const FLOWING_BUDGET = (Number(process.versions.node.split('.')[0]) >= 24 ? 160 : 96) * MiB;

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return Number(match?.[1] ?? 0) * 1024;
}

function ask<T>(child: ChildProcess, message: string, key: string): Promise<T> {
  return withTimeout(
    new Promise<T>((resolve) => {
      const onMessage = (reply: Record<string, unknown>): void => {
        if (key in reply) {
          child.off('message', onMessage);
          resolve(reply[key] as T);
        }
      };
      child.on('message', onMessage);
      child.send(message);
    }),
    5_000,
    `child reply to ${message}`,
  );
}

type Relay = 'handle' | 'onread' | 'stream';

async function startChild(
  upstreamPort: number,
  relay: Relay,
  filter = false,
): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(CHILD, [String(upstreamPort), relay, ...(filter ? ['filter'] : [])], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const { port } = await withTimeout(
    new Promise<{ port: number }>((resolve) =>
      child.once('message', (m) => {
        resolve(m as { port: number });
      }),
    ),
    20_000,
    'the proxy child to listen',
  );
  return { child, port };
}

/** Writes `total` bytes honouring backpressure; resolves when all are handed to the kernel. */
async function writeAll(socket: Socket, total: number): Promise<void> {
  for (let sent = 0; sent < total; sent += CHUNK.length) {
    if (!socket.write(CHUNK)) await waitFor(socket, 'drain', 60_000);
  }
  socket.end();
}

/** Polls (bounded) until the proxy reports it paused the sending side. */
async function untilPaused(child: ChildProcess, key: keyof TcpProxyStats): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const stats = await ask<TcpProxyStats>(child, 'stats', 'stats');
    if ((stats[key] as number) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`the proxy never reported ${key}`);
}

/**
 * 1 GiB from a fast sender to a receiver that first does not read at all, then reads as fast as
 * it can: the proxy's RSS must stay within a few MiB of its baseline throughout.
 */
async function pushOneGiB(
  direction: 'client-to-upstream' | 'upstream-to-client',
  relay: Relay,
  filter = false,
): Promise<{
  baseline: number;
  stalled: number;
  peak: number;
}> {
  let receiver!: Socket;
  let sender!: Socket;
  const server = net.createServer({ allowHalfOpen: true });
  const upstreamSocket: Promise<Socket> = new Promise((resolve) =>
    server.once('connection', resolve),
  );
  const upstreamPort = await listen(server);
  const { child, port } = await startChild(upstreamPort, relay, filter);
  try {
    const client = await connect(port);
    const upstream = await withTimeout(upstreamSocket, 5_000, 'upstream connection');
    upstream.on('error', () => undefined);
    [sender, receiver] =
      direction === 'client-to-upstream' ? [client, upstream] : [upstream, client];
    receiver.pause();
    await ask(child, 'gc', 'gc');
    const baseline = rssOf(child.pid!);
    const writing = writeAll(sender, TOTAL);
    await untilPaused(
      child,
      direction === 'client-to-upstream'
        ? 'downstream_flow_control_paused_reading_total'
        : 'upstream_flow_control_paused_reading_total',
    );
    const stalled = rssOf(child.pid!);
    let received = 0;
    let peak = stalled;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rssOf(child.pid!));
    }, 25);
    receiver.on('data', (chunk: Buffer) => (received += chunk.length));
    const ended = waitFor(receiver, 'end', 120_000);
    receiver.resume();
    await withTimeout(Promise.all([writing, ended]), 120_000, '1 GiB to arrive');
    clearInterval(sampler);
    assert.equal(received, TOTAL, 'every byte arrived');
    client.destroy();
    upstream.destroy();
    return { baseline, stalled, peak };
  } finally {
    child.kill();
    await new Promise<void>((resolve) =>
      server.close(() => {
        resolve();
      }),
    );
  }
}

for (const relay of ['handle', 'onread', 'stream'] as const)
  for (const direction of ['client-to-upstream', 'upstream-to-client'] as const) {
    test(`backpressure ${direction} (relay ${relay}): 1 GiB raises the proxy's RSS by a few MiB at most`, async () => {
      const { baseline, stalled, peak } = await pushOneGiB(direction, relay);
      const mib = (n: number): string => (n / MiB).toFixed(1);
      // Recorded for the closing note: run with --test-reporter=spec to see it.
      console.log(
        `[${direction}, ${relay}] baseline ${mib(baseline)} MiB, stalled +${mib(stalled - baseline)} MiB, peak +${mib(peak - baseline)} MiB`,
      );
      assert.ok(
        stalled - baseline < STALLED_BUDGET,
        `stalled growth ${mib(stalled - baseline)} MiB`,
      );
      assert.ok(peak - baseline < FLOWING_BUDGET, `peak growth ${mib(peak - baseline)} MiB`);
    });
  }

// The same through one pass-through data filter: the filtered relay keeps backpressure end to end.
for (const [relay, direction] of [
  ['onread', 'client-to-upstream'],
  ['stream', 'upstream-to-client'],
] as const) {
  test(`backpressure ${direction} (relay ${relay}, pass-through filter): 1 GiB raises the proxy's RSS by a few MiB at most`, async () => {
    const { baseline, stalled, peak } = await pushOneGiB(direction, relay, true);
    const mib = (n: number): string => (n / MiB).toFixed(1);
    console.log(
      `[${direction}, ${relay}, filter] baseline ${mib(baseline)} MiB, stalled +${mib(stalled - baseline)} MiB, peak +${mib(peak - baseline)} MiB`,
    );
    assert.ok(stalled - baseline < STALLED_BUDGET, `stalled growth ${mib(stalled - baseline)} MiB`);
    assert.ok(peak - baseline < FLOWING_BUDGET, `peak growth ${mib(peak - baseline)} MiB`);
  });
}
