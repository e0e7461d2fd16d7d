import type { RemoteInfo, Socket } from 'node:dgram';
import type { UdpSession } from './UdpSession.js';
import type { UdpCounters } from './UdpProxyStats.js';
import { readTablesInBackground, socketInode } from './kernelDrops.js';
import type { KernelDropReader } from './kernelDrops.js';
import { dgramHandle, sendDatagram } from './udpHandle.js';
import type { UdpHandle } from './udpHandle.js';
import { uvError } from '../net/uvError.js';
import { asError } from '../errors.js';

/** What a bound socket reports to the proxy that owns it (internal seam). */
export interface ListenerOwner {
  receive(listener: UdpListener, msg: Buffer, rinfo: RemoteInfo): void;
  listenerError(listener: UdpListener, error: Error): void;
}

/**
 * One bound socket of a proxy and the sessions of the clients that reached it. Sessions are
 * found in O(1) by client port then address (nested maps: no key string is built per datagram,
 * and IPv4 and IPv6 clients can never collide). Port first: a number hashes at once, where the
 * address, a new string in every datagram's `rinfo`, had its hash computed for every lookup
 * (about a third of what the listener ran per datagram). A port with one client, the usual case
 * (clients pick random source ports), maps to the session itself, checked by its address; the
 * map by address is made only for a second client on the same port (WireGuard peers, NTP).
 */
export class UdpListener {
  readonly socket: Socket;
  readonly localAddress: string;
  readonly localPort: number;
  /** The socket's inode, to find its kernel drop count (Linux); undefined elsewhere. */
  readonly inode: number | undefined;
  /**
   * Kernel drops of a closed socket: the last read's figure, then the final read's, made just
   * before the socket closed (it leaves /proc/net/udp then).
   */
  dropsAtClose = 0;
  /** Sends to clients handed to `dgram` whose callback has not run yet. */
  inFlight = 0;
  closed = false;

  private readonly owner: ListenerOwner;
  private readonly counters: UdpCounters;
  private readonly maxSendQueue: number;
  private readonly byPort = new Map<number, UdpSession | Map<string, UdpSession>>();
  /** Sessions that took `maxRequests` datagrams: no longer found by address, still live. */
  private detached: Set<UdpSession> | undefined;

  /** The socket's UDP handle, when replies go straight to it (`relay: 'handle'`). */
  private readonly handle: UdpHandle | undefined;

  constructor(
    owner: ListenerOwner,
    socket: Socket,
    counters: UdpCounters,
    maxSendQueue: number,
    relay: 'handle' | 'dgram',
  ) {
    this.owner = owner;
    this.socket = socket;
    this.counters = counters;
    this.maxSendQueue = maxSendQueue;
    const address = socket.address();
    this.localAddress = address.address;
    this.localPort = address.port;
    this.inode = socketInode(socket);
    socket.on('message', this.onMessage);
    socket.on('error', this.onError);
    this.handle = relay === 'handle' ? dgramHandle(socket) : undefined;
  }

