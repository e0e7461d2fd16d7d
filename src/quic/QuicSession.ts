import { QuicInitialError } from '../errors.js';
import { QuicInitialParser } from '../protocol/QuicInitialParser.js';
import type { QuicInitialResult } from '../protocol/QuicInitialParser.js';
import { isLongHeader, readLongHeader } from '../protocol/quicHeader.js';
import type { LongHeader } from '../protocol/quicHeader.js';
import { quicVersionProfile } from '../protocol/quicKeys.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { QuicConnection, QuicRouter } from './QuicRouter.js';

const NOT_QUIC: QuicInitialResult = { kind: 'not_quic' };

/**
 * Retry IDs a connection keeps: the first Retry's, which the client takes, and one more should
 * that one be lost on its way. With the client's first DCID and the server's handshake ID, four.
 */
const MAX_RETRY_IDS = 2;

/** Connection IDs whose Initials are read again after a Retry (see `recheck`). */
const MAX_RECHECKS = 4;

/** What a {@link QuicSession} needs from the UDP session it belongs to (internal seam). */
export interface QuicSessionOwner {
  readonly closed: boolean;
  readonly upstream: UpstreamState | undefined;
  /** The ClientHello wait is over (read, not QUIC, or fallback `route`): choose the upstream. */
  inspected(): void;
  /** Fallback `drop`: end the session. */
  dropForQuic(error: Error): void;
}

/**
 * The QUIC state of one UDP session: the ClientHello read from its first datagrams (bounded by
 * count and time), the upstream it is pinned to when it continues a known connection, and the
 * connection IDs it learnt from the server.
 */
export class QuicSession {
  serverName: string | undefined;
  alpn: readonly string[] | undefined;
  quicVersion: number | undefined;
  /** Set when the session continues a known connection (CID or QUIC-LB routing): no selection. */
  readonly pinned: UpstreamState | undefined;

  private readonly router: QuicRouter;
  private readonly owner: QuicSessionOwner;
  private parser: QuicInitialParser | undefined;
  private datagrams = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Set between `maxInitialWait` running out and the check after the poll. */
  private waitEnd: NodeJS.Immediate | undefined;
  private connection: QuicConnection | undefined;
  /** The client's first DCID, registered with the server's first ID. */
  private clientCid: Buffer | undefined;
  /** Retry packets whose ID was registered (see `MAX_RETRY_IDS`). */
  private retryIds = 0;
  /**
   * The CIDs of the client's first long header (a version this session may not share with the
   * server) until the server's first datagram: a Version Negotiation echoing them ends the session.
   */
  private versionProbe: { readonly dcid: Buffer; readonly scid: Buffer } | undefined;
  /**
   * Set by a Retry from the server, when the session was routed by the ClientHello it read: the
   * client's Initials from then on, read again by DCID (`null` once read), see `recheck`.
   */
  private rechecks: Map<string, QuicInitialParser | null> | undefined;
  /** Connection IDs whose Initials were read again (see `MAX_RECHECKS`). */
  private rechecked = 0;

  constructor(
    router: QuicRouter,
    owner: QuicSessionOwner,
    pinned: UpstreamState | undefined,
    connection: QuicConnection | undefined,
    first: Buffer,
  ) {
    this.router = router;
    this.owner = owner;
    this.pinned = pinned;
    this.connection = connection;
    const header = isLongHeader(first[0] ?? 0) ? readLongHeader(first, 0, first.length) : undefined;
    if (header !== undefined && header.version !== 0)
      this.versionProbe = { dcid: Buffer.from(header.dcid), scid: Buffer.from(header.scid) };
    if (pinned === undefined && router.options.sni)
      this.parser = new QuicInitialParser({ maxBytes: router.options.maxClientHelloBytes });
  }

  /**
   * A datagram from the client before the upstream is chosen. True when the selection may start
   * now; false while the ClientHello is incomplete (or the session was dropped).
   */
  admit(msg: Buffer): boolean {
    if (this.connection === undefined && this.router.tracksIds) this.rememberClientCid(msg);
    const parser = this.parser;
    if (parser === undefined) return true;
    // An empty first datagram (a keepalive, a probe) holds no packet: not QUIC, route it now
    // rather than wait `maxInitialWait` for an Initial (and drop it with fallback 'drop').
    if (msg.length === 0 && this.datagrams === 0) {
      this.decided(NOT_QUIC);
      return true;
    }
    this.datagrams++;
    let result: QuicInitialResult | undefined;
    try {
      result = parser.push(msg);
    } catch (error) {
      // A ClientHello over `maxClientHelloBytes` is one that cannot complete within the limits,
      // as one over the datagram or time bound: `quic_incomplete`, not a malformed Initial.
      if (error instanceof QuicInitialError && error.reason === 'too_long')
        this.router.counters.incomplete++;
      else this.router.counters.parseErrors++;
      return this.fallback(error as Error);
    }
    if (result !== undefined) {
      this.decided(result);
      return true;
    }
    if (this.datagrams >= this.router.options.maxInitialDatagrams) {
      this.router.counters.incomplete++;
      return this.fallback(
        new QuicInitialError(
          'too_long',
          `no complete ClientHello in ${this.datagrams} datagrams (quic.maxInitialDatagrams)`,
        ),
      );
    }
    if (this.timer === undefined) {
      this.timer = setTimeout(this.onWaitExpired, this.router.options.maxInitialWait);
      this.timer.unref();
    }
    return false;
  }

