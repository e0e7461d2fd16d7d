import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { describe, test } from 'node:test';
import { InvalidOptionError, TcpProxy } from '../../src/index.js';
import type { TcpProxyOptions } from '../../src/index.js';
import { readAll, socketServer, waitFor } from '../helpers/net.js';
import { freePort, startPeer } from '../helpers/peerProcess.js';
import type { PeerProcess } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

const MBIT = 1_000_000 / 8;
const SECONDS = 5;

interface IperfResult {
  /** Bits per second the receiving end measured. */
  readonly received: number;
}

/** Runs an iperf3 client through `port` for SECONDS; `reverse` measures upstream → client. */
function iperf(
  iperf3: string,
  port: number,
  options: { reverse?: boolean; streams?: number },
): Promise<IperfResult> {
  const args = ['-c', '127.0.0.1', '-p', String(port), '-t', String(SECONDS), '-J'];
  if (options.reverse === true) args.push('-R');
  if (options.streams !== undefined) args.push('-P', String(options.streams));
  return new Promise((resolve, reject) => {
    execFile(iperf3, args, { timeout: (SECONDS + 20) * 1000 }, (err, stdout) => {
      if (err) {
        reject(new Error(`iperf3 failed: ${err.message}\n${stdout}`));
        return;
      }
      const report = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } };
      resolve({ received: report.end.sum_received.bits_per_second });
    });
  });
}

async function withIperfServer(
  iperf3: string,
  run: (serverPort: number) => Promise<void>,
): Promise<void> {
  const serverPort = await freePort();
  const server: PeerProcess = await startPeer(
    iperf3,
    ['-s', '-B', '127.0.0.1', '-p', String(serverPort)],
    serverPort,
  );
  try {
    await run(serverPort);
  } finally {
    await server.stop();
  }
}

/** Starts a proxy to `serverPort`, runs iperf3 through it, and checks rate and memory. */
async function measure(
  iperf3: string,
  serverPort: number,
  options: TcpProxyOptions,
  run: { reverse?: boolean; streams?: number },
  limitBytes: number,
  t: { diagnostic(message: string): void },
): Promise<TcpProxy> {
  const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: serverPort }], ...options });
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  // Memory from one second in (past start-up and JIT warm-up) to the end of the run.
  const started = performance.now();
  let rssBefore: number | undefined;
  let rssPeak = 0;
  const sampler = setInterval(() => {
    const rss = process.memoryUsage().rss;
    if (performance.now() - started < 1_000) return;
    rssBefore ??= rss;
    rssPeak = Math.max(rssPeak, rss);
  }, 250);
  try {
    const result = await iperf(iperf3, address.port, run);
    rssBefore ??= rssPeak = process.memoryUsage().rss;
    const expected = limitBytes * 8;
    const ratio = result.received / expected;
    t.diagnostic(
      `${(result.received / 1e6).toFixed(2)} Mbit/s for a limit of ${expected / 1e6} (ratio ${ratio.toFixed(3)}), RSS +${((rssPeak - rssBefore) / 1048576).toFixed(1)} MiB`,
    );
    assert.ok(
      ratio > 0.95 && ratio < 1.05,
      `measured ${(result.received / 1e6).toFixed(2)} Mbit/s for a limit of ${expected / 1e6} Mbit/s`,
    );
    // Flat memory: the proxy pauses the sender instead of buffering what it cannot pass yet.
    assert.ok(
      rssPeak - rssBefore < 32 * 1024 * 1024,
      `RSS grew by ${((rssPeak - rssBefore) / 1048576).toFixed(1)} MiB`,
    );
  } catch (err) {
    await proxy.close({ drainTimeout: 0 });
    throw err;
  } finally {
    clearInterval(sampler);
  }
  return proxy;
}

