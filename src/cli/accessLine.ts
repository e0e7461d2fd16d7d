import type { TcpConnectionSummary } from '../tcp/events.js';
import type { UdpSessionSummary } from '../udp/events.js';
import { TimedPiece } from './lineBuffer.js';
import type { LineBuffer } from './lineBuffer.js';
import { LineTemplate } from './lineTemplate.js';

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
  /** Bytes before the value's opening quote, and after its closing one. */
  private readonly before: number;
  private readonly after: number;

  constructor(
    /** The member's key with its leading comma, `,"reason":`. */
    private readonly key: string,
    /** What always follows the value (the next member's key), or ''. */
    private readonly next = '',
  ) {
    this.before = Buffer.byteLength(key) + 1;
    this.after = Buffer.byteLength(next) + 1;
  }

  /** Records value `index`, inside its quotes, in `piece` written at `at` of the line. */
  region(t: LineTemplate, index: number, at: number, piece: Buffer, value: string): void {
    t.record(index, at + this.before, at + piece.length - this.after, value);
  }

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
/** Where the client's family starts in a {@link LOCAL} piece. */
const FAMILY_AT = Buffer.byteLength(',"clientFamily":"');
/** What a serializer records its values in when no line writer gave it a template. */
const UNUSED = new LineTemplate(24);

/**
 * The values of a line as {@link LineTemplate} numbers them: the time (0, the line's opening),
 * then the members both summaries begin with, then each protocol's.
 */
const F = {
  id: 1,
  reason: 2,
  clientAddress: 3,
  clientPort: 4,
  clientFamily: 5,
  localAddress: 6,
  localPort: 7,
  // TCP
  peerAddress: 8,
  peerPort: 9,
  tcpUpstream: 10,
  upstreamConnected: 11,
  attempts: 12,
  bytesFromClient: 13,
  bytesToUpstream: 14,
  bytesFromUpstream: 15,
  bytesToClient: 16,
  // UDP: the upstream, then the eight counters from 9.
  udpUpstream: 8,
  counters: 9,
  startTime: 17,
  durationMs: 18,
} as const;

/**
 * A TCP connection's summary as access-line members (`,"id":1,...`), written field by field
 * into the line buffer: the per-line cost of the default access log. `upstream` is written as
 * its id, `error` as `err: { type, message, code }` after everything else; undefined members are
 * left out. Numbers are the proxy's own counters, ports and times, families fixed words; strings
 * are escaped only when they hold a character that needs it. `TCP_KEYS` below makes the
 * compiler fail when the summary gains a field this function does not write.
 */
export function tcpSummaryMembers(
  out: LineBuffer,
  s: TcpConnectionSummary,
  t: LineTemplate = UNUSED,
): void {
  writeClient(out, s, t);
  const peer = PEER.get(s.peerAddress);
  PEER.region(t, F.peerAddress, out.position, peer, s.peerAddress);
  numberAt(out, t, F.peerPort, peer, s.peerPort);
  if (s.serverName !== undefined) member(out, K.serverName, s.serverName);
  if (s.tls !== undefined) json(out, K.tls, s.tls);
  if (s.preread !== undefined) json(out, K.preread, s.preread);
  if (s.upstream !== undefined) {
    const upstream = TCP_UPSTREAM.get(s.upstream.id);
    TCP_UPSTREAM.region(t, F.tcpUpstream, out.position, upstream, s.upstream.id);
    out.bytes(upstream);
  }
  t.record(F.upstreamConnected, 0, 0, s.upstreamConnected);
  numberAt(out, t, F.attempts, s.upstreamConnected ? K.connected : K.notConnected, s.attempts);
  writeBytes(out, s, t);
  writeTimes(out, s, t);
  if (s.error !== undefined) json(out, K.err, s.error);
  t.valid = s.upstream !== undefined && !tcpHasRareMembers(s);
}

/** Whether a TCP line has members a template does not hold (it is then written piece by piece). */
function tcpHasRareMembers(s: TcpConnectionSummary): boolean {
  return (
    s.serverName !== undefined ||
    s.tls !== undefined ||
    s.preread !== undefined ||
    s.error !== undefined
  );
}

/**
 * Rewrites the last TCP line's template for `s`; false when a value changed its length or the
 * line has members the template does not (see {@link LineTemplate}). Each value is compared with
 * the template's before anything is called: only what changed (the id, the port, the times) is
 * rewritten.
 */
