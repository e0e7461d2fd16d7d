import {
  InvalidOptionError,
  ParserFinishedError,
  QuicInitialError,
  TlsClientHelloError,
} from '../errors.js';
import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { ClientHello } from './clientHello.js';
import { parseClientHello } from './clientHello.js';
import { CryptoStream } from './cryptoStream.js';
import { MAX_CID_LENGTH, readLongHeader, readVarint } from './quicHeader.js';
import type { InitialKeys, QuicVersionProfile } from './quicKeys.js';
import {
  deriveClientInitialKeys,
  headerProtectionMask,
  openPayload,
  quicVersionProfile,
} from './quicKeys.js';

/** Options of {@link QuicInitialParser} and {@link parseQuicInitial}. */
export interface QuicInitialParserOptions {
  /** CRYPTO stream bytes the ClientHello may span. Default 16384; 64 to 1 MiB. */
  readonly maxBytes?: number;
}

/** Default of {@link QuicInitialParserOptions.maxBytes}. */
export const DEFAULT_QUIC_INITIAL_MAX_BYTES = 16_384;

/** What a client's Initial packets said about where it wants to go. */
export interface QuicInitial {
  /** The QUIC version of the Initial packets (1, or 0x6b3343cf for version 2). */
  readonly version: number;
  /** The Destination Connection ID the client chose (its Initial keys derive from it). */
  readonly dcid: Buffer;
  /** The client's Source Connection ID. */
  readonly scid: Buffer;
  /** The ClientHello. `recordVersion` is 0: QUIC carries no TLS record layer. */
  readonly hello: ClientHello;
  /** Initial packets decrypted to read it. */
  readonly packets: number;
}

/**
 * Outcome of reading a client's first datagrams: `sni` or `no_sni` (a ClientHello with or without a
 * server name), or `not_quic` (the first packet is not a QUIC v1/v2 Initial: another version, a
 * short header, not QUIC at all). Malformed Initials throw {@link QuicInitialError}.
 */
export type QuicInitialResult =
  | { readonly kind: 'not_quic' }
  | { readonly kind: 'no_sni'; readonly initial: QuicInitial }
  | { readonly kind: 'sni'; readonly serverName: string; readonly initial: QuicInitial };

const CLIENT_HELLO = 0x01;
const FRAME_PADDING = 0x00;
const FRAME_PING = 0x01;
const FRAME_ACK = 0x02;
const FRAME_ACK_ECN = 0x03;
const FRAME_CRYPTO = 0x06;
const FRAME_CONNECTION_CLOSE = 0x1c;

/**
 * Initial packets read from one datagram. QUIC stacks coalesce one packet per encryption level
 * (an Initial, then 0-RTT or Handshake), so a real client's datagram holds one Initial; but the
 * Initial keys are public, and a 64 KiB datagram can hold 1 700 tiny valid Initials, each an
 * AES-GCM open: 100 ms of the event loop for one datagram, where a real Initial costs 0.2 ms.
 */
const MAX_INITIALS_PER_DATAGRAM = 4;

/**
 * RFC 9000 section 14.1: a server discards an Initial carried in a datagram shorter than this
 * (ngtcp2 and quic-go do), so the reader skips it too: read, a short datagram could end a
 * ClientHello here with one name while the server, which never saw it, completed another from
 * the client's next datagram. Clients pad their Initials' datagrams to at least this size.
 */
const MIN_INITIAL_DATAGRAM = 1200;

/**
 * Initial packets read before the ClientHello must be complete: `MAX_INITIALS_PER_DATAGRAM` in
 * each of `quic.maxInitialDatagrams`' largest value. Bounds the packet numbers kept (see
 * `#seen`) for a caller that pushes datagrams without a bound of its own.
 */
const MAX_INITIALS = 256;

/** Pre-allocated result for non-QUIC input. */
const NOT_QUIC: QuicInitialResult = { kind: 'not_quic' };

/** Where one long-header packet lies in its datagram. */
interface PacketBounds {
  /** Its first byte. */
  readonly at: number;
  /** Its packet number field. */
  readonly pnOffset: number;
  /** Just past its payload. */
  readonly end: number;
}

