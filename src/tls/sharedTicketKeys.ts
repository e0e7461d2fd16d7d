import { ticketKeyList, TicketKeyRing } from './ticketKeys.js';

/**
 * The ticket keys of this process that every TLS termination setting no `ticketKeys` of its own
 * uses: set in `runWorkers()`'s workers and by the CLI (the keys their primary, or the process
 * the CLI upgraded from, made), undefined elsewhere (Node's own random keys per context then).
 */
let shared: TicketKeyRing | undefined;

/** This process's shared ticket keys, if any. */
export function sharedTicketKeys(): TicketKeyRing | undefined {
  return shared;
}

/** Sets (or clears) this process's shared ticket keys; terminations built from now on use them. */
export function useSharedTicketKeys(ring: TicketKeyRing | undefined): void {
  shared = ring;
}

/** Ticket keys in transit (a worker's environment, an IPC message): base64, first encrypting. */
export interface TicketKeyState {
  readonly keys: readonly string[];
  /** When the keys are next rotated (ms since the epoch), by whoever rotates them. */
  readonly due: number;
}

/** `keys` as {@link TicketKeyState} carries them. */
export function encodeTicketKeys(keys: readonly Buffer[], due: number): TicketKeyState {
  return { keys: keys.map((key) => key.toString('base64')), due };
}

/**
 * The keys and due time of a {@link TicketKeyState} (parsed JSON, or a message), or undefined
 * when it is not one (the caller then makes keys of its own).
 */
export function decodeTicketKeys(value: unknown): { keys: Buffer[]; due: number } | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { keys, due } = value as { keys?: unknown; due?: unknown };
  if (!Array.isArray(keys) || typeof due !== 'number' || !Number.isFinite(due)) return undefined;
  if (!keys.every((key) => typeof key === 'string')) return undefined;
  try {
    return {
      keys: ticketKeyList(
        keys.map((key: string) => Buffer.from(key, 'base64')),
        'keys',
      ),
      due,
    };
  } catch {
    return undefined;
  }
}

/** The environment variable a process passes its ticket keys to one it starts in (JSON). */
export const TICKET_KEYS_ENV = 'L4PROXY_TICKET_KEYS';

/**
 * The ticket keys a parent process passed in {@link TICKET_KEYS_ENV}, if valid; the variable is
 * unset either way, so that a process this one starts never takes them for its own.
 */
export function takeTicketKeysFromEnv(
  env: NodeJS.ProcessEnv = process.env,
): { keys: Buffer[]; due: number } | undefined {
  const text = env.L4PROXY_TICKET_KEYS;
  delete env.L4PROXY_TICKET_KEYS;
  if (text === undefined) return undefined;
  try {
    return decodeTicketKeys(JSON.parse(text));
  } catch {
    return undefined;
  }
}
