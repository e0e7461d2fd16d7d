import { TlsClientHelloError } from '../errors.js';
import type { TlsClientHelloErrorReason } from '../errors.js';

/*
 * The body of a TLS ClientHello (RFC 8446 section 4.1.2, RFC 5246 7.4.1.2): what a proxy may read
 * without terminating TLS. Every length is checked against its container.
 */

/** What a ClientHello says about where the client wants to go. */
export interface ClientHello {
  /**
   * SNI host name (RFC 6066), lower-cased, without the final dot of an absolute name (`a.test.`
   * is `a.test`); absent when the client sent none.
   */
  readonly serverName?: string;
  /** ALPN protocol names in the client's order (bytes as latin1, lossless), e.g. `['h2', 'http/1.1']`. */
  readonly alpn?: readonly string[];
  /** Record-layer version of the first record, e.g. 0x0301. */
  readonly recordVersion: number;
  /** `legacy_version` of the ClientHello: 0x0303 for TLS 1.2 and 1.3. */
  readonly legacyVersion: number;
  /** The `supported_versions` extension (0x0304 = TLS 1.3), when sent. */
  readonly supportedVersions?: readonly number[];
  /** Stream bytes from the first record header to the last byte of the ClientHello. */
  readonly length: number;
}

const EXT_SERVER_NAME = 0x0000;
const EXT_ALPN = 0x0010;
const EXT_SUPPORTED_VERSIONS = 0x002b;
const HOST_NAME = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/i;

/** Bounds-checked big-endian reads; a read past the end throws with `reason`. */
class Reader {
  at = 0;
  constructor(
    private readonly bytes: Buffer,
    private readonly reason: TlsClientHelloErrorReason,
  ) {}

  get left(): number {
    return this.bytes.length - this.at;
  }

  take(n: number, what: string): Buffer {
    if (n > this.left)
      throw new TlsClientHelloError(this.reason, `${what} runs past its container`);
    this.at += n;
    return this.bytes.subarray(this.at - n, this.at);
  }

  u8(what: string): number {
    return this.take(1, what).readUInt8(0);
  }

  u16(what: string): number {
    return this.take(2, what).readUInt16BE(0);
  }

  /** A vector with a 1- or 2-byte length prefix. */
  vector(prefix: 1 | 2, what: string): Buffer {
    return this.take(prefix === 1 ? this.u8(what) : this.u16(what), what);
  }

  end(what: string): void {
    if (this.left !== 0)
      throw new TlsClientHelloError(this.reason, `${this.left} bytes after ${what}`);
  }
}

type Fields = Omit<ClientHello, 'recordVersion' | 'length'>;

/** Parses a ClientHello body (after the 4-byte handshake header). Throws {@link TlsClientHelloError}. */
export function parseClientHello(body: Buffer): Fields {
  const r = new Reader(body, 'bad_handshake');
  const legacyVersion = r.u16('legacy_version');
  r.take(32, 'random');
  if (r.vector(1, 'session id').length > 32)
    throw new TlsClientHelloError('bad_handshake', 'session id longer than 32 bytes');
  const suites = r.vector(2, 'cipher suites');
  if (suites.length < 2 || suites.length % 2 !== 0)
    throw new TlsClientHelloError(
      'bad_handshake',
      'cipher suites length is not a positive even number',
    );
  if (r.vector(1, 'compression methods').length < 1)
    throw new TlsClientHelloError('bad_handshake', 'no compression method');
  if (r.left === 0) return { legacyVersion };
  const extensions = r.vector(2, 'extensions');
  r.end('the extensions');
  return { legacyVersion, ...parseExtensions(extensions) };
}

function parseExtensions(block: Buffer): Omit<Fields, 'legacyVersion'> {
  const r = new Reader(block, 'bad_extension');
  const seen = new Set<number>();
  let fields: Omit<Fields, 'legacyVersion'> = {};
  while (r.left > 0) {
    const type = r.u16('extension type');
    const data = r.vector(2, 'extension data');
    if (seen.has(type))
      throw new TlsClientHelloError('bad_extension', `extension ${type} appears twice`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const serverName = parseServerName(data);
      if (serverName !== undefined) fields = { ...fields, serverName };
    } else if (type === EXT_ALPN) fields = { ...fields, alpn: parseAlpn(data) };
    else if (type === EXT_SUPPORTED_VERSIONS)
      fields = { ...fields, supportedVersions: parseVersions(data) };
  }
  return fields;
}

function parseServerName(data: Buffer): string | undefined {
  const r = new Reader(data, 'bad_sni');
  const list = new Reader(r.vector(2, 'server name list'), 'bad_sni');
  r.end('the server name list');
  if (list.left === 0) throw new TlsClientHelloError('bad_sni', 'empty server name list');
  let name: string | undefined;
  while (list.left > 0) {
    const type = list.u8('name type');
    const value = list.vector(2, 'server name');
    if (type !== 0) continue;
    if (name !== undefined) throw new TlsClientHelloError('bad_sni', 'more than one host_name');
    const text = value.toString('latin1');
    // The absolute form `name.` is the same name: Chromium sends it for https://name./, and
    // OpenSSL, BoringSSL, nginx and HAProxy take it. Refusing it would reset those clients.
    const bare = text.endsWith('.') ? text.slice(0, -1) : text;
    if (text.length > 255 || !HOST_NAME.test(bare))
      throw new TlsClientHelloError(
        'bad_sni',
        `host_name ${JSON.stringify(text.slice(0, 64))} is not a DNS name`,
      );
    name = bare.toLowerCase();
  }
  return name;
}

function parseAlpn(data: Buffer): string[] {
  const r = new Reader(data, 'bad_alpn');
  const list = new Reader(r.vector(2, 'protocol name list'), 'bad_alpn');
  r.end('the protocol name list');
  if (list.left === 0) throw new TlsClientHelloError('bad_alpn', 'empty protocol name list');
  const names: string[] = [];
  while (list.left > 0) {
    const name = list.vector(1, 'protocol name');
    if (name.length === 0) throw new TlsClientHelloError('bad_alpn', 'empty protocol name');
    names.push(name.toString('latin1'));
  }
  return names;
}

function parseVersions(data: Buffer): number[] {
  const r = new Reader(data, 'bad_extension');
  const list = r.vector(1, 'supported versions');
  r.end('the supported versions');
  if (list.length < 2 || list.length % 2 !== 0)
    throw new TlsClientHelloError(
      'bad_extension',
      'supported_versions length is not a positive even number',
    );
  const versions: number[] = [];
  for (let i = 0; i < list.length; i += 2) versions.push(list.readUInt16BE(i));
  return versions;
}
