/**
 * l4proxy on several cores: `node:cluster` workers, each running the same proxy as
 * `servers/l4proxy.ts` on one shared listening socket. TCP uses `SCHED_NONE` (the kernel hands
 * each accepted connection to one worker; the primary relays nothing), UDP shares one socket.
 * argv: tcp|udp, upstream port, responses per UDP session, workers. Sends `{ port }` over IPC.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { startL4proxy } from './startL4proxy.js';

const [protocol, upstreamArg, responsesArg, workersArg] = process.argv.slice(2);

async function worker(): Promise<void> {
  const { port } = await startL4proxy(protocol, Number(upstreamArg), Number(responsesArg ?? 0));
  process.send?.({ port });
}

function primary(): void {
  cluster.schedulingPolicy = cluster.SCHED_NONE;
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
        // Workers listening on port 0 share one socket, hence one port.
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

if (cluster.isPrimary) primary();
else {
  process.once('SIGTERM', () => process.exit(0));
  await worker();
}
