/*
 * Every error l4proxy creates is an `L4Error` with a stable `code`.
 * Match on `code` (or `instanceof` a subclass), never on the message text.
 */

/** Stable error codes. Documented in `docs/errors.md`; a test checks the table both ways. */
export const ErrorCode = {
  INVALID_OPTION: 'ERR_L4_INVALID_OPTION',
  MODE_UNSUPPORTED: 'ERR_L4_MODE_UNSUPPORTED',
  NO_UPSTREAM: 'ERR_L4_NO_UPSTREAM',
  CONNECT_TIMEOUT: 'ERR_L4_CONNECT_TIMEOUT',
  CONNECT_FAILED: 'ERR_L4_CONNECT_FAILED',
  SELECTOR: 'ERR_L4_SELECTOR',
  PROXY_CLOSED: 'ERR_L4_PROXY_CLOSED',
  PROXY_PROTOCOL: 'ERR_L4_PROXY_PROTOCOL',
  TLS_CLIENT_HELLO: 'ERR_L4_TLS_CLIENT_HELLO',
  LISTEN: 'ERR_L4_LISTEN',
  HEALTH_CHECK: 'ERR_L4_HEALTH_CHECK',
  UPSTREAM_SOURCE: 'ERR_L4_UPSTREAM_SOURCE',
  RESOURCE_EXHAUSTED: 'ERR_L4_RESOURCE_EXHAUSTED',
  TLS_UNTRUSTED: 'ERR_L4_TLS_UNTRUSTED',
  TLS_NAME_MISMATCH: 'ERR_L4_TLS_NAME_MISMATCH',
  TLS_HANDSHAKE_TIMEOUT: 'ERR_L4_TLS_HANDSHAKE_TIMEOUT',
  TLS_HANDSHAKE: 'ERR_L4_TLS_HANDSHAKE',
  TLS_CLIENT_CERT: 'ERR_L4_TLS_CLIENT_CERT',
  TLS_STARTTLS_REFUSED: 'ERR_L4_TLS_STARTTLS_REFUSED',
  TLS_STARTTLS_PROTOCOL: 'ERR_L4_TLS_STARTTLS_PROTOCOL',
  TLS_REVOKED: 'ERR_L4_TLS_REVOKED',
  TLS_PIN_MISMATCH: 'ERR_L4_TLS_PIN_MISMATCH',
  PARSER_FINISHED: 'ERR_L4_PARSER_FINISHED',
  ADMISSION: 'ERR_L4_ADMISSION',
  FILTER: 'ERR_L4_FILTER',
  QUIC_INITIAL: 'ERR_L4_QUIC_INITIAL',
  TUNNEL_REFUSED: 'ERR_L4_TUNNEL_REFUSED',
} as const;

/** Union of every stable error code string. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** The brand of an error class, shared by every copy of the package loaded in the process. */
function brand(errorClass: { readonly name: string }): symbol {
  return Symbol.for(`l4proxy.error.${errorClass.name}`);
}

/**
 * Base class of every error thrown or reported by l4proxy.
 *
 * `instanceof` works across two copies of the package in one process (two versions in
 * `node_modules`, or a bundled copy): each instance carries a `Symbol.for` brand per class of its
 * chain, and `instanceof` checks the brand rather than the prototype (as undici does).
 */
export class L4Error extends Error {
  /** Stable, documented identifier of the failure. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
    for (let c: unknown = new.target; c !== Error && typeof c === 'function';) {
      Object.defineProperty(this, brand(c), { value: true });
      c = Object.getPrototypeOf(c);
    }
  }

  /** True for an instance of this class from any copy of the package. */
  static override [Symbol.hasInstance](instance: unknown): boolean {
    return (
      typeof instance === 'object' &&
      instance !== null &&
      (instance as Record<symbol, unknown>)[brand(this)] === true
    );
  }
}

/** An option passed to a constructor or method is invalid; `option` names it (a dotted path). */
export class InvalidOptionError extends L4Error {
  /** Dotted path of the offending option, e.g. `upstreams[1].port`. */
  readonly option: string;

