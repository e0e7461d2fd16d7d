/**
 * l4proxy at both ends of an HTTP tunnel, as a benchmark contender in one forked process:
 * a `TcpProxy` whose upstream is a CONNECT tunnel (HTTP/1.1 or HTTP/2) through a `TunnelServer`,
 * which connects to the backend. The figures are the cost of both tunnel ends together.
 * argv: http/1.1|h2, upstream port. Sends `{ port }` over IPC once listening.
 */
import { TcpProxy, TunnelServer } from '../../src/index.js';

const [protocolArg, upstreamArg] = process.argv.slice(2);
const protocol = protocolArg === 'h2' ? 'h2' : 'http/1.1';
const target = `127.0.0.1:${String(Number(upstreamArg))}`;
const server = new TunnelServer({
  route: 'direct',
  authorize: (request) => request.authority === target,
});
const { port: tunnelPort } = await server.listen({ port: 0, host: '127.0.0.1' });
const proxy = new TcpProxy({
  upstreams: [{ host: '127.0.0.1', port: tunnelPort, tunnel: { protocol, target } }],
  maxConnections: 100_000,
});
const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
if (typeof address === 'string') throw new Error('expected a TCP address');
process.once('SIGTERM', () => {
  void proxy.close({ drainTimeout: 0 });
  void server.close();
  process.exit(0);
});
process.send?.({ port: address.port });
