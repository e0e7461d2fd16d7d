/**
 * Node's own TLS server and nothing else, as a contender of bench/tls.ts: `tls.createServer`
 * echoing what each client sends, in its own process, no upstream. What a Node TLS terminator
 * costs before it proxies anything: the handshake rows' floor for any proxy built on `node:tls`'s
 * `TLSSocket` (l4proxy's default relay drives Node's TLS stream on the bare handle instead).
 * argv: cert file, key file. Sends `{ port }` over IPC once listening; exits on SIGTERM.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';

const [certFile, keyFile] = process.argv.slice(2);
if (!certFile || !keyFile) throw new Error('bad arguments');
const server = tls.createServer(
  { cert: readFileSync(certFile), key: readFileSync(keyFile) },
  (socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  },
);
server.on('tlsClientError', () => undefined);
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  if (address !== null && typeof address === 'object') process.send?.({ port: address.port });
});
process.once('SIGTERM', () => process.exit(0));
