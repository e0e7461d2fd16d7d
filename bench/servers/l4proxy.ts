/**
 * l4proxy as a benchmark contender, in its own process (forked by the harness).
 * argv: tcp|udp, upstream port, responses per UDP session (0 = unlimited), and optionally a
 * variant: 'filter' (one pass-through filter) or 'preread' (TLS and PostgreSQL inspectors), '' for
 * none, and the loopback address (default 127.0.0.1; `::1` for IPv6).
 * Sends `{ port }` over IPC once listening; exits cleanly on SIGTERM so --cpu-prof is written.
 */
import { startL4proxy } from './startL4proxy.js';

const [protocol, upstreamArg, responsesArg, variant, host] = process.argv.slice(2);
const running = await startL4proxy(
  protocol,
  Number(upstreamArg),
  Number(responsesArg ?? 0),
  variant || undefined,
  undefined,
  host,
);
process.once('SIGTERM', () => {
  // Exit without waiting on clients: the profile is written by process.exit().
  void running.close();
  process.exit(0);
});
process.send?.({ port: running.port });