export function tcpSummaryPatch(t: LineTemplate, s: TcpConnectionSummary): boolean {
  const upstream = s.upstream;
  if (upstream === undefined || tcpHasRareMembers(s)) return false;
  const n = t.numbers;
  const v = t.values;
  return (
    patchClient(t, s) &&
    (s.peerAddress === v[F.peerAddress] || t.string(F.peerAddress, s.peerAddress)) &&
    (s.peerPort === n[F.peerPort] || t.number(F.peerPort, s.peerPort)) &&
    (upstream.id === v[F.tcpUpstream] || t.string(F.tcpUpstream, upstream.id)) &&
    s.upstreamConnected === v[F.upstreamConnected] &&
    (s.attempts === n[F.attempts] || t.number(F.attempts, s.attempts)) &&
    (s.bytesFromClient === n[F.bytesFromClient] ||
      t.number(F.bytesFromClient, s.bytesFromClient)) &&
    (s.bytesToUpstream === n[F.bytesToUpstream] ||
      t.number(F.bytesToUpstream, s.bytesToUpstream)) &&
    (s.bytesFromUpstream === n[F.bytesFromUpstream] ||
      t.number(F.bytesFromUpstream, s.bytesFromUpstream)) &&
    (s.bytesToClient === n[F.bytesToClient] || t.number(F.bytesToClient, s.bytesToClient)) &&
    patchTimes(t, s)
  );
}

/** A UDP session's summary as access-line members; see {@link tcpSummaryMembers}. */
export function udpSummaryMembers(
  out: LineBuffer,
  s: UdpSessionSummary,
  t: LineTemplate = UNUSED,
): void {
  writeClient(out, s, t);
  let first = K.datagramsFromClient;
  if (s.upstream !== undefined) {
    first = UDP_UPSTREAM.get(s.upstream.id);
    UDP_UPSTREAM.region(t, F.udpUpstream, out.position, first, s.upstream.id);
  }
  const c = F.counters;
  numberAt(out, t, c, first, s.datagramsFromClient);
  numberAt(out, t, c + 1, K.bytesFromClient, s.bytesFromClient);
  numberAt(out, t, c + 2, K.datagramsToUpstream, s.datagramsToUpstream);
  numberAt(out, t, c + 3, K.bytesToUpstream, s.bytesToUpstream);
  numberAt(out, t, c + 4, K.datagramsFromUpstream, s.datagramsFromUpstream);
  numberAt(out, t, c + 5, K.bytesFromUpstream, s.bytesFromUpstream);
  numberAt(out, t, c + 6, K.datagramsToClient, s.datagramsToClient);
  numberAt(out, t, c + 7, K.bytesToClient, s.bytesToClient);
  writeTimes(out, s, t);
  if (s.serverName !== undefined) member(out, K.serverName, s.serverName);
  if (s.alpn !== undefined) json(out, K.alpn, s.alpn);
  if (s.quicVersion !== undefined) {
    out.keyNumber(K.quicVersion, s.quicVersion);
  }
  if (s.error !== undefined) json(out, K.err, s.error);
  t.valid = s.upstream !== undefined && !udpHasRareMembers(s);
}

/** Whether a UDP line has members a template does not hold (QUIC's, an error). */
function udpHasRareMembers(s: UdpSessionSummary): boolean {
  return (
    s.serverName !== undefined ||
    s.alpn !== undefined ||
    s.quicVersion !== undefined ||
    s.error !== undefined
  );
}

/**
 * A summary's template slot (see `LineSlot`): its duration's digit count, 1, 2, 3 or more. The
 * duration is the value whose length changes most from line to line (sessions of 8 ms and of
 * 12 ms alternate), and a line whose length changes is written piece by piece.
 */
export function durationSlot(s: TcpConnectionSummary | UdpSessionSummary): number {
  const ms = s.durationMs;
  return ms < 10 ? 0 : ms < 100 ? 1 : ms < 1_000 ? 2 : 3;
}

/**
 * A summary's line's `time`: its close time, `startTime + durationMs` (the proxy read the clock
 * once as it closed, for `durationMs`; the line reads it no more). The clock's when those are not
 * epoch milliseconds.
 */
export function closeTime(s: TcpConnectionSummary | UdpSessionSummary): number {
  const time = s.startTime + s.durationMs;
  return time >= 0 && Number.isSafeInteger(time) ? time : Date.now();
}

