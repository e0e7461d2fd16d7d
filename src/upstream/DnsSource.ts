import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { InvalidOptionError, UpstreamSourceError } from '../errors.js';
import { runSafely } from '../internal/emit.js';
import {
  boolean,
  duration,
  integer,
  nonEmptyString,
  optionalRecord,
  rejectUnknownKeys,
} from '../internal/validate.js';
import type { Upstream } from './Upstream.js';
import { upstreamId } from './Upstream.js';
import { byPriorityThenId, sameUpstreams } from './sameUpstreams.js';
import type { UpstreamSink, UpstreamSource } from './UpstreamSource.js';

/** Address record types a {@link DnsSource} can follow. */
export type DnsAddressType = 'A' | 'AAAA' | 'A/AAAA';

/**
 * Options of {@link DnsSource}. Durations are in milliseconds.
 *
 * @example
 * new DnsSource({ name: 'db.internal', type: 'A', port: 5432, refreshInterval: 10_000 });
 * new DnsSource({ name: '_pg._tcp.db.service.consul', type: 'SRV', servers: ['127.0.0.1:8600'] });
 */
export interface DnsSourceOptions {
  /** The name to resolve (for SRV: `_service._proto.name`). */
  readonly name: string;
  /** Record type. `'A/AAAA'` merges both families (IPv4 first). Default `'A'`. */
  readonly type?: DnsAddressType | 'SRV';
  /** Upstream port for A/AAAA answers (required for them; SRV records carry their own). */
  readonly port?: number;
  /** DNS servers (`'10.0.0.2'`, `'127.0.0.1:5353'`, `'[::1]:53'`). Default: the system's. */
  readonly servers?: readonly string[];
  /** Time between lookups, and the longest an answer is used. Default 30 000. */
  readonly refreshInterval?: number;
  /** Look again when the answer's lowest TTL runs out, if that is sooner than `refreshInterval`. Default true. */
  readonly respectTtl?: boolean;
  /** Floor of a TTL-driven refresh (a TTL of 0 would otherwise spin). Default 1000. */
  readonly minRefreshInterval?: number;
  /**
   * Time before the lookup after a failed one (no answer at all: servers down, timeouts,
   * SERVFAIL), doubled at each failure in a row up to `refreshInterval`, so a proxy that starts
   * while its DNS is down gets its upstreams within about this long of DNS coming back. Default
   * 1000 (HAProxy resolvers' `timeout retry`; Envoy `dns_failure_refresh_rate`).
   */
  readonly failureRefreshInterval?: number;
  /** Time one query waits for an answer before it is retried. Default 5000. */
  readonly timeout?: number;
  /** Attempts per query (per server) before the lookup fails. Default 2. */
  readonly tries?: number;
  /**
   * What an empty answer (the name exists with no record of the type, or NXDOMAIN) does:
   * `'keep'` keeps the last good set and reports the empty answer as an error; `'clear'` empties
   * the set (new connections then close with `no_upstream`). Default `'keep'`.
   */
  readonly onEmpty?: 'keep' | 'clear';
  /**
   * SRV only: how targets become addresses. `'A'`, `'AAAA'` or `'A/AAAA'` resolve each target
   * through the same servers; `'hostname'` keeps the target name (resolved at each connect by
   * the system resolver). Default `'A'`.
   */
  readonly srvTargets?: DnsAddressType | 'hostname';
}

/** Counters of a {@link DnsSource}. */
export interface DnsSourceStats {
  /** Lookups started. */
  readonly lookups: number;
  /**
   * Lookups that failed: wholly (the last good set was kept) or in part (an AAAA query or an SRV
   * target failed; its last good answer was used with the others).
   */
  readonly failures: number;
  /** Lookups that returned no record. */
  readonly empty: number;
  /** Lists delivered: only when the set changed, whatever order the resolver answered in. */
  readonly updates: number;
  /** The last failure, if any. */
  readonly lastError: Error | undefined;
}

