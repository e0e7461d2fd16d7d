import dgram from 'node:dgram';
import type { Socket } from 'node:dgram';
import { lookup } from 'node:dns';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import { literalLookup4, literalLookup6 } from './literalLookup.js';
import type { SessionHost } from './SessionHost.js';
import { sendDatagram, udpBindings } from './udpHandle.js';
import type { UdpHandle } from './udpHandle.js';
import { uvError } from '../net/uvError.js';
import { ipFamily } from '../net/ipFamily.js';
import { bindDgramFrom, lookupFrom, sourceFor } from '../net/sourceAddress.js';

/** Where a link failed: setting up its socket, an 'error' event after setup, or one send. */
export type LinkFailure = 'setup' | 'receive' | 'send';

/** What a link reports to the session that owns it (internal seam). */
export interface LinkOwner {
  readonly host: SessionHost;
  /** A datagram arrived from the upstream. */
  fromUpstream(link: UpstreamLink, msg: Buffer): void;
  /** The socket could not be set up, reported an error, or a send failed. */
  linkFailed(link: UpstreamLink, error: Error, kind: LinkFailure): void;
  /** Datagrams waiting in the link's queue left it (sent or dropped). */
  unqueued(count: number): void;
  /** A datagram that had left the queue waits in it again: its send threw (see `send()`). */
  requeued(): void;
  /** A datagram from the link's queue could not be sent: `maxSendQueue` sends were pending. */
  sendQueueFull(size: number): void;
  /** A datagram could not be sent: with the PROXY header it exceeds the largest UDP payload. */
  oversized(size: number): void;
  /** The PROXY protocol v2 header to prepend to each datagram, when configured. */
  readonly proxyHeader: Buffer | undefined;
}

/**
 * The largest UDP payload over IPv4 (65 535 minus the IP and UDP headers) and IPv6 (minus the UDP
 * header only: the payload length field excludes the IPv6 header); larger sends fail (EMSGSIZE).
 */
const MAX_UDP4_PAYLOAD = 65_507;
const MAX_UDP6_PAYLOAD = 65_527;

/** The largest datagram that can be sent to `address` (an IPv4-mapped one travels as IPv4). */
export function maxPayloadTo(address: string): number {
  return address.includes(':') && !address.startsWith('::ffff:')
    ? MAX_UDP6_PAYLOAD
    : MAX_UDP4_PAYLOAD;
}

/**
 * Bytes a link keeps for failover (`kept`): a session's first datagrams are small (a DNS query, a
 * handshake); one that sends more before any reply stops being moved, rather than hold more.
 */
export const MAX_KEPT_BYTES = 65_536;

/** ICMP errors a connected UDP socket reports: the upstream cannot be reached. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN']);

/** Whether a send error means the upstream is unreachable (rather than a transient failure). */
export function isUnreachable(err: Error): boolean {
  return UNREACHABLE.has((err as NodeJS.ErrnoException).code ?? '');
}

function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/**
 * One session's socket to one upstream, connected with `socket.connect()` so that the kernel
 * filters replies to that upstream and they map back to the session with no state in the datagram.
 * Handlers are bound once per link; nothing is allocated per datagram beyond what `dgram` does.
 */
export class UpstreamLink {
  readonly state: UpstreamState;
  /** `state.generation` when the link was made: its socket stays connected to that address. */
  readonly generation: number;
  /** Set once the socket is connected and sends go straight out. */
  ready = false;
  closed = false;
  /** Datagrams held until the socket is connected (bounded by the session). */
  queue: Buffer[] | undefined;
  /** Sends handed to `dgram` whose callback has not run yet. */
  inFlight = 0;
  /**
   * Datagrams handed to the socket while the session may still move to another upstream if this
   * one refuses them (`maxConnectAttempts`): set by the session, dropped at the first reply or
   * past `connectTimeout`, `maxPendingDatagrams` or `MAX_KEPT_BYTES`. References to the buffers
   * received (each datagram its own), never copies; undefined (one check per send) otherwise.
   */
  kept: Buffer[] | undefined;
  keptBytes = 0;
  /** When keeping ends (ms since the epoch): `connectTimeout` after the upstream was chosen. */
  keptUntil = 0;
  /** Replies received on this link (the session counts the first as an upstream success). */
  datagramsReceived = 0;
  /** Datagrams and bytes handed to the socket. */
  datagramsSent = 0;
  bytesSent = 0;