  constructor(option: string, expected: string, received: unknown) {
    super(
      ErrorCode.INVALID_OPTION,
      `Invalid option "${option}": expected ${expected}, received ${describe(received)}.`,
    );
    this.option = option;
  }
}

/**
 * An {@link InvalidOptionError} whose "received" part is said in words rather than shown: for a
 * value that must not appear in a message or a log (a key, a passphrase).
 */
export function invalidOptionInWords(
  option: string,
  expected: string,
  received: string,
): InvalidOptionError {
  const error = new InvalidOptionError(option, expected, undefined);
  error.message = `Invalid option "${option}": expected ${expected}, received ${received}.`;
  return error;
}

/** A proxy mode other than `'non-transparent'` was requested. */
export class ModeUnsupportedError extends L4Error {
  constructor(received: unknown) {
    super(
      ErrorCode.MODE_UNSUPPORTED,
      `Proxy mode ${describe(received)} is not supported: l4proxy runs in 'non-transparent' mode only. ` +
        'Transparent proxying needs CAP_NET_ADMIN and return-path routing that only the proxy host can set up. ' +
        "To tell the upstream who the client is, use the PROXY protocol (option 'proxyProtocol').",
    );
  }
}

/** No upstream could be chosen (empty set, or the selector returned nothing). */
export class NoUpstreamError extends L4Error {
  constructor(message = 'No upstream is available: add upstreams or check their health.') {
    super(ErrorCode.NO_UPSTREAM, message);
  }
}

/** Connecting to an upstream took longer than `connectTimeout`. */
export class ConnectTimeoutError extends L4Error {
  /** @param option the timeout that passed: `connectTimeout` (one attempt) or `connectDeadline` (all). */
  constructor(address: string, timeoutMs: number, option = 'connectTimeout') {
    super(
      ErrorCode.CONNECT_TIMEOUT,
      `Connecting to upstream ${address} timed out after ${timeoutMs} ms; raise '${option}' or check the upstream.`,
    );
  }
}

/** Connecting to an upstream failed; `cause` holds the socket error. */
export class ConnectFailedError extends L4Error {
  constructor(address: string, cause: unknown) {
    super(
      ErrorCode.CONNECT_FAILED,
      `Connecting to upstream ${address} failed: ${cause instanceof Error ? cause.message : String(cause)}.`,
      { cause },
    );
  }
}

/**
 * The HTTP proxy of a tunnel upstream answered CONNECT (or CONNECT-UDP) with a status other than
 * 2xx; `status` holds it. Counted as a failed connect attempt, and retried like one.
 */
export class TunnelRefusedError extends L4Error {
  /** The HTTP status the proxy answered (e.g. 407, 403, 502). */
  readonly status: number;

  constructor(proxy: string, target: string, status: number) {
    super(
      ErrorCode.TUNNEL_REFUSED,
      `The HTTP proxy ${proxy} refused to tunnel to ${target} with status ${status}; ` +
        (status === 407
          ? "set 'tunnel.headers' with valid Proxy-Authorization."
          : 'check the proxy access rules and that the target is reachable from it.'),
    );
    this.status = status;
  }
}

/** A user-supplied selector threw, rejected or returned something that is not an upstream. */
export class SelectorError extends L4Error {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.SELECTOR, message, cause === undefined ? undefined : { cause });
  }
}

/** The operation is not possible because the proxy is closing or closed. */
export class ProxyClosedError extends L4Error {
  constructor(message = 'The proxy is closed: create a new one.') {
    super(ErrorCode.PROXY_CLOSED, message);
  }
}

/** Listening or binding failed; `cause` holds the system error (EADDRINUSE, EACCES, ...). */
export class ListenError extends L4Error {
  constructor(message: string, cause: unknown) {
    super(ErrorCode.LISTEN, message, { cause });
  }
}

/**
 * The process or the system ran out of file descriptors (`EMFILE`, `ENFILE`); `cause` holds the
 * system error. Reported on the proxy's `error` event (at most once a second) and as the error of
 * connections closed with `resource_exhausted`.
 */
