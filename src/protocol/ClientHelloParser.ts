import { ParserFinishedError, TlsClientHelloError } from '../errors.js';
import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import { InvalidOptionError } from '../errors.js';
import type { ClientHello } from './clientHello.js';
import { parseClientHello } from './clientHello.js';

/** Options of {@link ClientHelloParser}. */
export interface ClientHelloParserOptions {
  /** Stream bytes a ClientHello may span, record headers included. Default 16384; 64 to 1 MiB. */
  readonly maxBytes?: number;
}

/** Default of {@link ClientHelloParserOptions.maxBytes}. */
export const DEFAULT_CLIENT_HELLO_MAX_BYTES = 16_384;

/**
 * Outcome of peeking at a connection's first bytes: `sni` (a ClientHello naming a server),
 * `no_sni` (a ClientHello without a name), or `not_tls` (the first bytes are not a TLS handshake
 * record). A malformed ClientHello throws {@link TlsClientHelloError} instead.
 */
export type ClientHelloResult =
  | { readonly kind: 'not_tls' }
  | { readonly kind: 'no_sni'; readonly hello: ClientHello }
  | { readonly kind: 'sni'; readonly serverName: string; readonly hello: ClientHello };

const RECORD_HEADER = 5;
const HANDSHAKE = 0x16;
const CLIENT_HELLO = 0x01;
/** RFC 8446 5.1: a TLSPlaintext fragment is at most 2^14 bytes. */
const MAX_RECORD = 16_384;

/**
 * Incremental TLS ClientHello reader for one connection, as nginx `ssl_preread` and Envoy's
 * `tls_inspector` do: fed chunks as they arrive, across TCP segments and across TLS records (a
 * handshake message may span several). It only inspects: the caller keeps and forwards every byte
 * unchanged.
 *
 * `push` returns undefined while more bytes are needed, a {@link ClientHelloResult} once decided,
 * or throws {@link TlsClientHelloError} (malformed, or longer than `maxBytes`).
 *
 * @example
 * const peek = new ClientHelloParser();
 * const result = peek.push(chunk);
 * if (result?.kind === 'sni') route(result.serverName);
 */
export class ClientHelloParser {
  readonly #maxBytes: number;
  #consumed = 0;
  #first = true;
  #head = Buffer.alloc(RECORD_HEADER);
  #headFill = 0;
  #recordLeft = 0;
  #recordVersion = 0;
  #handshake = Buffer.alloc(0);
  #handshakeFill = 0;
  #handshakeTotal: number | undefined;
  #done = false;
  #failure: TlsClientHelloError | undefined;

  constructor(options: ClientHelloParserOptions = {}) {
    const opts = optionalRecord(options, 'options');
    rejectUnknownKeys(opts, ['maxBytes'], 'options');
    this.#maxBytes = integer(opts.maxBytes, 'options.maxBytes', DEFAULT_CLIENT_HELLO_MAX_BYTES, {
      min: 64,
      max: 1 << 20,
    });
  }

  /** Stream bytes inspected so far. */
  get inspected(): number {
    return this.#consumed;
  }

  /** Feeds the next chunk; see the class description. */
  push(chunk: Uint8Array): ClientHelloResult | undefined {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#done) throw new ParserFinishedError('ClientHelloParser');
    if (!(chunk instanceof Uint8Array)) throw new InvalidOptionError('chunk', 'a Buffer', chunk);
    try {
      const result = this.#consume(chunk);
      if (result !== undefined) this.#done = true;
      return result;
    } catch (error) {
      if (error instanceof TlsClientHelloError) this.#failure = error;
      throw error;
    }
  }

  #consume(chunk: Uint8Array): ClientHelloResult | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.#recordLeft === 0) {
        const notTls = this.#headerByte(chunk[i] ?? 0);
        i++;
        if (notTls) return { kind: 'not_tls' };
      } else {
        const need = (this.#handshakeTotal ?? 4) - this.#handshakeFill;
        const take = Math.min(this.#recordLeft, chunk.length - i, need);
        this.#appendHandshake(chunk.subarray(i, i + take));
        i += take;
        this.#recordLeft -= take;
        const result = this.#examineHandshake();
        if (result !== undefined) return result;
      }
      if (this.#consumed > this.#maxBytes) throw this.#tooLong();
    }
    return undefined;
  }

  /** Takes one record-header byte; true when the first bytes show this is not TLS. */
  #headerByte(byte: number): boolean {
    this.#consumed++;
    const at = this.#headFill;
    this.#head[this.#headFill++] = byte;
    if (this.#first) {
      if ((at === 0 && byte !== HANDSHAKE) || (at === 1 && byte !== 3) || (at === 2 && byte > 4))
        return true;
    } else if ((at === 0 && byte !== HANDSHAKE) || (at === 1 && byte !== 3)) {
      throw new TlsClientHelloError(
        'bad_record',
        `record ${at === 0 ? 'type' : 'version'} byte 0x${byte.toString(16)} inside a ClientHello`,
      );
    }
    if (this.#headFill < RECORD_HEADER) return false;
    const length = this.#head.readUInt16BE(3);
    if (length === 0 || length > MAX_RECORD)
      throw new TlsClientHelloError('bad_record', `record length ${length}`);
    if (this.#first) this.#recordVersion = this.#head.readUInt16BE(1);
    this.#first = false;
    this.#headFill = 0;
    this.#recordLeft = length;
    return false;
  }

  #appendHandshake(bytes: Uint8Array): void {
    this.#consumed += bytes.length;
    const needed = this.#handshakeFill + bytes.length;
    if (needed > this.#handshake.length) {
      const grown = Buffer.alloc(Math.max(needed, this.#handshakeTotal ?? 4));
      this.#handshake.copy(grown, 0, 0, this.#handshakeFill);
      this.#handshake = grown;
    }
    this.#handshake.set(bytes, this.#handshakeFill);
    this.#handshakeFill = needed;
  }

  #examineHandshake(): ClientHelloResult | undefined {
    if (this.#handshakeFill < 4) return undefined;
    if (this.#handshakeTotal === undefined) {
      const type = this.#handshake[0];
      if (type !== CLIENT_HELLO)
        throw new TlsClientHelloError('not_client_hello', `handshake type ${type ?? 0}`);
      this.#handshakeTotal = 4 + this.#handshake.readUIntBE(1, 3);
      if (this.#handshakeTotal + RECORD_HEADER > this.#maxBytes) throw this.#tooLong();
    }
    if (this.#handshakeFill < this.#handshakeTotal) return undefined;
    const fields = parseClientHello(this.#handshake.subarray(4, this.#handshakeTotal));
    const hello: ClientHello = {
      ...fields,
      recordVersion: this.#recordVersion,
      length: this.#consumed,
    };
    return hello.serverName === undefined
      ? { kind: 'no_sni', hello }
      : { kind: 'sni', serverName: hello.serverName, hello };
  }

  #tooLong(): TlsClientHelloError {
    return new TlsClientHelloError(
      'too_long',
      `the ClientHello does not fit in ${this.#maxBytes} bytes`,
    );
  }
}