  protected readonly owner: LinkOwner;
  protected readonly host: SessionHost;
  private socket: Socket | undefined;
  /** The bare UDP handle used instead of `socket` (`relay: 'handle'`). */
  private handle: LinkHandle | undefined;
  /** The `dgram` socket's send callback (made with the socket: the bare handle needs none). */
  private onSent: ((err: Error | null) => void) | undefined;
  private counted = false;
  private socketOpen = false;
  /**
   * The largest datagram the socket can send, by its family (set on connect); through a
   * CONNECT-UDP tunnel, the IPv4 bound (the proxy's family to the target is unknown).
   */
  protected maxPayload = MAX_UDP4_PAYLOAD;

  constructor(owner: LinkOwner, state: UpstreamState) {
    this.owner = owner;
    this.host = owner.host;
    this.state = state;
    this.generation = state.generation;
  }

  /** Creates and connects the socket (resolving the upstream host first when it is a name). */
  open(): void {
    const state = this.state;
    this.countOpened();
    // Remembered per address: `isIP` runs a regular expression for every new session.
    const family = ipFamily(state.host);
    if (family !== 0) {
      this.connect(state.host, family);
      return;
    }
    const sources = this.host.options.sourceAddress;
    // With a source, a name's address of the source's family first (see lookupFrom).
    // The closure only for a name: a literal address, the usual upstream, needs none.
    const resolved = (err: NodeJS.ErrnoException | null, address: string, family: number): void => {
      this.resolved(err, address, family);
    };
    if (sources === undefined) lookup(state.host, resolved);
    else lookupFrom(state.host, sources, resolved);
  }

  private resolved(err: NodeJS.ErrnoException | null, address: string, family: number): void {
    if (this.closed) return;
    if (err !== null) {
      this.setupFailed(err);
      return;
    }
    this.connect(address, family);
  }

  private connect(address: string, family: number): void {
    this.maxPayload = family === 6 ? MAX_UDP6_PAYLOAD : MAX_UDP4_PAYLOAD;
    const sources = this.host.options.sourceAddress;
    const source = sources === undefined ? undefined : sourceFor(sources, family);
    if (this.host.options.relay === 'handle' && source === undefined) {
      const bindings = udpBindings();
      if (bindings !== null) {
        this.connectHandle(new bindings.UDP(), address, family);
        return;
      }
    }
    let socket: Socket;
    try {
      socket = dgram.createSocket({
        type: family === 6 ? 'udp6' : 'udp4',
        lookup: family === 6 ? literalLookup6 : literalLookup4,
      });
    } catch (err) {
      this.setupFailed(toError(err));
      return;
    }
    this.socket = socket;
    this.socketOpen = true;
    this.host.socketOpened();
    // Handlers go on before anything can fail; bind errors (EMFILE) are emitted inside connect().
    // The `dgram` path's closures: the bare handle (the default) calls the methods themselves.
    socket.on('error', (err: Error) => {
      this.socketFailed(err);
    });
    socket.on('close', () => {
      this.socketClosed();
    });
    socket.on('message', (msg: Buffer) => {
      this.replied(msg);
    });
    this.onSent = (err: Error | null) => {
      this.sent(err);
    };
    if (source === undefined) {
      this.connectSocket(socket, address);
      return;
    }
    try {
      bindDgramFrom(socket, sources, family, () => {
        if (!this.closed) this.connectSocket(socket, address);
      });
    } catch (err) {
      this.setupFailed(toError(err));
    }
  }

  private connectSocket(socket: Socket, address: string): void {
    try {
      socket.connect(this.state.port, address);
    } catch (err) {
      this.setupFailed(toError(err));
      return;
    }
    if (this.closed) return;
    // With a literal address (our lookup answers at once), connect() has bound and connected the
    // socket before it returns, unless connect(2) failed: then its 'error' follows on the next
    // tick, and a send meanwhile throws (see send()). So no getpeername per session to check.
    this.connected();
  }

