import type net from 'node:net';
import type { Socket } from 'node:net';
import { ErrorCode, L4Error, ProxyProtocolError, TlsClientHelloError } from '../errors.js';
import { addressIn } from '../net/addressList.js';
import { ClientHelloParser } from '../protocol/ClientHelloParser.js';
import type { ProxyHeader } from '../protocol/ProxyHeader.js';
import { ProxyHeaderParser } from '../protocol/ProxyHeaderParser.js';
import { RejectReason } from './closeReasons.js';

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
    { readonly timeout: number; readonly maxBytes: number; readonly required: boolean } | undefined;
}

/** How a preface ended: an identity and the bytes read (to forward first), or a refusal. */
export type PrefaceOutcome =
  | { readonly ok: true; readonly identity: ClientIdentity; readonly buffered: Buffer[] }
  | { readonly ok: false; readonly reason: RejectReason; readonly error: Error | undefined };

/** The identity of a socket taken at face value (no PROXY header). */
export function socketIdentity(socket: Socket): ClientIdentity {
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
  };
}

type Stage = 'proxy' | 'sni' | 'done';

/**
 * Reads what the proxy must know before it can choose an upstream: a PROXY protocol header (only
 * from trusted peers) and/or the TLS ClientHello (for SNI). Each stage has its own timeout and
 * byte limit, so a slow or hostile client holds at most a few KiB for a bounded time. Every byte
 * read after the PROXY header is kept and forwarded unchanged.
 */
export class ClientPreface {
  private readonly socket: Socket;
  private readonly config: PrefaceConfig;
  private readonly done: (outcome: PrefaceOutcome) => void;
  private identity: ClientIdentity;
  private stage: Stage = 'done';
  private readonly buffered: Buffer[] = [];
  private proxyStage: { parser: ProxyHeaderParser; required: boolean } | undefined;
  private sniStage: { parser: ClientHelloParser; required: boolean } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private finished = false;

  constructor(socket: Socket, config: PrefaceConfig, done: (outcome: PrefaceOutcome) => void) {
    this.socket = socket;
    this.config = config;
    this.done = done;
    this.identity = socketIdentity(socket);
  }

  /** The client as known so far (after an accepted PROXY header, its client). */
  get identitySoFar(): ClientIdentity {
    return this.identity;
  }

  /** Whether this socket needs a preface at all under `config`. */
  static needed(socket: Socket, config: PrefaceConfig): boolean {
    return config.sni !== undefined || ClientPreface.trusted(socket, config);
  }

  private static trusted(socket: Socket, config: PrefaceConfig): boolean {
    const accept = config.acceptProxy;
    return accept !== undefined && addressIn(accept.trusted, socket.remoteAddress ?? '');
  }

  start(): void {
    const socket = this.socket;
    socket.on('data', this.onData);
    socket.on('end', this.onGone);
    socket.on('close', this.onGone);
    socket.on('error', this.onGone);
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

  private enterSniStage(): void {
    const sni = this.config.sni;
    if (sni === undefined) {
      this.succeed();
      return;
    }
    this.stage = 'sni';
    this.sniStage = {
      parser: new ClientHelloParser({ maxBytes: sni.maxBytes }),
      required: sni.required,
    };
    this.arm(sni.timeout, RejectReason.SNI_TIMEOUT);
  }

  private arm(timeout: number, reason: RejectReason): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.finish({ ok: false, reason, error: undefined });
    }, timeout);
    this.timer.unref();
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.stage === 'proxy') this.readProxyHeader(chunk);
    else if (this.stage === 'sni') this.readClientHello(chunk);
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

  /** The optional header was absent: the bytes held so far are the start of the stream. */
  private replayAsPayload(): void {
    const held = Buffer.concat(this.buffered.splice(0));
    this.continueWith(held);
  }

  /** After the PROXY stage: peek SNI in `first` (and what follows), or hand `first` over. */
  private continueWith(first: Buffer): void {
    if (this.config.sni === undefined) {
      if (first.length > 0) this.buffered.push(first);
      this.succeed();
      return;
    }
    this.enterSniStage();
    if (first.length > 0) this.readClientHello(first);
  }

  private readClientHello(chunk: Buffer): void {
    const sni = this.sniStage;
    if (sni === undefined) return;
    this.buffered.push(chunk);
    let result;
    try {
      result = sni.parser.push(chunk);
    } catch (err) {
      const error = err instanceof TlsClientHelloError ? err : wrapUnexpected(err);
      this.finish({ ok: false, reason: RejectReason.TLS_ERROR, error });
      return;
    }
    if (result === undefined) return;
    if (result.kind === 'sni') {
      this.identity = {
        ...this.identity,
        serverName: result.serverName,
        alpn: result.hello.alpn,
      };
    } else {
      if (sni.required) {
        this.finish({ ok: false, reason: RejectReason.SNI_REQUIRED, error: undefined });
        return;
      }
      if (result.kind === 'no_sni') this.identity = { ...this.identity, alpn: result.hello.alpn };
    }
    this.succeed();
  }

  private succeed(): void {
    this.finish({ ok: true, identity: this.identity, buffered: this.buffered });
  }

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
    socket.off('end', this.onGone);
    socket.off('close', this.onGone);
    socket.off('error', this.onGone);
    // Reading stops until the connection takes over (removing 'data' does not pause a stream).
    socket.pause();
    this.done(outcome);
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
    default:
      return {
        ...peer,
        proxyHeader: header,
        address: header.source.address,
        port: header.source.port,
        family: header.protocol === 'TCP6' || header.protocol === 'UDP6' ? 'IPv6' : 'IPv4',
        localAddress: header.destination.address,
        localPort: header.destination.port,
      };
  }
}
