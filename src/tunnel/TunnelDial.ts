import dns from 'node:dns';
import type { LookupAddress } from 'node:dns';
import net from 'node:net';
import type { BlockList, LookupFunction, Socket } from 'node:net';
import { addressIn } from '../net/addressList.js';
import { connectFrom } from '../net/sourceAddress.js';
import type { SourceAddresses } from '../net/sourceAddress.js';
import {
  ConnectFailedError,
  ConnectTimeoutError,
  NoUpstreamError,
  ResourceExhaustedError,
  SelectorError,
} from '../errors.js';
import type { TlsHandshakeError } from '../errors.js';
import { isDescriptorExhaustion } from '../net/descriptorExhaustion.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import type { UpstreamTls } from '../tls/UpstreamTls.js';
import type { ResolvedUpstreamTls } from '../tls/UpstreamTlsOptions.js';
import { negotiateStartTls, startTlsError } from '../tls/startTls.js';
import { countUpstreamFailure, upstreamTlsError, upstreamTlsTimeout } from '../tls/tlsFailure.js';
import type {
  SelectionContext,
  SelectionResult,
  UpstreamSelector,
} from '../select/SelectionContext.js';
import { isThenable } from '../internal/isThenable.js';
import { selectorError } from '../select/internal/selectorOutcome.js';
import type { UpstreamManager } from '../upstream/UpstreamManager.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { TunnelRequest } from './tunnelRequest.js';
import type { TunnelTarget } from './tunnelServerOptions.js';
import { ignoreError } from '../internal/ignoreError.js';

/** What a selector sees for a tunnel: the usual context plus the CONNECT request. */
export interface TunnelSelectionContext extends SelectionContext {
  /** The CONNECT (or CONNECT-UDP) request being routed: authority, headers, HTTP version. */
  readonly request: TunnelRequest;
}

/** How the requested authority picks upstreams (see docs/tunneling.md). */
export type TunnelRouteMode = 'match' | 'any' | 'direct';

/** What a dial needs from the server that owns it. */
export interface DialHost {
  readonly manager: UpstreamManager;
  readonly selector: UpstreamSelector;
  readonly upstreamTls: UpstreamTls;
  readonly route: TunnelRouteMode;
  /** `denyTargets`: addresses never dialled. */
  readonly denyTargets?: BlockList | undefined;
  /** `sourceAddress`: the local addresses targets are dialled from. */
  readonly sourceAddress?: SourceAddresses | undefined;
  readonly connectTimeout: number;
  readonly maxConnectAttempts: number;
}

/** How a dial ended: a connected target, or the status to answer and why. */
export type DialOutcome =
  | {
      readonly ok: true;
      /** The connected target; undefined for a UDP dial (which only selects). */
      readonly socket: Socket | undefined;
      readonly state: UpstreamState;
    }
  | {
      readonly ok: false;
      readonly status: number;
      readonly reason: TunnelRefusal;
      readonly error: Error | undefined;
    };

/** Why a tunnel was refused (the `reason` label of the refusal counters). */
export type TunnelRefusal =
  | 'bad_request'
  /** An HTTP/1.1 request head not complete within `headersTimeout` (408). */
  | 'headers_timeout'
  | 'admission'
  | 'not_routable'
  /** The target's address is in `denyTargets` (403). */
  | 'target_denied'
  | 'no_upstream'
  | 'connect_failed'
  | 'connect_timeout'
  | 'upstream_tls'
  | 'resource_exhausted'
  /** `maxTunnels` tunnels were open or opening (503). */
  | 'max_tunnels'
  /** The route function or the selector did not answer within `connectTimeout` (504). */
  | 'route_timeout'
  | 'internal'
  /** The client left before the answer (reported with status 499; nothing was sent). */
  | 'client_gone';

/**
 * Every {@link TunnelRefusal}, for counters that list each reason at 0 before it first happens
 * (a series that first appears at 1 hides that refusal from `increase()`). A record, so a reason
 * added to the type without an entry here fails to compile.
 */