interface ResolvedDnsOptions {
  readonly name: string;
  readonly type: DnsAddressType | 'SRV';
  readonly port: number;
  readonly refreshInterval: number;
  readonly respectTtl: boolean;
  readonly minRefreshInterval: number;
  readonly failureRefreshInterval: number;
  readonly onEmpty: 'keep' | 'clear';
  readonly srvTargets: DnsAddressType | 'hostname';
}

interface Answer {
  readonly upstreams: Upstream[];
  /** Lowest TTL of the answer in seconds, when known. */
  readonly ttl: number | undefined;
}

interface Address {
  readonly address: string;
  readonly ttl: number | undefined;
}

/** One lookup's address queries: how many ran, which failed, and each one's answer. */
interface Attempt {
  queries: number;
  readonly failures: UpstreamSourceError[];
  readonly answers: Map<string, Address[]>;
}

const KEYS = [
  'name',
  'type',
  'port',
  'servers',
  'refreshInterval',
  'respectTtl',
  'minRefreshInterval',
  'failureRefreshInterval',
  'timeout',
  'tries',
  'onEmpty',
  'srvTargets',
] as const;
const ADDRESS_TYPES: readonly string[] = ['A', 'AAAA', 'A/AAAA'];
const EMPTY_CODES = new Set(['ENODATA', 'ENOTFOUND']);

/**
 * An {@link UpstreamSource} that follows DNS: A/AAAA records (with a fixed port) or SRV records
 * (Kubernetes headless services, Consul), through a `node:dns` `Resolver` with its own servers.
 * SRV priority becomes `Upstream.priority` (for `failover()`), SRV weight becomes `weight`
 * (weight 0 becomes 1). A failed lookup keeps the last good set, is reported and is retried
 * sooner (`failureRefreshInterval`, doubling); a query of it
 * that fails while others answer (AAAA of `'A/AAAA'`, one SRV target) gives its last good answer
 * and is reported; an empty answer does what `onEmpty` says. A list is delivered only when the
 * set changed: resolvers rotate their answers, so lists are sorted (priority, then id) and
 * compared whatever the order. Timers are unref'd.
 *
 * @example
 * const proxy = new TcpProxy({
 *   upstreamSource: new DnsSource({ name: 'api.default.svc.cluster.local', port: 8080 }),
 * });
 */
export class DnsSource implements UpstreamSource {
  private readonly options: ResolvedDnsOptions;
  private readonly resolver: Resolver;
  private sink: UpstreamSink | undefined;
  private timer: NodeJS.Timeout | undefined;
  private generation = 0;
  /** Lookups failed in a row: the next retry waits twice as long (see retryDelay). */
  private failuresInARow = 0;
  private delivered = false;
  private last: readonly Upstream[] = [];
  private counters = { lookups: 0, failures: 0, empty: 0, updates: 0 };
  /** The last good answer of each address query (`'A name'`), for one that fails next time. */
  private answers = new Map<string, Address[]>();
  private lastError: Error | undefined;
  private warm = false;
  /** Callers of whenWarmed() before the first lookup completed. */
  private warmWaiters: (() => void)[] = [];

