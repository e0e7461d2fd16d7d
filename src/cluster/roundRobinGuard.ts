/*
 * Node's cluster round robin (SCHED_RR: the default on Linux before Node 22.12's `reusePort`, and
 * for a TCP listener on port 0 after) accepts every connection in the primary, appends it to an
 * unbounded queue, and hands one at a time to each worker over IPC, closing its own copy only
 * when the worker acknowledges it (lib/internal/cluster/round_robin_handle.js). Two things go
 * wrong under a flood:
 *
 * - A worker at its open-files limit cannot receive the descriptor (the kernel truncates the
 *   SCM_RIGHTS message, MSG_CTRUNC): it answers NODE_HANDLE_NACK and drops cluster's `newconn`
 *   message unseen. For a raw TCP handle Node neither retransmits nor calls back, so round robin
 *   waits for an acknowledgement that never comes: that worker is never given another connection
 *   on that listener, and the connection's copy stays open in the primary. Once every worker has
 *   lost one, the primary queues every new connection for ever (CLOSE-WAIT as clients give up)
 *   until it runs out of descriptors itself: its admin API and metrics stop accepting too.
 * - Even with workers answering, a burst faster than the IPC hand-off holds one descriptor per
 *   queued connection in the primary, without bound.
 *
 * The guard answers the lost acknowledgement itself (the connection goes back to the queue for
 * another worker once, then is reset), and bounds what the primary holds: past the bound a new
 * connection is reset at once and counted, as a worker's `maxConnections` refuses. Node offers no
 * way to pause a listening handle's accepts from JavaScript (HAProxy's `maxconn` on a frontend
 * leaves clients in the kernel's backlog instead); the bound is set well above what a healthy
 * hand-off queues, so only a flood the workers cannot take meets it.
 */
import type { ChildProcess } from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { descriptorBudget, openFilesLimit } from '../internal/descriptorBudget.js';

/** Why the primary refused a connection round robin accepted. */
export type RoundRobinRefusal = 'queue_full' | 'no_descriptor';

/** What the primary's round robin holds and refused, for stats and metrics. */
export interface RoundRobinStats {
  /** Listening sockets round robin serves from this process. */
  readonly listeners: number;
  /** Connections accepted here and not yet taken by a worker (queued or on their way). */
  readonly queued: number;
  /** The most it holds at once before resetting new connections. */
  readonly limit: number;
  /** Connections reset here: the queue full, or no worker could receive the descriptor. */
  readonly refused: Readonly<Record<RoundRobinRefusal, number>>;
  /** Hand-offs a worker could not receive (NODE_HANDLE_NACK), answered here. */
  readonly lostHandoffs: number;
}

/** The part of Node's TCP handles used here. */
interface ClientHandle {
  close(callback?: () => void): void;
  reset?(callback?: () => void): number;
}

/** A listening handle of round robin's, as it connects. */
type OnConnection = (status: number, client: ClientHandle | undefined) => unknown;

/** A message with a handle, written to a worker and not yet acknowledged. */
interface InFlight {
  readonly message: unknown;
  readonly handle: unknown;
  /** NACKs so far: Node sends a `net.Socket` again, up to 3 times (a raw handle: never). */
  nacks: number;
}

/** Times Node sends a `net.Socket` again after a NACK (child_process's MAX_HANDLE_RETRANSMISSIONS). */
const SOCKET_RETRANSMISSIONS = 3;
/** Hand-offs one connection may lose before it is reset rather than queued again. */
const MAX_LOST_HANDOFFS = 2;
/**
 * Never more than this queued, whatever the open-files limit: what Linux's own accept backlog
 * holds at most by default (`net.core.somaxconn`, 4096 since 5.4).
 */
const MAX_QUEUED = 4096;

/** Called with each of round robin's listening handles, once it listens here. */
export type RoundRobinListening = (handle: object, address: AddressInfo | string) => void;

