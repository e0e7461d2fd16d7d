import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { thrownMessage } from '../errors.js';
import { isRecord, KNOWN_OPTIONS_PHRASE, knownKeys } from '../internal/validate.js';
import { readTicketKeyFiles, TicketKeyFileError } from './ticketKeyFiles.js';

/** PEM options a config file may give as files instead (`caFile` for `ca`, ...). */
const FILE_KEYS: readonly (readonly [file: string, option: string])[] = [
  ['caFile', 'ca'],
  ['certFile', 'cert'],
  ['keyFile', 'key'],
  // Revocation lists: one file or several (one per CA), re-read on SIGHUP as certificates are.
  ['crlFile', 'crl'],
];

/** File keys that may name several files (their contents are given as a list). */
const LIST_KEYS = new Set(['crlFile']);

/** Why a TLS file option was refused: the JSON path and what was wrong. */
export class TlsFileError extends Error {
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(detail);
    this.name = 'TlsFileError';
  }
}

/** A listener entry with its TLS files read, and what decides whether a reload changed them. */
export interface TlsFiles {
  /** The entry with `caFile`/`certFile`/`keyFile` replaced by the PEM they hold. */
  readonly entry: Readonly<Record<string, unknown>>;
  /**
   * The entry as written plus a digest of every file read: a SIGHUP that finds renewed
   * certificates sees a changed listener and starts a new proxy generation with them, while
   * live connections finish on the old one.
   */
  readonly raw: Readonly<Record<string, unknown>>;
}

/**
 * Reads the certificate and key files of a listener's `tls` and `terminateTls` (and each
 * `terminateTls.certificates[i]` and `upstreams[i].tls`), relative to the config file's directory.
 * @throws {TlsFileError} naming the option when a file cannot be read or clashes with inline PEM.
 */
export function readTlsFiles(
  entry: Readonly<Record<string, unknown>>,
  source: string,
  path: string,
): TlsFiles {
  const upstreams = Array.isArray(entry.upstreams) ? (entry.upstreams as unknown[]) : undefined;
  const upstreamTls = upstreams?.some((upstream) => isRecord(upstream) && isRecord(upstream.tls));
  if (entry.tls === undefined && entry.terminateTls === undefined && upstreamTls !== true)
    return { entry, raw: entry };
  const base = dirname(source);
  const digest = createHash('sha256');
  const read = (block: unknown, at: string): unknown => {
    if (!isRecord(block)) return block;
    const fileKeys = new Set(FILE_KEYS.map(([fileKey]) => fileKey));
    const out: Record<string, unknown> = Object.fromEntries(
      Object.entries(block).filter(([key]) => !fileKeys.has(key)),
    );
    for (const [fileKey, option] of FILE_KEYS) {
      const file = block[fileKey];
      if (file === undefined) continue;
      const several = LIST_KEYS.has(fileKey) && Array.isArray(file);
      const files: unknown[] = several ? (file as unknown[]) : [file];
      if (files.length === 0 || !files.every((f) => typeof f === 'string' && f !== ''))
        throw new TlsFileError(
          `${at}.${fileKey}`,
          LIST_KEYS.has(fileKey)
            ? 'expected a file path or a non-empty array of them'
            : 'expected a file path',
        );
      if (block[option] !== undefined)
        throw new TlsFileError(`${at}.${fileKey}`, `give either ${fileKey} or ${option}, not both`);
      const texts = (files as string[]).map((name, i) => {
        const full = resolve(base, name);
        const where = several ? `${at}.${fileKey}[${i}]` : `${at}.${fileKey}`;
        let text: string;
        try {
          text = readFileSync(full, 'utf8');
        } catch (err) {
          throw new TlsFileError(where, `cannot read ${full}: ${thrownMessage(err)}`);
        }
        digest.update(`${where}\0${text}\0`);
        return text;
      });
      out[option] = several ? texts : texts[0];
    }
    return out;
  };
  const next: Record<string, unknown> = { ...entry };
  if (entry.tls !== undefined) next.tls = read(entry.tls, `${path}.tls`);
  if (entry.terminateTls !== undefined) {
    const terminate = read(entry.terminateTls, `${path}.terminateTls`);
    if (isRecord(terminate) && Array.isArray(terminate.certificates)) {
      terminate.certificates = terminate.certificates.map((certificate: unknown, i) =>
        read(certificate, `${path}.terminateTls.certificates[${i}]`),
      );
    }
    if (isRecord(terminate)) ticketKeysOf(terminate, base, `${path}.terminateTls`, digest);
    next.terminateTls = terminate;
  }
  // An upstream's own `tls` (its CA, or a client certificate for it alone) takes files too.
  if (upstreams !== undefined && upstreamTls === true)
    next.upstreams = upstreams.map((upstream, i) =>
      isRecord(upstream) && isRecord(upstream.tls)
        ? { ...upstream, tls: read(upstream.tls, `${path}.upstreams[${i}].tls`) }
        : upstream,
    );
  return { entry: next, raw: { ...entry, $tlsFiles: digest.digest('hex') } };
}