  /** @throws {InvalidOptionError} naming the first invalid option. */
  constructor(options: DnsSourceOptions) {
    const raw = optionalRecord(options, 'DnsSource options');
    rejectUnknownKeys(raw, KEYS, '');
    const type = oneOf(raw.type, 'type', [...ADDRESS_TYPES, 'SRV'], 'A') as DnsAddressType | 'SRV';
    if (type === 'SRV' && raw.port !== undefined) {
      throw new InvalidOptionError('port', 'no port for SRV (records carry their own)', raw.port);
    }
    if (type !== 'SRV' && raw.port === undefined) {
      throw new InvalidOptionError('port', 'an integer from 1 to 65535', undefined);
    }
    const refreshInterval = duration(raw.refreshInterval, 'refreshInterval', 30_000, 1);
    this.options = {
      name: nonEmptyString(raw.name, 'name'),
      type,
      port: integer(raw.port, 'port', 0, { min: 1, max: 65535 }),
      refreshInterval,
      respectTtl: boolean(raw.respectTtl, 'respectTtl', true),
      minRefreshInterval: duration(raw.minRefreshInterval, 'minRefreshInterval', 1_000, 1),
      failureRefreshInterval: duration(
        raw.failureRefreshInterval,
        'failureRefreshInterval',
        1_000,
        1,
      ),
      onEmpty: oneOf(raw.onEmpty, 'onEmpty', ['keep', 'clear'], 'keep') as 'keep' | 'clear',
      srvTargets: oneOf(raw.srvTargets, 'srvTargets', [...ADDRESS_TYPES, 'hostname'], 'A') as
        DnsAddressType | 'hostname',
    };
    this.resolver = new Resolver({
      timeout: duration(raw.timeout, 'timeout', 5_000, 1),
      tries: integer(raw.tries, 'tries', 2, { min: 1, max: 10 }),
    });
    if (raw.servers !== undefined) this.setServers(raw.servers);
  }

  private setServers(servers: unknown): void {
    if (!Array.isArray(servers) || servers.length === 0) {
      throw new InvalidOptionError('servers', 'a non-empty array of server addresses', servers);
    }
    servers.forEach((server: unknown, index) => {
      nonEmptyString(server, `servers[${index}]`);
    });
    try {
      this.resolver.setServers(servers as string[]);
    } catch {
      throw new InvalidOptionError(
        'servers',
        "addresses like '10.0.0.2' or '127.0.0.1:5353'",
        servers,
      );
    }
  }

  /** Starts looking up (the first lookup at once) and delivering lists into `sink`. */
  start(sink: UpstreamSink): void {
    this.stop();
    this.sink = sink;
    this.failuresInARow = 0;
    this.refresh(this.generation);
  }

  /** Stops: the timer is cleared, queries in flight are cancelled and their answers dropped. */
  stop(): void {
    this.generation++;
    this.sink = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.resolver.cancel();
  }

  /** The last list delivered. */
  get upstreams(): readonly Upstream[] {
    return this.last;
  }

  /**
   * Whether the first lookup has completed: answered (even with no record) or failed, as Envoy
   * warms a DNS cluster (its first resolution, whatever its outcome; a failure is then retried
   * after `failureRefreshInterval`). Stays true, across stop() and start(). A field read: cheap
   * enough for a readiness probe (`createAdminServer({ ready })`).
   */
  get warmed(): boolean {
    return this.warm;
  }

  /**
   * Resolves once {@link warmed} is true (at once if it is already). Never rejects; stays pending
   * if the source is stopped before its first lookup completes.
   */
  whenWarmed(): Promise<void> {
    if (this.warm) return Promise.resolve();
    return new Promise((resolve) => this.warmWaiters.push(resolve));
  }

  /** Lookup counters. */
  stats(): DnsSourceStats {
    return { ...this.counters, lastError: this.lastError };
  }

  private refresh(generation: number): void {
    this.timer = undefined;
    this.counters.lookups++;
    const attempt: Attempt = { queries: 0, failures: [], answers: new Map() };
    this.lookup(attempt).then(
      (answer) => {
        if (generation !== this.generation) return;
        this.answers = attempt.answers;
        const [failure] = attempt.failures;
        if (failure !== undefined) this.partlyFailed(failure, attempt.failures.length);
        this.answered(answer, generation);
      },
      (err: unknown) => {
        if (generation === this.generation) this.failed(err, generation);
      },
    );
  }

