/**
 * TCP bulk throughput with iperf3 on loopback: direct, l4proxy and the naive pipe() proxy,
 * interleaved, each repetition on a fresh proxy process. Prints medians and ratios.
 *
 *   node build/bench/throughput.js [--seconds 5] [--reps 3] [--streams 1] [--reverse]
 */
import { execFile, fork, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    reps: { type: 'string', default: '3' },
    streams: { type: 'string', default: '1' },
    reverse: { type: 'boolean', default: false },
  },
});

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startProxy(script: string, port: number, upstream: number): Promise<ChildProcess> {
  const child = fork(fileURLToPath(new URL(script, import.meta.url)), [
    String(port),
    String(upstream),
  ]);
  await new Promise((resolve) => child.once('message', resolve));
  return child;
}

async function iperf(port: number): Promise<number> {
  const args = [
    '-c',
    '127.0.0.1',
    '-p',
    String(port),
    '-t',
    values.seconds,
    '-P',
    values.streams,
    '-J',
  ];
  if (values.reverse) args.push('-R');
  const { stdout } = await promisify(execFile)('iperf3', args, { maxBuffer: 64 * 1024 * 1024 });
  const result = JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } };
  return result.end.sum_received.bits_per_second / 1e9;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const iperfPort = await freePort();
const server = spawn('iperf3', ['-s', '-p', String(iperfPort), '-B', '127.0.0.1'], {
  stdio: 'ignore',
});
await new Promise((resolve) => setTimeout(resolve, 500));
const contenders: Record<string, number[]> = { direct: [], l4proxy: [], 'naive pipe()': [] };
try {
  for (let rep = 0; rep < Number(values.reps); rep++) {
    contenders.direct!.push(await iperf(iperfPort));
    for (const [name, script] of [
      ['l4proxy', './l4proxyServer.js'],
      ['naive pipe()', './naiveProxy.js'],
    ] as const) {
      const port = await freePort();
      const proxy = await startProxy(script, port, iperfPort);
      try {
        contenders[name]!.push(await iperf(port));
      } finally {
        proxy.kill();
      }
    }
  }
} finally {
  server.kill();
}
const direct = median(contenders.direct!);
const naive = median(contenders['naive pipe()']!);
console.log(
  `iperf3 ${values.streams} stream(s), ${values.seconds}s x ${values.reps}${values.reverse ? ', reverse' : ''}`,
);
for (const [name, xs] of Object.entries(contenders)) {
  const m = median(xs);
  console.log(
    `${name.padEnd(14)} median ${m.toFixed(2)} Gbit/s (min ${Math.min(...xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)})  ` +
      `x direct ${(m / direct).toFixed(2)}  x naive ${(m / naive).toFixed(2)}`,
  );
}
