/**
 * The README's first command: `npm install && npm start`.
 *
 * Starts three echo upstreams inside this process (one weighted 2) and a fourth address where
 * nothing listens, puts a TcpProxy in front, pushes traffic through it from a few clients, prints
 * what happened. On a terminal (or with `--stay`) it then stays up for the reader to try it (it
 * prints how) until Ctrl-C (SIGINT) or SIGTERM; otherwise (a script, CI, a pipe) it stops at once.
 * Either way it closes the proxy and the upstreams and exits 0.
 */
import net from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { TcpProxy, roundRobin } from '../../src/index.js';
import type { TcpConnectionSummary, Upstream } from '../../src/index.js';

const CLIENTS = 12;

/** Sockets the upstreams accepted: a reader's `nc` left open must not hold the exit. */
const accepted = new Set<net.Socket>();

async function echoUpstream(name: string): Promise<{ server: Server; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => undefined);
    accepted.add(socket);
    socket.once('close', () => accepted.delete(socket));
    socket.write(`[${name}] `);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

async function deadPort(): Promise<number> {
  const { server, port } = await echoUpstream('gone');
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
  return port;
}

async function client(port: number, message: string): Promise<string> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.end(message);
  await new Promise((resolve, reject) => {
    socket.once('close', resolve);
    socket.once('error', reject);
  });
  return Buffer.concat(chunks).toString();
}

function table(rows: (string | number)[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => String(row[i]).length)));
  return rows
    .map((row, r) => {
      const line = row.map((cell, i) => String(cell).padEnd(widths[i]!)).join('  ');
      return r === 0 ? `${line}\n${widths.map((w) => '-'.repeat(w)).join('  ')}` : line;
    })
    .join('\n');
}

async function main(): Promise<void> {
  const upstreamServers = await Promise.all(['alpha', 'beta', 'gamma'].map(echoUpstream));
  const upstreams: Upstream[] = [
    { id: 'alpha', host: '127.0.0.1', port: upstreamServers[0]!.port, weight: 2 },
    { id: 'beta', host: '127.0.0.1', port: upstreamServers[1]!.port },
    { id: 'gamma', host: '127.0.0.1', port: upstreamServers[2]!.port },
    { id: 'down', host: '127.0.0.1', port: await deadPort() },
  ];
  const proxy = new TcpProxy({ upstreams, selector: roundRobin(), connectTimeout: 1_000 });
  const summaries: TcpConnectionSummary[] = [];
  proxy.on('connectionClose', (summary) => summaries.push(summary));
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
  console.log(`l4proxy demo: proxy on 127.0.0.1:${port} in front of ${upstreams.length} upstreams`);
  console.log(`(alpha has weight 2; "down" refuses connections, so the proxy retries elsewhere)\n`);

  const replies = await Promise.all(
    Array.from({ length: CLIENTS }, (_, i) => client(port, `hello from client ${i + 1}`)),
  );
  for (const reply of replies.slice(0, 4)) console.log(`  reply: ${reply}`);
  console.log(`  ... ${replies.length} replies in all\n`);

  const stats = proxy.stats();
  console.log(
    table([
      ['upstream', 'weight', 'connections', 'connect failures', 'bytes sent', 'bytes received'],
      ...upstreams.map((u) => {
        const s = stats.upstreams[u.id!]!;
        return [
          u.id!,
          u.weight ?? 1,
          s.upstream_cx_total - s.upstream_cx_connect_fail,
          s.upstream_cx_connect_fail,
          s.upstream_cx_tx_bytes_total,
          s.upstream_cx_rx_bytes_total,
        ];
      }),
    ]),
  );
  console.log();
  const reasons = Object.entries(stats.close_reasons).filter(([, n]) => n > 0);
  console.log(table([['close reason', 'connections'], ...reasons]));
  const retried = summaries.filter((s) => s.attempts > 1).length;
  console.log(
    `\n${summaries.length} connections, ${retried} needed a retry, ${stats.downstream_cx_rx_bytes_total} bytes in, ${stats.downstream_cx_tx_bytes_total} bytes out.`,
  );

  const ok = replies.every((reply, i) => reply.endsWith(`hello from client ${i + 1}`));
  if (!ok) throw new Error('a reply did not match its request');

  // A script running `npm start` (no terminal) gets its exit; a reader gets a proxy to try.
  if (process.stdout.isTTY || process.argv.includes('--stay')) {
    const stopped = stopSignal(); // listening before the line that says Ctrl-C works
    console.log(`\nThe proxy stays up on 127.0.0.1:${port}; try it from another terminal:`);
    console.log(
      `  nc 127.0.0.1 ${port}   then type a line: an upstream echoes it, prefixed with its name`,
    );
    console.log('Ctrl-C stops it.');
    await stopped;
  }

  await proxy.close({ drainTimeout: 0 }); // a reader's nc is cut, not waited for
  for (const socket of accepted) socket.destroy();
  await Promise.all(
    upstreamServers.map(({ server }) => new Promise((resolve) => server.close(resolve))),
  );
  console.log(`\nStopped after ${proxy.stats().downstream_cx_total} connections.`);
}

/** Resolves on the first Ctrl-C (SIGINT) or SIGTERM; a second one exits at once. */
function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (): void => {
      if (stopping) process.exit(130);
      stopping = true;
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