  private answered(answer: Answer, generation: number): void {
    const { refreshInterval, respectTtl, minRefreshInterval } = this.options;
    this.failuresInARow = 0;
    if (answer.upstreams.length === 0) {
      this.counters.empty++;
      if (this.options.onEmpty === 'keep') {
        this.report(
          new UpstreamSourceError(
            `DNS ${this.describe()} returned no record; keeping the last ${this.last.length} upstream(s) (onEmpty: 'keep')`,
          ),
        );
      } else this.deliver([]);
      this.schedule(refreshInterval, generation);
      this.warmUp();
      return;
    }
    this.deliver(answer.upstreams);
    const ttl = answer.ttl;
    const delay =
      respectTtl && ttl !== undefined
        ? Math.min(refreshInterval, Math.max(minRefreshInterval, ttl * 1000))
        : refreshInterval;
    this.schedule(delay, generation);
    this.warmUp();
  }

  /**
   * Some queries of a lookup failed and others answered: the answers are used, with the last
   * good answer of each failed query (one AAAA or SRV target failing must not hold back the rest,
   * nor leave a proxy that has no set yet without one). Counted and reported as a failure.
   */
  private partlyFailed(first: UpstreamSourceError, count: number): void {
    this.counters.failures++;
    const others = count > 1 ? ` (and ${count - 1} more)` : '';
    this.report(
      new UpstreamSourceError(
        `${first.message}${others}; using the other answers and the last good answer of the failed ${count > 1 ? 'queries' : 'query'}`,
        first.cause,
      ),
    );
  }

  private failed(err: unknown, generation: number): void {
    this.counters.failures++;
    const error =
      err instanceof UpstreamSourceError
        ? err
        : new UpstreamSourceError(`DNS ${this.describe()} failed: ${String(err)}`, err);
    this.report(error);
    this.schedule(this.retryDelay(), generation);
    this.warmUp();
  }

  /** The first lookup completed (its list, or its failure, already went to the sink). */
  private warmUp(): void {
    if (this.warm) return;
    this.warm = true;
    for (const resolve of this.warmWaiters.splice(0)) resolve();
  }

  /** `failureRefreshInterval`, doubled at each failure in a row, at most `refreshInterval`. */
  private retryDelay(): number {
    const { refreshInterval, failureRefreshInterval } = this.options;
    const delay = failureRefreshInterval * 2 ** Math.min(this.failuresInARow, 30);
    this.failuresInARow++;
    return Math.min(refreshInterval, delay);
  }

  private report(error: Error): void {
    this.lastError = error;
    const sink = this.sink;
    // A sink that throws has a bug of its own: surfaced on the next tick, as a listener error.
    if (sink)
      runSafely(() => {
        sink.error(error);
      });
  }

  /** Delivers the list unless it holds the same set as the last one, in whatever order. */
  private deliver(upstreams: Upstream[]): void {
    upstreams.sort(byPriorityThenId);
    if (this.delivered && sameUpstreams(this.last, upstreams)) return;
    this.delivered = true;
    this.last = upstreams;
    this.counters.updates++;
    const sink = this.sink;
    if (sink)
      runSafely(() => {
        sink.update(upstreams);
      });
  }

  private schedule(delay: number, generation: number): void {
    if (generation !== this.generation) return;
    this.timer = setTimeout(() => {
      this.refresh(generation);
    }, delay);
    this.timer.unref();
  }

  private describe(): string {
    return `${this.options.type} lookup of ${this.options.name}`;
  }

  private async lookup(attempt: Attempt): Promise<Answer> {
    const { name, type, port } = this.options;
    const answer =
      type === 'SRV'
        ? await this.lookupSrv(attempt)
        : await this.addresses(name, type, attempt).then((addresses) => ({
            upstreams: dedupe(addresses.map(({ address }) => ({ host: address, port }))),
            ttl: lowestTtl(addresses),
          }));
    // Nothing answered, or nothing is left: a failure as before (the last good set stays).
    const [failure] = attempt.failures;
    if (
      failure !== undefined &&
      (attempt.failures.length === attempt.queries || answer.upstreams.length === 0)
    )
      throw failure;
    return answer;
  }

