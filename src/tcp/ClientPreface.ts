import type net from 'node:net';
import type { Socket } from 'node:net';
import type { RelaySocket } from '../net/RelaySocket.js';
import { ErrorCode, L4Error, ProxyProtocolError, TlsClientHelloError } from '../errors.js';
import { addressIn } from '../net/addressList.js';
import type { ProxyHeader } from '../protocol/ProxyHeader.js';
import { ProxyHeaderParser } from '../protocol/ProxyHeaderParser.js';
import { RejectReason } from './closeReasons.js';
import type { DownstreamTlsInfo } from '../tls/DownstreamTls.js';
import { PrereadStage, tlsIdentity } from '../preread/PrereadStage.js';
import type { PrereadConfig, PrereadOutcome } from '../preread/PrereadStage.js';
import type { PrereadContext, PrereadResults } from '../preread/types.js';
import { SNI_INSPECTOR } from '../preread/sniPreread.js';

/** Who the client is, as selectors, limits, events, stats and the sent PROXY header see it. */
export interface ClientIdentity {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6' | 'unix';
  /** The address the client originally reached (the PROXY header's destination, when accepted). */
  readonly localAddress: string;
  readonly localPort: number;
  /** The TCP peer itself: the load balancer when a PROXY header was accepted. */
  readonly peerAddress: string;
  readonly peerPort: number;
  /** The PROXY header accepted from a trusted peer, if any. */
  readonly proxyHeader: ProxyHeader | undefined;
  readonly serverName: string | undefined;
  readonly alpn: readonly string[] | undefined;
  /** What TLS termination negotiated, when the proxy terminates TLS. */
  readonly tls?: DownstreamTlsInfo | undefined;
  /** Metadata of the preread inspectors that matched (with `preread` on). */
  readonly preread?: PrereadResults | undefined;
}

/** What the preface reads, resolved from the proxy's options. */
export interface PrefaceConfig {
  readonly acceptProxy:
    | {
        readonly trusted: net.BlockList;
        readonly timeout: number;
        readonly required: boolean;
        readonly maxLength: number;
      }
    | undefined;
  readonly sni:
    | {
        readonly timeout: number;
        readonly maxBytes: number;
        readonly required: boolean;
        /** The peek as a preread pass: one `tlsClientHello` inspector (see sniPreread.ts). */
        readonly inspection: PrereadConfig;
      }
    | undefined;
  /** Preread inspectors, run after the PROXY header and the SNI peek. */
  readonly preread?: PrereadConfig | undefined;
  /**
   * The proxy terminates TLS and this preface reads the raw bytes before the handshake: a TLS
   * record, or an inspector answering `startTls` (a PostgreSQL `SSLRequest`), ends it with
   * `startTls` (the handshake follows); otherwise the client speaks in clear.
   */
  readonly startTls?: boolean;
}

/** How a preface ended: an identity and the bytes read (to forward first), or a refusal. */
export type PrefaceOutcome =
  | {
      readonly ok: true;
      readonly identity: ClientIdentity;
      readonly buffered: Buffer[];
      /** The client starts TLS now (with `config.startTls`); `buffered` opens its handshake. */
      readonly startTls: boolean;
    }
  | {
      readonly ok: false;
      readonly reason: RejectReason;
      readonly error: Error | undefined;
      /** The inspector's own reason, for `preread_rejected`. */
      readonly detail?: string;
    };

/** The identity of a socket taken at face value (no PROXY header). */
export function socketIdentity(socket: RelaySocket): ClientIdentity {
  const address = socket.remoteAddress ?? '';
  const port = socket.remotePort ?? 0;
  return {
    address,
    port,
    family: (socket.remoteFamily as 'IPv4' | 'IPv6' | undefined) ?? 'unix',
    localAddress: socket.localAddress ?? '',
    localPort: socket.localPort ?? 0,
    peerAddress: address,
    peerPort: port,
    proxyHeader: undefined,
    serverName: undefined,
    alpn: undefined,
    tls: undefined,
    preread: undefined,
  };
}

/**
 * `identity` with what a handshake or an inspection told. Built field by field in one order, so
 * every identity has one shape: a spread (`{ ...identity, serverName }`) makes V8 copy the object
 * and add its properties on a slow path, about 6 µs per TLS client (`perf`, 2026-12-05).
 */
