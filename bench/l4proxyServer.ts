/** l4proxy as a benchmark contender. argv: listen port, upstream port. */
import { TcpProxy } from '../src/index.js';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: upstreamPort! }] });
void proxy.listen({ port: listenPort!, host: '127.0.0.1' }).then(() => process.send?.('ready'));