  private async lookupSrv(attempt: Attempt): Promise<Answer> {
    const { name, srvTargets } = this.options;
    const records = await this.query('SRV', name, () => this.resolver.resolveSrv(name));
    records.sort(
      (a, b) => a.priority - b.priority || b.weight - a.weight || a.name.localeCompare(b.name),
    );
    const targets = new Map<string, Promise<Address[]>>();
    for (const record of records) {
      if (targets.has(record.name)) continue;
      targets.set(
        record.name,
        srvTargets === 'hostname' || net.isIP(record.name) !== 0
          ? Promise.resolve([{ address: record.name, ttl: undefined }])
          : this.addresses(record.name, srvTargets, attempt),
      );
    }
    const resolved = new Map<string, Address[]>();
    await Promise.all(
      [...targets].map(async ([target, addresses]) => {
        resolved.set(target, await addresses);
      }),
    );
    const upstreams: Upstream[] = [];
    for (const record of records) {
      for (const { address } of resolved.get(record.name) ?? []) {
        upstreams.push({
          host: address,
          port: record.port,
          weight: Math.max(1, record.weight),
          priority: record.priority,
          metadata: { dnsName: name, target: record.name },
        });
      }
    }
    return { upstreams: dedupe(upstreams), ttl: lowestTtl([...resolved.values()].flat()) };
  }

  private async addresses(
    name: string,
    type: DnsAddressType,
    attempt: Attempt,
  ): Promise<Address[]> {
    const queries: Promise<Address[]>[] = [];
    if (type !== 'AAAA') {
      queries.push(
        this.addressQuery('A', name, attempt, () => this.resolver.resolve4(name, { ttl: true })),
      );
    }
    if (type !== 'A') {
      queries.push(
        this.addressQuery('AAAA', name, attempt, () => this.resolver.resolve6(name, { ttl: true })),
      );
    }
    return (await Promise.all(queries)).flat();
  }

  /** One address query of a lookup: a failure gives its last good answer, and is noted. */
  private async addressQuery(
    type: 'A' | 'AAAA',
    name: string,
    attempt: Attempt,
    run: () => Promise<Address[]>,
  ): Promise<Address[]> {
    const key = `${type} ${name}`;
    attempt.queries++;
    try {
      const answer = await this.query(type, name, run);
      attempt.answers.set(key, answer);
      return answer;
    } catch (err) {
      attempt.failures.push(err as UpstreamSourceError);
      // Kept without its TTL: a stale answer must not set when to look again.
      const last = (this.answers.get(key) ?? []).map(({ address }) => ({
        address,
        ttl: undefined,
      }));
      attempt.answers.set(key, last);
      return last;
    }
  }

  /** One query: "no such record" is an empty answer, anything else a failure. */
  private async query<T>(type: string, name: string, run: () => Promise<T[]>): Promise<T[]> {
    try {
      return await run();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (EMPTY_CODES.has(code)) return [];
      throw new UpstreamSourceError(
        `DNS ${type} lookup of ${name} failed: ${code || String(err)}`,
        err,
      );
    }
  }
}

function oneOf(value: unknown, name: string, allowed: readonly string[], fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !allowed.includes(value)) {
    throw new InvalidOptionError(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  }
  return value;
}

/** First entry per id wins (the lowest priority, as records were sorted). */
function dedupe(upstreams: Upstream[]): Upstream[] {
  const seen = new Set<string>();
  return upstreams.filter((upstream) => {
    const id = upstreamId(upstream);
    if (seen.has(id)) return false;
    seen.add(id);
    return true;
  });
}

function lowestTtl(addresses: readonly Address[]): number | undefined {
  let lowest: number | undefined;
  for (const { ttl } of addresses)
    if (ttl !== undefined && (lowest === undefined || ttl < lowest)) lowest = ttl;
  return lowest;
}
