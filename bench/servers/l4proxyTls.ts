/**
 * l4proxy with TLS, as a contender of bench/tls.ts, in its own process.
 * argv: 'terminate' | 'terminate-mtls' | 'originate' | 'originate-noresume' | 'both', upstream
 * port, cert file,
 * key file, CA file. `both` runs an originating proxy in front of a terminating one (bulk runs).
 * Sends `{ port }` over IPC once listening; exits on SIGTERM.
 */
import { readFileSync } from 'node:fs';
import { TcpProxy } from '../../src/index.js';

const [mode, upstreamArg, certFile, keyFile, caFile] = process.argv.slice(2);
if (!mode || !upstreamArg || !certFile || !keyFile || !caFile) throw new Error('bad arguments');
const upstreams = [{ host: '127.0.0.1', port: Number(upstreamArg) }];
const terminateTls = { cert: readFileSync(certFile), key: readFileSync(keyFile) };
const ca = readFileSync(caFile);

async function listen(proxy: TcpProxy): Promise<number> {
  return (await proxy.listen({ port: 0, host: '127.0.0.1' })).port;
}

let port: number;
if (mode === 'terminate') {
  port = await listen(new TcpProxy({ upstreams, terminateTls }));
} else if (mode === 'terminate-mtls') {
  // Clients must present a certificate the CA signed (nginx `ssl_verify_client on`).
  port = await listen(
    new TcpProxy({
      upstreams,
      terminateTls: { ...terminateTls, clientCertificate: 'required', ca },
    }),
  );
} else if (mode === 'both') {
  const inner = await listen(new TcpProxy({ upstreams, terminateTls }));
  port = await listen(
    new TcpProxy({
      upstreams: [{ host: '127.0.0.1', port: inner }],
      tls: { ca, servername: 'localhost' },
    }),
  );
} else {
  // L4PROXY_BENCH_TLS_OPTIONS: JSON merged into `tls`, to count a setting that is not the
  // default (`{"subjectAltNames":[{"type":"dns","exact":"localhost"}]}`) with the same harness.
  const extra = JSON.parse(process.env.L4PROXY_BENCH_TLS_OPTIONS || '{}') as object;
  port = await listen(
    new TcpProxy({
      upstreams,
      tls: { ca, servername: 'localhost', sessionResumption: mode === 'originate', ...extra },
    }),
  );
}
process.once('SIGTERM', () => {
  process.exit(0);
});
process.send?.({ port });
