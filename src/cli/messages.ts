import type { RelayedAdminReply, RelayedAdminRequest } from '../admin/relayedRequest.js';
import type { ListenerStats } from './Listener.js';
import type { TunnelListenerStats } from './tunnelListeners.js';
import type { TicketKeysMessage } from './ticketKeys.js';
import type { OfferedSocket } from './workerSockets.js';

/** Messages the cluster primary sends a worker over IPC. */
export type PrimaryMessage =
  | { readonly type: 'l4proxy:drain' }
  | { readonly type: 'l4proxy:reload' }
  | { readonly type: 'l4proxy:stats'; readonly id: number }
  | { readonly type: 'l4proxy:admin'; readonly id: number; readonly request: RelayedAdminRequest }
  /** A second stop signal: cut what is still open, write its access lines, exit. */
  | { readonly type: 'l4proxy:exit' }
  /** The TLS session ticket keys in force (at a worker's ready, after each rotation). */
  | TicketKeysMessage
  /** An upgrade (SIGUSR2) gathers the listening sockets: send yours (`l4proxy:offer`). */
  | { readonly type: 'l4proxy:handover'; readonly id: number }
  /** One socket of this worker's slot (with its handle), after `l4proxy:want-sockets`. */
  | { readonly type: 'l4proxy:socket'; readonly key: string; readonly shared: boolean }
  /** Every socket of this worker's slot was sent. */
  | { readonly type: 'l4proxy:sockets-end' };

/** Messages a worker sends the primary over IPC. */
export type WorkerMessage =
  | {
      readonly type: 'l4proxy:ready';
      readonly addresses: readonly { name: string; address: string }[];
    }
  /** Every listener with `dns` has had its first answer (or failure): sent once, after ready. */
  | { readonly type: 'l4proxy:warm' }
  | {
      readonly type: 'l4proxy:stats';
      readonly id: number;
      readonly stats: readonly ListenerStats[];
      /** The worker's tunnel listeners (`"protocol": "tunnel"`), for the primary's metrics. */
      readonly tunnels?: readonly TunnelListenerStats[];
    }
  | { readonly type: 'l4proxy:admin'; readonly id: number; readonly reply: RelayedAdminReply }
  /** A worker of an upgraded generation asks for the sockets of its slot. */
  | { readonly type: 'l4proxy:want-sockets' }
  /** One listener's socket, with its handle when this worker holds one (`l4proxy:handover`). */
  | { readonly type: 'l4proxy:offer'; readonly id: number; readonly socket: OfferedSocket }
  /** Every socket of this worker was offered. */
  | { readonly type: 'l4proxy:offered'; readonly id: number };

function isOurs(value: unknown): value is { type: string } {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { type?: unknown }).type === 'string' &&
    (value as { type: string }).type.startsWith('l4proxy:')
  );
}

/** Whether an IPC message to a worker is one of ours (cluster and users may send others). */
export function isPrimaryMessage(value: unknown): value is PrimaryMessage {
  return isOurs(value);
}

/** Whether an IPC message from a worker is one of ours. */
export function isWorkerMessage(value: unknown): value is WorkerMessage {
  return isOurs(value);
}
