/**
 * l4proxy on several cores: `node:cluster` workers, each running the same proxy as
 * `servers/l4proxy.ts`. On Node >= 22.12 each worker opens its own SO_REUSEPORT socket on one
 * port (the kernel spreads connections and UDP flows, as `l4proxy --workers` does); on older Node
 * they share one listening socket, TCP with `SCHED_NONE` (the kernel hands each accepted
 * connection to one worker; the primary relays nothing), UDP one socket.
 * argv: tcp|udp, upstream port, responses per UDP session, workers. Sends `{ port }` over IPC.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import dgram from 'node:dgram';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { reusePortSupported } from '../../src/index.js';
import { startL4proxy } from './startL4proxy.js';

const [protocol, upstreamArg, responsesArg, workersArg] = process.argv.slice(2);

async function worker(): Promise<void> {
  const shared = process.env.L4PROXY_BENCH_REUSE_PORT;
  const { port } = await startL4proxy(
    protocol,
    Number(upstreamArg),
    Number(responsesArg ?? 0),
    undefined,
    shared === undefined ? undefined : Number(shared),
  );
  process.send?.({ port });
}

/** A port free now on 127.0.0.1 for `protocol` (bound and released). */
async function freePort(): Promise<number> {
  if (protocol === 'udp') {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const { port } = socket.address();
    socket.close();
    return port;
  }
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function primary(): Promise<void> {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  if (reusePortSupported()) process.env.L4PROXY_BENCH_REUSE_PORT = String(await freePort());
  const count = Math.max(1, Number(workersArg ?? 2));
  const workers: Worker[] = [];
  const ports = new Set<number>();
  let ready = 0;
  for (let i = 0; i < count; i++) {
    const child = cluster.fork();
    workers.push(child);
    child.on('message', (message: { port?: number }) => {
      if (message.port === undefined) return;
      ports.add(message.port);
      if (++ready === count) {
        // Workers on port 0 share one socket, with SO_REUSEPORT one port: one port either way.
        if (ports.size !== 1) throw new Error(`workers listen on ${[...ports].join(', ')}`);
        process.send?.({ port: message.port });
      }
    });
  }
  process.once('SIGTERM', () => {
    for (const child of workers) child.process.kill('SIGTERM');
    process.exit(0);
  });
}

if (cluster.isPrimary) await primary();
else {
  process.once('SIGTERM', () => process.exit(0));
  await worker();
}
