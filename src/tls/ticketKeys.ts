import { randomBytes, randomFillSync } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import { InvalidOptionError } from '../errors.js';

/**
 * Bytes of one session ticket key, laid out as Node's `ticketKeys` takes it: a 16-byte name (sent
 * in clear at the head of every ticket, so a server finds the key), a 16-byte HMAC-SHA256 secret
 * and a 16-byte AES-128-CBC key.
 */
export const TICKET_KEY_BYTES = 48;

/** Most keys one set holds: the first encrypts, every one decrypts (looked up by name). */
export const MAX_TICKET_KEYS = 16;

/**
 * A validated copy of a list of ticket keys (`terminateTls.ticketKeys`): 1 to
 * {@link MAX_TICKET_KEYS} buffers of 48 bytes with distinct names. Copied, so that the caller
 * changing or zeroing its buffers later does not change the keys in force.
 * @throws {InvalidOptionError} naming `name`; never showing key bytes.
 */
export function ticketKeyList(value: unknown, name: string): Buffer[] {
  const expected = `an array of 1 to ${MAX_TICKET_KEYS} Buffers of ${TICKET_KEY_BYTES} bytes (16 name, 16 HMAC secret, 16 AES key)`;
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_TICKET_KEYS)
    throw new InvalidOptionError(name, expected, value);
  const names = new Set<string>();
  return value.map((key: unknown, i) => {
    if (!(key instanceof Uint8Array) || key.byteLength !== TICKET_KEY_BYTES)
      throw new InvalidOptionError(
        `${name}[${i}]`,
        `a Buffer of ${TICKET_KEY_BYTES} bytes`,
        // The size only: a key, even a wrong one, is a secret.
        key instanceof Uint8Array ? `${key.byteLength} bytes` : key,
      );
    const copy = Buffer.from(key);
    const keyName = copy.subarray(0, 16).toString('hex');
    if (names.has(keyName))
      throw new InvalidOptionError(
        `${name}[${i}]`,
        'a key whose name (its first 16 bytes) no other key has',
        'a repeated name',
      );
    names.add(keyName);
    return copy;
  });
}

/** A fresh random ticket key (name, HMAC secret and AES key all random). */
export function randomTicketKey(): Buffer {
  return randomBytes(TICKET_KEY_BYTES);
}

/** What OpenSSL gets back from Node's ticket key callback: `[result, hmac, aes, name?, iv?]`. */
type TicketKeyAnswer = [number, Buffer, Buffer, Buffer?, Buffer?];

/** Node's `SecureContext` handle, the members of it used here (internal, checked before use). */
interface NativeContext {
  enableTicketKeyCallback?: () => void;
  setTicketKeys?: (keys: Buffer) => void;
  onticketkeycallback?: (name: Buffer, iv: Buffer, encrypt: boolean) => TicketKeyAnswer;
}

/** Handed back for a name no key has: OpenSSL ignores the keys, Node insists on their size. */
const NO_KEY = Buffer.alloc(16);

/**
 * The answer that issues no ticket: Node reads a name and an IV of 16 bytes from every answer to
 * an encryption, whatever its result, and aborts the process (a failed `Buffer::Length` check)
 * when they are missing.
 */
const NO_TICKET: TicketKeyAnswer = [0, NO_KEY, NO_KEY, NO_KEY, NO_KEY];

/** The answer for a ticket no key reads: a full handshake. */
const NOT_FOUND: TicketKeyAnswer = [0, NO_KEY, NO_KEY];

/**
 * Random bytes for ticket IVs, filled 4 KiB at once: one `randomFillSync` call costs ~12 µs
 * whatever its size (Node 20, OpenSSL 3.0), a slice of the pool ~0.1 µs. An IV is sent in clear
 * in its ticket; it only has to be unpredictable and used once, and Node copies it at once.
 */
const ivPool = Buffer.allocUnsafe(4096);
let ivOffset = ivPool.length;

function nextIv(): Buffer {
  if (ivOffset === ivPool.length) {
    randomFillSync(ivPool);
    ivOffset = 0;
  }
  ivOffset += 16;
  return ivPool.subarray(ivOffset - 16, ivOffset);
}

/**
 * A set of session ticket keys in force, shared by the TLS contexts that use it and replaced at
 * run time ({@link set}): the first key encrypts new tickets, every key decrypts (nginx's
 * `ssl_session_ticket_key` list, Envoy's `session_ticket_keys`). A ticket under another key than
 * the first is accepted and replaced by one under the first (OpenSSL's renewal), so clients move
 * to the current key as they come back. Keys replaced are zeroed: a ticket under them can no
 * longer be read from this process (forward secrecy is why keys rotate).
 */