  /**
   * Connects a bare UDP handle (libuv binds it to the wildcard address first, as `dgram` does):
   * no `dgram.Socket`, no lookup, no tick. Replies arrive through `onmessage`.
   */
  private connectHandle(udp: UdpHandle, address: string, family: number): void {
    const handle = udp as LinkHandle;
    handle[kLink] = this;
    handle.onmessage = onHandleMessage;
    this.handle = handle;
    this.socketOpen = true;
    this.host.socketOpened();
    const err =
      family === 6
        ? handle.connect6(address, this.state.port)
        : handle.connect(address, this.state.port);
    const started = err === 0 ? handle.recvStart() : err;
    if (started !== 0) {
      this.setupFailed(
        uvError(started, err === 0 ? 'recvmsg' : 'connect', address, this.state.port),
      );
      return;
    }
    this.connected();
  }

  /** A datagram, or a receive error (an ICMP error of the connected socket), on the handle. @internal */
  handleMessage(nread: number, msg: Buffer | undefined): void {
    if (nread < 0) {
      this.socketFailed(uvError(nread, 'recvmsg'));
      return;
    }
    if (msg !== undefined) this.replied(msg);
  }

  /** Sends on the bare handle; a failure reaches `sent` on the next tick, as with `dgram`. */
  private sendOnHandle(handle: UdpHandle, list: Buffer[]): void {
    this.inFlight++;
    const result = sendDatagram(handle, list, this);
    if (result >= 1) this.inFlight--;
    else if (result < 0) process.nextTick(sentLater, this, uvError(result, 'send'));
  }

  /** @internal */
  handleSent(status: number): void {
    this.sent(status < 0 ? uvError(status, 'send') : null);
  }

  private connected(): void {
    if (this.closed) return;
    this.ready = true;
    this.flushQueue();
  }

  /**
   * Sends what waited for the link to be ready, oldest first, each counted out as it leaves. The
   * rest stays on the link meanwhile: a send that throws puts its datagram back in front (see
   * `send()`) and stops the flush, and a `dropped` listener that closes the session (the drop of
   * a datagram too large or past `maxSendQueue`) leaves them to be dropped with the link.
   */
  protected flushQueue(): void {
    const queue = this.queue;
    if (queue === undefined) return;
    while (this.ready && queue.length > 0) {
      const msg = queue.shift() as Buffer;
      this.owner.unqueued(1);
      if (!this.send(msg)) this.owner.sendQueueFull(msg.length);
    }
    if (this.queue === queue && queue.length === 0) this.queue = undefined;
  }

  /**
   * Sends `msg` to the upstream, or holds it until the socket is connected. The caller has
   * checked the session's pending bound. Returns false when the send queue is full.
   */
  send(msg: Buffer): boolean {
    const socket = this.socket;
    const handle = this.handle;
    if (!this.ready || (socket === undefined && handle === undefined)) {
      (this.queue ??= []).push(msg);
      return true;
    }
    const header = this.owner.proxyHeader;
    // What UDP cannot carry to this upstream fails (EMSGSIZE) after the fact, counted as sent:
    // a PROXY header, a session filter's larger datagram, or an IPv6 client's datagram above
    // IPv4's limit can make one. Dropped as oversized instead.
    if ((header === undefined ? 0 : header.length) + msg.length > this.maxPayload) {
      this.owner.oversized(msg.length);
      return true;
    }
    if (this.inFlight >= this.host.options.maxSendQueue) return false;
    if (handle !== undefined) {
      this.sendOnHandle(handle, header === undefined ? [msg] : [header, msg]);
      this.countSent(msg.length);
      if (this.kept !== undefined) this.keep(msg);
      return true;
    }
    if (socket === undefined) return true;
    try {
      // A header goes out as a second iovec of the same datagram: no copy of the payload.
      if (header === undefined) socket.send(msg, this.onSent);
      else socket.send([header, msg], this.onSent);
    } catch {
      // Not connected after all: connect(2) failed and its 'error' (a setup failure) is on its
      // way. The datagram waits again, counted as waiting, and is dropped with the link.
      this.ready = false;
      (this.queue ??= []).unshift(msg);
      this.owner.requeued();
      return true;
    }
    this.inFlight++;
    this.countSent(msg.length);
    if (this.kept !== undefined) this.keep(msg);
    return true;
  }