export class ResourceExhaustedError extends L4Error {
  constructor(message: string, cause: unknown) {
    super(ErrorCode.RESOURCE_EXHAUSTED, message, { cause });
  }
}

/** A parser that already returned its result was fed again: create one parser per stream. */
export class ParserFinishedError extends L4Error {
  constructor(parser: string) {
    super(
      ErrorCode.PARSER_FINISHED,
      `${parser}: the result was already returned; create a new parser for the next stream.`,
    );
  }
}

/**
 * Why a PROXY protocol header was refused. Closed set, documented in `docs/proxy-protocol.md`.
 */
export type ProxyProtocolErrorReason =
  | 'bad_signature'
  | 'version_not_allowed'
  | 'bad_version'
  | 'bad_command'
  | 'bad_family'
  | 'bad_length'
  | 'too_long'
  | 'bad_v1_line'
  | 'bad_address'
  | 'bad_port'
  | 'truncated_tlv'
  | 'bad_tlv'
  | 'bad_crc32c'
  | 'incomplete';

/** A PROXY protocol header (v1 or v2) is malformed or breaks a limit; `reason` says which rule. */
export class ProxyProtocolError extends L4Error {
  /** Stable, documented name of the rule the header broke. */
  readonly reason: ProxyProtocolErrorReason;

  constructor(reason: ProxyProtocolErrorReason, detail: string) {
    super(ErrorCode.PROXY_PROTOCOL, `Invalid PROXY protocol header (${reason}): ${detail}.`);
    this.reason = reason;
  }
}

/**
 * Why a TLS ClientHello could not be read. Closed set, documented in `docs/proxy-protocol.md`.
 */
export type TlsClientHelloErrorReason =
  | 'bad_record'
  | 'not_client_hello'
  | 'bad_handshake'
  | 'bad_extension'
  | 'bad_sni'
  | 'bad_alpn'
  | 'too_long';

/** Bytes that start like TLS are not a well-formed ClientHello, or it exceeds the byte limit. */
export class TlsClientHelloError extends L4Error {
  /** Stable, documented name of the rule the bytes broke. */
  readonly reason: TlsClientHelloErrorReason;

  constructor(reason: TlsClientHelloErrorReason, detail: string) {
    super(ErrorCode.TLS_CLIENT_HELLO, `Invalid TLS ClientHello (${reason}): ${detail}.`);
    this.reason = reason;
  }
}

/**
 * Why a QUIC Initial packet could not be read. Closed set, documented in `docs/quic.md`.
 */
export type QuicInitialErrorReason =
  | 'bad_header'
  | 'decrypt_failed'
  | 'bad_frame'
  | 'connection_close'
  | 'too_long'
  | 'too_fragmented'
  | 'too_many_packets'
  | 'bad_client_hello';

/**
 * A QUIC Initial packet is malformed, cannot be decrypted with the keys its connection ID gives
 * (corrupted, forged, or not really an Initial), or its ClientHello is malformed or too long.
 */
export class QuicInitialError extends L4Error {
  /** Stable, documented name of the rule the packet broke. */
  readonly reason: QuicInitialErrorReason;

  constructor(reason: QuicInitialErrorReason, detail: string, cause?: unknown) {
    super(
      ErrorCode.QUIC_INITIAL,
      `Invalid QUIC Initial (${reason}): ${detail}.`,
      cause === undefined ? undefined : { cause },
    );
    this.reason = reason;
  }
}

/** An active health check failed; `cause` holds the socket error, when there was one. */
export class HealthCheckError extends L4Error {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.HEALTH_CHECK, message, cause === undefined ? undefined : { cause });
  }
}

/** An upstream source (DNS discovery, a registry) failed to produce a list; `cause` says why. */
export class UpstreamSourceError extends L4Error {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.UPSTREAM_SOURCE, message, cause === undefined ? undefined : { cause });
  }
}

