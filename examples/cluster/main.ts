/**
 * Several cores on one machine with Node's `cluster`: the primary forks N workers, each runs its
 * own TcpProxy on the same port (cluster shares the listening socket; on Linux the primary
 * distributes connections round-robin). Each worker reports its closes to the primary, which
 * prints how the connections spread and exits 0.
 *
 *   node build/examples/cluster/main.js [workers=2] [connections=20]
 */
import cluster from 'node:cluster';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { TcpProxy } from '../../src/index.js';

interface Ready {
  ready: true;
}
interface Closed {
  closed: string;
}

async function primary(workers: number, connections: number): Promise<void> {
  const upstream = net.createServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));

  const perWorker = new Map<number, number>();
  const env = {
    PROXY_PORT: String(port),
    UPSTREAM_PORT: String((upstream.address() as AddressInfo).port),
  };
  const forked = Array.from({ length: workers }, () => cluster.fork(env));
  await Promise.all(
    forked.map(
      (worker) =>
        new Promise<void>((resolve) => {
          worker.on('message', (message: Ready | Closed) => {
            if ('ready' in message) resolve();
            else perWorker.set(worker.id, (perWorker.get(worker.id) ?? 0) + 1);
          });
        }),
    ),
  );
  for (let i = 0; i < connections; i++) {
    await new Promise<void>((resolve, reject) => {
      const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      client.on('error', reject);
      client.on('end', () => client.end());
      client.on('close', () => {
        resolve();
      });
      client.resume();
      client.end(`request ${i}`);
    });
  }
  // Closes are reported asynchronously: wait (bounded) until every one has arrived.
  for (
    let i = 0;
    i < 200 && [...perWorker.values()].reduce((a, b) => a + b, 0) < connections;
    i++
  ) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  for (const worker of forked) {
    console.log(
      `worker ${worker.id} (pid ${worker.process.pid}): ${perWorker.get(worker.id) ?? 0} connections`,
    );
  }
  const total = [...perWorker.values()].reduce((a, b) => a + b, 0);
  console.log(`${total} of ${connections} connections proxied by ${perWorker.size} workers`);
  for (const worker of forked) worker.kill('SIGTERM');
  await new Promise((resolve) => upstream.close(resolve));
  if (total !== connections) process.exitCode = 1;
}

async function worker(): Promise<void> {
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: Number(process.env.UPSTREAM_PORT) }],
  });
  proxy.on('connectionClose', (summary) => process.send?.({ closed: summary.reason }));
  await proxy.listen({ port: Number(process.env.PROXY_PORT), host: '127.0.0.1' });
  process.on('SIGTERM', () => {
    void proxy.close({ drainTimeout: 5_000 }).then(() => process.exit(0));
  });
  process.send?.({ ready: true });
}

if (cluster.isPrimary) {
  const [workers = '2', connections = '20'] = process.argv.slice(2);
  primary(Number(workers), Number(connections)).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
} else {
  worker().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