  private decided(result: QuicInitialResult): void {
    this.stopInspecting();
    const counters = this.router.counters;
    if (result.kind === 'not_quic') {
      counters.notQuic++;
      return;
    }
    counters.initialsParsed++;
    const { initial } = result;
    this.quicVersion = initial.version;
    this.alpn = initial.hello.alpn;
    if (result.kind === 'sni') {
      counters.sniFound++;
      this.serverName = result.serverName;
    } else counters.noSni++;
  }

  /** Applies `fallback`; true when the session goes on to selection. */
  private fallback(error: Error): boolean {
    this.stopInspecting();
    if (this.router.options.fallback === 'route') {
      this.router.counters.fallbackRouted++;
      return true;
    }
    this.router.counters.fallbackDropped++;
    this.owner.dropForQuic(error);
    return false;
  }

  /**
   * Timers run before the poll that reads sockets: the rest of a ClientHello that reached the
   * bound socket before the wait ran out (the event loop was busy) is read in that poll, after
   * which `onWaitEnded` finds the parser done. One immediate per expiry, none per datagram.
   */
  private readonly onWaitExpired = (): void => {
    this.timer = undefined;
    this.waitEnd = setImmediate(this.onWaitEnded);
  };

  private readonly onWaitEnded = (): void => {
    this.waitEnd = undefined;
    if (this.parser === undefined || this.owner.closed) return;
    this.router.counters.incomplete++;
    const error = new QuicInitialError(
      'too_long',
      `no complete ClientHello within ${this.router.options.maxInitialWait} ms (quic.maxInitialWait)`,
    );
    if (this.fallback(error)) this.owner.inspected();
  };