/**
 * A `terminateTls` block's `ticketKeyFiles` read into the library's `ticketKeys` (in place).
 * Keys never sit in the config file itself: a `ticketKeys` there is refused.
 */
function ticketKeysOf(
  terminate: Record<string, unknown>,
  base: string,
  at: string,
  digest: Hash,
): void {
  if (terminate.ticketKeys !== undefined)
    throw new TlsFileError(
      `${at}.ticketKeys`,
      'keys are not written in the config file: give them as files, "ticketKeyFiles": ["current.key", "previous.key"]',
    );
  const files = terminate.ticketKeyFiles;
  if (files === undefined) return;
  delete terminate.ticketKeyFiles;
  try {
    terminate.ticketKeys = readTicketKeyFiles(files, base, `${at}.ticketKeyFiles`, (text) => {
      digest.update(text);
    });
  } catch (err) {
    if (err instanceof TicketKeyFileError) throw new TlsFileError(err.path, err.message);
    throw err;
  }
}

/**
 * The files behind a TLS option the library refused as a whole (`terminateTls`,
 * `terminateTls.certificates[1]`, `tls`: a key that does not match its certificate, a file that is
 * not PEM): `certFile "api.pem", keyFile "api.key"`, or undefined when the block names no file.
 * The library cannot show the PEM it refused (it may be a secret key); the file names are safe.
 */
export function tlsFilesOf(
  entry: Readonly<Record<string, unknown>>,
  option: string,
): string | undefined {
  const block = blockAt(entry, option);
  if (!isRecord(block)) return undefined;
  const named = FILE_KEYS.flatMap(([fileKey]) => {
    const file = block[fileKey];
    return typeof file === 'string' || Array.isArray(file)
      ? [`${fileKey} ${JSON.stringify(file)}`]
      : [];
  });
  return named.length > 0 ? named.join(', ') : undefined;
}

/** The library's name of each option a config file may give as files instead. */
const FILE_OF: ReadonlyMap<string, string> = new Map([
  ...FILE_KEYS.map(([fileKey, option]) => [option, fileKey] as const),
  ['ticketKeys', 'ticketKeyFiles'],
]);

/**
 * A library error about a TLS block's PEM option told in the config file's words: `…tls.key`
 * is `…tls.keyFile` where the entry names a file for it (in the option and in the message), and
 * a TLS block's list of known options shows the file keys a config file takes beside the PEM
 * ones, so that a misspelt `caFlie` gets its "did you mean".
 */
export function tlsFileWords(
  entry: Readonly<Record<string, unknown>>,
  option: string,
  expected: string,
): { option: string; expected: string } {
  const at = option.lastIndexOf('.');
  const parentPath = at < 0 ? '' : option.slice(0, at);
  const key = option.slice(at + 1);
  const parent = at < 0 ? entry : blockAt(entry, parentPath);
  if (!isRecord(parent)) return { option, expected };
  let words = expected;
  for (const [pem, fileKey] of FILE_OF)
    if (parent[fileKey] !== undefined)
      words = words.replaceAll(`'${parentPath}.${pem}'`, `'${parentPath}.${fileKey}'`);
  const fileKey = FILE_OF.get(key);
  if (fileKey !== undefined && parent[fileKey] !== undefined) {
    words = words.replace(/, received "keys"$/, `, received ${JSON.stringify(parent[fileKey])}`);
    return { option: `${parentPath}.${fileKey}`, expected: words };
  }
  const list = KNOWN_OPTIONS_PHRASE.exec(words)?.[1]?.split(', ');
  if (list?.includes('cert') === true && list.includes('key')) {
    const keys = [...list, ...FILE_KEYS.map(([file]) => file)].filter(
      (name) => name !== 'ticketKeys',
    );
    if (list.includes('ticketKeys')) keys.push('ticketKeyFiles');
    words = words.replace(KNOWN_OPTIONS_PHRASE, knownKeys(key, keys, 'options'));
  }
  return { option, expected: words };
}

/** The value at a dotted path with `[i]` steps (`terminateTls.certificates[0]`) in `entry`. */
function blockAt(entry: Readonly<Record<string, unknown>>, path: string): unknown {
  let block: unknown = entry;
  for (const step of path.match(/[^.[\]]+/g) ?? [])
    block =
      isRecord(block) || Array.isArray(block)
        ? (block as Record<string, unknown>)[step]
        : undefined;
  return block;
}