export function identityWith(
  identity: ClientIdentity,
  serverName: string | undefined,
  alpn: readonly string[] | undefined,
  tls: DownstreamTlsInfo | undefined,
  preread: PrereadResults | undefined,
): ClientIdentity {
  return {
    address: identity.address,
    port: identity.port,
    family: identity.family,
    localAddress: identity.localAddress,
    localPort: identity.localPort,
    peerAddress: identity.peerAddress,
    peerPort: identity.peerPort,
    proxyHeader: identity.proxyHeader,
    serverName,
    alpn,
    tls,
    preread,
  };
}

/** `identity` with the server name and ALPN of a TLS inspection among `results`, if any. */
function withNames(identity: ClientIdentity, results: PrereadResults): ClientIdentity {
  const names = tlsIdentity(results);
  if (names === undefined) return identity;
  return identityWith(identity, names.serverName, names.alpn, identity.tls, identity.preread);
}

type Stage = 'proxy' | 'sni' | 'preread' | 'done';

/** The first byte of a TLS handshake record (RFC 8446 5.1). */
const TLS_HANDSHAKE = 0x16;

/**
 * Reads what the proxy must know before it can choose an upstream: a PROXY protocol header (only
 * from trusted peers), the TLS ClientHello (for SNI) and the preread inspectors' first bytes (both
 * run as preread passes). Each stage has its own timeout and byte limit, so a slow or hostile
 * client holds at most a few KiB for a bounded time. Every byte read after the PROXY header is
 * kept and forwarded unchanged, except bytes an inspector answered. With TLS termination the
 * proxy runs one preface on the raw socket and another on the decrypted one (see tlsPreread.ts).
 */
export class ClientPreface {
  private readonly socket: Socket;
  private readonly config: PrefaceConfig;
  private readonly done: (outcome: PrefaceOutcome) => void;
  private identity: ClientIdentity;
  private stage: Stage = 'done';
  private readonly buffered: Buffer[] = [];
  private proxyStage: { parser: ProxyHeaderParser; required: boolean } | undefined;
  private sniStage: { inspection: PrereadStage; required: boolean } | undefined;
  private prereadStage: PrereadStage | undefined;
  private timer: NodeJS.Timeout | undefined;
  private finished = false;

  /**
   * @param identity the client as already known (a later preface: after an accepted PROXY header,
   *   after TLS termination); by default the socket's peer.
   */
  constructor(
    socket: Socket,
    config: PrefaceConfig,
    done: (outcome: PrefaceOutcome) => void,
    identity?: ClientIdentity,
  ) {
    this.socket = socket;
    this.config = config;
    this.done = done;
    this.identity = identity ?? socketIdentity(socket);
  }

  /** The client as known so far (after an accepted PROXY header, its client). */
  get identitySoFar(): ClientIdentity {
    return this.identity;
  }

  /** Whether this socket needs a preface at all under `config`. */
  static needed(socket: Socket, config: PrefaceConfig): boolean {
    return (
      config.sni !== undefined ||
      config.preread !== undefined ||
      ClientPreface.trusted(socket, config)
    );
  }

  private static trusted(socket: Socket, config: PrefaceConfig): boolean {
    const accept = config.acceptProxy;
    return accept !== undefined && addressIn(accept.trusted, socket.remoteAddress ?? '');
  }