/**
 * Bounds what cluster's round robin holds in this (primary) process and answers the hand-offs a
 * worker could not receive. One a process: see {@link roundRobinGuard}.
 */
export class RoundRobinGuard {
  private queued = 0;
  private listeners = 0;
  private readonly refused: Record<RoundRobinRefusal, number> = {
    queue_full: 0,
    no_descriptor: 0,
  };
  private lostHandoffs = 0;
  /** Connections round robin accepted here, by handle: the hand-offs each has lost. */
  private readonly lost = new WeakMap<object, number>();
  private readonly onListening: RoundRobinListening[] = [];
  private readonly onIdle: (() => void)[] = [];
  private readonly onRefused: ((reason: RoundRobinRefusal) => void)[] = [];

  constructor(readonly limit: number = defaultLimit()) {
    subscribe('tracing:net.server.listen:asyncEnd', (message) => {
      const server = (message as { server?: { _handle?: unknown; address?: () => unknown } })
        .server;
      const handle = server?._handle;
      const address = server?.address?.() as AddressInfo | string | null | undefined;
      if (typeof handle !== 'object' || handle === null || address == null) return;
      this.adopt(handle, address);
    });
  }

  /** Calls `listener` with each round-robin listening handle as round robin takes it over. */
  listening(listener: RoundRobinListening): void {
    this.onListening.push(listener);
  }

  /** Calls `listener` with the reason of each connection reset here. */
  refusals(listener: (reason: RoundRobinRefusal) => void): void {
    this.onRefused.push(listener);
  }

  /** Resolves once nothing is queued here (every accepted connection taken or closed). */
  whenIdle(): Promise<void> {
    if (this.queued === 0) return Promise.resolve();
    return new Promise((resolve) => this.onIdle.push(resolve));
  }

  /** What round robin holds here now, and what was refused since the start. */
  stats(): RoundRobinStats {
    return {
      listeners: this.listeners,
      queued: this.queued,
      limit: this.limit,
      refused: { ...this.refused },
      lostHandoffs: this.lostHandoffs,
    };
  }

  /**
   * Follows `worker`'s IPC channel: the messages with a handle written to it, in order, and its
   * acknowledgements, so that a hand-off it could not receive is answered here.
   */
  watch(worker: { readonly process: ChildProcess }): void {
    const child = worker.process;
    const pending: InFlight[] = [];
    const send = child.send.bind(child) as (...args: unknown[]) => boolean;
    // Handles are written one at a time, each acknowledged before the next (child_process's
    // _handleQueue): the acknowledgement that comes is for the oldest still pending.
    (child as { send: (...args: unknown[]) => boolean }).send = (...args: unknown[]) => {
      const [message, handle] = args;
      const connected = child.connected;
      const result = send(...args);
      if (connected && typeof handle === 'object' && handle !== null)
        pending.push({ message, handle, nacks: 0 });
      return result;
    };
    child.on('internalMessage', (message: unknown) => {
      const cmd = (message as { cmd?: unknown } | null)?.cmd;
      if (cmd !== 'NODE_HANDLE_ACK' && cmd !== 'NODE_HANDLE_NACK') return;
      const head = pending[0];
      if (head === undefined) return;
      // A net.Socket NACKed is sent again by Node: the next answer is for it still.
      if (cmd === 'NODE_HANDLE_NACK' && head.handle instanceof Socket)
        if (++head.nacks <= SOCKET_RETRANSMISSIONS) return;
      pending.shift();
      if (cmd === 'NODE_HANDLE_NACK') this.lostHandoff(child, head);
    });
    // A worker gone with hand-offs unanswered: Node keeps the primary's copy of a raw handle
    // open for ever (no answer comes to close it). Closed here; the worker's own copy, if it
    // got one, went with it.
    child.once('disconnect', () => {
      for (const { message, handle } of pending.splice(0))
        if ((message as { act?: unknown } | null)?.act === 'newconn')
          (handle as ClientHandle).close();
    });
  }