export class TicketKeyRing {
  private keys: Buffer[];
  /** Whether a context was ever given these keys (a termination uses them). */
  private attached = false;
  /** Contexts given only the first key (a Node without the callback), set again on a change. */
  private readonly fixed = new Set<WeakRef<NativeContext>>();

  /** @param keys validated copies ({@link ticketKeyList}); owned (zeroed when replaced). */
  constructor(keys: Buffer[]) {
    this.keys = keys;
  }

  /** Whether some TLS context has used these keys (metrics show them from then on). */
  get used(): boolean {
    return this.attached;
  }

  /** How many keys decrypt now. */
  get size(): number {
    return this.keys.length;
  }

  /** Copies of the keys in force, first (encrypting) first. */
  list(): Buffer[] {
    return this.keys.map((key) => Buffer.from(key));
  }

  /**
   * Replaces the keys (validated copies): handshakes from now on use them. Tickets under a key
   * not in `keys` get a full handshake.
   */
  set(keys: Buffer[]): void {
    const old = this.keys;
    this.keys = keys;
    for (const key of old) key.fill(0);
    const first = keys[0];
    if (first === undefined) return;
    for (const ref of this.fixed) {
      const native = ref.deref();
      if (native === undefined) this.fixed.delete(ref);
      else native.setTicketKeys?.(first);
    }
  }

  /**
   * Makes `context` encrypt and decrypt tickets with this ring's keys. Only the context a
   * handshake starts with matters: Node serves an SNI-chosen certificate by copying it into the
   * connection, which keeps its first context (and that context's ticket keys).
   */
  attach(context: SecureContext, lookup: () => TicketKeyRing = () => this): void {
    const native = context.context as NativeContext;
    this.attached = true;
    if (typeof native.enableTicketKeyCallback === 'function') {
      native.onticketkeycallback = (name, _iv, encrypt) => lookup().answer(name, encrypt);
      native.enableTicketKeyCallback();
      return;
    }
    // No callback on this Node: the first key only, for both ways (tickets under an older key
    // get a full handshake after a rotation); docs/tls.md says so.
    const first = this.keys[0];
    if (first !== undefined && typeof native.setTicketKeys === 'function') {
      native.setTicketKeys(first);
      this.fixed.add(new WeakRef(native));
    }
  }

  /**
   * Node's ticket key callback, called by OpenSSL for every ticket issued (`encrypt`) and every
   * ticket a client offers: the first key's secrets and a fresh IV to encrypt; to decrypt, the
   * secrets of the key the ticket names (1), of an older key (2: accepted, and a new ticket is
   * issued under the first), or none (0: a full handshake). It must not throw: the exception would
   * be uncaught, in the middle of OpenSSL's handshake.
   */
  answer(name: Buffer, encrypt: boolean): TicketKeyAnswer {
    try {
      if (encrypt) {
        const key = this.keys[0];
        // No key (yet): 0 issues no ticket, the handshake goes on.
        if (key === undefined) return NO_TICKET;
        return [1, key.subarray(16, 32), key.subarray(32, 48), key.subarray(0, 16), nextIv()];
      }
      const index = this.keys.findIndex((key) => key.subarray(0, 16).equals(name));
      const key = this.keys[index];
      if (key === undefined) return NOT_FOUND;
      return [index === 0 ? 1 : 2, key.subarray(16, 32), key.subarray(32, 48)];
    } catch {
      return encrypt ? NO_TICKET : NOT_FOUND;
    }
  }
}

/**
 * The ring a termination's contexts read their keys from, switchable: a proxy built on a shared
 * ring (runWorkers', the CLI's) that is given keys of its own (`setTicketKeys`) stops following
 * the shared one, while its contexts stay as built.
 */
export class TicketKeySource {
  constructor(
    private current: TicketKeyRing,
    /** Whether `current` is shared with other proxies (it is then never changed from here). */
    private shared: boolean,
  ) {}

  /** Makes `context` take its ticket keys from this source. */
  attach(context: SecureContext): void {
    this.current.attach(context, () => this.current);
  }

  /** Keys of this proxy's own from now on (validated copies); `contexts` are attached again. */
  replace(keys: Buffer[], contexts: readonly SecureContext[]): void {
    if (!this.shared) {
      this.current.set(keys);
      return;
    }
    this.current = new TicketKeyRing(keys);
    this.shared = false;
    // A Node with the callback reads `current` at each handshake; one without needs the key set.
    for (const context of contexts) this.attach(context);
  }
}