  private stopInspecting(): void {
    this.parser = undefined;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.waitEnd !== undefined) clearImmediate(this.waitEnd);
    this.waitEnd = undefined;
  }

  private rememberClientCid(msg: Buffer): void {
    if (this.clientCid !== undefined) return;
    const first = msg[0];
    if (first === undefined || !isLongHeader(first)) return;
    const header = readLongHeader(msg, 0, msg.length);
    if (header !== undefined && header.dcid.length > 0) this.clientCid = Buffer.from(header.dcid);
  }

  /**
   * A datagram from the upstream. With connection-ID routing, a long header names the server's
   * connection ID (its SCID) and, with it, the length of the IDs in the client's short headers.
   * Returns true when it is a Version Negotiation answering the client's first packet: that
   * connection attempt is over (the server kept no state), and the session must end once the
   * datagram is relayed, so that the client's next Initial, from the same port as likely as not,
   * opens a new session routed by its own ClientHello rather than stay on this one's upstream.
   */
  fromServer(msg: Buffer): boolean {
    if (this.versionProbe !== undefined && this.versionNegotiation(msg)) return true;
    const first = msg[0];
    if (first === undefined || !isLongHeader(first)) return false;
    const header = readLongHeader(msg, 0, msg.length);
    if (header !== undefined && this.quicVersion !== undefined) this.retried(header);
    if (!this.router.tracksIds) return false;
    const state = this.owner.upstream;
    if (header === undefined || state === undefined || header.version === 0) return false;
    let connection = this.connection;
    if (connection === undefined) {
      connection = this.connection = this.router.connection(state);
      if (this.clientCid !== undefined) this.router.register(connection, this.clientCid);
    }
    // A server answers each Initial it wants validated with a Retry of a new ID, and the client
    // takes the first it receives (RFC 9000 17.2.5.2): a client that sent its Initials again
    // before one came back would fill the connection's IDs with Retries' and leave no room for
    // the ID of the server's handshake, the one its later packets carry.
    if (quicVersionProfile(header.version)?.retryType === header.typeBits) {
      if (this.retryIds >= MAX_RETRY_IDS) return false;
      this.retryIds++;
    }
    this.router.register(connection, header.scid);
    return false;
  }

  /**
   * A Retry keeps no state on the server: the client's next Initial (to the Retry's ID, or to
   * its first DCID again, which a server that retries only under load may then take) opens a
   * connection whose ClientHello the server reads afresh. The client must send the same one
   * (RFC 9000 17.2.5.2), but nothing on the server checks that: unread here, another name than
   * the one the session was routed by could reach the chosen server. Read again from here on.
   */
  private retried(header: LongHeader): void {
    if (quicVersionProfile(header.version)?.retryType === header.typeBits) {
      this.rechecks ??= new Map();
      return;
    }
    // The server's own ID, in its Initial and Handshake packets: the client's Initials to it
    // (acknowledging the server's) belong to the connection the server opened, sealed with the
    // keys of the ID it read the ClientHello under. They carry no ClientHello, and the keys of
    // their own DCID do not open them: read, they failed as undecryptable and ended the session.
    this.rechecks?.set(header.scid.toString('latin1'), null);
  }

  /** Whether the client's datagrams are read again before they are forwarded (see `retried`). */
  get rechecking(): boolean {
    return this.rechecks !== undefined;
  }

  /**
   * A client datagram after a Retry, before it is forwarded. False when it completes a
   * ClientHello other than the one the session was routed by, or one that cannot be read: the
   * session has ended (`fallback: 'drop'`'s reason, counted in `quic_parse_errors`), the
   * datagram must not be sent.
   */
  recheck(msg: Buffer): boolean {
    const rechecks = this.rechecks;
    const first = msg[0];
    if (rechecks === undefined || first === undefined || !isLongHeader(first)) return true;
    const header = readLongHeader(msg, 0, msg.length);
    const profile = header && quicVersionProfile(header.version);
    if (header === undefined || profile?.initialType !== header.typeBits) return true;
    const key = header.dcid.toString('latin1');
    let parser = rechecks.get(key);
    if (parser === null) return true;
    if (parser === undefined) {
      if (this.rechecked >= MAX_RECHECKS) return this.refused('too many connection IDs');
      this.rechecked++;
      parser = new QuicInitialParser({ maxBytes: this.router.options.maxClientHelloBytes });
      rechecks.set(key, parser);
    }
    let result: QuicInitialResult | undefined;
    try {
      result = parser.push(msg);
    } catch (error) {
      return this.refused((error as Error).message);
    }
    if (result === undefined) return true;
    rechecks.set(key, null);
    const name = result.kind === 'sni' ? result.serverName : undefined;
    const alpn = result.kind === 'not_quic' ? undefined : result.initial.hello.alpn;
    if (name === this.serverName && sameList(alpn, this.alpn)) return true;
    return this.refused(`another ClientHello (server name ${String(name)})`);
  }

  private refused(what: string): false {
    this.router.counters.parseErrors++;
    this.owner.dropForQuic(
      new QuicInitialError(
        'bad_client_hello',
        `After a Retry, the client's Initial carried ${what}: not the ClientHello the session was routed by`,
      ),
    );
    return false;
  }

  /**
   * Whether `dcid` names this session's connection: the client's first DCID, or an ID the
   * server gave in a long header (`tracksIds` only).
   */
  knows(dcid: Buffer): boolean {
    if (this.clientCid?.equals(dcid) === true) return true;
    const cids = this.connection?.cids;
    return cids !== undefined && cids.includes(dcid.toString('latin1'));
  }

  /** Whether this session is a path of `connection`. */
  carries(connection: QuicConnection): boolean {
    return this.connection === connection;
  }

  /**
   * Whether the server's first datagram is a Version Negotiation for the client's first packet
   * (RFC 8999 section 6: version 0, the client's CIDs swapped). Only the first datagram counts.
   */
  private versionNegotiation(msg: Buffer): boolean {
    const probe = this.versionProbe;
    this.versionProbe = undefined;
    if (probe === undefined || !isLongHeader(msg[0] ?? 0)) return false;
    const header = readLongHeader(msg, 0, msg.length);
    if (header === undefined || header.version !== 0) return false;
    if (!header.dcid.equals(probe.scid) || !header.scid.equals(probe.dcid)) return false;
    this.router.counters.versionNegotiations++;
    return true;
  }

  /** The session ended: stop waiting, release the connection's IDs if it was the last path. */
  close(): void {
    this.stopInspecting();
    const connection = this.connection;
    this.connection = undefined;
    if (connection !== undefined) this.router.release(connection);
  }
}

function sameList(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((item, i) => item === b[i]);
}
