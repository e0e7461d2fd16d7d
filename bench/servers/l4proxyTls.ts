/**
 * l4proxy with TLS, as a contender of bench/tls.ts, in its own process.
 * argv: 'terminate' | 'originate' | 'originate-noresume', upstream port, cert file, key file, CA file.
 * Sends `{ port }` over IPC once listening; exits on SIGTERM.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { TcpProxy } from '../../src/index.js';

const [mode, upstreamArg, certFile, keyFile, caFile] = process.argv.slice(2);
if (!mode || !upstreamArg || !certFile || !keyFile || !caFile) throw new Error('bad arguments');
const upstreams = [{ host: '127.0.0.1', port: Number(upstreamArg) }];
const proxy =
  mode === 'terminate'
    ? new TcpProxy({
        upstreams,
        terminateTls: { cert: readFileSync(certFile), key: readFileSync(keyFile) },
      })
    : new TcpProxy({
        upstreams,
        tls: {
          ca: readFileSync(caFile),
          servername: 'localhost',
          sessionResumption: mode === 'originate',
        },
      });
const address = (await proxy.listen({ port: 0, host: '127.0.0.1' })) as AddressInfo;
process.once('SIGTERM', () => {
  void proxy.close({ drainTimeout: 0 });
  process.exit(0);
});
process.send?.({ port: address.port });
