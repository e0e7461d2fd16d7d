import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { thrownMessage } from '../errors.js';
import { MAX_TICKET_KEYS, TICKET_KEY_BYTES } from '../tls/ticketKeys.js';

/**
 * Why a ticket key file was refused: the JSON path (`listeners[0].terminateTls.ticketKeyFiles[1]`)
 * and what was wrong. Never the key's bytes.
 */
export class TicketKeyFileError extends Error {
  constructor(
    readonly path: string,
    detail: string,
  ) {
    super(detail);
    this.name = 'TicketKeyFileError';
  }
}

/**
 * A key of nginx's `ssl_session_ticket_key` file format (48 bytes: 16 name, 16 AES key, 16 HMAC
 * secret) in Node's layout (16 name, 16 HMAC secret, 16 AES key): one file serves both.
 */
export function fromNginxTicketKey(file: Buffer): Buffer {
  return Buffer.concat([file.subarray(0, 16), file.subarray(32, 48), file.subarray(16, 32)]);
}

/**
 * `terminateTls.ticketKeyFiles` (paths relative to `base`, the first encrypting) read as
 * `terminateTls.ticketKeys`. `digest` is told each file's content, so that a SIGHUP finds new
 * keys a change.
 * @throws {TicketKeyFileError} naming the entry that cannot be read or is not a 48-byte key.
 */
export function readTicketKeyFiles(
  value: unknown,
  base: string,
  at: string,
  digest: (text: string) => void,
): Buffer[] {
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    value.length > MAX_TICKET_KEYS ||
    !value.every((file) => typeof file === 'string' && file !== '')
  )
    throw new TicketKeyFileError(
      at,
      `expected an array of 1 to ${MAX_TICKET_KEYS} key file paths, the first encrypting`,
    );
  const names = new Set<string>();
  return (value as string[]).map((file, i) => {
    const full = resolve(base, file);
    let bytes: Buffer;
    try {
      bytes = readFileSync(full);
    } catch (err) {
      throw new TicketKeyFileError(`${at}[${i}]`, `cannot read ${full}: ${thrownMessage(err)}`);
    }
    if (bytes.length !== TICKET_KEY_BYTES) {
      const why =
        bytes.length === 80
          ? ' (an 80-byte AES-256 key: Node encrypts tickets with AES-128 only)'
          : '';
      bytes.fill(0);
      throw new TicketKeyFileError(
        `${at}[${i}]`,
        `expected ${full} to hold a ${TICKET_KEY_BYTES}-byte key (openssl rand 48 > file), found ${bytes.length} bytes${why}`,
      );
    }
    // The name leads every ticket in clear: not a secret.
    const name = bytes.subarray(0, 16).toString('hex');
    if (names.has(name)) {
      bytes.fill(0);
      throw new TicketKeyFileError(
        `${at}[${i}]`,
        `expected a key of its own: ${full} holds a key named as an earlier one (the same file twice?)`,
      );
    }
    names.add(name);
    digest(`${at}[${i}]\0${bytes.toString('base64')}\0`);
    const key = fromNginxTicketKey(bytes);
    bytes.fill(0);
    return key;
  });
}
