/*
 * The CLI's own TLS session ticket keys (docs/tls.md, "Session tickets"): one set per service,
 * made by the process that runs alone (or the --workers primary), given to every worker in its
 * environment at fork and over IPC after each rotation, passed to the process a binary upgrade
 * (SIGUSR2) starts, and rotated every `ticketKeyRotation`. Every `terminateTls` without
 * `ticketKeyFiles` uses them, so a client resumes on any worker, across reloads and upgrades.
 */
import {
  decodeTicketKeys,
  takeTicketKeysFromEnv,
  TICKET_KEYS_ENV,
  useSharedTicketKeys,
} from '../tls/sharedTicketKeys.js';
import type { TicketKeyState } from '../tls/sharedTicketKeys.js';
import { randomTicketKey, TicketKeyRing } from '../tls/ticketKeys.js';
import { TicketKeyRotation } from '../tls/TicketKeyRotation.js';
import type { MetricFamily } from '../metrics/prometheus.js';

/** The keys of this CLI process. */
export interface CliTicketKeys {
  /** This process's keys (in a worker: its copy of the primary's). */
  readonly ring: TicketKeyRing;
  /** The lone process's or the primary's, which rotates them; undefined in a worker. */
  readonly rotation: TicketKeyRotation | undefined;
}

let keys: CliTicketKeys | undefined;

/**
 * Makes this process's keys and shares them with every termination built from now on: call it
 * before the config's proxies are built. A worker takes its primary's, a process started by an
 * upgrade those of the process it replaces (so their tickets stay valid), others make new ones.
 */
export function takeCliTicketKeys(isWorker: boolean): CliTicketKeys {
  const inherited = takeTicketKeysFromEnv();
  if (isWorker) {
    const ring = new TicketKeyRing(inherited?.keys ?? [randomTicketKey()]);
    keys = { ring, rotation: undefined };
  } else {
    const rotation = new TicketKeyRotation(inherited);
    keys = { ring: rotation.ring, rotation };
  }
  useSharedTicketKeys(keys.ring);
  return keys;
}

/** The keys {@link takeCliTicketKeys} made (made now, unshared with a worker's, if it was not). */
export function cliTicketKeys(): CliTicketKeys {
  return keys ?? takeCliTicketKeys(false);
}

/** The environment that passes the keys in force to a process this one starts. */
export function ticketKeysEnv(rotation: TicketKeyRotation): Record<string, string> {
  return { [TICKET_KEYS_ENV]: JSON.stringify(rotation.state()) };
}

/** The primary's message carrying `state` to its workers. */
export type TicketKeysMessage = { readonly type: 'l4proxy:ticket-keys' } & TicketKeyState;

/** In a worker: the primary's keys in force from now on (a message that is not valid is ignored). */
export function takeTicketKeysMessage(message: TicketKeysMessage): void {
  const state = decodeTicketKeys(message);
  if (state !== undefined) cliTicketKeys().ring.set(state.keys);
}

/**
 * The rotations and keys of the generated set, for `/metrics`: none until some termination uses
 * them (a service without TLS termination has no such series).
 */
export function ticketKeyFamilies(): MetricFamily[] {
  const own = keys;
  if (own?.rotation === undefined || !own.ring.used) return [];
  return [
    {
      name: 'l4proxy_tls_ticket_key_rotations_total',
      help: 'Rotations of the generated TLS session ticket keys (ticketKeyRotation).',
      type: 'counter',
      samples: [{ labels: {}, value: own.rotation.rotations }],
    },
    {
      name: 'l4proxy_tls_ticket_keys',
      help: 'Generated TLS session ticket keys that decrypt tickets now (the first encrypts).',
      type: 'gauge',
      samples: [{ labels: {}, value: own.ring.size }],
    },
  ];
}