/** The TLS failure kinds of {@link TlsHandshakeError}, each with its own code. */
export type TlsFailureCode =
  | typeof ErrorCode.TLS_UNTRUSTED
  | typeof ErrorCode.TLS_NAME_MISMATCH
  | typeof ErrorCode.TLS_HANDSHAKE_TIMEOUT
  | typeof ErrorCode.TLS_HANDSHAKE
  | typeof ErrorCode.TLS_CLIENT_CERT
  | typeof ErrorCode.TLS_STARTTLS_REFUSED
  | typeof ErrorCode.TLS_STARTTLS_PROTOCOL
  | typeof ErrorCode.TLS_REVOKED
  | typeof ErrorCode.TLS_PIN_MISMATCH;

/**
 * A TLS handshake failed, with an upstream (origination) or a client (termination). `code` names
 * the cause: the peer's certificate is not trusted (`ERR_L4_TLS_UNTRUSTED`), does not name the
 * host or none of the `subjectAltNames` matchers (`ERR_L4_TLS_NAME_MISMATCH`), is revoked by a
 * `crl` (`ERR_L4_TLS_REVOKED`), matches none of the `pins` (`ERR_L4_TLS_PIN_MISMATCH`), the handshake took too long (`ERR_L4_TLS_HANDSHAKE_TIMEOUT`),
 * a client gave no valid certificate (`ERR_L4_TLS_CLIENT_CERT`), an upstream with `tls.startTls`
 * refused the in-band request for TLS (`ERR_L4_TLS_STARTTLS_REFUSED`) or answered it wrongly
 * (`ERR_L4_TLS_STARTTLS_PROTOCOL`), or anything else
 * (`ERR_L4_TLS_HANDSHAKE`: protocol versions, ciphers, alerts, the peer hanging up). `cause` is
 * Node's error, when there was one.
 */
export class TlsHandshakeError extends L4Error {
  /** `'upstream'` for origination, `'downstream'` for termination. */
  readonly side: 'upstream' | 'downstream';

  constructor(
    code: TlsFailureCode,
    side: 'upstream' | 'downstream',
    message: string,
    cause?: unknown,
  ) {
    super(code, message, cause === undefined ? undefined : { cause });
    this.side = side;
  }
}

/**
 * The `admit` hook did not answer in time (`admission_timeout`), or threw, rejected or answered
 * something else (`admission_error`; `cause` is what it threw).
 */
export class AdmissionError extends L4Error {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.ADMISSION, message, cause === undefined ? undefined : { cause });
  }
}

/** A data filter or UDP session filter failed; `cause` is what the user code threw. */
export class FilterError extends L4Error {
  constructor(cause: unknown) {
    super(ErrorCode.FILTER, `A data filter failed: ${thrownMessage(cause)}`, { cause });
  }
}

/** Short, safe description of a received value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === 'string') {
    const text = withoutPem(value);
    return JSON.stringify(text.length > 64 ? text.slice(0, 64) + '…' : text);
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return value.toString();
  return 'an object';
}

/** The start of each PEM block (`-----BEGIN EC PRIVATE KEY-----`, possibly JSON-escaped). */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----(?:[\s\S]*?-----END \1-----|[\s\S]*)/g;

/**
 * `text` with every PEM block replaced by its label (`<PEM EC PRIVATE KEY>`): an error message
 * quoting the start of a key would show part of the key itself (17 of an EC key's 32 secret
 * bytes fit in 64 characters), and goes to logs.
 */
export function withoutPem(text: string): string {
  return text.includes('-----BEGIN ') ? text.replace(PEM_BLOCK, '<PEM $1>') : text;
}

/**
 * The message of something user code threw or rejected with. Never throws itself: `String()` of
 * an object without a usable `toString` (`Object.create(null)`) throws, and a throw while
 * reporting a user's failure would escape the library (an uncaught exception, or an unhandled
 * rejection in a promise handler) and leave the connection waiting.
 */
export function thrownMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  try {
    return String(err);
  } catch {
    return describe(err);
  }
}

/** What user code threw or rejected with, as an Error (its own, or one carrying its message). */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(thrownMessage(err));
}
