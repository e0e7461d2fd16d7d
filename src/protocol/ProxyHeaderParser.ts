import { InvalidOptionError, ParserFinishedError, ProxyProtocolError } from '../errors.js';
import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { ProxyHeader, ProxyHeaderResult } from './ProxyHeader.js';
import { PROXY_V1_MAX_LENGTH, PROXY_V2_MAX_LENGTH, PROXY_V2_SIGNATURE } from './ProxyHeader.js';
import { parseV1Line } from './proxyV1.js';
import { V2_FIXED_LENGTH, checkV2Start, decodeV2 } from './proxyV2.js';

/** Options of {@link ProxyHeaderParser}. */
export interface ProxyHeaderParserOptions {
  /**
   * Longest v2 header accepted (16 + its length field), in bytes; longer ones fail with
   * `too_long` as soon as their length is read. From 232 (a UNIX address block) to 65551.
   * Default 4096: every header but one carrying a client certificate in an SSL TLV.
   */
  readonly maxLength?: number;
  /** Versions accepted; another one fails with `version_not_allowed`. Default `[1, 2]`. */
  readonly versions?: readonly (1 | 2)[];
}

/** Default of {@link ProxyHeaderParserOptions.maxLength}. */
export const DEFAULT_PROXY_HEADER_MAX_LENGTH = 4096;

const V1_FIRST_BYTE = 0x50; // 'P'

type Stage = 'detect' | 'v1' | 'v2' | 'done' | 'failed';

/**
 * Incremental PROXY protocol (v1 and v2) decoder for one connection. Feed it chunks as they arrive;
 * it copies only header bytes, never reads past the header, and fails on the first byte that
 * cannot belong to a valid header.
 *
 * `push` returns undefined while more bytes could still complete a header, the result once the
 * header is complete (the chunk's remaining bytes, untouched, in `rest`), or throws
 * {@link ProxyProtocolError}. A parser that threw throws the same error again; one that finished
 * must not be pushed to again.
 *
 * @example
 * const parser = new ProxyHeaderParser();
 * socket.on('data', function onData(chunk) {
 *   const result = parser.push(chunk);            // may throw ProxyProtocolError
 *   if (result === undefined) return;             // need more bytes
 *   socket.off('data', onData);
 *   handle(result.header, result.rest);
 * });
 */
export class ProxyHeaderParser {
  readonly #maxLength: number;
  readonly #v1: boolean;
  readonly #v2: boolean;
  #stage: Stage = 'detect';
  #bytes: Buffer = Buffer.alloc(0);
  #length = 0;
  #scanned = 0;
  #total: number | undefined;
  #failure: ProxyProtocolError | undefined;

