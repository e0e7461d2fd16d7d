import type { TcpConnectionSummary } from '../tcp/events.js';
import type { UdpSessionSummary } from '../udp/events.js';
import { TimedPiece } from './lineBuffer.js';
import type { LineBuffer } from './lineBuffer.js';

/** A constant piece of a line as UTF-8 bytes. */
const piece = (text: string): Buffer => Buffer.from(text, 'utf8');

// Each member's key with its leading comma, encoded once.
const K = {
  id: piece(',"id":'),
  clientPort: piece(',"clientPort":'),
  serverName: piece(',"serverName":'),
  tls: piece(',"tls":'),
  preread: piece(',"preread":'),
  connected: piece(',"upstreamConnected":true,"attempts":'),
  notConnected: piece(',"upstreamConnected":false,"attempts":'),
  bytesFromClient: piece(',"bytesFromClient":'),
  bytesToUpstream: piece(',"bytesToUpstream":'),
  bytesFromUpstream: piece(',"bytesFromUpstream":'),
  bytesToClient: piece(',"bytesToClient":'),
  datagramsFromClient: piece(',"datagramsFromClient":'),
  datagramsToUpstream: piece(',"datagramsToUpstream":'),
  datagramsFromUpstream: piece(',"datagramsFromUpstream":'),
  datagramsToClient: piece(',"datagramsToClient":'),
  alpn: piece(',"alpn":'),
  quicVersion: piece(',"quicVersion":'),
  err: piece(',"err":'),
};

/** Distinct values a {@link MemberPieces} holds before it starts over (a bound on its memory). */
const PIECES_HELD = 256;

/**
 * A string member whose values repeat from line to line (a close reason, the listener's own
 * address, an upstream's id), each value encoded once with its key before it and the constant
 * that follows it (`,"reason":"idle_timeout","clientAddress":`): one copy per line where the key,
 * the value's characters one by one and the next key were three writes.
 */
class MemberPieces {
  private readonly pieces = new Map<string, Buffer>();

  constructor(
    /** The member's key with its leading comma, `,"reason":`. */
    private readonly key: string,
    /** What always follows the value (the next member's key), or ''. */
    private readonly next = '',
  ) {}

  /** The bytes of `<key><value as JSON><next>`. */
  get(value: string): Buffer {
    const piece = this.pieces.get(value);
    return piece === undefined ? this.add(value) : piece;
  }

  private add(value: string): Buffer {
    if (this.pieces.size >= PIECES_HELD) this.pieces.clear();
    const piece = Buffer.from(`${this.key}${JSON.stringify(value)}${this.next}`, 'utf8');
    this.pieces.set(value, piece);
    return piece;
  }
}

// The string members cached so, each with the constant after it in its line.
const REASON = new MemberPieces(',"reason":', ',"clientAddress":');
/** The client's family and the local address, by family. */
const LOCAL = {
  IPv4: new MemberPieces(',"clientFamily":"IPv4","localAddress":', ',"localPort":'),
  IPv6: new MemberPieces(',"clientFamily":"IPv6","localAddress":', ',"localPort":'),
  unix: new MemberPieces(',"clientFamily":"unix","localAddress":', ',"localPort":'),
};
const PEER = new MemberPieces(',"peerAddress":', ',"peerPort":');
const TCP_UPSTREAM = new MemberPieces(',"upstream":');
const UDP_UPSTREAM = new MemberPieces(',"upstream":', ',"datagramsFromClient":');
/** The start time with its key and the next one, rewritten when it changes. */
const STARTED = new TimedPiece(',"startTime":', ',"durationMs":');

/**
 * A TCP connection's summary as access-line members (`,"id":1,...`), written field by field
 * into the line buffer: the per-line cost of the default access log. `upstream` is written as
 * its id, `error` as `err: { type, message, code }` after everything else; undefined members are
 * left out. Numbers are the proxy's own counters, ports and times, families fixed words; strings
 * are escaped only when they hold a character that needs it. `TCP_KEYS` below makes the
 * compiler fail when the summary gains a field this function does not write.
 */
export function tcpSummaryMembers(out: LineBuffer, s: TcpConnectionSummary): void {
  writeClient(out, s);
  out.keyNumber(PEER.get(s.peerAddress), s.peerPort);
  if (s.serverName !== undefined) member(out, K.serverName, s.serverName);
  if (s.tls !== undefined) json(out, K.tls, s.tls);
  if (s.preread !== undefined) json(out, K.preread, s.preread);
  if (s.upstream !== undefined) out.bytes(TCP_UPSTREAM.get(s.upstream.id));
  out.keyNumber(s.upstreamConnected ? K.connected : K.notConnected, s.attempts);
  writeBytes(out, s);
  writeTimes(out, s);
  if (s.error !== undefined) json(out, K.err, s.error);
}

