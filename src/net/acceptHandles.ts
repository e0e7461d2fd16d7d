import type { Server } from 'node:net';
import { handleBindings } from './HandleSocket.js';
import type { TcpHandle } from './HandleSocket.js';

type OnConnection = (this: unknown, status: number, client: unknown) => void;

/**
 * Hands each TCP connection `server` accepts to `adopt` before `net.Server` builds a
 * `net.Socket` for it; a connection `adopt` declines (returns false) takes Node's own path, with
 * its 'connection' event. Works for a listener of its own and for a `node:cluster` worker's
 * (both call the listening handle's `onconnection`). Returns false, changing nothing, when the
 * server has no such handle or Node's handle bindings are unavailable.
 */
export function acceptHandles(server: Server, adopt: (handle: TcpHandle) => boolean): boolean {
  const bindings = handleBindings();
  const listening = (server as unknown as { _handle?: { onconnection?: unknown } | null })._handle;
  if (bindings === null || typeof listening?.onconnection !== 'function') return false;
  const nodeOnConnection = listening.onconnection as OnConnection;
  listening.onconnection = function onConnection(this: unknown, status: number, client: unknown) {
    if (status === 0 && client instanceof bindings.TCP && adopt(client)) return;
    nodeOnConnection.call(this, status, client);
  };
  return true;
}
