import { TlsClientHelloError } from '../errors.js';
import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import {
  ClientHelloParser,
  DEFAULT_CLIENT_HELLO_MAX_BYTES,
} from '../protocol/ClientHelloParser.js';
import { SeenBytes } from './SeenBytes.js';
import type { PrereadContext, PrereadInspector, PrereadVerdict } from './types.js';
import { MORE, SKIP } from './types.js';

/** Options of {@link tlsClientHello}. */
export interface TlsClientHelloOptions {
  /** Bytes the ClientHello may span (records included). Default 16384. */
  readonly maxBytes?: number;
}

/**
 * The TLS ClientHello inspector (nginx `ssl_preread`, Envoy `tls_inspector`): matches a TLS
 * handshake with `{ protocol: 'tls', serverName, alpn, versions }` (`serverName` and `alpn` absent
 * when the hello has no such extension), skips anything that is not
 * TLS, and rejects a malformed ClientHello (`reason` says what is wrong). A server name found here
 * also fills `ctx.serverName` and `ctx.alpn`, as the `sni` option does.
 *
 * @example
 * new TcpProxy({ preread: { inspectors: { tls: tlsClientHello() } }, selector: (ctx) => ... });
 */
export function tlsClientHello(options: TlsClientHelloOptions = {}): PrereadInspector {
  const raw = optionalRecord(options, 'tlsClientHello options');
  rejectUnknownKeys(raw, ['maxBytes'], 'tlsClientHello');
  const maxBytes = integer(
    raw.maxBytes,
    'tlsClientHello.maxBytes',
    DEFAULT_CLIENT_HELLO_MAX_BYTES,
    {
      min: 64,
      max: 1 << 20,
    },
  );
  // The inspector is given every byte read so far on each call. A fresh parser per call re-read
  // them all: a hello trickled a byte per read cost quadratic CPU (7 s for 16 KB of one-byte
  // records). The parser of each connection is kept, and fed only the bytes it has not seen.
  const progress = new WeakMap<PrereadContext, Progress>();
  return (bytes, ctx) => {
    let state = progress.get(ctx);
    if (state === undefined || !state.seen.continuedBy(bytes)) {
      state = new Progress(new ClientHelloParser({ maxBytes }));
      progress.set(ctx, state);
    }
    const verdict = inspectClientHello(state.parser, state.seen.take(bytes));
    if (verdict.action !== 'more') progress.delete(ctx);
    return verdict;
  };
}

/** One connection's parser, and the bytes it was fed (its state depends on them only). */
class Progress {
  readonly seen = new SeenBytes();

  constructor(readonly parser: ClientHelloParser) {}
}

function inspectClientHello(parser: ClientHelloParser, bytes: Buffer): PrereadVerdict {
  let result;
  try {
    result = parser.push(bytes);
  } catch (err) {
    if (err instanceof TlsClientHelloError)
      return { action: 'reject', reason: err.message, error: err };
    return { action: 'reject', reason: String(err) };
  }
  if (result === undefined) return MORE;
  if (result.kind === 'not_tls') return SKIP;
  const hello = result.hello;
  return {
    action: 'match',
    metadata: {
      protocol: 'tls',
      serverName: result.kind === 'sni' ? result.serverName : undefined,
      alpn: hello.alpn,
      versions: (hello.supportedVersions ?? [hello.legacyVersion]).map(tlsVersionName),
    },
  };
}

function tlsVersionName(version: number): string {
  switch (version) {
    case 0x0304:
      return 'TLSv1.3';
    case 0x0303:
      return 'TLSv1.2';
    case 0x0302:
      return 'TLSv1.1';
    case 0x0301:
      return 'TLSv1';
    default:
      return `0x${version.toString(16).padStart(4, '0')}`;
  }
}