const REFUSALS: Readonly<Record<TunnelRefusal, true>> = {
  bad_request: true,
  headers_timeout: true,
  admission: true,
  not_routable: true,
  target_denied: true,
  no_upstream: true,
  connect_failed: true,
  connect_timeout: true,
  upstream_tls: true,
  resource_exhausted: true,
  max_tunnels: true,
  route_timeout: true,
  internal: true,
  client_gone: true,
};

/** A count of 0 for every refusal reason. */
export function zeroRefusals(): Record<TunnelRefusal, number> {
  const counts = {} as Record<TunnelRefusal, number>;
  for (const reason of Object.keys(REFUSALS) as TunnelRefusal[]) counts[reason] = 0;
  return counts;
}

/**
 * The outcome of a route function or selector that did not answer within `connectTimeout`:
 * 504 (a gateway timeout, as this server answers its own connect timeouts), with a reason of
 * its own: the application's hook was late, not the target.
 */
export function routeTimeout(
  what: 'route function' | 'selector',
  connectTimeout: number,
): DialOutcome & { readonly ok: false; readonly error: SelectorError } {
  const error = new SelectorError(
    `The ${what} did not answer within connectTimeout (${String(connectTimeout)} ms).`,
  );
  return { ok: false, status: 504, reason: 'route_timeout', error };
}

/** A target whose addresses are all in `denyTargets`. */
export class TargetDeniedError extends Error {
  constructor(target: string) {
    super(`${target} is in denyTargets: not dialled`);
    this.name = 'TargetDeniedError';
  }
}

/** `dns.lookup` for `net.connect`, leaving out the addresses in `deny` (none left: an error). */
function allowedLookup(deny: BlockList): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err !== null) {
        callback(err, '', 0);
        return;
      }
      const allowed = addresses.filter((entry) => !addressIn(deny, entry.address));
      const first = allowed[0];
      if (first === undefined) {
        const listed = addresses.map((entry) => entry.address).join(', ');
        callback(new TargetDeniedError(`${hostname} (${listed})`), '', 0);
        return;
      }
      if (options.all === true) (callback as unknown as AllCallback)(null, allowed);
      else callback(null, first.address, first.family);
    });
  };
}

type AllCallback = (err: null, addresses: LookupAddress[]) => void;

/** The facts of the client a dial is for. */
export interface DialClient {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6' | 'unix';
  readonly localAddress: string;
  readonly localPort: number;
  readonly tls: DownstreamTlsInfo | undefined;
}

/** What one dial is for. */
export interface DialSpec {
  readonly request: TunnelRequest;
  readonly client: DialClient;
  /** A fixed target (no selection, no retry), or undefined to select among upstreams. */
  readonly target: TunnelTarget | undefined;
  /** Select only, do not connect (CONNECT-UDP). */
  readonly udp: boolean;
}

const EMPTY: readonly UpstreamState[] = [];

/**
 * Swaps a dial's own listeners on `socket` for {@link ignoreError} once the socket is handed
 * over, so that it no longer holds the dial; the swap adds first, so that the socket is never
 * without an 'error' listener.
 */
function handOver(socket: Socket, onError: (err: Error) => void, onClose: () => void): void {
  socket.on('error', ignoreError);
  socket.off('error', onError);
  socket.off('close', onClose);
}

