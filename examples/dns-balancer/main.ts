/**
 * A DNS load balancer: queries reaching one UDP address are spread over several resolvers,
 * round robin, one session per query (`maxResponses: 1`, as nginx's `proxy_responses 1`).
 *
 *   node build/examples/dns-balancer/main.js --listen 127.0.0.1:5353 \
 *     --upstream 127.0.0.1:5301 --upstream 127.0.0.1:5302
 *   dig @127.0.0.1 -p 5353 example.test
 *
 * Writes one JSON line per event to stdout; SIGINT or SIGTERM closes it cleanly.
 * (In your own code, import from 'l4proxy' instead of the source tree.)
 */
import { parseArgs } from 'node:util';
import { UdpProxy } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';

/** `host:port` or `[v6]:port` to parts. */
function hostPort(text: string): { host: string; port: number } {
  const match = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (match?.[1] === undefined || match[2] === undefined) {
    throw new Error(`expected host:port, got ${JSON.stringify(text)}`);
  }
  return { host: match[1], port: Number(match[2]) };
}

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      listen: { type: 'string', default: '127.0.0.1:5353' },
      upstream: { type: 'string', multiple: true, default: [] },
      'idle-timeout': { type: 'string', default: '5000' },
    },
  });
  const upstreams: Upstream[] = values.upstream.map(hostPort);
  if (upstreams.length === 0) throw new Error('give at least one --upstream host:port');
  const listen = hostPort(values.listen);

  const proxy = new UdpProxy({
    upstreams,
    maxResponses: 1,
    // A resolver that never answers must not hold a socket for long.
    idleTimeout: Number(values['idle-timeout']),
  });
  proxy.on('sessionClose', (s) => {
    log('query', {
      client: `${s.clientAddress}:${s.clientPort}`,
      upstream: s.upstream?.id,
      reason: s.reason,
      ms: s.durationMs,
    });
  });
  proxy.on('dropped', (d) => {
    log('dropped', { reason: d.reason, client: `${d.clientAddress}:${d.clientPort}` });
  });
  proxy.on('error', (err) => {
    log('error', { message: err.message });
  });

  const address = await proxy.bind({ address: listen.host, port: listen.port });
  log('listening', { address: address.address, port: address.port });

  const stop = (): void => {
    void proxy.close().then(() => {
      log('closed', { stats: proxy.stats() });
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