/** A UDP session's summary as access-line members; see {@link tcpSummaryMembers}. */
export function udpSummaryMembers(out: LineBuffer, s: UdpSessionSummary): void {
  writeClient(out, s);
  out.keyNumber(
    s.upstream === undefined ? K.datagramsFromClient : UDP_UPSTREAM.get(s.upstream.id),
    s.datagramsFromClient,
  );
  out.keyNumber(K.bytesFromClient, s.bytesFromClient);
  out.keyNumber(K.datagramsToUpstream, s.datagramsToUpstream);
  out.keyNumber(K.bytesToUpstream, s.bytesToUpstream);
  out.keyNumber(K.datagramsFromUpstream, s.datagramsFromUpstream);
  out.keyNumber(K.bytesFromUpstream, s.bytesFromUpstream);
  out.keyNumber(K.datagramsToClient, s.datagramsToClient);
  out.keyNumber(K.bytesToClient, s.bytesToClient);
  writeTimes(out, s);
  if (s.serverName !== undefined) member(out, K.serverName, s.serverName);
  if (s.alpn !== undefined) json(out, K.alpn, s.alpn);
  if (s.quicVersion !== undefined) {
    out.keyNumber(K.quicVersion, s.quicVersion);
  }
  if (s.error !== undefined) json(out, K.err, s.error);
}

/** The members both summaries start with: id, reason, and the client's side. */
function writeClient(out: LineBuffer, s: TcpConnectionSummary | UdpSessionSummary): void {
  out.keyNumber(K.id, s.id);
  out.bytes(REASON.get(s.reason));
  out.string(s.clientAddress);
  out.keyNumber(K.clientPort, s.clientPort);
  out.keyNumber(localPieces(s.clientFamily).get(s.localAddress), s.localPort);
}

/** A client on a Unix socket listener has no IP family (it was written `IPv6`). */
function localPieces(family: 'IPv4' | 'IPv6' | 'unix'): MemberPieces {
  return family === 'IPv4' ? LOCAL.IPv4 : family === 'IPv6' ? LOCAL.IPv6 : LOCAL.unix;
}

function writeBytes(out: LineBuffer, s: TcpConnectionSummary): void {
  out.keyNumber(K.bytesFromClient, s.bytesFromClient);
  out.keyNumber(K.bytesToUpstream, s.bytesToUpstream);
  out.keyNumber(K.bytesFromUpstream, s.bytesFromUpstream);
  out.keyNumber(K.bytesToClient, s.bytesToClient);
}

function writeTimes(out: LineBuffer, s: TcpConnectionSummary | UdpSessionSummary): void {
  out.keyNumber(STARTED.at(s.startTime), s.durationMs);
}

function member(out: LineBuffer, key: Buffer, value: string): void {
  out.bytes(key);
  out.string(value);
}

/** A member whose value is any JSON value (rare fields: TLS, preread, ALPN, the error). */
function json(out: LineBuffer, key: Buffer, value: unknown): void {
  out.bytes(key);
  out.text(valueJson(value));
}

/** Every key of a type, listed: compiles only when the list and the type's keys are the same. */
type KeysListed<T, List extends readonly (keyof T)[]> =
  Exclude<keyof T, List[number]> extends never ? List : never;

// Adding a field to a summary breaks the build here until the serializer above writes it.
/** The fields a TCP and a UDP summary both begin with. */
const SHARED_KEYS = [
  'id',
  'reason',
  'error',
  'clientAddress',
  'clientPort',
  'clientFamily',
  'localAddress',
  'localPort',
] as const;
const TCP_KEYS = [
  ...SHARED_KEYS,
  'peerAddress',
  'peerPort',
  'serverName',
  'tls',
  'preread',
  'upstream',
  'upstreamConnected',
  'attempts',
  'bytesFromClient',
  'bytesToUpstream',
  'bytesFromUpstream',
  'bytesToClient',
  'startTime',
  'durationMs',
] as const;
const UDP_KEYS = [
  ...SHARED_KEYS,
  'upstream',
  'datagramsFromClient',
  'bytesFromClient',
  'datagramsToUpstream',
  'bytesToUpstream',
  'datagramsFromUpstream',
  'bytesFromUpstream',
  'datagramsToClient',
  'bytesToClient',
  'startTime',
  'durationMs',
  'serverName',
  'alpn',
  'quicVersion',
] as const;
/** The field lists the serializers cover, for the test that compares them with real summaries. */
export const SUMMARY_KEYS: {
  readonly tcp: KeysListed<TcpConnectionSummary, typeof TCP_KEYS>;
  readonly udp: KeysListed<UdpSessionSummary, typeof UDP_KEYS>;
} = { tcp: TCP_KEYS, udp: UDP_KEYS };

/** Any JSON value; an error as `{ type, message, code }`, what has no JSON form as null. */
function valueJson(value: unknown): string {
  switch (typeof value) {
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    default: {
      if (value instanceof Error) return errorJson(value);
      // Functions and symbols have no JSON form (stringify returns undefined for them).
      const text = JSON.stringify(value) as string | undefined;
      return text === undefined ? 'null' : text;
    }
  }
}

/** pino's `err` serialization, reduced (as the logger's). */
function errorJson(error: Error): string {
  const code = (error as { code?: unknown }).code;
  const tail = code === undefined ? '' : `,"code":${JSON.stringify(code)}`;
  return `{"type":${JSON.stringify(error.name)},"message":${JSON.stringify(error.message)}${tail}}`;
}
