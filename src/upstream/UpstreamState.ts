import type { AdminOverride } from './adminOverride.js';
import type { Upstream } from './Upstream.js';
import { upstreamId } from './Upstream.js';

/**
 * An upstream as a selector sees it: the configured entry plus its live state.
 * The same object lives as long as its id stays in the set, so a selector may keep
 * per-upstream state in a `WeakMap` keyed by it.
 */
export interface UpstreamCandidate {
  /** `upstream.id`, or `host:port`. */
  readonly id: string;
  readonly host: string;
  readonly port: number;
  /** Effective weight (default 1). */
  readonly weight: number;
  /** Effective failover priority (default 0, tried first). */
  readonly priority: number;
  readonly metadata: Readonly<Record<string, unknown>> | undefined;
  /** The entry as given to the proxy. */
  readonly upstream: Upstream;
  /** Live connections (TCP, connecting ones included) or sessions (UDP) on this upstream. */
  readonly active: number;
  /** False while health checking or passive ejection keeps traffic off it. */
  readonly healthy: boolean;
  /** Cap on `active` (`Infinity` when none); at it, the upstream is not a candidate. */
  readonly maxConnections: number;
  /** The last active health check that failed, if any did (since start or an address change). */
  readonly lastCheckFailure?: CheckFailure | undefined;
}

/** Why and when an active health check of an upstream last failed. */
export interface CheckFailure {
  /** The check's error message (`HTTP health check of 10.0.0.7:80: status 503 ...`). */
  readonly reason: string;
  /** When it failed, in ms since the epoch. */
  readonly time: number;
}

/** Counters kept per upstream; they survive `setUpstreams` for ids that stay. */
export interface UpstreamCounters {
  /** Connections (TCP) or sessions (UDP) opened to this upstream, attempts included. */
  total: number;
  connectFailures: number;
  connectTimeouts: number;
  /** Bytes received from the upstream. */
  rxBytes: number;
  /** Bytes sent to the upstream. */
  txBytes: number;
  rxDatagrams: number;
  txDatagrams: number;
  /** Socket or send errors other than connect failures. */
  errors: number;
}

/**
 * A plain copy of an upstream's documented fields as they are now: what `sessions()` and
 * `connections()` hand out, with none of the live state's internals (JSON-serializable).
 */
export function candidateSnapshot(candidate: UpstreamCandidate): UpstreamCandidate {
  return {
    id: candidate.id,
    host: candidate.host,
    port: candidate.port,
    weight: candidate.weight,
    priority: candidate.priority,
    metadata: candidate.metadata,
    upstream: candidate.upstream,
    active: candidate.active,
    healthy: candidate.healthy,
    maxConnections: candidate.maxConnections,
    lastCheckFailure: candidate.lastCheckFailure,
  };
}

/** Fresh, all-zero upstream counters. */
export function zeroUpstreamCounters(): UpstreamCounters {
  return {
    total: 0,
    connectFailures: 0,
    connectTimeouts: 0,
    rxBytes: 0,
    txBytes: 0,
    rxDatagrams: 0,
    txDatagrams: 0,
    errors: 0,
  };
}

/** Health counters kept per upstream (active checks and passive ejection). */
export interface UpstreamHealthCounters {
  /** Active health checks completed. */
  checks: number;
  /** Active health checks that failed. */
  checkFailures: number;
  /** Times passive outlier detection ejected this upstream. */
  ejections: number;
}

/** Internal, mutable live state of one upstream. */
export class UpstreamState implements UpstreamCandidate {
  id: string;
  host: string;
  port: number;
  weight: number;
  priority: number;
  metadata: Readonly<Record<string, unknown>> | undefined;
  upstream: Upstream;
  active = 0;
  maxConnections: number;
  /** Whether `active` was at `maxConnections` when the set last looked (see `UpstreamSet.available()`). */
  full = false;
  /** The weight configured, which slow start may scale down for a while into `weight`. */
  configuredWeight: number;
  /** Result of active health checks (true until a check says otherwise). */
  checkHealthy = true;
  lastCheckFailure: CheckFailure | undefined = undefined;
  /** Passive ejection: not selectable until this time (ms since epoch); 0 when not ejected. */
  ejectedUntil = 0;
  /** Whether this upstream is still in the configured set. */
  member = true;
  /**
   * Bumped when the id is given another host or port: a connect or exchange outcome carries the
   * generation it dialled, so one about the old address says nothing about the new one.
   */
  generation = 0;
  /** Operator override from the admin API (drain, maintenance, weight); undefined: none. */
  admin: AdminOverride | undefined = undefined;
  readonly counters: UpstreamCounters = zeroUpstreamCounters();
  readonly health: UpstreamHealthCounters = { checks: 0, checkFailures: 0, ejections: 0 };

  constructor(upstream: Upstream) {
    this.id = upstreamId(upstream);
    this.host = upstream.host;
    this.port = upstream.port;
    this.weight = upstream.weight ?? 1;
    this.configuredWeight = this.weight;
    this.priority = upstream.priority ?? 0;
    this.metadata = upstream.metadata;
    this.upstream = upstream;
    this.maxConnections = upstream.maxConnections ?? Infinity;
  }

  get healthy(): boolean {
    return this.checkHealthy && this.ejectedUntil === 0;
  }

  /** Takes a new configuration for the same id, keeping live state and counters. */
  update(upstream: Upstream): void {
    if (upstream.host !== this.host || upstream.port !== this.port) this.generation++;
    this.host = upstream.host;
    this.port = upstream.port;
    this.configuredWeight = this.admin?.weight ?? upstream.weight ?? 1;
    this.weight = this.configuredWeight;
    this.priority = upstream.priority ?? 0;
    this.metadata = upstream.metadata;
    this.upstream = upstream;
    this.maxConnections = upstream.maxConnections ?? Infinity;
    // Seen again by the set on its next look, against the new cap.
    this.full = false;
    this.member = true;
  }

  /** `host:port` for messages and summaries. */
  get address(): string {
    return this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }
}
