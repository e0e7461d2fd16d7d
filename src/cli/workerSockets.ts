/*
 * The listening sockets a binary upgrade (SIGUSR2) hands from one generation of `--workers` to the
 * next. The old primary gathers them: each worker sends the sockets it owns (on Node >= 22.12 a
 * SO_REUSEPORT socket per listener and per worker; a UDP socket cluster shares), and the
 * primary adds the ones cluster's round robin listens on in the primary itself (Node 20's TCP,
 * a listener on port 0), found through the `net.server.listen` diagnostics channel. They travel
 * as handles over IPC (the descriptors arrive close-on-exec, so no later child inherits them by
 * accident) to the new primary, which keeps a copy of each for the life of its generation (a
 * replaced worker gets them again) and gives each new worker the old worker's of the same slot,
 * and the shared ones to all. A worker adopts a handle in its own process: no queue is closed,
 * so no connection waiting in one is reset (closing one of several SO_REUSEPORT sockets would).
 */
import cluster from 'node:cluster';
import type { Worker } from 'node:cluster';
import { roundRobinGuard } from '../cluster/roundRobinGuard.js';
import { formatHostPort } from './address.js';
import { askParent } from './askParent.js';

/** A listening socket on its way to the next generation. */
export interface HandedSocket {
  /** The listener's key (`tcp 127.0.0.1:8080`, see `Listener.handOverKey`). */
  readonly key: string;
  /** The worker slot that owned it (a SO_REUSEPORT socket); undefined: every worker shares it. */
  readonly slot: number | undefined;
  /** A TCP or UDP handle of Node's (`net.Native`, `dgram.Native` over IPC). */
  readonly handle: SocketHandle;
}

/** The part of Node's TCP and UDP handles used here. */
export interface SocketHandle {
  readonly fd?: number;
  close(): void;
  getsockname?(out: Record<string, unknown>): number;
}

/** What a worker says of one listener's socket when asked to hand over. */
export interface OfferedSocket {
  readonly key: string;
  /** Shared by every worker (cluster's socket, or one handed over as shared). */
  readonly shared: boolean;
  /** The bound address (`127.0.0.1:8080`): finds cluster's round-robin socket in the primary. */
  readonly address: string;
}

/** The environment variable telling a worker to ask the primary for its sockets first. */
export const WORKER_SOCKETS_ENV = 'L4PROXY_WORKER_SOCKETS';

/** How long a worker waits for its sockets from the primary. */
const SOCKETS_TIMEOUT_MS = 10_000;

/**
 * The listening handles cluster's round robin opened in this (primary) process, by bound
 * address: cluster keeps them out of reach, the diagnostics channel names each as it listens.
 */
export class ClusterListeners {
  private readonly handles = new Map<string, SocketHandle>();
  private readonly guard = roundRobinGuard();

  constructor() {
    // Round robin's handle is the one whose `onconnection` is set again once it listens (to hand
    // connections out): the guard finds it (and bounds what it queues here).
    this.guard.listening((handle, address) => {
      if (typeof address === 'object')
        this.handles.set(formatHostPort(address.address, address.port), handle as SocketHandle);
    });
  }

  /** Follows `worker`'s hand-offs (see roundRobinGuard.ts). */
  watch(worker: Worker): void {
    this.guard.watch(worker);
  }

  /**
   * Resolves once every connection round robin accepted here went to a worker (or was closed),
   * or after `ms`. Round robin closes those still queued when the last worker stops listening:
   * an upgrade waits for the queue to empty before the old workers drain.
   */
  whenDelivered(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      void this.guard.whenIdle().then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** The open round-robin handle listening on `address`, if any. */
  find(address: string): SocketHandle | undefined {
    const handle = this.handles.get(address);
    if (handle === undefined || !((handle.fd ?? -1) >= 0)) return undefined;
    return handle;
  }

  /** Whether `handle` is one of cluster's (closed by {@link stopAccepting}, never as a copy). */
  owns(handle: SocketHandle): boolean {
    for (const own of this.handles.values()) if (own === handle) return true;
    return false;
  }

  /**
   * Closes every round-robin handle still open: this primary stops accepting (the next
   * generation holds the sockets). Connections it accepted already reach the old workers.
   */
  stopAccepting(): void {
    for (const handle of this.handles.values()) if ((handle.fd ?? -1) >= 0) handle.close();
    this.handles.clear();
  }
}

/** In a worker: the sockets the primary handed it, by key, not yet adopted. */
const received = new Map<string, { handle: SocketHandle; shared: boolean }>();

/**
 * In a worker started with {@link WORKER_SOCKETS_ENV}: asks the primary for the sockets of its
 * slot and waits (bounded) until they came. Without it, resolves at once.
 */
export async function receiveWorkerSockets(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const expected = env[WORKER_SOCKETS_ENV];
  delete env.L4PROXY_WORKER_SOCKETS;
  if (expected === undefined || !cluster.isWorker) return;
  // The primary gone: nothing more comes (and the start stops at once, see signals.ts).
  await askParent(
    { type: 'l4proxy:want-sockets' },
    (message, handle) => {
      const m = message as { type?: unknown; key?: unknown; shared?: unknown } | null;
      if (m?.type === 'l4proxy:sockets-end') return true;
      if (m?.type === 'l4proxy:socket' && typeof m.key === 'string' && isHandle(handle))
        received.set(m.key, { handle, shared: m.shared === true });
      return false;
    },
    SOCKETS_TIMEOUT_MS,
  );
}

/** The handle the primary handed this worker for the listener `key`, taken; undefined if none. */
export function claimWorkerSocket(
  key: string,
): { handle: SocketHandle; shared: boolean } | undefined {
  const socket = received.get(key);
  received.delete(key);
  return socket;
}

/** Closes the handed sockets no listener took (listeners the new config dropped). */
export function closeUnclaimedWorkerSockets(): string[] {
  const keys = [...received.keys()];
  for (const { handle } of received.values()) handle.close();
  received.clear();
  return keys;
}

/** Whether `value` looks like one of Node's handles (what IPC hands over). */
export function isHandle(value: unknown): value is SocketHandle {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { close?: unknown }).close === 'function'
  );
}

/** The sockets one worker slot of the new generation adopts: its own, and the shared ones. */
export function socketsForSlot(sockets: readonly HandedSocket[], slot: number): HandedSocket[] {
  return sockets.filter((socket) => socket.slot === undefined || socket.slot === slot);
}