  /** Keeps a sent datagram for failover; past the bounds, keeps nothing more (no failover). */
  private keep(msg: Buffer): void {
    const kept = this.kept as Buffer[];
    if (
      kept.length >= this.host.options.maxPendingDatagrams ||
      this.keptBytes + msg.length > MAX_KEPT_BYTES
    ) {
      this.kept = undefined;
      return;
    }
    // The first one in an array of its own: a push onto the empty one would grow it to 17 slots.
    if (kept.length === 0) this.kept = [msg];
    else kept.push(msg);
    this.keptBytes += msg.length;
  }

  /** Counts a datagram handed to the upstream (a link that stands in for this one counts alike). */
  protected countSent(len: number): void {
    this.datagramsSent++;
    this.bytesSent += len;
    const counters = this.host.counters;
    counters.upstreamTxDatagrams++;
    counters.upstreamTxBytes += len;
    this.state.counters.txDatagrams++;
    this.state.counters.txBytes += len;
  }

  /** Counts a datagram from the upstream. */
  protected countReceived(len: number): void {
    const counters = this.host.counters;
    counters.upstreamRxDatagrams++;
    counters.upstreamRxBytes += len;
    this.state.counters.rxDatagrams++;
    this.state.counters.rxBytes += len;
  }

  /** Counts a setup or receive failure on the way to the upstream. */
  protected countFailure(): void {
    this.host.counters.upstreamRxErrors++;
    this.state.counters.errors++;
  }

  /** Counts the link as open to its upstream (active until `markClosed`). */
  protected countOpened(): void {
    const state = this.state;
    state.active++;
    state.counters.total++;
    this.host.counters.upstreamTotal++;
    this.host.counters.upstreamActive++;
    this.counted = true;
  }

  /** Marks the link closed and no longer active on its upstream; false when it already was. */
  protected markClosed(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.ready = false;
    this.queue = undefined;
    this.kept = undefined;
    if (this.counted) {
      this.counted = false;
      this.state.active--;
      this.host.counters.upstreamActive--;
    }
    return true;
  }

  /** @internal A send completed (`err` null) or failed. */
  sent(err: Error | null): void {
    this.inFlight--;
    if (err === null) return;
    this.host.counters.upstreamTxErrors++;
    this.state.counters.errors++;
    if (this.closed) return;
    // An ICMP error may surface on a send instead of a receive: same meaning.
    this.owner.linkFailed(this, err, 'send');
  }

  private replied(msg: Buffer): void {
    if (this.closed) return;
    this.countReceived(msg.length);
    this.owner.fromUpstream(this, msg);
  }

  private socketFailed(err: Error): void {
    if (this.closed) return;
    if (!this.ready) {
      this.setupFailed(err);
      return;
    }
    this.countFailure();
    this.owner.linkFailed(this, err, 'receive');
  }

  private setupFailed(err: Error): void {
    if (this.closed) return;
    this.countFailure();
    this.owner.linkFailed(this, err, 'setup');
  }

  private socketClosed(): void {
    if (!this.socketOpen) return;
    this.socketOpen = false;
    this.host.socketClosed();
  }

  /** Closes the socket at once (its file descriptor is released synchronously). Idempotent. */
  close(): void {
    if (!this.markClosed()) return;
    const handle = this.handle;
    if (handle !== undefined) {
      // Closed at once, the descriptor too (libuv frees the handle later, owing nothing to the
      // proxy): accounted for now, not on a tick of its own per session as dgram's 'close'.
      handle.close();
      this.socketClosed();
      return;
    }
    const socket = this.socket;
    if (socket === undefined) return;
    try {
      socket.close();
    } catch {
      // dgram refused (its handle is gone): no 'close' event will come, so account for it here.
      this.socketClosed();
    }
  }
}

/** A send on the bare handle failed at once: reported on the next tick, as `dgram` does. */
function sentLater(link: UpstreamLink, err: Error): void {
  link.sent(err);
}

const kLink = Symbol('l4proxy.upstreamLink');

interface LinkHandle extends UdpHandle {
  [kLink]?: UpstreamLink;
}

function onHandleMessage(
  this: UdpHandle,
  nread: number,
  _handle: UdpHandle,
  msg: Buffer | undefined,
): void {
  (this as LinkHandle)[kLink]?.handleMessage(nread, msg);
}
