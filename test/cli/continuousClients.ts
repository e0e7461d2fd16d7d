import { connect, readAll, withTimeout } from '../helpers/net.js';

/** One client: connects to `port`, sends `payload`, half-closes; resolves with what came back. */
export async function echoed(port: number, payload: string): Promise<string> {
  const client = await connect(port);
  const reply = readAll(client);
  client.end(payload);
  return (await reply).toString();
}

/** What {@link continuousClients} saw. */
export interface ClientsSeen {
  readonly sent: number;
  /** Clients started once `switched()` said so. */
  readonly after: number;
  /** One line per client not echoed exactly (refused, reset, timed out, wrong reply). */
  readonly failures: string[];
}

/**
 * Echo-checked clients to an echo behind `port`, opened one after another with up to 50 in
 * flight, while processes change behind the port: until 40 have started after `switched()`
 * turned true, or 4 000 in all (a slow handover under load), or `ms` passed (bounded in count and time).
 */
export async function continuousClients(
  port: number,
  switched: () => boolean,
  ms: number,
): Promise<ClientsSeen> {
  const failures: string[] = [];
  const inFlight = new Set<Promise<void>>();
  let sent = 0;
  let after = 0;
  const deadline = Date.now() + ms;
  while (sent < 4_000 && after < 40 && Date.now() < deadline) {
    const n = sent++;
    if (switched()) after++;
    const checked = (async (): Promise<void> => {
      try {
        const reply = await withTimeout(echoed(port, `client ${n}`), 10_000, `client ${n}`);
        if (reply !== `client ${n}`) failures.push(`client ${n}: ${JSON.stringify(reply)}`);
      } catch (err) {
        failures.push(`client ${n}: ${(err as Error).message}`);
      }
    })();
    inFlight.add(checked);
    void checked.finally(() => inFlight.delete(checked));
    if (inFlight.size >= 50) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  return { sent, after, failures };
}