  start(): void {
    const socket = this.socket;
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onGone);
    socket.on('error', this.onGone);
    // A later preface reads a socket an earlier one paused.
    if (socket.isPaused()) socket.resume();
    const accept = this.config.acceptProxy;
    if (accept !== undefined && ClientPreface.trusted(socket, this.config)) {
      this.enterProxyStage(accept);
    } else {
      this.enterSniStage();
    }
  }

  /** Stops reading (the proxy is closing): refuses the client. */
  abort(): void {
    this.finish({ ok: false, reason: RejectReason.PROXY_CLOSING, error: undefined });
  }

  private enterProxyStage(accept: NonNullable<PrefaceConfig['acceptProxy']>): void {
    this.stage = 'proxy';
    this.proxyStage = {
      parser: new ProxyHeaderParser({ maxLength: accept.maxLength }),
      required: accept.required,
    };
    this.arm(accept.timeout, RejectReason.PROXY_PROTOCOL_TIMEOUT);
  }

  /** The SNI peek: a preread pass with the `tlsClientHello` inspector, with its own reasons. */
  private enterSniStage(): void {
    const sni = this.config.sni;
    if (sni === undefined) {
      this.enterPrereadStage();
      return;
    }
    this.stage = 'sni';
    this.sniStage = {
      inspection: new PrereadStage(sni.inspection, this.prereadContext()),
      required: sni.required,
    };
    this.arm(sni.timeout, RejectReason.SNI_TIMEOUT);
    if (this.buffered.length > 0) this.readClientHello(undefined);
  }

  private prereadContext(): PrereadContext {
    const identity = this.identity;
    return {
      clientAddress: identity.address,
      clientPort: identity.port,
      localAddress: identity.localAddress,
      localPort: identity.localPort,
      proxyHeader: identity.proxyHeader,
      canStartTls: this.config.startTls === true,
      tls: identity.tls,
    };
  }

  private arm(timeout: number, reason: RejectReason): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stage === 'preread') this.prereadIncomplete();
      else if (this.stage === 'proxy' && this.silentOptionalPeer())
        this.continueWith(Buffer.alloc(0));
      else this.finish({ ok: false, reason, error: undefined });
    }, timeout);
    this.timer.unref();
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.stage === 'proxy') this.readProxyHeader(chunk);
    else if (this.stage === 'sni') this.readClientHello(chunk);
    else if (this.stage === 'preread') this.inspect(chunk);
  };

  private readProxyHeader(chunk: Buffer): void {
    const stage = this.proxyStage;
    if (stage === undefined) return;
    this.buffered.push(chunk);
    let result;
    try {
      result = stage.parser.push(chunk);
    } catch (err) {
      const error = err instanceof ProxyProtocolError ? err : wrapUnexpected(err);
      const optionalAndAbsent =
        !stage.required && error instanceof ProxyProtocolError && error.reason === 'bad_signature';
      if (optionalAndAbsent) {
        // No header from a peer that may send one: everything read so far is payload.
        this.replayAsPayload();
        return;
      }
      this.finish({ ok: false, reason: RejectReason.PROXY_PROTOCOL_ERROR, error });
      return;
    }
    if (result === undefined) return;
    // The header itself is consumed; what followed it in the chunk is the stream's first bytes.
    this.buffered.length = 0;
    this.identity = identityFromHeader(this.identity, result.header);
    this.continueWith(result.rest);
  }

  /**
   * An optional header's peer that sent nothing in `timeout`: a protocol where the server speaks
   * first (SMTP, SSH, MySQL). It sent no header, so it proceeds under its own address. A peer that
   * sent part of a header (`PROX`) stalled in it and is refused like any other.
   */
  private silentOptionalPeer(): boolean {
    return this.proxyStage?.required === false && this.proxyStage.parser.buffered === 0;
  }

  /** The optional header was absent: the bytes held so far are the start of the stream. */
  private replayAsPayload(): void {
    const held = Buffer.concat(this.buffered.splice(0));
    this.continueWith(held);
  }

  /** After the PROXY stage: `first` (what followed the header) opens the stream. */
  private continueWith(first: Buffer): void {
    if (first.length > 0) this.buffered.push(first);
    this.enterSniStage();
  }

  /** Feeds `chunk` (or, with undefined, only what is held) to the SNI peek. */
  private readClientHello(chunk: Buffer | undefined): void {
    const sni = this.sniStage;
    if (sni === undefined) return;
    if (chunk !== undefined) this.buffered.push(chunk);
    const outcome = sni.inspection.inspect(this.buffered, this.reply);
    if (outcome.kind === 'more') return;
    const refusal = sniRefusal(outcome, sni.required);
    if (refusal !== undefined) {
      this.finish(refusal);
      return;
    }
    if (outcome.kind === 'done') this.identity = withNames(this.identity, outcome.results);
    this.enterPrereadStage();
  }

  /** Runs the preread inspectors over the bytes held so far and those that follow, if configured. */
  private enterPrereadStage(): void {
    const preread = this.config.preread;
    if (preread === undefined) {
      this.succeed(false);
      return;
    }
    this.stage = 'preread';
    this.prereadStage = new PrereadStage(preread, this.prereadContext());
    this.arm(preread.timeout, RejectReason.PREREAD_TIMEOUT);
    if (this.buffered.length > 0) this.inspect(undefined);
  }

  /** Feeds `chunk` (or, with undefined, only what is held) to the inspectors. */
  private inspect(chunk: Buffer | undefined): void {
    const stage = this.prereadStage;
    if (stage === undefined) return;
    if (chunk !== undefined) this.buffered.push(chunk);
    // A terminating listener's client opening with TLS: the handshake reads these bytes.
    if (this.config.startTls === true && this.buffered[0]?.[0] === TLS_HANDSHAKE) {
      this.succeed(true);
      return;
    }
    const outcome = stage.inspect(this.buffered, this.reply);
    switch (outcome.kind) {
      case 'more':
        return;
      case 'done':
        this.prereadDone(outcome.results);
        return;
      case 'limit':
        this.prereadIncomplete();
        return;
      case 'startTls':
        this.succeed(true);
        return;
      case 'reject':
        this.finish({
          ok: false,
          reason: RejectReason.PREREAD_REJECTED,
          error: outcome.error,
          detail: `${outcome.inspector}: ${outcome.reason}`,
        });
    }
  }

  private readonly reply = (data: Buffer): void => {
    this.socket.write(data);
  };

  /** Time or bytes ran out with inspectors undecided: route with what was found, or refuse. */
  private prereadIncomplete(): void {
    const stage = this.prereadStage;
    if (stage === undefined) return;
    if (this.config.preread?.rejectIncomplete === true) {
      this.finish({ ok: false, reason: RejectReason.PREREAD_TIMEOUT, error: undefined });
      return;
    }
    this.prereadDone(stage.found);
  }

  private prereadDone(results: PrereadResults): void {
    const { identity } = this;
    const named = identity.serverName === undefined ? withNames(identity, results) : identity;
    this.identity = identityWith(named, named.serverName, named.alpn, identity.tls, results);
    this.succeed(false);
  }

  private succeed(startTls: boolean): void {
    this.finish({ ok: true, identity: this.identity, buffered: this.buffered, startTls });
  }

  /**
   * A client may send its request and half-close: inspection ends with what it sent. One that
   * leaves having sent nothing to forward (or only what an inspector answered) is gone.
   */
  private readonly onEnd = (): void => {
    if (this.stage === 'preread' && this.buffered.length > 0) this.prereadIncomplete();
    else this.onGone();
  };

  private readonly onGone = (): void => {
    this.finish({ ok: false, reason: RejectReason.CLIENT_GONE, error: undefined });
  };

  private finish(outcome: PrefaceOutcome): void {
    if (this.finished) return;
    this.finished = true;
    this.stage = 'done';
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('close', this.onGone);
    socket.off('error', this.onGone);
    // Reading stops until the connection takes over (removing 'data' does not pause a stream).
    socket.pause();
    this.done(outcome);
  }
}