  constructor(options: ProxyHeaderParserOptions = {}) {
    const opts = optionalRecord(options, 'options');
    rejectUnknownKeys(opts, ['maxLength', 'versions'], 'options');
    this.#maxLength = integer(
      opts.maxLength,
      'options.maxLength',
      DEFAULT_PROXY_HEADER_MAX_LENGTH,
      {
        min: V2_FIXED_LENGTH + 216,
        max: PROXY_V2_MAX_LENGTH,
      },
    );
    const versions = opts.versions ?? [1, 2];
    if (
      !Array.isArray(versions) ||
      versions.length === 0 ||
      !versions.every((v) => v === 1 || v === 2)
    )
      throw new InvalidOptionError('options.versions', 'a non-empty array of 1 and 2', versions);
    this.#v1 = versions.includes(1);
    this.#v2 = versions.includes(2);
  }

  /** Header bytes held so far (at most 107 for v1, `maxLength` for v2). */
  get buffered(): number {
    return this.#length;
  }

  /**
   * Feeds the next chunk. Returns the result once the header is complete, undefined while more
   * bytes are needed; throws {@link ProxyProtocolError} when the bytes cannot be a valid header.
   */
  push(chunk: Uint8Array): ProxyHeaderResult | undefined {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#stage === 'done') throw new ParserFinishedError('ProxyHeaderParser');
    if (!(chunk instanceof Uint8Array)) throw new InvalidOptionError('chunk', 'a Buffer', chunk);
    const input = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    try {
      return this.#consume(input);
    } catch (error) {
      this.#stage = 'failed';
      if (error instanceof ProxyProtocolError) this.#failure = error;
      throw error;
    }
  }

  #consume(input: Buffer): ProxyHeaderResult | undefined {
    let offset = 0;
    // Each pass copies at least one byte or settles the header's size, so the loop is bounded.
    for (let pass = 0; pass < 8; pass++) {
      const take = Math.min(input.length - offset, this.#limit() - this.#length);
      this.#append(input, offset, take);
      offset += take;
      const end = this.#examine();
      if (end !== undefined) {
        const header = this.#header(end);
        this.#stage = 'done';
        return { header, rest: input.subarray(offset - (this.#length - end)), length: end };
      }
      if (offset >= input.length) return undefined;
    }
    throw new ProxyProtocolError('bad_signature', 'the decoder made no progress');
  }

  #limit(): number {
    if (this.#stage === 'v1') return PROXY_V1_MAX_LENGTH;
    if (this.#stage === 'v2') return this.#total ?? V2_FIXED_LENGTH;
    return 1;
  }

  #append(input: Buffer, offset: number, take: number): void {
    if (take <= 0) return;
    const needed = this.#length + take;
    if (needed > this.#bytes.length) {
      const grown = Buffer.alloc(Math.max(needed, this.#limit()));
      this.#bytes.copy(grown, 0, 0, this.#length);
      this.#bytes = grown;
    }
    input.copy(this.#bytes, this.#length, offset, offset + take);
    this.#length = needed;
  }

  /** Header length once the header is complete; undefined while incomplete; throws when invalid. */
  #examine(): number | undefined {
    if (this.#length === 0) return undefined;
    if (this.#stage === 'detect') this.#detect();
    return this.#stage === 'v1' ? this.#examineV1() : this.#examineV2();
  }

  #detect(): void {
    const first = this.#bytes[0];
    if (first === V1_FIRST_BYTE) this.#select('v1', this.#v1);
    else if (first === PROXY_V2_SIGNATURE[0]) this.#select('v2', this.#v2);
    else
      throw new ProxyProtocolError(
        'bad_signature',
        'the first byte is neither "P" (v1) nor 0x0D (v2)',
      );
  }

  #select(stage: 'v1' | 'v2', allowed: boolean): void {
    if (!allowed)
      throw new ProxyProtocolError(
        'version_not_allowed',
        `PROXY protocol ${stage} is not accepted here`,
      );
    this.#stage = stage;
  }

  #examineV1(): number | undefined {
    const bytes = this.#bytes;
    let i = this.#scanned;
    for (; i < this.#length; i++) {
      const byte = bytes[i];
      if (byte === 0x0a) this.#failV1At(i, 'LF without CR');
      if (byte !== 0x0d) continue;
      if (i + 1 >= this.#length) break; // a CR last: its LF may be in the next chunk
      if (bytes[i + 1] !== 0x0a) this.#failV1At(i, 'CR not followed by LF');
      return i + 2;
    }
    this.#scanned = i;
    const pendingCr = bytes[this.#length - 1] === 0x0d ? 1 : 0;
    parseV1Line(bytes.toString('latin1', 0, this.#length - pendingCr), false);
    if (this.#length >= PROXY_V1_MAX_LENGTH)
      throw new ProxyProtocolError('too_long', `no CRLF in the first ${PROXY_V1_MAX_LENGTH} bytes`);
    return undefined;
  }

  /**
   * A stray CR or LF at `at`: the line before it is checked first, so a defect earlier in the
   * line is the reason, as it would be had the bytes arrived one at a time.
   */
  #failV1At(at: number, problem: string): never {
    parseV1Line(this.#bytes.toString('latin1', 0, at), false);
    throw new ProxyProtocolError('bad_v1_line', problem);
  }

  #examineV2(): number | undefined {
    this.#total ??= checkV2Start(this.#bytes, this.#length, this.#maxLength);
    return this.#total !== undefined && this.#length >= this.#total ? this.#total : undefined;
  }

  #header(end: number): ProxyHeader {
    if (this.#stage === 'v2') return decodeV2(this.#bytes.subarray(0, end));
    const header = parseV1Line(this.#bytes.toString('latin1', 0, end - 2), true);
    if (header === undefined) throw new ProxyProtocolError('bad_v1_line', 'incomplete line');
    return header;
  }
}

/**
 * Decodes a header at the start of `bytes` in one go (a UDP datagram, a buffer already read).
 * Throws {@link ProxyProtocolError}, with reason `incomplete` when `bytes` ends inside the header.
 *
 * @example
 * const { header, rest } = decodeProxyHeader(datagram);
 */
export function decodeProxyHeader(
  bytes: Uint8Array,
  options?: ProxyHeaderParserOptions,
): ProxyHeaderResult {
  const result = new ProxyHeaderParser(options).push(bytes);
  if (result === undefined)
    throw new ProxyProtocolError('incomplete', `${bytes.length} bytes end inside the header`);
  return result;
}