function sameHost(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/**
 * Whether `state` serves the requested authority: its own `host:port`, or one of the
 * `metadata.authority` names (a string or an array of `host:port` strings).
 */
export function servesAuthority(state: UpstreamCandidate, request: TunnelRequest): boolean {
  if (state.port === request.port && sameHost(state.host, request.host)) return true;
  const names = state.metadata?.authority;
  if (typeof names === 'string') return sameHost(names, request.authority);
  return (
    Array.isArray(names) &&
    names.some((n) => typeof n === 'string' && sameHost(n, request.authority))
  );
}

/**
 * One tunnel's way to its target, as TcpConnection does it for a TCP client: ask the selector
 * among the candidates the route allows, connect under `connectTimeout` (then the TLS handshake
 * for a TLS upstream), and on failure try another upstream (not one already tried) up to
 * `maxConnectAttempts`. Outcomes feed passive health (outlier detection). The target's `active`
 * count stays raised until `release()`.
 */
export class TunnelDial implements TunnelSelectionContext {
  readonly protocol = 'tcp' as const;
  readonly clientAddress: string;
  readonly clientPort: number;
  readonly clientFamily: 'IPv4' | 'IPv6' | 'unix';
  readonly localAddress: string;
  readonly localPort: number;
  readonly serverName: string | undefined;
  readonly alpn: readonly string[] | undefined;
  readonly tls: DownstreamTlsInfo | undefined;
  attempt = 0;
  private triedStates: UpstreamState[] | undefined;
  private readonly abort = new AbortController();
  private socket: Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastError: Error | undefined;
  private finished = false;

  readonly request: TunnelRequest;
  /** A fixed target (`route: 'direct'` or a route function): no selection, no retry. */
  private readonly target: TunnelTarget | undefined;
  /** Select only (a CONNECT-UDP tunnel sends from its own socket): no connect. */
  private readonly udp: boolean;

  constructor(
    private readonly host: DialHost,
    spec: DialSpec,
    private readonly done: (outcome: DialOutcome) => void,
  ) {
    const { request, client } = spec;
    this.request = request;
    this.target = spec.target;
    this.udp = spec.udp;
    this.clientAddress = client.address;
    this.clientPort = client.port;
    this.clientFamily = client.family;
    this.localAddress = client.localAddress;
    this.localPort = client.localPort;
    this.tls = client.tls;
    this.serverName = client.tls?.serverName;
    this.alpn = client.tls?.alpnProtocol === undefined ? undefined : [client.tls.alpnProtocol];
  }

  get tried(): readonly UpstreamState[] {
    return this.triedStates ?? EMPTY;
  }

  get upstreams(): readonly UpstreamState[] {
    return this.host.manager.set.list();
  }

  get candidates(): readonly UpstreamState[] {
    const tried = this.triedStates;
    const route = this.host.route;
    return this.host.manager.set
      .available()
      .filter(
        (state) =>
          (route !== 'match' || servesAuthority(state, this.request)) &&
          (tried === undefined || !tried.includes(state)),
      );
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Starts: 403 at once when the route allows no configured upstream for this authority. */
  start(): void {
    if (
      this.target === undefined &&
      this.host.route === 'match' &&
      !this.upstreams.some((state) => servesAuthority(state, this.request))
    ) {
      this.finish({ ok: false, status: 403, reason: 'not_routable', error: undefined });
      return;
    }
    this.next();
  }

  /** The client went away: stop, destroy any socket in progress (no outcome is reported). */
  cancel(): void {
    if (this.finished) return;
    this.finished = true;
    this.abort.abort();
    this.clearTimer();
    const state = this.triedStates?.at(-1);
    if (this.socket !== undefined && state !== undefined) state.active--;
    this.socket?.destroy();
    this.socket = undefined;
  }

  private next(): void {
    this.attempt++;
    if (this.target !== undefined) {
      // One fixed target, as a one-off upstream (no retries: there is nothing else to try).
      this.connect(
        this.host.manager.set.resolve({ host: this.target.host, port: this.target.port }),
      );
      return;
    }
    let choice: SelectionResult | PromiseLike<SelectionResult>;
    try {
      choice = this.host.selector(this);
    } catch (err) {
      this.selectorFailed(err);
      return;
    }
    if (!isThenable(choice)) {
      this.selected(choice);
      return;
    }
    // A selector that never answers would hold the client forever: its answer is due within
    // `connectTimeout`, and a late one is ignored (`finished`).
    this.startTimer(() => {
      this.finish(routeTimeout('selector', this.host.connectTimeout));
    }, this.host.connectTimeout);
    Promise.resolve(choice).then(
      (value) => {
        if (this.finished) return;
        this.clearTimer();
        this.selected(value);
      },
      (err: unknown) => {
        if (this.finished) return;
        this.clearTimer();
        this.selectorFailed(err);
      },
    );
  }

  private selectorFailed(err: unknown): void {
    this.finish({
      ok: false,
      status: 500,
      reason: 'internal',
      error: selectorError(err),
    });
  }

  private selected(choice: SelectionResult | null): void {
    if (this.finished) return;
    if (choice === undefined || choice === null) {
      this.noMore();
      return;
    }
    let state: UpstreamState;
    try {
      state = this.host.manager.set.resolve(choice);
    } catch (err) {
      this.selectorFailed(err);
      return;
    }
    this.connect(state);
  }

  private connect(state: UpstreamState): void {
    (this.triedStates ??= []).push(state);
    this.generation = state.generation;
    state.active++;
    state.counters.total++;
    const deny = this.host.denyTargets;
    if (deny !== undefined && net.isIP(state.host) !== 0 && addressIn(deny, state.host)) {
      this.denied(state, new TargetDeniedError(state.host));
      return;
    }
    if (this.udp) {
      this.finished = true;
      this.done({ ok: true, socket: undefined, state });
      return;
    }
    let tlsSettings;
    try {
      if (state.upstream.tunnel !== undefined)
        throw new Error(
          'a TunnelServer does not chain tunnels (put a TcpProxy with the tunnel upstream behind it)',
        );
      tlsSettings = this.host.upstreamTls.settingsFor(state.upstream);
    } catch (err) {
      this.failed(state, new ConnectFailedError(state.address, err), 'connect_failed');
      return;
    }
    const options: net.TcpNetConnectOpts = {
      host: state.host,
      port: state.port,
      allowHalfOpen: true,
      noDelay: true,
      // A name is checked on what it resolves to when connecting, so a second answer (DNS
      // rebinding between a hook's check and the dial) cannot slip past (connectFrom resolves
      // a name with this lookup too).
      ...(deny !== undefined && { lookup: allowedLookup(deny) }),
    };
    const raw = connectFrom(options, this.host.sourceAddress);
    this.socket = raw;
    const onError = (err: Error): void => {
      if (this.socket !== raw) return;
      if (err instanceof TargetDeniedError) this.denied(state, err);
      else if (isDescriptorExhaustion(err)) this.outOfDescriptors(state, err);
      else this.failed(state, new ConnectFailedError(state.address, err), 'connect_failed');
    };
    const onClose = (): void => {
      if (this.socket === raw)
        this.failed(state, new ConnectFailedError(state.address, 'closed'), 'connect_failed');
    };
    raw.on('error', onError);
    raw.once('close', onClose);
    this.startTimer(() => {
      state.counters.connectTimeouts++;
      this.failed(
        state,
        new ConnectTimeoutError(state.address, this.host.connectTimeout),
        'connect_timeout',
      );
    }, this.host.connectTimeout);
    raw.once('connect', () => {
      if (this.socket !== raw) return;
      // From here the relay (or, for TLS, the TLS socket over it) reports this socket's end.
      handOver(raw, onError, onClose);
      if (tlsSettings === undefined) this.connected(state, raw);
      else this.startTls(state, raw, tlsSettings);
    });
  }

  /**
   * TCP is up to a TLS upstream: the handshake (after the in-band request for it, `startTls`),
   * under its own `handshakeTimeout`.
   */
  private startTls(state: UpstreamState, raw: Socket, settings: ResolvedUpstreamTls): void {
    this.clearTimer();
    if (settings.startTls === undefined) {
      this.handshake(state, raw, settings);
      return;
    }
    // One clock for the request and the handshake after it, as TcpProxy's.
    this.startHandshakeTimer(state, settings);
    const onError = (err: Error): void => {
      if (this.socket !== raw) return;
      const error = startTlsError(raw, state.address, err) ?? upstreamTlsError(state.address, err);
      this.tlsFailed(state, error);
    };
    raw.on('error', onError);
    negotiateStartTls(raw, state.address, (error) => {
      raw.off('error', onError);
      if (this.socket !== raw) return;
      if (error === undefined) this.handshake(state, raw, settings);
      else this.tlsFailed(state, error);
    });
  }

  private startHandshakeTimer(state: UpstreamState, settings: ResolvedUpstreamTls): void {
    this.startTimer(() => {
      this.tlsFailed(state, upstreamTlsTimeout(state.address, settings.handshakeTimeout));
    }, settings.handshakeTimeout);
  }

  /** The handshake over `raw`, connected (after `startTls`'s `S`: its timer is running). */
  private handshake(state: UpstreamState, raw: Socket, settings: ResolvedUpstreamTls): void {
    let secure: Socket;
    try {
      secure = this.host.upstreamTls.start(
        raw,
        { settings, id: state.id, host: state.host, port: state.port },
        this.serverName,
      );
    } catch (err) {
      // Inside the socket's 'connect' event: it must not escape (the raw socket is destroyed).
      this.tlsFailed(state, upstreamTlsError(state.address, err));
      return;
    }
    this.socket = secure;
    const onError = (err: Error): void => {
      if (this.socket === secure) this.tlsFailed(state, upstreamTlsError(state.address, err));
    };
    const onClose = (): void => {
      if (this.socket === secure)
        this.tlsFailed(
          state,
          upstreamTlsError(state.address, new Error('closed during the handshake')),
        );
    };
    secure.on('error', onError);
    secure.once('close', onClose);
    if (settings.startTls === undefined) this.startHandshakeTimer(state, settings);
    secure.once('secureConnect', () => {
      if (this.socket !== secure) return;
      handOver(secure, onError, onClose);
      this.host.upstreamTls.secured(secure);
      this.connected(state, secure);
    });
  }

  private connected(state: UpstreamState, socket: Socket): void {
    this.clearTimer();
    this.socket = undefined;
    this.finished = true;
    this.host.manager.upstreamSucceeded(state, this.generation);
    this.done({ ok: true, socket, state });
  }

  private lastReason: TunnelRefusal = 'connect_failed';
  /** The dialled upstream's `generation` (an outcome about an address it has since left is ignored). */
  private generation = 0;

  /** A failed origination handshake: counted by its cause (as TcpProxy counts it), then failed. */
  private tlsFailed(state: UpstreamState, error: TlsHandshakeError): void {
    if (this.finished) return;
    countUpstreamFailure(this.host.upstreamTls.stats, error);
    this.failed(state, error, 'upstream_tls');
  }

  private failed(state: UpstreamState, error: Error, reason: TunnelRefusal): void {
    if (this.finished) return;
    this.abandon(state);
    if (reason !== 'connect_timeout') state.counters.connectFailures++;
    this.host.manager.upstreamFailed(state, this.generation);
    this.lastError = error;
    this.lastReason = reason;
    if (
      this.target === undefined &&
      this.attempt < this.host.maxConnectAttempts &&
      this.candidates.length > 0
    ) {
      this.next();
      return;
    }
    this.noMore();
  }

  /**
   * The socket to the target could not be created (EMFILE/ENFILE): this process's shortage, not
   * the upstream's fault, and any other upstream would fail the same way. 503, nothing blamed or
   * retried (as a TcpProxy connection closes as `resource_exhausted`).
   */
  private outOfDescriptors(state: UpstreamState, err: Error): void {
    if (this.finished) return;
    this.abandon(state);
    const error = new ResourceExhaustedError(
      `No file descriptor left to connect to upstream ${state.address}: ${err.message}.`,
      err,
    );
    this.finish({ ok: false, status: 503, reason: 'resource_exhausted', error });
  }

  /** The target's address is in `denyTargets`: 403, and nothing else is tried. */
  private denied(state: UpstreamState, error: TargetDeniedError): void {
    if (this.finished) return;
    this.abandon(state);
    this.finish({ ok: false, status: 403, reason: 'target_denied', error });
  }

  /** Gives up the attempt on `state`: its deadline, its socket and its slot. */
  private abandon(state: UpstreamState): void {
    this.clearTimer();
    const socket = this.socket;
    this.socket = undefined;
    socket?.destroy();
    state.active--;
  }

  /** Nothing (more) to try: the last failure (502, 504 for a timeout), or 503 for none at all. */
  private noMore(): void {
    const error = this.lastError;
    if (error === undefined) {
      this.finish({ ok: false, status: 503, reason: 'no_upstream', error: new NoUpstreamError() });
      return;
    }
    const timeout = this.lastReason === 'connect_timeout';
    this.finish({ ok: false, status: timeout ? 504 : 502, reason: this.lastReason, error });
  }

  private finish(outcome: DialOutcome): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTimer();
    this.done(outcome);
  }

  /** A deadline of this dial; unref'd: a pending dial must not keep the host process alive. */
  private startTimer(expired: () => void, ms: number): void {
    this.timer = setTimeout(expired, ms);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
