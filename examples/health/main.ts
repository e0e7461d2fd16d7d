/**
 * Active health checks in action: two echo upstreams behind a TcpProxy; one goes down, traffic
 * moves off it as soon as a check fails, and returns once it passes two checks again.
 *
 * Run: npx tsc -p tsconfig.json && node build/examples/health/main.js
 */
import net from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { TcpProxy } from '../../src/index.js';

interface Upstream {
  name: string;
  port: number;
  server: Server | undefined;
  sockets: Set<Socket>;
}

async function listen(upstream: Upstream): Promise<void> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    upstream.sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => upstream.sockets.delete(socket));
    socket.write(`[${upstream.name}] `);
    socket.pipe(socket);
  });
  // Coming back on the same port can race the old listener's release: retry a few times.
  for (let attempt = 0; ; attempt++) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(upstream.port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      break;
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  upstream.server = server;
  upstream.port = (server.address() as AddressInfo).port;
}

async function stop(upstream: Upstream): Promise<void> {
  const server = upstream.server;
  upstream.server = undefined;
  for (const socket of upstream.sockets) socket.destroy();
  if (server === undefined) return;
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
}

async function request(port: number): Promise<string> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.end('hi');
  await new Promise((resolve, reject) => {
    socket.once('close', resolve);
    socket.once('error', reject);
  });
  return /^\[(\w+)\]/.exec(Buffer.concat(chunks).toString())?.[1] ?? 'failed';
}

async function phase(label: string, port: number): Promise<void> {
  const counts: Record<string, number> = {};
  for (let i = 0; i < 6; i++) {
    const name = await request(port);
    counts[name] = (counts[name] ?? 0) + 1;
  }
  const shares = Object.entries(counts)
    .sort()
    .map(([name, count]) => `${name}=${count}`)
    .join(' ');
  console.log(`${label.padEnd(14)} ${shares}`);
}

function healthChange(proxy: TcpProxy, id: string, healthy: boolean): Promise<void> {
  return new Promise((resolve) => {
    const listener = (upstream: { id: string }, ok: boolean, change: { detail: string }): void => {
      if (upstream.id !== id || ok !== healthy) return;
      console.log(`upstreamHealth ${id} ${ok ? 'healthy' : 'unhealthy'}: ${change.detail}`);
      proxy.off('upstreamHealth', listener);
      resolve();
    };
    proxy.on('upstreamHealth', listener);
  });
}

async function main(): Promise<void> {
  const blue: Upstream = { name: 'blue', port: 0, server: undefined, sockets: new Set() };
  const green: Upstream = { name: 'green', port: 0, server: undefined, sockets: new Set() };
  await listen(blue);
  await listen(green);
  const proxy = new TcpProxy({
    upstreams: [
      { id: 'blue', host: '127.0.0.1', port: blue.port },
      { id: 'green', host: '127.0.0.1', port: green.port },
    ],
    healthCheck: { interval: 100, timeout: 500, unhealthyThreshold: 1, healthyThreshold: 2 },
  });
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });

  await phase('both up', port);
  const down = healthChange(proxy, 'green', false);
  await stop(green);
  await down;
  await phase('green down', port);
  const up = healthChange(proxy, 'green', true);
  await listen(green);
  await up;
  await phase('green back', port);

  const stats = proxy.stats();
  console.log(
    `health checks: ${stats.upstream_health_check_attempts} run, ${stats.upstream_health_check_failures} failed; ` +
      `connect failures: ${stats.upstream_cx_connect_fail}`,
  );
  await proxy.close();
  await stop(blue);
  await stop(green);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
