/*
 * A saved TLS session without the upstream's certificate in it.
 *
 * Node hands out client sessions as OpenSSL's DER encoding (`i2d_SSL_SESSION`), and
 * `setSession()` decodes one per connection. The session carries the server's certificate, and
 * decoding a certificate is costly where Node links OpenSSL 3.0 (Node 20: about 200 µs of CPU per
 * call, more than the rest of a resumed handshake's own work in the proxy; 35 µs on OpenSSL 3.5).
 * A resumed TLS 1.3 session needs only its keys and ticket: Node checks the server's name on
 * full handshakes only, and takes a resumed TLS 1.3 handshake without a certificate as verified
 * (it does for PSK; the session was saved only after its full handshake was verified). A TLS 1.2
 * session keeps its certificate: without one, Node reports a resumed TLS 1.2 handshake as
 * `UNABLE_TO_GET_ISSUER_CERT`. nginx keeps the decoded session in memory instead; Node offers no
 * such handle.
 *
 * The encoding (OpenSSL's `SSL_SESSION_ASN1`, unchanged since 1.0.1): a SEQUENCE starting with
 * `version INTEGER (1)` and `ssl_version INTEGER` (0x0304 for TLS 1.3), with the peer certificate
 * as the element tagged `[3]` (0xA3). Anything else, or anything that does not parse as exactly
 * that, is returned unchanged. Node 22.23 and 24.22 prefix the DER with the server name the session
 * was verified for (`\0nodejs:tls:session:1\0`, a 16-bit length, the name), and a `TLSSocket` there
 * ignores a session without it: the prefix is kept as it is. (The bare-handle path hands the DER
 * to the TLS stream itself, {@link sessionDer}.)
 */

/** Context-specific, constructed tag [3]: `peer [3] EXPLICIT X509 OPTIONAL`. */
const PEER_TAG = 0xa3;
const SEQUENCE_TAG = 0x30;
/** Node's prefix on client sessions, followed by a 16-bit length and the server name. */
const NODE_SESSION_PREFIX = Buffer.from('\0nodejs:tls:session:1\0', 'latin1');

interface Element {
  /** Offset of the element's first byte (its tag). */
  readonly start: number;
  /** Offset just past its contents. */
  readonly end: number;
  readonly tag: number;
  /** Offset of its contents. */
  readonly contents: number;
}

/** The DER element at `start`, or undefined when it does not fit in `der` (or is not DER). */
function elementAt(der: Buffer, start: number): Element | undefined {
  const tag = der[start];
  const first = der[start + 1];
  // Multi-byte tags do not occur in a session; an indefinite length (0x80) is not DER.
  if (tag === undefined || first === undefined || (tag & 0x1f) === 0x1f || first === 0x80)
    return undefined;
  let length = first;
  let contents = start + 2;
  if (first > 0x80) {
    const octets = first & 0x7f;
    // Four length octets cover any buffer Node can hold; a session is a few KB.
    if (octets > 4 || contents + octets > der.length) return undefined;
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + (der[contents + i] ?? 0);
    contents += octets;
  }
  const end = contents + length;
  return end > der.length ? undefined : { start, end, tag, contents };
}

/** A DER length field for `length`. */
function lengthOctets(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const octets: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) octets.unshift(rest % 256);
  return Buffer.from([0x80 | octets.length, ...octets]);
}

/** `INTEGER 1` (the encoding's version) then `INTEGER 0x0304` (TLS 1.3) open the contents. */
const TLS13_SESSION_START = Buffer.from([0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x04]);

function isTls13Session(der: Buffer, contents: number): boolean {
  return der.subarray(contents, contents + TLS13_SESSION_START.length).equals(TLS13_SESSION_START);
}

/** Where the DER starts: after Node's prefix and server name when there is one, else at 0. */
function derOffset(session: Buffer): number {
  const prefix = NODE_SESSION_PREFIX.length;
  if (!session.subarray(0, prefix).equals(NODE_SESSION_PREFIX)) return 0;
  if (session.length < prefix + 2) return session.length;
  return prefix + 2 + session.readUInt16BE(prefix);
}

/**
 * The DER of a saved session, without Node's prefix (what OpenSSL decodes: the bare-handle path
 * hands it to the TLS stream itself, below Node's JavaScript that reads the prefix).
 */
export function sessionDer(session: Buffer): Buffer {
  const start = derOffset(session);
  return start === 0 ? session : session.subarray(start);
}

/**
 * `session` (DER, as Node's `'session'` event gives it) without the server's certificate when it
 * is a TLS 1.3 session; else the same buffer.
 */
export function sessionWithoutPeer(session: Buffer): Buffer {
  const start = derOffset(session);
  const outer = elementAt(session, start);
  if (outer?.tag !== SEQUENCE_TAG || outer.end !== session.length) return session;
  if (!isTls13Session(session, outer.contents)) return session;
  let peer: Element | undefined;
  for (let at = outer.contents; at < outer.end;) {
    const element = elementAt(session, at);
    if (element === undefined || element.end > outer.end) return session;
    if (element.tag === PEER_TAG) peer = element;
    at = element.end;
  }
  if (peer === undefined) return session;
  const contentLength = outer.end - outer.contents - (peer.end - peer.start);
  return Buffer.concat([
    session.subarray(0, start),
    Buffer.from([SEQUENCE_TAG]),
    lengthOctets(contentLength),
    session.subarray(outer.contents, peer.start),
    session.subarray(peer.end, outer.end),
  ]);
}
