/**
 * One port in front of two PostgreSQL clusters, routed by the database each client asks for.
 * The proxy terminates TLS: a client's `SSLRequest` is answered `S`, the handshake uses the given
 * certificate, and the startup message (user, database, application_name) is read decrypted; the
 * clusters get plain PostgreSQL. Clients without TLS (`sslmode=disable`) are served too.
 *
 *   npm run build:test && node build/examples/postgres-router/main.js \
 *     --listen 127.0.0.1:6432 --main 127.0.0.1:5432 --billing 127.0.0.1:5433 \
 *     --cert server.pem --key server.key [--billing-databases billing,invoices]
 *
 *   psql "host=127.0.0.1 port=6432 dbname=billing sslmode=require"
 *
 * Prints one JSON line when listening and one per routed client; SIGTERM or SIGINT closes it.
 * (In your own code, import from 'l4proxy' instead of the source tree.)
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TcpProxy, postgresStartup } from '../../src/index.js';

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function hostPort(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(':');
  return { host: text.slice(0, at), port: Number(text.slice(at + 1)) };
}

const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:6432' },
    main: { type: 'string', default: '127.0.0.1:5432' },
    billing: { type: 'string', default: '127.0.0.1:5433' },
    'billing-databases': { type: 'string', default: 'billing' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});
if (values.cert === undefined || values.key === undefined) {
  process.stderr.write(
    '--cert and --key are required (PEM files of the certificate clients see)\n',
  );
  process.exit(2);
}
const billingDatabases = new Set(values['billing-databases'].split(','));

const proxy = new TcpProxy({
  upstreams: [
    { id: 'main', ...hostPort(values.main) },
    { id: 'billing', ...hostPort(values.billing) },
  ],
  terminateTls: { cert: readFileSync(values.cert), key: readFileSync(values.key) },
  preread: { inspectors: { pg: postgresStartup() }, timeout: 5_000, plaintext: 'accept' },
  selector: (ctx) => {
    const database = ctx.preread?.pg?.database;
    const group =
      typeof database === 'string' && billingDatabases.has(database) ? 'billing' : 'main';
    return ctx.candidates.find((candidate) => candidate.id === group);
  },
});
proxy.on('connection', (connection) => {
  const pg = connection.preread?.pg;
  log('client', {
    id: connection.id,
    database: pg?.database,
    user: pg?.user,
    tls: connection.tls?.version ?? null,
  });
});
proxy.on('connectionClose', (summary) => {
  log('served', { id: summary.id, upstream: summary.upstream?.id, reason: summary.reason });
});
proxy.on('rejected', (rejection) => {
  log('rejected', { reason: rejection.reason, detail: rejection.detail });
});
proxy.on('error', (error) => {
  log('error', { message: error.message });
});
const { host, port } = hostPort(values.listen);
const address = await proxy.listen({ host, port });
log('listening', { port: address.port });

const stop = (): void => {
  void proxy.close({ drainTimeout: 1_000 }).then(() => {
    log('closed', { routed: proxy.stats().downstream_cx_total });
  });
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