/**
 * Reads the TLS ClientHello carried by a client's QUIC Initial packets (RFC 9000, RFC 9001,
 * RFC 9369), as a proxy that routes HTTP/3 by server name must: it derives the Initial keys from
 * the client's Destination Connection ID, removes header protection, decrypts each Initial
 * (AES-128-GCM), reassembles the CRYPTO frames (a ClientHello may span several packets, arriving
 * out of order or coalesced with other packets) and parses the ClientHello. It only inspects: the
 * caller forwards every datagram unchanged.
 *
 * `push(datagram)` returns undefined while more datagrams are needed, a {@link QuicInitialResult}
 * once decided, or throws {@link QuicInitialError} (malformed, undecryptable, or longer than
 * `maxBytes`). Packets other than Initial (0-RTT, Handshake) coalesced in a datagram are skipped,
 * as are Initials a server does not read: of another DCID, or in a datagram under 1200 bytes.
 *
 * @example
 * const peek = new QuicInitialParser();
 * const result = peek.push(datagram);
 * if (result?.kind === 'sni') route(result.serverName, result.initial.hello.alpn);
 */
export class QuicInitialParser {
  readonly #maxBytes: number;
  #profile: QuicVersionProfile | undefined;
  #dcid: Buffer | undefined;
  #scid: Buffer | undefined;
  #keys: InitialKeys | undefined;
  #crypto: CryptoStream | undefined;
  #largestPn = -1;
  #packets = 0;
  #done = false;
  #failure: QuicInitialError | undefined;
  /** Initial packets read from the current datagram (see `MAX_INITIALS_PER_DATAGRAM`). */
  #inDatagram = 0;
  /**
   * The packet numbers read. RFC 9000 12.3: a receiver discards a packet whose number it has
   * processed (ngtcp2 does, before decrypting it); read, a second packet of a number carrying the
   * end of a ClientHello with one name completed it here, while the server, which dropped it,
   * completed another from the client's next packet.
   */
  readonly #seen = new Set<number>();
  /** Set by the first v1/v2 Initial header, read or skipped: the input is QUIC from then on. */
  #quic = false;
  /** The DCID of the current datagram's first packet (see `#foreign`). */
  #datagramDcid: Buffer | undefined;

