/**
 * l4proxy as a benchmark contender, in its own process (forked by the harness).
 * argv: tcp|udp, upstream port, responses per UDP session (0 = unlimited).
 * Sends `{ port }` over IPC once listening; exits cleanly on SIGTERM so --cpu-prof is written.
 */
import { TcpProxy, UdpProxy } from '../../src/index.js';

const [protocol, upstreamArg, responsesArg] = process.argv.slice(2);
const upstreams = [{ host: '127.0.0.1', port: Number(upstreamArg) }];

async function main(): Promise<{ port: number; close: () => Promise<void> }> {
  if (protocol === 'udp') {
    const responses = Number(responsesArg ?? 0);
    const proxy = new UdpProxy(
      responses > 0 ? { upstreams, maxResponses: responses } : { upstreams },
    );
    const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
    return { port: address.port, close: () => proxy.close() };
  }
  const proxy = new TcpProxy({ upstreams });
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  if (typeof address === 'string') throw new Error('expected a TCP address');
  return { port: address.port, close: () => proxy.close() };
}

const running = await main();
process.once('SIGTERM', () => {
  // Exit without waiting on clients: the profile is written by process.exit().
  void running.close();
  process.exit(0);
});
process.send?.({ port: running.port });
