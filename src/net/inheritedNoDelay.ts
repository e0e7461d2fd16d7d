import net from 'node:net';
import type { Server, Socket } from 'node:net';

/**
 * TCP_NODELAY set once on a listening socket instead of once per accepted socket. Linux copies
 * the listener's TCP_NODELAY into every socket it accepts, so one setsockopt(2) at listen time
 * replaces one per connection. Node has no public API for either half: the listener's handle
 * takes the option like any TCP handle, and an accepted socket is told it already has it through
 * the same private field its own `setNoDelay()` keeps, so that a later `setNoDelay(true)` (the
 * relay's) costs nothing. Found by description and feature-detected; anything else gets the
 * per-connection call as before.
 */
let kSetNoDelay: symbol | null | undefined;

function setNoDelaySymbol(): symbol | null {
  if (kSetNoDelay !== undefined) return kSetNoDelay;
  kSetNoDelay =
    Object.getOwnPropertySymbols(new net.Socket()).find(
      (symbol) => symbol.description === 'kSetNoDelay',
    ) ?? null;
  return kSetNoDelay;
}

interface TcpHandle {
  readonly constructor: { readonly name: string };
  setNoDelay?: (enable: boolean) => number;
}

/**
 * Sets TCP_NODELAY on a listening TCP socket so accepted sockets inherit it. True when done (on
 * Linux, for a plain TCP listener whose handle lives in this process); false, changing nothing,
 * otherwise (Unix sockets, cluster round-robin workers, other systems).
 */
export function inheritNoDelay(server: Server): boolean {
  if (process.platform !== 'linux' || setNoDelaySymbol() === null) return false;
  const handle = (server as unknown as { _handle?: TcpHandle | null })._handle;
  if (handle?.constructor.name !== 'TCP' || typeof handle.setNoDelay !== 'function') return false;
  return handle.setNoDelay(true) === 0;
}

/** Records that an accepted socket already has TCP_NODELAY (inherited from its listener). */
export function markNoDelay(socket: Socket): void {
  const symbol = kSetNoDelay;
  if (symbol) (socket as unknown as Record<symbol, unknown>)[symbol] = true;
}

/**
 * Carries an accepted socket's inherited TCP_NODELAY to the TLS socket wrapped around it: both
 * stand for one kernel socket, so the relay's `setNoDelay(true)` on the TLS socket would be a
 * second setsockopt(2) per connection for an option already on.
 */
export function carryNoDelay(from: Socket, to: Socket): void {
  const symbol = kSetNoDelay;
  if (!symbol) return;
  if ((from as unknown as Record<symbol, unknown>)[symbol] === true)
    (to as unknown as Record<symbol, unknown>)[symbol] = true;
}
