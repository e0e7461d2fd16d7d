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

/**
 * The element {@link readElement} read last: one object for every call (a session has a dozen
 * elements, and a TLS 1.3 handshake gives two sessions), not one per element.
 */
const element = {
  /** Offset just past its contents. */
  end: 0,
  tag: 0,
  /** Offset of its contents. */
  contents: 0,
};

/** Reads the DER element at `start` into {@link element}; false when it does not fit in `der` (or is not DER). */
function readElement(der: Buffer, start: number): boolean {
  const tag = der[start];
  const first = der[start + 1];
  // Multi-byte tags do not occur in a session; an indefinite length (0x80) is not DER.
  if (tag === undefined || first === undefined || (tag & 0x1f) === 0x1f || first === 0x80)
    return false;
  let length = first;
  let contents = start + 2;
  if (first > 0x80) {
    const octets = first & 0x7f;
    // Four length octets cover any buffer Node can hold; a session is a few KB.
    if (octets > 4 || contents + octets > der.length) return false;
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + (der[contents + i] ?? 0);
    contents += octets;
  }
  const end = contents + length;
  if (end > der.length) return false;
  element.end = end;
  element.tag = tag;
  element.contents = contents;
  return true;
}

/** How many bytes the DER length field of `length` takes. */
function lengthSize(length: number): number {
  let size = 1;
  if (length >= 0x80) for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) size++;
  return size;
}

/** Writes the DER length field of `length` (of {@link lengthSize} bytes) into `out` at `at`. */
function writeLength(out: Buffer, at: number, length: number): void {
  const size = lengthSize(length);
  if (size === 1) {
    out[at] = length;
    return;
  }
  out[at] = 0x80 | (size - 1);
  for (let i = size - 1, rest = length; i > 0; i--, rest = Math.floor(rest / 256))
    out[at + i] = rest % 256;
}

/** `INTEGER 1` (the encoding's version) then `INTEGER 0x0304` (TLS 1.3) open the contents. */
const TLS13_SESSION_START = Buffer.from([0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x04]);

/** Whether `bytes` are in `buffer` at `at` (compared in place: no view made). */
function bytesAt(buffer: Buffer, at: number, bytes: Buffer): boolean {
  if (at + bytes.length > buffer.length) return false;
  for (let i = 0; i < bytes.length; i++) if (buffer[at + i] !== bytes[i]) return false;
  return true;
}

/** Where the DER starts: after Node's prefix and server name when there is one, else at 0. */
function derOffset(session: Buffer): number {
  const prefix = NODE_SESSION_PREFIX.length;
  if (!bytesAt(session, 0, NODE_SESSION_PREFIX)) return 0;
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
 * is a TLS 1.3 session; else the same buffer. The result is built in one buffer.
 */
export function sessionWithoutPeer(session: Buffer): Buffer {
  const start = derOffset(session);
  if (!readElement(session, start)) return session;
  const { tag, contents, end } = element;
  if (tag !== SEQUENCE_TAG || end !== session.length) return session;
  if (!bytesAt(session, contents, TLS13_SESSION_START)) return session;
  let peerStart = -1;
  let peerEnd = -1;
  for (let at = contents; at < end; at = element.end) {
    if (!readElement(session, at) || element.end > end) return session;
    if (element.tag === PEER_TAG) {
      peerStart = at;
      peerEnd = element.end;
    }
  }
  if (peerStart < 0) return session;
  const contentLength = end - contents - (peerEnd - peerStart);
  const header = 1 + lengthSize(contentLength);
  const out = Buffer.allocUnsafe(start + header + contentLength);
  session.copy(out, 0, 0, start);
  out[start] = SEQUENCE_TAG;
  writeLength(out, start + 1, contentLength);
  const kept = session.copy(out, start + header, contents, peerStart);
  session.copy(out, start + header + kept, peerEnd, end);
  return out;
}