  constructor(options: QuicInitialParserOptions = {}) {
    const opts = optionalRecord(options, 'options');
    rejectUnknownKeys(opts, ['maxBytes'], 'options');
    this.#maxBytes = integer(opts.maxBytes, 'options.maxBytes', DEFAULT_QUIC_INITIAL_MAX_BYTES, {
      min: 64,
      max: 1 << 20,
    });
  }

  /** Initial packets decrypted so far. */
  get packets(): number {
    return this.#packets;
  }

  /** Feeds the next datagram from the client; see the class description. */
  push(datagram: Uint8Array): QuicInitialResult | undefined {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#done) throw new ParserFinishedError('QuicInitialParser');
    if (!(datagram instanceof Uint8Array))
      throw new InvalidOptionError('datagram', 'a Buffer', datagram);
    const bytes = Buffer.isBuffer(datagram)
      ? datagram
      : Buffer.from(datagram.buffer, datagram.byteOffset, datagram.byteLength);
    try {
      const result = this.#datagram(bytes);
      this.#datagramDcid = undefined;
      if (result !== undefined) this.#done = true;
      return result;
    } catch (error) {
      const failure =
        error instanceof QuicInitialError
          ? error
          : new QuicInitialError('bad_header', 'unexpected input', error);
      this.#failure = failure;
      throw failure;
    }
  }

  #datagram(bytes: Buffer): QuicInitialResult | undefined {
    let at = 0;
    this.#inDatagram = 0;
    while (at < bytes.length) {
      const first = bytes[at] ?? 0;
      // Short header, or trailing zero padding some stacks add after coalesced packets: the rest
      // of the datagram holds nothing a proxy can read.
      if ((first & 0x80) === 0) {
        if (!this.#quic) return NOT_QUIC;
        return undefined;
      }
      const next = this.#packet(bytes, at);
      if (next === 'not_quic') return NOT_QUIC;
      if (typeof next !== 'number') return next;
      at = next;
    }
    return undefined;
  }

  /** Handles the long-header packet at `at`; returns where the next one starts. */
  #packet(bytes: Buffer, at: number): number | 'not_quic' | QuicInitialResult | undefined {
    const header = readLongHeader(bytes, at, bytes.length);
    const profile = header && quicVersionProfile(header.version);
    if (header === undefined || profile === undefined) {
      // A v1/v2 Initial cut short is a malformed Initial (its fallback applies), not another
      // protocol: its first byte and version say what it is.
      if (header === undefined && (this.#quic || truncatedInitial(bytes, at)))
        throw new QuicInitialError('bad_header', 'truncated long header');
      // Another version (or Version Negotiation) at the start: pass it as not QUIC we can read;
      // later in a datagram, nothing more can be read.
      if (!this.#quic) return 'not_quic';
      return bytes.length;
    }
    if (this.#profile !== undefined && profile !== this.#profile)
      throw new QuicInitialError('bad_header', 'version changed between packets');
    if (header.dcid.length > MAX_CID_LENGTH || header.scid.length > MAX_CID_LENGTH)
      throw new QuicInitialError('bad_header', 'connection ID longer than 20 bytes');
    if (header.typeBits === profile.retryType)
      throw new QuicInitialError('bad_header', 'a Retry packet from a client');
    // RFC 9000 12.2: a datagram belongs to the connection its first packet names.
    this.#datagramDcid ??= header.dcid;
    let cursor = header.afterCids;
    const initial = header.typeBits === profile.initialType;
    if (initial) {
      const token = readVarint(bytes, cursor);
      if (token === undefined || cursor + token[1] + token[0] > bytes.length)
        throw new QuicInitialError('bad_header', 'token runs past the datagram');
      cursor += token[1] + token[0];
    }
    const length = readVarint(bytes, cursor);
    if (length === undefined || cursor + length[1] + length[0] > bytes.length)
      throw new QuicInitialError('bad_header', 'packet length runs past the datagram');
    const pnOffset = cursor + length[1];
    const end = pnOffset + length[0];
    if (!initial) {
      // 0-RTT or Handshake: not readable here, skipped by its length.
      if (!this.#quic) return 'not_quic';
      return end;
    }
    this.#quic = true;
    if (bytes.length < MIN_INITIAL_DATAGRAM || this.#foreign(header.dcid)) return end;
    if (this.#profile === undefined) {
      this.#profile = profile;
      this.#dcid = Buffer.from(header.dcid);
      this.#scid = Buffer.from(header.scid);
    }
    if (header.dcid.length < 8 && this.#packets === 0 && this.#keys === undefined)
      throw new QuicInitialError('bad_header', 'a client Initial DCID shorter than 8 bytes');
    // Before any key derivation or decryption: the cost of a datagram stays that of a few packets.
    if (++this.#inDatagram > MAX_INITIALS_PER_DATAGRAM)
      throw new QuicInitialError(
        'too_many_packets',
        `more than ${MAX_INITIALS_PER_DATAGRAM} Initial packets in one datagram`,
      );
    const keys = this.#keysFor(profile, header.dcid);
    const payload = this.#unprotect(bytes, { at, pnOffset, end }, keys);
    if (payload === undefined) return end;
    this.#packets++;
    const result = this.#frames(payload);
    return result ?? end;
  }

  /**
   * Whether an Initial belongs to another connection than the one being read, and is skipped
   * unread: a DCID other than the first Initial's (RFC 9000 7.2: until the server answers, a
   * client uses one DCID, so another one is another connection, or a server would drop it), or
   * other than the DCID of its datagram's first packet (RFC 9000 12.2: receivers ignore such
   * coalesced packets, as ngtcp2 and quic-go do). Read, they made this reader see a ClientHello
   * the server never did: a datagram coalescing `[DCID A: the start] [DCID B: the end, name X]`
   * completed a name X here while the server, reading A alone, took the end of another
   * ClientHello (name Y) from the client's next datagram.
   */
  #foreign(dcid: Buffer): boolean {
    if (this.#datagramDcid?.equals(dcid) === false) return true;
    return this.#dcid !== undefined && !this.#dcid.equals(dcid);
  }

  #keysFor(profile: QuicVersionProfile, dcid: Buffer): InitialKeys {
    // One DCID per parser (see `#foreign`): the keys are derived once.
    this.#keys ??= deriveClientInitialKeys(profile, dcid);
    return this.#keys;
  }

  /**
   * Removes header protection and decrypts; returns the plaintext frames, or undefined for a
   * packet number already read (skipped, see `#seen`).
   */
  #unprotect(bytes: Buffer, packet: PacketBounds, keys: InitialKeys): Buffer | undefined {
    const { at, pnOffset, end } = packet;
    // RFC 9001 5.4.2: the sample starts 4 bytes after the packet number's offset.
    if (pnOffset + 4 + 16 > end)
      throw new QuicInitialError('bad_header', 'packet too short to sample');
    const mask = headerProtectionMask(keys.hp, bytes.subarray(pnOffset + 4, pnOffset + 20));
    const firstByte = (bytes[at] ?? 0) ^ ((mask[0] ?? 0) & 0x0f);
    const pnLength = (firstByte & 0x03) + 1;
    // The AAD is the unprotected header: a copy, the datagram itself is forwarded unchanged.
    const aad = Buffer.from(bytes.subarray(at, pnOffset + pnLength));
    aad[0] = firstByte;
    let truncated = 0;
    for (let i = 0; i < pnLength; i++) {
      const index = pnOffset - at + i;
      const byte = (aad[index] ?? 0) ^ (mask[1 + i] ?? 0);
      aad[index] = byte;
      truncated = truncated * 256 + byte;
    }
    const packetNumber = decodePacketNumber(this.#largestPn, truncated, pnLength * 8);
    if (this.#seen.has(packetNumber)) return undefined;
    const plain = openPayload(keys, packetNumber, aad, bytes.subarray(pnOffset + pnLength, end));
    if (plain === undefined)
      throw new QuicInitialError('decrypt_failed', 'the Initial keys of its DCID do not open it');
    // Reserved bits are checked once the packet is authentic (RFC 9000 17.2).
    if ((firstByte & 0x0c) !== 0)
      throw new QuicInitialError('bad_header', 'reserved header bits are set');
    if (packetNumber > this.#largestPn) this.#largestPn = packetNumber;
    if (this.#seen.size >= MAX_INITIALS)
      throw new QuicInitialError(
        'too_long',
        `no complete ClientHello in ${MAX_INITIALS} Initial packets`,
      );
    this.#seen.add(packetNumber);
    return plain;
  }

  /** Walks the frames of one Initial; returns a result once the ClientHello is complete. */
  #frames(payload: Buffer): QuicInitialResult | undefined {
    if (payload.length === 0) throw new QuicInitialError('bad_frame', 'an Initial without frames');
    let at = 0;
    let sawCrypto = false;
    while (at < payload.length) {
      const type = payload[at] ?? 0;
      at++;
      switch (type) {
        case FRAME_PADDING:
        case FRAME_PING:
          break;
        case FRAME_ACK:
        case FRAME_ACK_ECN:
          at = skipAck(payload, at, type === FRAME_ACK_ECN);
          break;
        case FRAME_CRYPTO: {
          const offset = varint(payload, at, 'CRYPTO offset');
          at += offset[1];
          const length = varint(payload, at, 'CRYPTO length');
          at += length[1];
          if (at + length[0] > payload.length)
            throw new QuicInitialError('bad_frame', 'CRYPTO data runs past the packet');
          (this.#crypto ??= new CryptoStream(this.#maxBytes)).add(
            offset[0],
            payload.subarray(at, at + length[0]),
          );
          at += length[0];
          sawCrypto = true;
          break;
        }
        case FRAME_CONNECTION_CLOSE:
          throw new QuicInitialError('connection_close', 'the client closed the connection');
        default:
          throw new QuicInitialError(
            'bad_frame',
            `frame type 0x${type.toString(16)} is not allowed in an Initial packet`,
          );
      }
    }
    return sawCrypto ? this.#examine() : undefined;
  }

  #examine(): QuicInitialResult | undefined {
    const stream = this.#crypto;
    if (stream === undefined || stream.contiguous < 4) return undefined;
    const head = stream.prefix();
    if (head[0] !== CLIENT_HELLO)
      throw new QuicInitialError('bad_client_hello', `handshake type ${head[0] ?? 0}`);
    const total = 4 + head.readUIntBE(1, 3);
    if (total > this.#maxBytes)
      throw new QuicInitialError(
        'too_long',
        `a ${total}-byte ClientHello exceeds the ${this.#maxBytes}-byte limit`,
      );
    if (stream.contiguous < total) return undefined;
    let fields: ReturnType<typeof parseClientHello>;
    try {
      fields = parseClientHello(Buffer.from(head.subarray(4, total)));
    } catch (error) {
      if (error instanceof TlsClientHelloError)
        throw new QuicInitialError('bad_client_hello', error.message, error);
      throw error;
    }
    const hello: ClientHello = { ...fields, recordVersion: 0, length: total };
    const initial: QuicInitial = {
      version: this.#profile?.version ?? 0,
      dcid: this.#dcid ?? Buffer.alloc(0),
      scid: this.#scid ?? Buffer.alloc(0),
      hello,
      packets: this.#packets,
    };
    return hello.serverName === undefined
      ? { kind: 'no_sni', initial }
      : { kind: 'sni', serverName: hello.serverName, initial };
  }
}

/** Whether the long header at `at`, too short to read whole, starts a v1 or v2 Initial. */
function truncatedInitial(bytes: Buffer, at: number): boolean {
  if (at + 5 > bytes.length) return false;
  const profile = quicVersionProfile(bytes.readUInt32BE(at + 1));
  return profile !== undefined && (((bytes[at] ?? 0) >> 4) & 0x03) === profile.initialType;
}

function varint(bytes: Buffer, at: number, what: string): [number, number] {
  const read = readVarint(bytes, at);
  if (read === undefined) throw new QuicInitialError('bad_frame', `${what} runs past the packet`);
  return read;
}

/** Skips an ACK frame's fields (RFC 9000 19.3); returns the offset after it. */
function skipAck(payload: Buffer, start: number, ecn: boolean): number {
  let at = start;
  for (let i = 0; i < 2; i++) at += varint(payload, at, 'ACK field')[1];
  const ranges = varint(payload, at, 'ACK range count');
  at += ranges[1];
  at += varint(payload, at, 'first ACK range')[1];
  if (ranges[0] > payload.length)
    throw new QuicInitialError('bad_frame', 'ACK range count larger than the packet');
  for (let i = 0; i < ranges[0] * 2; i++) at += varint(payload, at, 'ACK range')[1];
  if (ecn) for (let i = 0; i < 3; i++) at += varint(payload, at, 'ECN count')[1];
  return at;
}

/** RFC 9000 Appendix A.3: the full packet number nearest to the next expected one. */
export function decodePacketNumber(largest: number, truncated: number, bits: number): number {
  const expected = largest + 1;
  const window = 2 ** bits;
  const half = window / 2;
  const candidate = expected - (expected % window) + truncated;
  if (candidate <= expected - half && candidate < 2 ** 62 - window) return candidate + window;
  if (candidate > expected + half && candidate >= window) return candidate - window;
  return candidate;
}

/**
 * Reads the ClientHello from one client datagram, or from several in order (a ClientHello that
 * spans Initial packets). Returns undefined when the datagrams end before the ClientHello does.
 *
 * @throws {QuicInitialError} malformed, undecryptable, or longer than `maxBytes`.
 * @example
 * const result = parseQuicInitial(firstDatagram);
 * if (result?.kind === 'sni') console.log(result.serverName, result.initial.hello.alpn);
 */
export function parseQuicInitial(
  datagrams: Uint8Array | readonly Uint8Array[],
  options: QuicInitialParserOptions = {},
): QuicInitialResult | undefined {
  const parser = new QuicInitialParser(options);
  const list = datagrams instanceof Uint8Array ? [datagrams] : datagrams;
  for (const datagram of list) {
    const result = parser.push(datagram);
    if (result !== undefined) return result;
  }
  return undefined;
}