/** Rewrites the last UDP line's template for `s`; see {@link tcpSummaryPatch}. */
export function udpSummaryPatch(t: LineTemplate, s: UdpSessionSummary): boolean {
  const upstream = s.upstream;
  if (upstream === undefined || udpHasRareMembers(s)) return false;
  const n = t.numbers;
  const c = F.counters;
  return (
    patchClient(t, s) &&
    (upstream.id === t.values[F.udpUpstream] || t.string(F.udpUpstream, upstream.id)) &&
    (s.datagramsFromClient === n[c] || t.number(c, s.datagramsFromClient)) &&
    (s.bytesFromClient === n[c + 1] || t.number(c + 1, s.bytesFromClient)) &&
    (s.datagramsToUpstream === n[c + 2] || t.number(c + 2, s.datagramsToUpstream)) &&
    (s.bytesToUpstream === n[c + 3] || t.number(c + 3, s.bytesToUpstream)) &&
    (s.datagramsFromUpstream === n[c + 4] || t.number(c + 4, s.datagramsFromUpstream)) &&
    (s.bytesFromUpstream === n[c + 5] || t.number(c + 5, s.bytesFromUpstream)) &&
    (s.datagramsToClient === n[c + 6] || t.number(c + 6, s.datagramsToClient)) &&
    (s.bytesToClient === n[c + 7] || t.number(c + 7, s.bytesToClient)) &&
    patchTimes(t, s)
  );
}

/** The members both summaries start with: id, reason, and the client's side. */
function writeClient(
  out: LineBuffer,
  s: TcpConnectionSummary | UdpSessionSummary,
  t: LineTemplate,
): void {
  numberAt(out, t, F.id, K.id, s.id);
  const reason = REASON.get(s.reason);
  REASON.region(t, F.reason, out.position, reason, s.reason);
  out.bytes(reason);
  const at = out.position;
  out.string(s.clientAddress);
  t.record(F.clientAddress, at + 1, out.position - 1, s.clientAddress);
  numberAt(out, t, F.clientPort, K.clientPort, s.clientPort);
  const local = localPieces(s.clientFamily);
  const piece = local.get(s.localAddress);
  const start = out.position + FAMILY_AT;
  t.record(F.clientFamily, start, start + s.clientFamily.length, s.clientFamily);
  local.region(t, F.localAddress, out.position, piece, s.localAddress);
  numberAt(out, t, F.localPort, piece, s.localPort);
}

function patchClient(t: LineTemplate, s: TcpConnectionSummary | UdpSessionSummary): boolean {
  const n = t.numbers;
  const v = t.values;
  return (
    (s.id === n[F.id] || t.number(F.id, s.id)) &&
    (s.reason === v[F.reason] || t.string(F.reason, s.reason)) &&
    (s.clientAddress === v[F.clientAddress] || t.string(F.clientAddress, s.clientAddress)) &&
    (s.clientPort === n[F.clientPort] || t.number(F.clientPort, s.clientPort)) &&
    (s.clientFamily === v[F.clientFamily] || t.string(F.clientFamily, s.clientFamily)) &&
    (s.localAddress === v[F.localAddress] || t.string(F.localAddress, s.localAddress)) &&
    (s.localPort === n[F.localPort] || t.number(F.localPort, s.localPort))
  );
}

function patchTimes(t: LineTemplate, s: TcpConnectionSummary | UdpSessionSummary): boolean {
  const n = t.numbers;
  return (
    (s.startTime === n[F.startTime] || t.number(F.startTime, s.startTime)) &&
    (s.durationMs === n[F.durationMs] || t.number(F.durationMs, s.durationMs))
  );
}

/** A number member (`key` written before it), its digits recorded as value `index`. */
function numberAt(
  out: LineBuffer,
  t: LineTemplate,
  index: number,
  key: Uint8Array,
  value: number,
): void {
  const start = out.position + key.length;
  out.keyNumber(key, value);
  t.recordNumber(index, start, out.position, value);
}

/** A client on a Unix socket listener has no IP family (it was written `IPv6`). */
function localPieces(family: 'IPv4' | 'IPv6' | 'unix'): MemberPieces {
  return family === 'IPv4' ? LOCAL.IPv4 : family === 'IPv6' ? LOCAL.IPv6 : LOCAL.unix;
}

function writeBytes(out: LineBuffer, s: TcpConnectionSummary, t: LineTemplate): void {
  numberAt(out, t, F.bytesFromClient, K.bytesFromClient, s.bytesFromClient);
  numberAt(out, t, F.bytesToUpstream, K.bytesToUpstream, s.bytesToUpstream);
  numberAt(out, t, F.bytesFromUpstream, K.bytesFromUpstream, s.bytesFromUpstream);
  numberAt(out, t, F.bytesToClient, K.bytesToClient, s.bytesToClient);
}

function writeTimes(
  out: LineBuffer,
  s: TcpConnectionSummary | UdpSessionSummary,
  t: LineTemplate,
): void {
  const piece = STARTED.at(s.startTime);
  const at = out.position;
  const end = at + piece.length - STARTED.restLength;
  t.recordNumber(F.startTime, at + STARTED.timeAt, end, s.startTime);
  numberAt(out, t, F.durationMs, piece, s.durationMs);
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