describe('bandwidth limits', () => {
  test('options are validated', () => {
    for (const [option, options] of [
      ['bandwidth.upload', { bandwidth: { upload: 0 } }],
      ['bandwidth.download', { bandwidth: { download: 1.5 } }],
      ['bandwidth.shared.per', { bandwidth: { shared: { per: 'client' } } }],
      ['bandwidth.burst', { bandwidth: { burst: 1 } }],
    ] as const) {
      assert.throws(
        () => new TcpProxy(options as never),
        (err: unknown) => err instanceof InvalidOptionError && err.option === option,
      );
    }
  });

  test('per connection, upload (relay onread) and download (relay stream), measured by iperf3', async (t) => {
    const iperf3 = tool(t, 'iperf3');
    if (iperf3 === undefined) return;
    await withIperfServer(iperf3, async (serverPort) => {
      const upload = await measure(
        iperf3,
        serverPort,
        { relay: 'onread', bandwidth: { upload: 30 * MBIT } },
        {},
        30 * MBIT,
        t,
      );
      assert.ok(upload.stats().bandwidth_upload_throttled > 0);
      assert.equal(upload.stats().bandwidth_download_throttled, 0);
      assert.match(upload.metrics(), /^l4proxy_tcp_bandwidth_upload_throttled_total [1-9]/m);
      await upload.close();
      const download = await measure(
        iperf3,
        serverPort,
        { relay: 'stream', bandwidth: { download: 20 * MBIT } },
        { reverse: true },
        20 * MBIT,
        t,
      );
      assert.ok(download.stats().bandwidth_download_throttled > 0);
      await download.close();
    });
  });

  test("shared per: 'upstream': two clients to one upstream share its budget, another upstream has its own", async (t) => {
    const RATE = 256 * 1024;
    const SIZE = 256 * 1024;
    // Sinks that count what arrives and answer the count when the client ends.
    const sink = () =>
      socketServer((socket) => {
        let bytes = 0;
        socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
        socket.on('end', () => socket.end(String(bytes)));
      });
    const [a, b] = await Promise.all([sink(), sink()]);
    t.after(() => Promise.all([a.close(), b.close()]));
    // Clients from 127.0.0.2 go to upstream a, from 127.0.0.3 to b.
    const proxy = new TcpProxy({
      upstreams: [
        { id: 'a', host: '127.0.0.1', port: a.port },
        { id: 'b', host: '127.0.0.1', port: b.port },
      ],
      selector: (ctx) =>
        ctx.candidates.find((c) => c.id === (ctx.clientAddress === '127.0.0.3' ? 'b' : 'a')),
      bandwidth: { shared: { upload: RATE, per: 'upstream' } },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
    const started = performance.now();
    /** Uploads SIZE bytes from `localAddress`; the seconds until the sink counted them all. */
    const upload = async (localAddress: string): Promise<number> => {
      const client = net.connect({ port, host: '127.0.0.1', localAddress, allowHalfOpen: true });
      client.on('error', () => undefined);
      t.after(() => client.destroy());
      await waitFor(client, 'connect');
      const answer = readAll(client, 30_000);
      client.end(Buffer.alloc(SIZE));
      assert.equal((await answer).toString(), String(SIZE));
      return (performance.now() - started) / 1000;
    };
    const [a1, a2, b1] = await Promise.all([
      upload('127.0.0.2'),
      upload('127.0.0.2'),
      upload('127.0.0.3'),
    ]);
    const pair = Math.max(a1, a2);
    t.diagnostic(
      `a's two clients: ${a1.toFixed(2)} s, ${a2.toFixed(2)} s; b's one: ${b1.toFixed(2)} s`,
    );
    // One budget for a's two: 512 KiB at 256 KiB/s take 2 s (a budget each: 1 s).
    assert.ok(pair >= 1.6, `a's clients took ${pair.toFixed(2)} s: not one budget`);
    // b has its own: done in about half that time (one proxy-wide budget would end all three
    // together, at 3 s).
    assert.ok(
      b1 < pair * 0.85,
      `b took ${b1.toFixed(2)} s against ${pair.toFixed(2)} s: not its own budget`,
    );
    assert.ok(proxy.stats().bandwidth_upload_throttled > 0);
  });

  test('what a client sends before its upstream connects is charged to its upload budget', async (t) => {
    const RATE = 64 * 1024;
    const SIZE = 128 * 1024;
    const sink = await socketServer((socket) => {
      let bytes = 0;
      socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
      socket.on('end', () => socket.end(String(bytes)));
    });
    t.after(() => sink.close());
    // The upstream is chosen only once the client's bytes are in: the first maxEarlyData
    // (64 KiB) of them are read and held before any upstream is connected.
    let written: () => void = () => undefined;
    const sent = new Promise<void>((resolve) => (written = resolve));
    const proxy = new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: sink.port }],
      selector: async (ctx) => {
        await sent;
        await new Promise((resolve) => setTimeout(resolve, 50));
        return ctx.candidates[0];
      },
      bandwidth: { upload: RATE },
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => undefined);
    t.after(() => client.destroy());
    await waitFor(client, 'connect');
    const started = performance.now();
    const answer = readAll(client, 30_000);
    client.end(Buffer.alloc(SIZE), () => {
      written();
    });
    assert.equal((await answer).toString(), String(SIZE));
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(`${SIZE / 1024} KiB at ${RATE / 1024} KiB/s in ${seconds.toFixed(2)} s`);
    // 128 KiB at 64 KiB/s: 2 s, or 1 s when the 64 KiB held before the connect go uncharged.
    assert.ok(seconds >= 1.6, `${seconds.toFixed(2)} s: the early bytes were not charged`);
  });

  test('one budget shared by the connections of the proxy (2 parallel streams)', async (t) => {
    const iperf3 = tool(t, 'iperf3');
    if (iperf3 === undefined) return;
    await withIperfServer(iperf3, async (serverPort) => {
      const proxy = await measure(
        iperf3,
        serverPort,
        { bandwidth: { upload: 100 * MBIT, shared: { upload: 24 * MBIT } } },
        { streams: 2 },
        24 * MBIT,
        t,
      );
      await proxy.close();
    });
  });
});
