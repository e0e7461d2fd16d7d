import { hasMethods, loadOnce, nodeBinding } from '../internal/nodeBinding.js';

/**
 * libuv's UDP handle (`udp_wrap`'s `UDP`) and its send request, as `UpstreamLink` uses them: the
 * socket under every `dgram.Socket`, without the per-socket state, lookups and ticks a
 * `dgram.Socket` adds (docs/performance.md, session 6). Reached through `process.binding`; where
 * it is missing, {@link udpBindings} returns null and links use `dgram`.
 */
export interface UdpHandle {
  /** The socket's descriptor (-1 on platforms without one). */
  readonly fd?: number;
  onmessage: (
    this: UdpHandle,
    nread: number,
    handle: UdpHandle,
    buffer: Buffer | undefined,
  ) => void;
  connect(address: string, port: number): number;
  connect6(address: string, port: number): number;
  /** Connected form; returns ≥ 1 when sent at once, 0 when pending (`oncomplete`), < 0 on error. */
  send(request: UdpSendRequest, list: Buffer[], count: number, hasCallback: boolean): number;
  /** To `address`:`port` (`send6` on a `udp6` socket's handle, which `dgram` installs as `send`). */
  send(
    request: UdpSendRequest,
    list: Buffer[],
    count: number,
    port: number,
    address: string,
    hasCallback: boolean,
  ): number;
  recvStart(): number;
  recvStop(): number;
  close(): void;
}

/** A send request: `oncomplete(status)` runs for a send that did not complete at once. */
export interface UdpSendRequest {
  list: Buffer[];
  oncomplete: (this: UdpSendRequest, status: number) => void;
}

interface UdpBindings {
  readonly UDP: new () => UdpHandle;
  readonly SendWrap: new () => UdpSendRequest;
}

/** The UDP handle bindings, or null where they cannot be had (`dgram` is used then). */
export const udpBindings: () => UdpBindings | null = loadOnce(loadBindings);

function loadBindings(): UdpBindings | null {
  const udp = nodeBinding('udp_wrap');
  if (udp === null) return null;
  const { UDP, SendWrap } = udp;
  if (typeof SendWrap !== 'function') return null;
  if (!hasMethods(UDP, ['connect', 'connect6', 'send', 'recvStart', 'recvStop', 'close']))
    return null;
  return {
    UDP: UDP as UdpBindings['UDP'],
    SendWrap: SendWrap as UdpBindings['SendWrap'],
  };
}

/** Who hears of a send that did not complete at once (`status` < 0 on failure). */
export interface SendOwner {
  handleSent(status: number): void;
}

const kOwner = Symbol('l4proxy.sendOwner');

interface OwnedSendRequest extends UdpSendRequest {
  [kOwner]: SendOwner | undefined;
}

const NO_BUFFERS: Buffer[] = [];

/** The request object the next send uses; see {@link sendDatagram}. */
let spare: OwnedSendRequest | undefined;

/**
 * Sends `list` on a bare UDP handle: connected, or to `address`:`port`. Returns the binding's
 * result: ≥ 1 sent at once, 0 pending (`owner.handleSent` follows), < 0 an error.
 *
 * A send that completes at once, the usual case, leaves its request object untouched (Node ties
 * a request to the object only for a send libuv has to queue), so one object serves every such
 * send instead of a new native-backed object per datagram. A pending send keeps its object, with
 * its buffers and owner, until it completes; the next send gets a new one.
 */
export function sendDatagram(
  handle: UdpHandle,
  list: Buffer[],
  owner: SendOwner,
  port?: number,
  address?: string,
): number {
  const request = spare ?? newSendRequest();
  request.list = list;
  request[kOwner] = owner;
  const result =
    address === undefined
      ? handle.send(request, list, list.length, true)
      : handle.send(request, list, list.length, port as number, address, true);
  if (result >= 1) {
    request.list = NO_BUFFERS;
    request[kOwner] = undefined;
    spare = request;
  } else spare = undefined;
  return result;
}

function newSendRequest(): OwnedSendRequest {
  const request = new (udpBindings() as UdpBindings).SendWrap() as OwnedSendRequest;
  request.oncomplete = onSendComplete;
  request[kOwner] = undefined;
  return request;
}

function onSendComplete(this: UdpSendRequest, status: number): void {
  (this as OwnedSendRequest)[kOwner]?.handleSent(status);
}

let stateSymbol: symbol | null | undefined;

/**
 * The UDP handle under a bound `dgram.Socket` (its private state, found by the symbol's
 * description), or undefined where that cannot be had: the caller then uses the socket.
 */
export function dgramHandle(socket: object): UdpHandle | undefined {
  const bindings = udpBindings();
  if (bindings === null) return undefined;
  if (stateSymbol === undefined)
    stateSymbol =
      Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol') ?? null;
  if (stateSymbol === null) return undefined;
  const state = (socket as Record<symbol, { handle?: unknown } | undefined>)[stateSymbol];
  const handle = state?.handle;
  return handle instanceof bindings.UDP ? handle : undefined;
}
