import type { RemoteInfo, Socket } from 'node:dgram';
import type { UdpSession } from './UdpSession.js';
import type { UdpCounters } from './UdpProxyStats.js';
import { kernelDrops, socketInode } from './kernelDrops.js';

/** What a bound socket reports to the proxy that owns it (internal seam). */
export interface ListenerOwner {
  receive(listener: UdpListener, msg: Buffer, rinfo: RemoteInfo): void;
  listenerError(listener: UdpListener, error: Error): void;
}

/**
 * One bound socket of a proxy and the sessions of the clients that reached it. Sessions are
 * found in O(1) by client address then port (nested maps: no key string is built per datagram,
 * and IPv4 and IPv6 clients can never collide).
 */
export class UdpListener {
  readonly socket: Socket;
  readonly localAddress: string;
  readonly localPort: number;
  /** The socket's inode, to find its kernel drop count (Linux); undefined elsewhere. */
  readonly inode: number | undefined;
  /** Kernel drops read just before the socket closed (it leaves /proc/net/udp then). */
  dropsAtClose = 0;
  /** Sends to clients handed to `dgram` whose callback has not run yet. */
  inFlight = 0;
  closed = false;

  private readonly owner: ListenerOwner;
  private readonly counters: UdpCounters;
  private readonly maxSendQueue: number;
  private readonly byAddress = new Map<string, Map<number, UdpSession>>();

  constructor(owner: ListenerOwner, socket: Socket, counters: UdpCounters, maxSendQueue: number) {
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
    return this.byAddress.get(address)?.get(port);
  }

  add(session: UdpSession): void {
    let byPort = this.byAddress.get(session.clientAddress);
    if (byPort === undefined) {
      byPort = new Map();
      this.byAddress.set(session.clientAddress, byPort);
    }
    byPort.set(session.clientPort, session);
  }

  remove(session: UdpSession): void {
    const byPort = this.byAddress.get(session.clientAddress);
    if (byPort?.get(session.clientPort) !== session) return;
    byPort.delete(session.clientPort);
    if (byPort.size === 0) this.byAddress.delete(session.clientAddress);
  }

  /** Every live session of this socket. */
  *sessions(): IterableIterator<UdpSession> {
    for (const byPort of this.byAddress.values()) yield* byPort.values();
  }

  /** Sends a reply to a client; false (nothing sent) when `maxSendQueue` sends are pending. */
  sendTo(msg: Buffer, port: number, address: string): boolean {
    if (this.closed || this.inFlight >= this.maxSendQueue) return false;
    this.inFlight++;
    this.counters.txDatagrams++;
    this.counters.txBytes += msg.length;
    this.socket.send(msg, port, address, this.onSent);
    return true;
  }

  private readonly onSent = (err: Error | null): void => {
    this.inFlight--;
    if (err !== null) this.counters.txErrors++;
  };

  /** Closes the socket; resolves once it is closed. */
  close(): Promise<void> {
    this.closed = true;
    if (this.inode !== undefined)
      this.dropsAtClose = kernelDrops(new Set([this.inode])).get(this.inode) ?? 0;
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