  private readonly onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    this.owner.receive(this, msg, rinfo);
  };

  private readonly onError = (err: Error): void => {
    this.counters.rxErrors++;
    this.owner.listenerError(this, err);
  };

  /** The session of a client, if it has one. */
  find(address: string, port: number): UdpSession | undefined {
    const found = this.byPort.get(port);
    if (found === undefined) return undefined;
    if (found instanceof Map) return found.get(address);
    return found.clientAddress === address ? found : undefined;
  }

  add(session: UdpSession): void {
    const port = session.clientPort;
    const found = this.byPort.get(port);
    if (
      found === undefined ||
      (!(found instanceof Map) && found.clientAddress === session.clientAddress)
    )
      this.byPort.set(port, session);
    else if (found instanceof Map) found.set(session.clientAddress, session);
    else
      this.byPort.set(
        port,
        new Map([
          [found.clientAddress, found],
          [session.clientAddress, session],
        ]),
      );
  }

  /**
   * Adds the session of another QUIC connection of `first`'s client socket (`quic`
   * `sessionPerConnection`): `first` stays the one found by address and port, the others are
   * reached through its `connections`.
   */
  addConnection(first: UdpSession, session: UdpSession): void {
    const group = (first.connections ??= [first]);
    group.push(session);
    session.connections = group;
  }

  remove(session: UdpSession): void {
    this.detached?.delete(session);
    if (session.connections !== undefined) {
      this.leaveConnections(session, session.connections);
      return;
    }
    const port = session.clientPort;
    const found = this.byPort.get(port);
    if (found === session) {
      this.byPort.delete(port);
      return;
    }
    if (!(found instanceof Map) || found.get(session.clientAddress) !== session) return;
    found.delete(session.clientAddress);
    if (found.size === 0) this.byPort.delete(port);
  }

  /**
   * A session of a socket's group of QUIC connections ends: when it was the one found by address
   * and port, the next oldest takes its place; the last one left is alone again.
   */
  private leaveConnections(session: UdpSession, group: UdpSession[]): void {
    const at = group.indexOf(session);
    if (at < 0) return;
    group.splice(at, 1);
    session.connections = undefined;
    const next = group[0];
    if (next === undefined) return;
    if (group.length === 1) next.connections = undefined;
    if (at !== 0) return;
    const found = this.byPort.get(session.clientPort);
    if (found === session) this.byPort.set(session.clientPort, next);
    else if (found instanceof Map && found.get(session.clientAddress) === session)
      found.set(session.clientAddress, next);
  }

  /**
   * Stops routing the client's datagrams to `session` (it reached `maxRequests`): the next one
   * opens a new session, while this one stays live for replies until it ends.
   */
  detach(session: UdpSession): void {
    this.remove(session);
    (this.detached ??= new Set()).add(session);
  }

  /** Every live session of this socket. */
  *sessions(): IterableIterator<UdpSession> {
    for (const found of this.byPort.values()) {
      for (const session of found instanceof Map ? found.values() : [found]) {
        // The other QUIC connections of the session's client socket, when it has several.
        if (session.connections === undefined) yield session;
        else yield* session.connections;
      }
    }
    if (this.detached !== undefined) yield* this.detached;
  }

  /** Sends a reply to a client; false (nothing sent) when `maxSendQueue` sends are pending. */
  sendTo(msg: Buffer, port: number, address: string): boolean {
    if (this.closed || this.inFlight >= this.maxSendQueue) return false;
    this.inFlight++;
    this.counters.txDatagrams++;
    this.counters.txBytes += msg.length;
    const handle = this.handle;
    if (handle === undefined) this.sendOnSocket(msg, port, address);
    else this.sendOnHandle(handle, msg, port, address);
    return true;
  }

  /**
   * `dgram` checks the port before sending and throws for port 0: the source of a client's
   * datagram forged through a raw socket (RFC 768's "no reply wanted"), which no reply can reach.
   * Counted as a failed send, as on the handle, where sendmsg(2) refuses it (EINVAL).
   */
  private sendOnSocket(msg: Buffer, port: number, address: string): void {
    try {
      this.socket.send(msg, port, address, this.onSent);
    } catch (err) {
      process.nextTick(this.onSent, asError(err));
    }
  }

  /**
   * Straight to the socket's UDP handle (`relay: 'handle'`): the address is a literal from the
   * client's own datagram, so `dgram.send`'s argument handling and lookup have nothing to do.
   */
  private sendOnHandle(handle: UdpHandle, msg: Buffer, port: number, address: string): void {
    const result = sendDatagram(handle, [msg], this, port, address);
    if (result >= 1) this.inFlight--;
    else if (result < 0) process.nextTick(this.onSent, uvError(result, 'send', address, port));
  }

  /** @internal */
  handleSent(status: number): void {
    this.onSent(status < 0 ? uvError(status, 'send') : null);
  }

  private readonly onSent = (err: Error | null): void => {
    this.inFlight--;
    if (err !== null) this.counters.txErrors++;
  };

  /**
   * Closes the socket; resolves once it is closed. Its final kernel drop count is read first, in
   * the thread pool: read on the event loop, a table of thousands of sockets (a busy proxy's
   * sessions) stalled every other proxy of the process for as long as the kernel took to list it
   * (165 ms at 12 000 sessions). Meanwhile the socket reads nothing more (a datagram read now
   * would find no session): what comes waits in its buffer, or is dropped and counted, until it
   * closes, as what waits when a socket closes at once.
   */
  close(reader: KernelDropReader): Promise<void> {
    this.closed = true;
    const inode = this.inode;
    if (inode === undefined) return this.closeSocket();
    this.dropsAtClose = reader.lastKnown(inode);
    const handle = this.handle ?? dgramHandle(this.socket);
    // No handle to stop (a Node without udp_wrap): closed at once, with the last read's figure.
    if (handle === undefined || handle.recvStop() !== 0) return this.closeSocket();
    return readTablesInBackground(new Set([inode])).then(
      ([found]) => {
        this.dropsAtClose = Math.max(this.dropsAtClose, found.get(inode) ?? 0);
        return this.closeSocket();
      },
      () => this.closeSocket(),
    );
  }

  private closeSocket(): Promise<void> {
    return new Promise<void>((resolve) => {
      try {
        this.socket.close(() => {
          resolve();
        });
      } catch {
        resolve();
      }
    });
  }
}
