import { HealthCheckError } from '../errors.js';
import { isDescriptorExhaustion } from '../net/descriptorExhaustion.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import type { ResolvedHealthCheck } from './healthOptions.js';
import { httpProbe } from './httpReply.js';
import { tcpProbe } from './tcpProbe.js';
import type { ProbeDone, ProbeSpec, ProbeTls } from './tcpProbe.js';
import { udpProbe } from './udpProbe.js';
import type { UpstreamSet } from './UpstreamSet.js';
import type { UpstreamCandidate, UpstreamState } from './UpstreamState.js';

/** What the checker tells its owner (a proxy). */
export interface HealthCheckerHooks {
  /**
   * The active-check verdict of `state` flipped; `error` is the failure that made it unhealthy,
   * `detail` says why when no check decided (the upstream moved to a new address).
   */
  transition(
    state: UpstreamState,
    healthy: boolean,
    error: HealthCheckError | undefined,
    detail?: string,
  ): void;
  /** Every completed check, passed or not. */
  checked?(state: UpstreamState, passed: boolean): void;
  /**
   * Bytes sent before the probe on every check of `protocol` (ahead of `send`, in the same
   * datagram for UDP). A proxy that speaks the PROXY protocol to its upstreams returns a LOCAL
   * header for checks of its own protocol, so the upstream accepts the check.
   */
  preamble?(upstream: UpstreamCandidate, protocol: 'tcp' | 'udp'): Buffer | undefined;
  /** TLS settings for TCP checks of a TLS upstream: the check completes a handshake. */
  tls?(upstream: UpstreamCandidate): ProbeTls | undefined;
  /** The proxy's `sourceAddress`: checks are made from it, as its connections are. */
  readonly sourceAddress?: SourceAddresses | undefined;
}

/** Proxy-wide check counters (they survive upstream removal). */
export interface HealthCheckTotals {
  /**
   * Checks completed (passed, failed, or undecided for lack of a file descriptor); a cancelled
   * one is not counted.
   */
  attempts: number;
  failures: number;
}

interface Entry {
  readonly state: UpstreamState;
  address: string;
  timer: NodeJS.Timeout | undefined;
  cancel: (() => void) | undefined;
  passes: number;
  fails: number;
  /** Whether this upstream had a check yet: until then one failure is enough (it is new). */
  checked: boolean;
}

type Probe = (host: string, port: number, spec: ProbeSpec, done: ProbeDone) => () => void;

/**
 * Active health checks of every upstream of a set, protocol-agnostic: TCP connect (optionally
 * send/expect) or UDP send/expect. Each upstream has its own schedule; the next check starts
 * `interval` (± jitter) after the previous one ended, so checks of one upstream never overlap.
 * The first checks of upstreams added together are spread over one `interval` (HAProxy's way),
 * and a real connect failure brings an upstream's first check forward (`expedite`).
 *
 * A new upstream counts as healthy until its first check; that first check alone can make it
 * unhealthy (HAProxy's `init-state up`). After that, `unhealthyThreshold` consecutive failures
 * make it unhealthy and `healthyThreshold` consecutive passes make it healthy again.
 * Timers and sockets are unref'd: checks never keep a process alive on their own.
 *
 * @example
 * const checker = new HealthChecker(set, resolved, { transition: (s, ok) => console.log(s.id, ok) });
 * checker.start(); // ... checker.sync() after each set change ... checker.stop();
 */
export class HealthChecker {
  readonly totals: HealthCheckTotals = { attempts: 0, failures: 0 };
  private readonly entries = new Map<UpstreamState, Entry>();
  private readonly probe: Probe;
  private running = false;

  constructor(
    private readonly set: UpstreamSet,
    private readonly options: ResolvedHealthCheck,
    private readonly hooks: HealthCheckerHooks,
  ) {
    this.probe = options.protocol === 'udp' ? udpProbe : tcpProbe;
  }

  /** Starts checking every upstream of the set. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.sync();
  }

  /** Follows a membership change: new upstreams get a schedule, removed ones lose theirs. */
  sync(): void {
    if (!this.running) return;
    const current = new Set(this.set.list());
    for (const [state, entry] of this.entries) {
      if (!current.has(state)) {
        this.cancel(entry);
        this.entries.delete(state);
      }
    }
    const added: UpstreamState[] = [];
    for (const state of current) {
      const entry = this.entries.get(state);
      if (entry === undefined) added.push(state);
      else if (entry.address !== state.address) this.restart(entry);
    }
    added.forEach((state, i) => {
      this.add(state, this.firstDelay(i, added.length));
    });
  }

  /**
   * A real connect to (or exchange with) `state` failed before its first check ran: run that
   * check now rather than at its place in the spread, so an upstream dead at start is found
   * after one failed connection, not up to `interval` later. Nothing once it was checked.
   */
  expedite(state: UpstreamState): void {
    const entry = this.entries.get(state);
    if (entry === undefined || entry.checked || entry.cancel !== undefined) return;
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    this.run(entry);
  }

  /** Stops every check: timers cleared, probe sockets destroyed. Verdicts stay as they are. */
  stop(): void {
    this.running = false;
    for (const entry of this.entries.values()) this.cancel(entry);
    this.entries.clear();
  }

