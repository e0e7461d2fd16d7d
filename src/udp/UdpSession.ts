import { FilterError, ProxyClosedError, SelectorError } from '../errors.js';
import { filterDatagram, madeSessionFilter } from '../filter/sessionFilter.js';
import { reportRejection } from '../filter/asyncResult.js';
import type { UdpSessionFilter, UdpSessionFilterFactory } from '../filter/sessionFilter.js';
import type { SelectionContext, SelectionResult } from '../select/SelectionContext.js';
import { selectorError } from '../select/internal/selectorOutcome.js';
import { isThenable } from '../internal/isThenable.js';
import { ignoreError } from '../internal/ignoreError.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { candidateSnapshot } from '../upstream/UpstreamState.js';
import { DropReason, SessionCloseReason } from './closeReasons.js';
import type { UdpSessionInfo, UdpSessionSummary } from './events.js';
import type { SessionHost } from './SessionHost.js';
import { datagramProxyHeader } from './datagramProxyHeader.js';
import type { UdpListener } from './UdpListener.js';
import type { LinkFailure, LinkOwner } from './UpstreamLink.js';
import { isUnreachable, maxPayloadTo } from './UpstreamLink.js';
import type { UpstreamLink } from './UpstreamLink.js';
import { linkTo } from '../transport/linkTo.js';
import { isDescriptorExhaustion } from '../net/descriptorExhaustion.js';
import type { QuicSession, QuicSessionOwner } from '../quic/QuicSession.js';
import type { QueuedCheck } from './FirstCheckQueue.js';

const EMPTY: readonly UpstreamState[] = [];

/**
 * How long a session past `maxRequests` lasts without a datagram when `idleTimeout` is 0: its
 * client can no longer reach it, so nothing else would end one whose replies never come (a leak
 * any client could grow, one session per `maxRequests` datagrams). nginx's `proxy_timeout`,
 * which bounds such a session, cannot be turned off; this is `idleTimeout`'s default (Envoy's
 * udp_proxy `idle_timeout` default too).
 */
export const DETACHED_IDLE_TIMEOUT = 60_000;

function onSelectionTimeout(session: UdpSession): void {
  session.selectionTimedOut();
}

function onChoiceTimeout(session: UdpSession): void {
  session.choicesTimedOut();
}

function onIdleCheck(session: UdpSession): void {
  session.idleCheck();
}

/** See `UdpSession.idleConfirmed`: no closure per session for an expiry most never reach. */
function onIdleConfirm(session: UdpSession, stamp: number): void {
  session.idleConfirmed(stamp);
}

/** A datagram waiting for its own async choice (`perPacketBalancing`), until `deadline`. */
interface PendingChoice {
  readonly msg: Buffer;
  readonly deadline: number;
}

/** What happens to datagrams still waiting when a session closes for `reason`. */
function dropReasonFor(reason: SessionCloseReason): DropReason {
  switch (reason) {
    case SessionCloseReason.NO_UPSTREAM:
      return DropReason.NO_UPSTREAM;
    case SessionCloseReason.SELECTOR_ERROR:
      return DropReason.SELECTOR_ERROR;
    case SessionCloseReason.SOCKET_ERROR:
      return DropReason.SOCKET_ERROR;
    case SessionCloseReason.QUIC_NO_CLIENT_HELLO:
      return DropReason.QUIC_NO_CLIENT_HELLO;
    default:
      return DropReason.SESSION_CLOSED;
  }
}

/**
 * One UDP session: every datagram from one client address and port on one bound socket. It owns
 * the connected socket(s) to its upstream(s), relays both ways, expires when idle, and ends with
 * exactly one summary.
 *
 * The hot path updates plain counters and stamps `lastActivity`, never a timer per datagram:
 * the proxy's queue of first checks looks at it once (see `FirstCheckQueue`), and a session that
 * outlives that check arms its own self re-arming timer.
 */
