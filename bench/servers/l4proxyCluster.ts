/**
 * l4proxy on several cores: `node:cluster` workers, each running the same proxy as
 * `servers/l4proxy.ts` on one shared listening socket. TCP uses `SCHED_NONE` (the kernel hands
 * each accepted connection to one worker; the primary relays nothing), UDP shares one socket.
 * argv: tcp|udp, upstream port, responses per UDP session, workers. Sends `{ port }` over IPC.
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { TcpProxy, UdpProxy } from '../../src/index.js';

const [protocol, upstreamArg, responsesArg, workersArg] = process.argv.slice(2);

async function worker(): Promise<void> {
  const upstreams = [{ host: '127.0.0.1', port: Number(upstreamArg) }];
  let port: number;
  if (protocol === 'udp') {
    const responses = Number(responsesArg ?? 0);
    const proxy = new UdpProxy(
      responses > 0 ? { upstreams, maxResponses: responses } : { upstreams },
    );
    port = (await proxy.bind({ port: 0, address: '127.0.0.1' })).port;
  } else {
    const proxy = new TcpProxy({ upstreams });
    const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
    if (typeof address === 'string') throw new Error('expected a TCP address');
    port = address.port;
  }
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
