/** QUIC counters of a UdpProxy with the `quic` option (internal, updated in place). */
export interface QuicCounters {
  initialsParsed: number;
  sniFound: number;
  noSni: number;
  notQuic: number;
  parseErrors: number;
  incomplete: number;
  fallbackRouted: number;
  fallbackDropped: number;
  cidRouted: number;
  quicLbRouted: number;
  quicLbMissing: number;
  versionNegotiations: number;
  connectionSessions: number;
}

/** The `quic` section of `UdpProxy.stats()`, present when the `quic` option is set. */
export interface UdpQuicStats {
  /** Sessions whose ClientHello was read from their Initial packets. */
  readonly quic_initials_parsed: number;
  /** Of those, ClientHellos with a server name. */
  readonly quic_sni_found: number;
  /** Of those, ClientHellos without a server name. */
  readonly quic_no_sni: number;
  /** Sessions whose first datagram was not a QUIC v1/v2 Initial (routed as without `quic`). */
  readonly quic_not_quic: number;
  /** Sessions whose Initial was malformed or could not be decrypted. */
  readonly quic_parse_errors: number;
  /**
   * Sessions whose ClientHello was not complete within `maxInitialDatagrams` / `maxInitialWait`,
   * or is longer than `maxClientHelloBytes`.
   */
  readonly quic_incomplete: number;
  /** Sessions routed without a server name by `fallback: 'route'` (errors and incomplete). */
  readonly quic_fallback_routed: number;
  /** Sessions closed by `fallback: 'drop'`. */
  readonly quic_fallback_dropped: number;
  /** New client addresses sent to the upstream of a known connection ID (migrations, rebinding). */
  readonly quic_cid_routed: number;
  /** New client addresses routed by a QUIC-LB server ID. */
  readonly quic_lb_routed: number;
  /**
   * New client addresses whose QUIC-LB server ID is mapped (`quicLb.servers`) to an upstream id
   * that is not in the set: a mapping left behind by an upstream change, or a typo.
   */
  readonly quic_lb_missing_upstream: number;
  /**
   * Sessions whose upstream answered the client's first packet with a Version Negotiation: each
   * is closed (`quic_version_negotiation`) so the client's next Initial is routed afresh.
   */
  readonly quic_version_negotiations: number;
  /**
   * Sessions opened for another QUIC connection of a client socket that had a session
   * (`sessionPerConnection`): each chose its upstream by its own ClientHello.
   */
  readonly quic_connection_sessions: number;
  /** Connection IDs tracked now (gauge). */
  readonly quic_cids_active: number;
}

export function createQuicCounters(): QuicCounters {
  return {
    initialsParsed: 0,
    sniFound: 0,
    noSni: 0,
    notQuic: 0,
    parseErrors: 0,
    incomplete: 0,
    fallbackRouted: 0,
    fallbackDropped: 0,
    cidRouted: 0,
    quicLbRouted: 0,
    quicLbMissing: 0,
    versionNegotiations: 0,
    connectionSessions: 0,
  };
}

export function snapshotQuicStats(counters: QuicCounters, cidsActive: number): UdpQuicStats {
  return {
    quic_initials_parsed: counters.initialsParsed,
    quic_sni_found: counters.sniFound,
    quic_no_sni: counters.noSni,
    quic_not_quic: counters.notQuic,
    quic_parse_errors: counters.parseErrors,
    quic_incomplete: counters.incomplete,
    quic_fallback_routed: counters.fallbackRouted,
    quic_fallback_dropped: counters.fallbackDropped,
    quic_cid_routed: counters.cidRouted,
    quic_lb_routed: counters.quicLbRouted,
    quic_lb_missing_upstream: counters.quicLbMissing,
    quic_version_negotiations: counters.versionNegotiations,
    quic_connection_sessions: counters.connectionSessions,
    quic_cids_active: cidsActive,
  };
}