  /**
   * When the `i`-th of `count` upstreams added together is first checked: spread over one
   * `interval` in list order, as HAProxy spreads a backend's first checks (server i of n at
   * inter * i / n), so a large set is not checked in one burst at start and at each reload;
   * each within its slot by up to `jitter × interval`, so proxies started together do not align.
   */
  private firstDelay(i: number, count: number): number {
    const { interval, jitter } = this.options;
    const slot = interval / count;
    return i * slot + Math.random() * Math.min(slot, jitter * interval);
  }

  private add(state: UpstreamState, delay: number): void {
    const entry: Entry = {
      state,
      address: state.address,
      timer: undefined,
      cancel: undefined,
      passes: 0,
      fails: 0,
      checked: false,
    };
    this.entries.set(state, entry);
    this.schedule(entry, delay);
  }

  /**
   * The same id now points elsewhere: what we knew is about the old address. As a new upstream,
   * it is healthy until its first check (which alone can fail it), not kept out until
   * `healthyThreshold` checks of the new address passed.
   */
  private restart(entry: Entry): void {
    this.cancel(entry);
    entry.address = entry.state.address;
    entry.passes = entry.fails = 0;
    entry.checked = false;
    entry.state.lastCheckFailure = undefined;
    if (!entry.state.checkHealthy) {
      const detail = `address changed to ${entry.address}: healthy until its first check`;
      this.flip(entry.state, true, undefined, detail);
    }
    this.schedule(entry, 0);
  }

  private schedule(entry: Entry, delay: number): void {
    entry.timer = setTimeout(
      () => {
        this.run(entry);
      },
      Math.max(0, Math.round(delay)),
    );
    entry.timer.unref();
  }

  private nextDelay(): number {
    const { interval, jitter } = this.options;
    return Math.max(1, interval * (1 + jitter * (2 * Math.random() - 1)));
  }

  private run(entry: Entry): void {
    const { state } = entry;
    const port = this.options.port ?? state.port;
    const { http, protocol } = this.options;
    const tls = protocol === 'tcp' ? this.hooks.tls?.(state) : undefined;
    const spec: ProbeSpec = {
      preamble: this.hooks.preamble?.(state, protocol),
      tls,
      send: this.options.send,
      expect: this.options.expect,
      source: this.hooks.sourceAddress,
      http: http && httpProbe(http, state.host, port, tls !== undefined),
    };
    let done = false;
    const complete = (error: HealthCheckError | undefined): void => {
      if (done) return;
      done = true;
      if (entry.timer) clearTimeout(entry.timer);
      entry.cancel?.();
      entry.timer = entry.cancel = undefined;
      this.record(entry, error);
      // An `upstreamHealth` listener may have moved the upstream to a new address meanwhile: its
      // restart already scheduled the next check, and a second schedule would overlap them.
      if (this.running && this.entries.get(state) === entry && this.idle(entry))
        this.schedule(entry, this.nextDelay());
    };
    entry.timer = setTimeout(() => {
      complete(this.timeoutError(state, port, tls !== undefined));
    }, this.options.timeout);
    entry.timer.unref();
    entry.cancel = this.probe(state.host, port, spec, complete);
  }

  private timeoutError(state: UpstreamState, port: number, tls: boolean): HealthCheckError {
    const kind = checkKind(this.options, tls);
    return new HealthCheckError(
      `${kind} health check of ${state.host}:${port} timed out after ${this.options.timeout} ms`,
    );
  }

  private record(entry: Entry, error: HealthCheckError | undefined): void {
    const { state } = entry;
    // Counted when it completes: a check cancelled by stop() or by an address change decided
    // nothing and counts nothing.
    this.totals.attempts++;
    state.health.checks++;
    // No socket for the check (EMFILE/ENFILE) is this process's shortage, not the upstream's
    // failure: no verdict either way (as a connection that cannot get one blames no upstream).
    if (error !== undefined && isDescriptorExhaustion(error.cause)) return;
    const firstCheck = !entry.checked;
    entry.checked = true;
    if (error !== undefined) {
      this.totals.failures++;
      state.health.checkFailures++;
      // Kept after the upstream recovers: the operator's answer to "why was it down?".
      state.lastCheckFailure = { reason: error.message, time: Date.now() };
      entry.fails++;
      entry.passes = 0;
      if (state.checkHealthy && (firstCheck || entry.fails >= this.options.unhealthyThreshold)) {
        this.flip(state, false, error);
      }
    } else {
      entry.passes++;
      entry.fails = 0;
      if (!state.checkHealthy && entry.passes >= this.options.healthyThreshold) {
        this.flip(state, true, undefined);
      }
    }
    this.hooks.checked?.(state, error === undefined);
  }

  private flip(
    state: UpstreamState,
    healthy: boolean,
    error: HealthCheckError | undefined,
    detail?: string,
  ): void {
    state.checkHealthy = healthy;
    this.set.changed();
    this.hooks.transition(state, healthy, error, detail);
  }

  /** Whether no check of `entry` is scheduled or running. */
  private idle(entry: Entry): boolean {
    return entry.timer === undefined && entry.cancel === undefined;
  }

  private cancel(entry: Entry): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.cancel?.();
    entry.timer = entry.cancel = undefined;
  }
}

/** How a check names itself in its failures: HTTP, HTTPS, TLS, TCP or UDP. */
function checkKind(options: ResolvedHealthCheck, tls: boolean): string {
  if (options.http !== undefined) return tls ? 'HTTPS' : 'HTTP';
  return tls ? 'TLS' : options.protocol.toUpperCase();
}