  /**
   * A worker could not receive `sent`: if it was round robin's `newconn`, answer it as the worker
   * would have: not accepted (round robin queues it for a worker again, and goes on handing this
   * worker connections), or, after MAX_LOST_HANDOFFS, accepted with the connection reset here.
   */
  private lostHandoff(child: ChildProcess, sent: InFlight): void {
    const message = sent.message as { cmd?: unknown; act?: unknown; seq?: unknown } | null;
    if (message?.cmd !== 'NODE_CLUSTER' || message.act !== 'newconn') return;
    if (typeof message.seq !== 'number') return;
    this.lostHandoffs++;
    const client = sent.handle as ClientHandle;
    const lost = (this.lost.get(client) ?? 0) + 1;
    this.lost.set(client, lost);
    const accepted = lost >= MAX_LOST_HANDOFFS;
    if (accepted) {
      this.refuse('no_descriptor');
      resetHandle(client);
    }
    // After child_process has handled the NACK (its listener comes first): cluster's own
    // listener finds the callback waiting for this sequence number and runs it.
    process.nextTick(() => {
      child.emit('internalMessage', { cmd: 'NODE_CLUSTER', ack: message.seq, accepted });
    });
  }

  /**
   * Round robin sets `onconnection` on its listening handle once it listens: the handler it sets
   * is wrapped so that every connection accepted here is counted until round robin closes it
   * (taken by a worker) and refused past the limit.
   */
  private adopt(handle: object, address: AddressInfo | string): void {
    let current = (handle as { onconnection?: unknown }).onconnection;
    Object.defineProperty(handle, 'onconnection', {
      configurable: true,
      get: () => current,
      set: (fn: unknown) => {
        if (typeof fn !== 'function') {
          current = fn;
          return;
        }
        this.listeners++;
        for (const listener of this.onListening) listener(handle, address);
        current = (status: number, client: ClientHandle | undefined) => {
          if (status !== 0 || client == null)
            return (fn as OnConnection).call(handle, status, client);
          if (this.queued >= this.limit) {
            this.refuse('queue_full');
            resetHandle(client);
            return undefined;
          }
          this.hold(client);
          return (fn as OnConnection).call(handle, status, client);
        };
      },
    });
  }

  private refuse(reason: RoundRobinRefusal): void {
    this.refused[reason]++;
    for (const listener of this.onRefused) listener(reason);
  }

  /** Counts `client` as queued until its handle is closed (by round robin, or here). */
  private hold(client: ClientHandle): void {
    this.queued++;
    const close = client.close.bind(client);
    let held = true;
    const release = (): void => {
      if (!held) return;
      held = false;
      this.queued--;
      if (this.queued === 0) for (const resolve of this.onIdle.splice(0)) resolve();
    };
    client.close = (callback?: () => void) => {
      release();
      close(callback);
    };
    const reset = client.reset?.bind(client);
    if (reset !== undefined)
      client.reset = (callback?: () => void) => {
        release();
        return reset(callback);
      };
  }
}

/** Resets `client` (a refusal the client can tell from a served connection), else closes it. */
function resetHandle(client: ClientHandle): void {
  const err = client.reset?.(() => undefined) ?? -1;
  if (err !== 0) client.close();
}

/** The open-files limit less what the primary keeps for itself, at most MAX_QUEUED. */
function defaultLimit(): number {
  const budget = descriptorBudget(openFilesLimit(), 1);
  return budget === undefined ? MAX_QUEUED : Math.max(1, Math.min(MAX_QUEUED, budget.perListener));
}

let guard: RoundRobinGuard | undefined;

/** The process's guard (one: the diagnostics channel and the handles are the process's). */
export function roundRobinGuard(): RoundRobinGuard {
  guard ??= new RoundRobinGuard();
  return guard;
}