export class UdpSession
  implements UdpSessionInfo, SelectionContext, LinkOwner, QuicSessionOwner, QueuedCheck
{
  readonly id: number;
  readonly protocol = 'udp' as const;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6';
  readonly localAddress: string;
  readonly localPort: number;
  readonly startTime = Date.now();
  readonly host: SessionHost;
  readonly listener: UdpListener;
  /** The largest UDP payload to the client (65 507 over IPv4, IPv4-mapped included; 65 527 over IPv6). */
  private readonly maxToClient: number;

  datagramsFromClient = 0;
  bytesFromClient = 0;
  datagramsFromUpstream = 0;
  bytesFromUpstream = 0;
  datagramsToClient = 0;
  bytesToClient = 0;
  /** Built on first use when the proxy sends PROXY protocol v2 headers. */
  private header: Buffer | undefined;
  /** Sends to upstreams by links already closed (live links count their own). */
  private closedLinksDatagrams = 0;
  private closedLinksBytes = 0;

  /** Per-session balancing: the one link, once the upstream is chosen. */
  private link: UpstreamLink | undefined;
  /** Per-packet balancing: one link per upstream used. */
  private links: Map<UpstreamState, UpstreamLink> | undefined;
  private current: UpstreamState | undefined;
  /** Datagrams waiting for the (per-session) selection. */
  private pending: Buffer[] | undefined;
  /** Datagrams waiting anywhere (selection, socket setup): bounded by `maxPendingDatagrams`. */
  private waiting = 0;
  private selecting = false;
  /** Upstreams this session has been sent to (`maxConnectAttempts`); the first is `attempts` 1. */
  private attempts = 1;
  /** The upstreams that refused this session's datagrams, once one has (see `failover`). */
  private triedStates: UpstreamState[] | undefined;
  /**
   * Bounds an async selector's answer by `connectTimeout` (armed only for a promise); with
   * `perPacketBalancing`, the oldest datagram's wait for its choice (see `choosing`).
   */
  private selectTimer: NodeJS.Timeout | undefined;
  /**
   * Per-packet balancing with an async selector: the datagrams waiting for their choice, oldest
   * first (a Set keeps insertion order; answers may come in any order). Each holds a place in
   * `maxPendingDatagrams`; one timer per session, not per datagram, drops them at `connectTimeout`.
   */
  private choosing: Set<PendingChoice> | undefined;
  private responses = 0;
  /** Set when the session took `maxRequests` datagrams with `idleTimeout` 0 (see `detach`). */
  private detached = false;

  private reason: SessionCloseReason | undefined;
  private error: Error | undefined;
  private abort: AbortController | undefined;
  private lastActivity = this.startTime;
  /** The idle checks after the first (which the host's `firstChecks` queue runs). */
  private idleTimer: NodeJS.Timeout | undefined;
  /** @internal The session's place in the host's `firstChecks` queue. */
  checkAt = 0;
  /** @internal */
  prevCheck: QueuedCheck | undefined;
  /** @internal */
  nextCheck: QueuedCheck | undefined;
  /** @internal */
  checkQueued = false;
  /** Set between the idle timer finding the session idle and the check after the poll. */
  private idleConfirm: NodeJS.Immediate | undefined;
  /** The session filters (with the `sessionFilters` option); undefined on the plain path. */
  private filters: UdpSessionFilter[] | undefined;
  /** QUIC state, set by the proxy right after construction when the `quic` option is on. */
  quic: QuicSession | undefined;
  /**
   * With `quic.sessionPerConnection`: every session of this client socket, one per QUIC
   * connection, oldest first, shared by all of them (kept by the listener); undefined while the
   * socket has one session.
   */
  connections: UdpSession[] | undefined;

  /** The PROXY v2 header naming this client, prepended to every datagram sent upstream. */
  get proxyHeader(): Buffer | undefined {
    if (!this.host.options.proxyProtocol) return undefined;
    this.header ??= datagramProxyHeader(
      this.clientAddress,
      this.clientPort,
      this.localAddress,
      this.localPort,
    );
    return this.header;
  }

  /** `client` is the first datagram's `RemoteInfo` (its address and port). */
  constructor(
    host: SessionHost,
    listener: UdpListener,
    client: { readonly address: string; readonly port: number },
    id: number,
  ) {
    this.host = host;
    this.listener = listener;
    this.id = id;
    this.clientAddress = client.address;
    this.clientPort = client.port;
    this.clientFamily = client.address.includes(':') ? 'IPv6' : 'IPv4';
    this.localAddress = listener.localAddress;
    this.localPort = listener.localPort;
    this.maxToClient = maxPayloadTo(client.address);
  }

  // ---- SelectionContext -------------------------------------------------------------------

  get attempt(): number {
    return this.attempts;
  }

  get tried(): readonly UpstreamState[] {
    return this.triedStates ?? EMPTY;
  }

  get candidates(): readonly UpstreamState[] {
    const available = this.host.upstreams.available();
    const tried = this.triedStates;
    // Only after a refusal (rare): the first choice takes the set as it is.
    return tried === undefined ? available : available.filter((state) => !tried.includes(state));
  }

  get upstreams(): readonly UpstreamState[] {
    return this.host.upstreams.list();
  }

  get signal(): AbortSignal {
    this.abort ??= new AbortController();
    return this.abort.signal;
  }

  get upstream(): UpstreamState | undefined {
    return this.current;
  }

  /** TLS server name from the client's QUIC Initial, with the `quic` option. */
  get serverName(): string | undefined {
    return this.quic?.serverName;
  }

  /** ALPN protocols from the client's QUIC Initial, with the `quic` option. */
  get alpn(): readonly string[] | undefined {
    return this.quic?.alpn;
  }

  /** QUIC version of the client's Initial (1, or 0x6b3343cf for v2), with the `quic` option. */
  get quicVersion(): number | undefined {
    return this.quic?.quicVersion;
  }

  /** Whether the session has ended. */
  get closed(): boolean {
    return this.reason !== undefined;
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** Queues the first idle check (see `firstCheckDelay`) and handles the first datagram. */
  start(first: Buffer): void {
    const factories = this.host.options.sessionFilters;
    if (factories !== undefined && !this.openFilters(factories)) return;
    this.host.firstChecks?.add(this, this.startTime);
    // Stamped already: `lastActivity` starts as `startTime`, the first datagram's arrival.
    this.relay(first);
  }

  /** Ends the session now, reason `closed_by_user`. */
  close(): void {
    this.terminate(SessionCloseReason.CLOSED_BY_USER);
  }

  /**
   * A plain snapshot of the session (`sessions()`): the documented fields as they are now, and
   * a `close()` that ends this session. No internals, and JSON-serializable.
   */
  info(): UdpSessionInfo {
    const upstream = this.current;
    return {
      id: this.id,
      clientAddress: this.clientAddress,
      clientPort: this.clientPort,
      clientFamily: this.clientFamily,
      localAddress: this.localAddress,
      localPort: this.localPort,
      startTime: this.startTime,
      upstream: upstream === undefined ? undefined : candidateSnapshot(upstream),
      serverName: this.serverName,
      alpn: this.alpn,
      quicVersion: this.quicVersion,
      datagramsFromClient: this.datagramsFromClient,
      bytesFromClient: this.bytesFromClient,
      datagramsToClient: this.datagramsToClient,
      bytesToClient: this.bytesToClient,
      close: () => {
        this.close();
      },
    };
  }

  // ---- client to upstream -------------------------------------------------------------------

  /** A datagram from the client. */
  fromClient(msg: Buffer): void {
    this.lastActivity = Date.now();
    this.relay(msg);
  }

  /** A datagram from the client, its arrival stamped in `lastActivity`. */
  private relay(msg: Buffer): void {
    const len = msg.length;
    // nginx's proxy_requests: the client's next datagram opens a new session.
    if (++this.datagramsFromClient === this.host.options.maxRequests) this.detach();
    this.bytesFromClient += len;
    if (this.filters !== undefined) {
      const out = this.filtered(this.filters, 'onClientDatagram', msg, 'client');
      if (out === undefined) return;
      msg = out;
    }
    if (len > this.host.options.maxDatagramSize) {
      this.drop(DropReason.OVERSIZED, 'client', len);
      return;
    }
    // After a Retry, a ClientHello other than the one read ends the session (QuicSession.recheck).
    if (this.quic?.rechecking === true && !this.quic.recheck(msg)) {
      this.drop(DropReason.QUIC_NO_CLIENT_HELLO, 'client', len);
      return;
    }
    if (this.links !== undefined || this.host.options.perPacketBalancing) {
      this.selectFor(msg);
      return;
    }
    const link = this.link;
    if (link !== undefined) {
      // The upstream had `connectTimeout` to refuse: past it, nothing more is kept for failover.
      if (link.kept !== undefined && this.lastActivity > link.keptUntil) link.kept = undefined;
      if (link.ready) {
        if (!link.send(msg)) this.drop(DropReason.SEND_QUEUE_FULL, 'client', len);
      } else if (this.reserve(len)) {
        link.send(msg);
      }
      return;
    }
    if (!this.reserve(len)) return;
    // Made with its datagram: a push onto an empty array grows it to 17 slots, for one datagram
    // in most sessions.
    if (this.pending === undefined) this.pending = [msg];
    else this.pending.push(msg);
    if (!this.selecting && (this.quic === undefined || this.quic.admit(msg))) this.select();
  }

  /** The client's next datagram opens a new session; this one lives on for replies. */
  private detach(): void {
    this.host.counters.maxRequestsReached++;
    this.listener.detach(this);
    if (this.host.options.idleTimeout > 0) return;
    // No idle timeout: bounded by DETACHED_IDLE_TIMEOUT instead (see idleCheck), checked from
    // now unless a check is already on its way (the failover window's).
    this.detached = true;
    if (this.idleTimer !== undefined || this.checkQueued) return;
    this.idleTimer = setTimeout(onIdleCheck, DETACHED_IDLE_TIMEOUT, this);
    this.idleTimer.unref();
  }

  /** QuicSessionOwner: the ClientHello wait ended on its timer; choose the upstream now. */
  inspected(): void {
    if (this.reason === undefined && !this.selecting && this.link === undefined) this.select();
  }

  /** QuicSessionOwner: `quic.fallback: 'drop'`. */
  dropForQuic(error: Error): void {
    this.terminate(SessionCloseReason.QUIC_NO_CLIENT_HELLO, error);
  }

  /** Counts a datagram about to wait; drops it when `maxPendingDatagrams` already wait. */
  private reserve(len: number): boolean {
    if (this.waiting >= this.host.options.maxPendingDatagrams) {
      this.drop(DropReason.PENDING_OVERFLOW, 'client', len);
      return false;
    }
    this.waiting++;
    return true;
  }

  /** Datagrams left a link's queue (sent, or about to be dropped by the caller). */
  unqueued(count: number): void {
    this.waiting -= count;
  }

  /** A datagram waits in a link's queue again; not bounded: it was counted before. */
  requeued(): void {
    this.waiting++;
  }

  sendQueueFull(size: number): void {
    this.drop(DropReason.SEND_QUEUE_FULL, 'client', size);
  }

  oversized(size: number): void {
    this.drop(DropReason.OVERSIZED, 'client', size);
  }

  // ---- per-session selection ----------------------------------------------------------------

  private select(): void {
    const pinned = this.quic?.pinned;
    if (pinned !== undefined) {
      this.selected(pinned);
      return;
    }
    this.selecting = true;
    let result: SelectionResult | PromiseLike<SelectionResult>;
    try {
      result = this.host.selector(this);
    } catch (err) {
      this.terminate(SessionCloseReason.SELECTOR_ERROR, selectorError(err));
      return;
    }
    if (isThenable(result)) this.awaitSelection(result);
    else this.selected(result);
  }

  /**
   * An async selector's answer is bounded by `connectTimeout`, as `TcpProxy` bounds it: a promise
   * that never settles would otherwise hold the session and its waiting datagrams until
   * `idleTimeout`. A synchronous selector arms no timer.
   */
  private awaitSelection(result: PromiseLike<SelectionResult>): void {
    const timer = setTimeout(onSelectionTimeout, this.host.options.connectTimeout, this);
    timer.unref();
    this.selectTimer = timer;
    // The closures only for a promise: a synchronous selector, the usual one, needs none.
    Promise.resolve(result).then(
      (choice) => {
        this.selected(choice);
      },
      (err: unknown) => {
        this.selectorFailed(err);
      },
    );
  }

  /** @internal The selector's promise did not settle within `connectTimeout`. */
  selectionTimedOut(): void {
    this.selectTimer = undefined;
    const ms = this.host.options.connectTimeout;
    this.terminate(
      SessionCloseReason.SELECTOR_ERROR,
      new SelectorError(
        `The upstream selector did not answer within connectTimeout (${String(ms)} ms): make its promise settle (resolve with an upstream or null, or reject).`,
      ),
    );
  }

  private clearSelectTimer(): void {
    if (this.selectTimer === undefined) return;
    clearTimeout(this.selectTimer);
    this.selectTimer = undefined;
  }

  private selectorFailed(err: unknown): void {
    // A late rejection (the session ended on its timer, or closed) changes nothing.
    if (this.reason !== undefined) return;
    this.clearSelectTimer();
    this.terminate(SessionCloseReason.SELECTOR_ERROR, selectorError(err));
  }

  private selected(choice: SelectionResult): void {
    // A late answer (the session ended on its timer, or closed) is ignored.
    if (this.reason !== undefined) return;
    this.clearSelectTimer();
    this.selecting = false;
    const state = this.resolve(choice);
    if (typeof state === 'string') {
      // Nothing left to move to: the session ends with the refusal that moved it.
      if (state === SessionCloseReason.NO_UPSTREAM && this.triedStates !== undefined)
        this.giveUp(this.error);
      else this.terminate(state, this.error);
      return;
    }
    // A retry (see `failover`) counts once it has somewhere to go.
    if (this.attempts > 1) this.host.counters.retries++;
    const link = linkTo(this, state);
    this.current = state;
    this.link = link;
    link.queue = this.pending;
    this.pending = undefined;
    if (this.movable(state)) {
      link.kept = [];
      link.keptUntil =
        (this.attempts === 1 ? this.lastActivity : Date.now()) + this.host.options.connectTimeout;
    }
    link.open();
  }

  /**
   * Whether this session's datagrams are kept, to be sent again to another upstream if `state`
   * refuses them: with `maxConnectAttempts` above 1, a direct upstream, no QUIC (its pinned
   * connections and Initials have their own recovery).
   */
  private movable(state: UpstreamState): boolean {
    const options = this.host.options;
    return (
      options.maxConnectAttempts > 1 &&
      this.quic === undefined &&
      state.upstream.tunnel === undefined
    );
  }

  /**
   * Maps a selector's choice to live state, or to the reason it cannot be used (with
   * `this.error` set for a selector error).
   */
  private resolve(choice: SelectionResult): UpstreamState | SessionCloseReason {
    // JS selectors may return null as well as undefined.
    if (choice === undefined || (choice as unknown) === null) return SessionCloseReason.NO_UPSTREAM;
    try {
      return this.host.upstreams.resolve(choice);
    } catch (err) {
      this.error = selectorError(err);
      return SessionCloseReason.SELECTOR_ERROR;
    }
  }

  // ---- per-packet selection -----------------------------------------------------------------

  private selectFor(msg: Buffer): void {
    let result: SelectionResult | PromiseLike<SelectionResult>;
    try {
      result = this.host.selector(this);
    } catch (err) {
      this.drop(DropReason.SELECTOR_ERROR, 'client', msg.length, selectorError(err));
      return;
    }
    if (!isThenable(result)) {
      this.routeTo(result, msg);
      return;
    }
    if (!this.reserve(msg.length)) {
      // Dropped (pending_overflow), its answer unread: a rejection nobody handles would end the
      // host process (Node's default for unhandled rejections).
      Promise.resolve(result).then(undefined, ignoreError);
      return;
    }
    // Async per-packet selection costs a closure and an entry per datagram; sync selectors avoid it.
    const choice: PendingChoice = {
      msg,
      deadline: this.lastActivity + this.host.options.connectTimeout,
    };
    const choosing = (this.choosing ??= new Set());
    choosing.add(choice);
    if (this.selectTimer === undefined) this.armChoiceTimer(this.host.options.connectTimeout);
    Promise.resolve(result).then(
      (answer) => {
        // Dropped already: it waited past `connectTimeout`, or the session ended.
        if (!choosing.delete(choice)) return;
        this.waiting--;
        this.routeTo(answer, msg);
      },
      (err: unknown) => {
        if (!choosing.delete(choice)) return;
        this.waiting--;
        this.drop(DropReason.SELECTOR_ERROR, 'client', msg.length, selectorError(err));
      },
    );
  }

  private armChoiceTimer(ms: number): void {
    const timer = setTimeout(onChoiceTimeout, ms, this);
    timer.unref();
    this.selectTimer = timer;
  }

  /**
   * @internal The oldest datagrams waiting for their choice waited `connectTimeout`: dropped as
   * `selector_error` (a late answer then finds them gone), as a session's own selection is bounded.
   */
  choicesTimedOut(): void {
    this.selectTimer = undefined;
    const choosing = this.choosing;
    if (choosing === undefined) return;
    const now = Date.now();
    let error: SelectorError | undefined;
    for (const choice of choosing) {
      // Deadlines grow in insertion order: the first one not past is where the timer goes next.
      if (choice.deadline > now) {
        this.armChoiceTimer(choice.deadline - now);
        return;
      }
      choosing.delete(choice);
      this.waiting--;
      error ??= new SelectorError(
        `The upstream selector did not answer for a datagram within connectTimeout (${String(this.host.options.connectTimeout)} ms): make its promise settle (resolve with an upstream or null, or reject).`,
      );
      this.drop(DropReason.SELECTOR_ERROR, 'client', choice.msg.length, error);
    }
  }

  private routeTo(choice: SelectionResult, msg: Buffer): void {
    // The selector ended the session (`close()`, or the proxy's): no link may open for it now.
    if (this.reason !== undefined) {
      this.drop(DropReason.SESSION_CLOSED, 'client', msg.length);
      return;
    }
    const resolved = this.resolve(choice);
    if (typeof resolved === 'string') {
      const reason =
        resolved === SessionCloseReason.NO_UPSTREAM
          ? DropReason.NO_UPSTREAM
          : DropReason.SELECTOR_ERROR;
      const error = this.error;
      this.error = undefined;
      this.drop(reason, 'client', msg.length, error);
      return;
    }
    const links = (this.links ??= new Map<UpstreamState, UpstreamLink>());
    let link = links.get(resolved);
    this.current = resolved;
    if (link === undefined) {
      if (!this.reserve(msg.length)) return;
      link = linkTo(this, resolved);
      links.set(resolved, link);
      link.queue = [msg];
      link.open();
      return;
    }
    if (link.ready) {
      if (!link.send(msg)) this.drop(DropReason.SEND_QUEUE_FULL, 'client', msg.length);
    } else if (this.reserve(msg.length)) {
      link.send(msg);
    }
  }

  // ---- upstream to client -------------------------------------------------------------------

  /** A datagram from one of the session's upstreams: sent back from the bound socket. */
  fromUpstream(link: UpstreamLink, msg: Buffer): void {
    const len = msg.length;
    // The first reply on a link proves the upstream reachable; later ones add nothing.
    if (link.datagramsReceived++ === 0) {
      this.host.upstreamSucceeded(link.state, link.generation);
      // It answers: the session stays with it, nothing more is kept.
      link.kept = undefined;
    }
    const negotiated = this.quic !== undefined && this.quic.fromServer(msg);
    this.datagramsFromUpstream++;
    this.bytesFromUpstream += len;
    this.lastActivity = Date.now();
    if (this.filters !== undefined) {
      const out = this.filtered(this.filters, 'onUpstreamDatagram', msg, 'upstream');
      if (out === undefined) return;
      msg = out;
    }
    // What UDP cannot carry to the client would fail after the fact (EMSGSIZE), counted as sent:
    // an IPv6 upstream's reply above IPv4's limit (`maxDatagramSize` over 65 507), or a filter's
    // larger datagram.
    // Only a reply relayed to the client counts toward `maxResponses`: one dropped here (oversized,
    // send queue full) leaves the session waiting for the next.
    let relayed = false;
    if (len > this.host.options.maxDatagramSize || msg.length > this.maxToClient) {
      this.drop(DropReason.OVERSIZED, 'upstream', len);
    } else if (this.listener.sendTo(msg, this.clientPort, this.clientAddress)) {
      this.datagramsToClient++;
      // What was sent: a session filter may have replaced the datagram with one of another size.
      this.bytesToClient += msg.length;
      relayed = true;
    } else {
      this.drop(DropReason.SEND_QUEUE_FULL, 'upstream', len);
    }
    if (negotiated) this.terminate(SessionCloseReason.QUIC_VERSION_NEGOTIATION);
    else if (relayed && ++this.responses >= this.host.options.maxResponses) {
      this.terminate(SessionCloseReason.MAX_RESPONSES);
    }
  }

  // ---- session filters (only with the `sessionFilters` option) ------------------------------

  private openFilters(factories: readonly UdpSessionFilterFactory[]): boolean {
    const filters: UdpSessionFilter[] = [];
    try {
      for (const factory of factories) {
        const filter = madeSessionFilter(factory(this));
        if (filter !== undefined) filters.push(filter);
      }
    } catch (err) {
      // The filters made before the factory that threw still get onClose.
      if (filters.length > 0) this.filters = filters;
      this.terminate(SessionCloseReason.FILTER_ERROR, new FilterError(err));
      return false;
    }
    if (filters.length > 0) this.filters = filters;
    return true;
  }

  /** A datagram through the filters: what to forward, or undefined (dropped, or the session ended). */
  private filtered(
    filters: readonly UdpSessionFilter[],
    callback: 'onClientDatagram' | 'onUpstreamDatagram',
    msg: Buffer,
    from: 'client' | 'upstream',
  ): Buffer | undefined {
    let out: Buffer | undefined;
    try {
      out = filterDatagram(filters, callback, msg);
    } catch (err) {
      const error = new FilterError(err);
      // The datagram in hand goes with the session: counted, as those waiting in it are.
      this.drop(DropReason.SESSION_CLOSED, from, msg.length, error);
      this.terminate(SessionCloseReason.FILTER_ERROR, error);
      return undefined;
    }
    // A filter may have ended its own session (`session.close()`): nothing more goes out.
    if (this.reason !== undefined) {
      this.drop(DropReason.SESSION_CLOSED, from, msg.length);
      return undefined;
    }
    if (out === undefined) this.drop(DropReason.FILTERED, from, msg.length);
    return out;
  }

  // ---- failures -----------------------------------------------------------------------------

  /**
   * A link could not be set up, its socket reported an error (an ICMP error such as port
   * unreachable, seen as ECONNREFUSED), or a send failed.
   */
  linkFailed(link: UpstreamLink, error: Error, kind: LinkFailure): void {
    this.host.emitUpstreamError(this, link.state, error);
    if (kind === 'setup' && isDescriptorExhaustion(error))
      this.host.resourceExhausted(link.state, error);
    if (kind !== 'setup' && isUnreachable(error))
      this.host.upstreamFailed(link.state, link.generation);
    // A transient send failure (ENOBUFS, EAGAIN, ...) is counted by the link; the session goes on.
    if (this.reason !== undefined || (kind === 'send' && !isUnreachable(error))) return;
    const setup = kind === 'setup';
    if (this.links === undefined) {
      // Only a refusal (ICMP) moves the session: any other receive error is not the upstream's answer.
      const refused =
        link.kept !== undefined && !setup && link === this.link && isUnreachable(error);
      if (refused && this.failover(link, error)) return;
      this.terminate(
        setup ? SessionCloseReason.SOCKET_ERROR : SessionCloseReason.UPSTREAM_ERROR,
        error,
      );
      return;
    }
    // Per-packet balancing: only this upstream's link goes; the session keeps the others.
    this.links.delete(link.state);
    this.closeLink(link, setup ? DropReason.SOCKET_ERROR : DropReason.SESSION_CLOSED, error);
  }

  /**
   * The session's upstream refused its datagrams (ICMP unreachable) before any reply: take them
   * back (with those still queued), and send them, in order, to another upstream chosen by the
   * selector without the ones already tried, as `TcpProxy` retries a refused connect. False when
   * the refusal came after the `connectTimeout` window (the datagrams may have been delivered
   * before it: the session ends as without failover).
   */
  private failover(link: UpstreamLink, error: Error): boolean {
    const kept = link.kept as Buffer[];
    if (Date.now() > link.keptUntil) return false;
    const queue = link.queue;
    link.queue = undefined;
    if (queue !== undefined) this.waiting -= queue.length;
    const counters = this.host.counters;
    counters.refusedDatagrams += kept.length;
    const resend = queue === undefined ? kept : kept.concat(queue);
    this.link = undefined;
    this.closeLink(link, DropReason.SESSION_CLOSED, error);
    (this.triedStates ??= []).push(link.state);
    this.error = error;
    this.pending = resend;
    this.waiting += resend.length;
    if (this.attempts >= this.host.options.maxConnectAttempts) {
      counters.attemptsExceeded++;
      this.giveUp(error);
      return true;
    }
    this.attempts++;
    this.select();
    return true;
  }

  /** No upstream is left to move to: what was taken back is dropped, the session ends. */
  private giveUp(error: Error | undefined): void {
    const pending = this.pending;
    this.pending = undefined;
    if (pending !== undefined) {
      this.waiting -= pending.length;
      for (const msg of pending)
        this.drop(DropReason.UPSTREAM_REFUSED, 'client', msg.length, error);
    }
    this.terminate(SessionCloseReason.UPSTREAM_ERROR, error);
  }

  private drop(reason: DropReason, from: 'client' | 'upstream', size: number, error?: Error): void {
    if (!this.host.countDrop(reason)) return;
    const { clientAddress, clientPort, id } = this;
    this.host.emitDrop({ reason, from, clientAddress, clientPort, size, sessionId: id, error });
  }

  /** Ends the session for `reason`: closes its sockets at once, drops what still waits. */
  terminate(reason: SessionCloseReason, error?: Error): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.error = error;
    if (this.checkQueued) this.host.firstChecks?.remove(this);
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.idleConfirm !== undefined) clearImmediate(this.idleConfirm);
    this.idleConfirm = undefined;
    this.clearSelectTimer();
    this.abort?.abort(error ?? new ProxyClosedError(`Session ended: ${reason}.`));
    this.quic?.close();
    const dropReason = dropReasonFor(reason);
    const pending = this.pending;
    this.pending = undefined;
    if (pending !== undefined) {
      this.waiting -= pending.length;
      for (const msg of pending) this.drop(dropReason, 'client', msg.length, error);
    }
    if (this.choosing !== undefined) {
      // Their late answers find them gone.
      for (const choice of this.choosing) {
        this.waiting--;
        this.drop(dropReason, 'client', choice.msg.length, error);
      }
      this.choosing.clear();
    }
    if (this.link !== undefined) this.closeLink(this.link, dropReason, error);
    if (this.links !== undefined) {
      for (const link of this.links.values()) this.closeLink(link, dropReason, error);
      this.links.clear();
    }
    // The summary object is built only for someone who reads it (a listener, a channel, filters).
    const summary =
      this.filters !== undefined || this.host.wantsSummary() ? this.summary() : undefined;
    this.host.finish(this, reason, summary);
    if (this.filters !== undefined && summary !== undefined)
      this.filtersClosed(this.filters, summary);
  }

  private filtersClosed(filters: readonly UdpSessionFilter[], summary: UdpSessionSummary): void {
    for (const filter of filters) {
      // The session is over: a failing onClose harms nothing, it is reported (as TCP's are).
      try {
        reportRejection(filter.onClose?.(summary), this.host.filterFailed);
      } catch (err) {
        this.host.filterFailed(err);
      }
    }
  }

  private closeLink(link: UpstreamLink, dropReason: DropReason, error: Error | undefined): void {
    const queue = link.queue;
    this.closedLinksDatagrams += link.datagramsSent;
    this.closedLinksBytes += link.bytesSent;
    link.close();
    if (queue === undefined) return;
    this.waiting -= queue.length;
    for (const msg of queue) this.drop(dropReason, 'client', msg.length, error);
  }

  // ---- summary and timers -------------------------------------------------------------------

  private upstreamSent(): [number, number] {
    let datagrams = this.closedLinksDatagrams;
    let bytes = this.closedLinksBytes;
    if (this.reason === undefined) {
      if (this.link !== undefined) {
        datagrams += this.link.datagramsSent;
        bytes += this.link.bytesSent;
      }
      if (this.links !== undefined) {
        for (const link of this.links.values()) {
          datagrams += link.datagramsSent;
          bytes += link.bytesSent;
        }
      }
    }
    return [datagrams, bytes];
  }

  private summary(): UdpSessionSummary {
    const state = this.current;
    const [datagramsToUpstream, bytesToUpstream] = this.upstreamSent();
    const summary: UdpSessionSummary = {
      id: this.id,
      reason: this.reason ?? SessionCloseReason.CLOSED_BY_USER,
      error: this.error,
      clientAddress: this.clientAddress,
      clientPort: this.clientPort,
      clientFamily: this.clientFamily,
      localAddress: this.localAddress,
      localPort: this.localPort,
      upstream: state && { id: state.id, host: state.host, port: state.port },
      datagramsFromClient: this.datagramsFromClient,
      bytesFromClient: this.bytesFromClient,
      datagramsToUpstream,
      bytesToUpstream,
      datagramsFromUpstream: this.datagramsFromUpstream,
      bytesFromUpstream: this.bytesFromUpstream,
      datagramsToClient: this.datagramsToClient,
      bytesToClient: this.bytesToClient,
      startTime: this.startTime,
      durationMs: Date.now() - this.startTime,
    };
    const quic = this.quic;
    if (quic === undefined) return summary;
    return {
      ...summary,
      serverName: quic.serverName,
      alpn: quic.alpn,
      quicVersion: quic.quicVersion,
    };
  }

  /** @internal The first check, from the host's `firstChecks` queue. */
  firstCheck(): void {
    this.idleCheck();
  }

  /**
   * Runs at most once per `idleTimeout` (and once at the end of a failover window): first from the
   * host's `firstChecks` queue, then on the session's own timer; traffic only stamps
   * `lastActivity`, so the relay never touches a timer per datagram.
   *
   * @internal
   */
  idleCheck(): void {
    const now = Date.now();
    let next = this.keptWindowLeft(now);
    const idleTimeout = this.detached ? DETACHED_IDLE_TIMEOUT : this.host.options.idleTimeout;
    if (idleTimeout > 0) {
      const idleFor = now - this.lastActivity;
      if (idleFor >= idleTimeout) {
        this.idleTimer = undefined;
        this.idleConfirm = setImmediate(onIdleConfirm, this, this.lastActivity);
        return;
      }
      next = Math.min(next, idleTimeout - idleFor);
    }
    if (next === Infinity) {
      this.idleTimer = undefined;
      return;
    }
    this.idleTimer = setTimeout(onIdleCheck, next, this);
    this.idleTimer.unref();
  }

  /**
   * The idle timer found the session idle; this runs after the poll phase of the same turn of the
   * event loop. Timers run before that poll, so a datagram that reached either socket before the
   * expiry (the loop was busy) is read first: it stamped `lastActivity`, and the session goes on
   * rather than lose it with its socket. One immediate per expiry, none per datagram.
   *
   * @internal
   */
  idleConfirmed(stamp: number): void {
    this.idleConfirm = undefined;
    if (this.reason !== undefined) return;
    if (this.lastActivity !== stamp) {
      this.idleCheck();
      return;
    }
    this.host.counters.idleTimeouts++;
    this.terminate(SessionCloseReason.IDLE_TIMEOUT);
  }

  /**
   * Ms until the session's link stops keeping datagrams for failover, or Infinity when it keeps
   * none (any more: past its window, what it kept is let go here).
   */
  private keptWindowLeft(now: number): number {
    const link = this.link;
    if (link?.kept === undefined) return Infinity;
    const left = link.keptUntil - now;
    if (left >= 0) return left + 1;
    link.kept = undefined;
    return Infinity;
  }
}
