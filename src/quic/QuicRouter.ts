import type { UpstreamSet } from '../upstream/UpstreamSet.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { isLongHeader, readLongHeader } from '../protocol/quicHeader.js';
import { quicVersionProfile } from '../protocol/quicKeys.js';
import { decodeQuicLbCid, QUIC_LB_UNROUTABLE } from './quicLb.js';
import type { ResolvedQuicOptions } from './quicOptions.js';
import type { QuicCounters, UdpQuicStats } from './QuicStats.js';
import { createQuicCounters, snapshotQuicStats } from './QuicStats.js';
import type { QuicSessionOwner } from './QuicSession.js';
import { QuicSession } from './QuicSession.js';

/** Connection IDs one connection may register (the client's first DCID, the server's SCIDs). */
const MAX_CIDS_PER_CONNECTION = 4;

/**
 * One QUIC connection as the proxy knows it: its upstream, the IDs that name it, and the
 * sessions (client addresses) that use it.
 */
export interface QuicConnection {
  readonly state: UpstreamState;
  readonly cids: string[];
  sessions: number;
}

/**
 * The QUIC side of a UdpProxy (created only with the `quic` option): per-session ClientHello
 * reading, the connection ID table, QUIC-LB routing and their counters.
 */
export class QuicRouter {
  readonly options: ResolvedQuicOptions;
  readonly counters: QuicCounters = createQuicCounters();
  /**
   * Whether connections' IDs are learnt (the client's first DCID, the server's SCIDs): for
   * `connectionIdRouting`, and to tell a client socket's connections apart (`sessionPerConnection`).
   */
  readonly tracksIds: boolean;
  private readonly upstreams: UpstreamSet;
  private readonly byCid = new Map<string, QuicConnection>();
  /** How many tracked IDs have each length: the lengths to try on a short header. */
  private readonly lengths = new Map<number, number>();

  constructor(options: ResolvedQuicOptions, upstreams: UpstreamSet) {
    this.options = options;
    this.upstreams = upstreams;
    this.tracksIds = options.connectionIdRouting || options.sessionPerConnection;
  }

  /** Gives a new session its QUIC state: pinned to a known connection's upstream, or inspecting. */
  attach(session: QuicSessionOwner, first: Buffer): QuicSession {
    const options = this.options;
    if (options.connectionIdRouting) {
      const connection = this.lookup(first);
      if (connection !== undefined) {
        this.counters.cidRouted++;
        connection.sessions++;
        return new QuicSession(this, session, connection.state, connection, first);
      }
    }
    if (options.quicLb !== undefined) {
      const state = this.quicLbUpstream(first);
      if (state !== undefined) {
        this.counters.quicLbRouted++;
        return new QuicSession(this, session, state, undefined, first);
      }
    }
    return new QuicSession(this, session, undefined, undefined, first);
  }

  /** The connection a datagram's Destination Connection ID names, if tracked. */
  lookup(datagram: Buffer): QuicConnection | undefined {
    const first = datagram[0];
    if (first === undefined || this.byCid.size === 0) return undefined;
    if (isLongHeader(first)) {
      const header = readLongHeader(datagram, 0, datagram.length);
      return header && this.byCid.get(header.dcid.toString('latin1'));
    }
    for (const length of this.lengths.keys()) {
      if (1 + length > datagram.length) continue;
      const connection = this.byCid.get(datagram.toString('latin1', 1, 1 + length));
      if (connection !== undefined) return connection;
    }
    return undefined;
  }

  /** The upstream a QUIC-LB server ID in the datagram's DCID names (never for client Initials). */
  private quicLbUpstream(datagram: Buffer): UpstreamState | undefined {
    const lb = this.options.quicLb;
    const first = datagram[0];
    if (lb === undefined || first === undefined) return undefined;
    // A short header's DCID runs from byte 1 (its length is the server's choice); a long header
    // says how long its DCID is: never read past it into the SCID (the client's own choice).
    let dcid = datagram.subarray(1);
    if (isLongHeader(first)) {
      const header = readLongHeader(datagram, 0, datagram.length);
      // An Initial's DCID is the client's random choice (or a Retry's): nothing encoded in it.
      const profile = header && quicVersionProfile(header.version);
      if (header === undefined || profile === undefined || header.typeBits === profile.initialType)
        return undefined;
      dcid = header.dcid;
    }
    const cid = decodeQuicLbCid(dcid, 0, lb.serverIdLength);
    if (cid === undefined || cid.configRotation !== lb.configRotation) return undefined;
    if (cid.configRotation === QUIC_LB_UNROUTABLE) return undefined;
    const id = lb.servers.get(cid.serverId.toString('latin1'));
    if (id === undefined) return undefined;
    const state = this.upstreams.get(id);
    // The mapping names an upstream the set does not have (removed since, or a typo once the
    // set came from a source): the operator's problem, so counted apart from random IDs.
    if (state === undefined) this.counters.quicLbMissing++;
    return state?.healthy === true ? state : undefined;
  }

  /** A new connection on `state` (created when its first server packet names it). */
  connection(state: UpstreamState): QuicConnection {
    return { state, cids: [], sessions: 1 };
  }

  /**
   * Adds an ID to a connection (bounded). A known ID keeps its first owner in the table; the
   * connection still lists it, so that its own client socket's datagrams naming it are told
   * apart from a new connection's (see `connectionDispatch`).
   */
  register(connection: QuicConnection, cid: Buffer): void {
    if (cid.length === 0 || connection.cids.length >= MAX_CIDS_PER_CONNECTION) return;
    const key = cid.toString('latin1');
    if (connection.cids.includes(key)) return;
    connection.cids.push(key);
    if (this.byCid.has(key)) return;
    this.byCid.set(key, connection);
    this.lengths.set(cid.length, (this.lengths.get(cid.length) ?? 0) + 1);
  }

  /** A session of the connection ended; the last one takes its IDs with it. */
  release(connection: QuicConnection): void {
    if (--connection.sessions > 0) return;
    for (const key of connection.cids) {
      if (this.byCid.get(key) !== connection) continue;
      this.byCid.delete(key);
      const left = (this.lengths.get(key.length) ?? 1) - 1;
      if (left === 0) this.lengths.delete(key.length);
      else this.lengths.set(key.length, left);
    }
    connection.cids.length = 0;
  }

  stats(): UdpQuicStats {
    return snapshotQuicStats(this.counters, this.byCid.size);
  }
}