/** How an SNI peek outcome refuses the client (the `sni` option's reasons), if it does. */
function sniRefusal(outcome: PrereadOutcome, required: boolean): PrefaceOutcome | undefined {
  switch (outcome.kind) {
    case 'reject': {
      const error =
        outcome.error instanceof TlsClientHelloError
          ? outcome.error
          : wrapUnexpected(outcome.reason);
      return { ok: false, reason: RejectReason.TLS_ERROR, error };
    }
    case 'limit':
      // Not reached: the inspector's own limit (one byte lower) rejects first.
      return { ok: false, reason: RejectReason.TLS_ERROR, error: undefined };
    case 'done':
      if (required && typeof outcome.results[SNI_INSPECTOR]?.serverName !== 'string')
        return { ok: false, reason: RejectReason.SNI_REQUIRED, error: undefined };
      return undefined;
    default:
      return undefined;
  }
}

function wrapUnexpected(err: unknown): L4Error {
  return new L4Error(
    ErrorCode.PROXY_PROTOCOL,
    `Unexpected failure while reading the client preface: ${String(err)}`,
    { cause: err },
  );
}

/**
 * The client a PROXY header names. LOCAL and UNKNOWN headers (health checks, unknown
 * transports) name nobody: the real peer stays the client, as the spec says.
 */
function identityFromHeader(peer: ClientIdentity, header: ProxyHeader): ClientIdentity {
  if (header.command !== 'PROXY') return { ...peer, proxyHeader: header };
  switch (header.protocol) {
    case 'UNKNOWN':
      return { ...peer, proxyHeader: header };
    case 'UNIX_STREAM':
    case 'UNIX_DGRAM':
      return { ...peer, proxyHeader: header, family: 'unix', address: header.source.path, port: 0 };
    default: {
      const v6 = header.protocol === 'TCP6' || header.protocol === 'UDP6';
      // Both versions decode IPv6 to canonical text (`2001:DB8:0:0::7` from a v1 line is
      // `2001:db8::7`): the client is named as Node names a socket's peer.
      return {
        ...peer,
        proxyHeader: header,
        address: header.source.address,
        port: header.source.port,
        family: v6 ? 'IPv6' : 'IPv4',
        localAddress: header.destination.address,
        localPort: header.destination.port,
      };
    }
  }
}
