import type { Duplex } from 'node:stream';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { LinkOwner } from '../udp/UpstreamLink.js';
import { UpstreamLink } from '../udp/UpstreamLink.js';
import type { SessionHost } from '../udp/SessionHost.js';
import { CapsuleParser, datagramCapsule } from './capsules.js';
import { TUNNEL_READY } from './httpConnect.js';
import type { HttpTunnel, TunnelPeer } from './tunnelOptions.js';

/** Bytes a session may have queued on its stream before datagrams are dropped (per session). */
const MAX_STREAM_BACKLOG = 256 * 1024;

/**
 * A UDP session's link to its upstream through an HTTP/2 proxy: one RFC 9298 CONNECT-UDP
 * request, datagrams as DATAGRAM capsules, closed with the session. It stands in for the
 * session's dgram link, with the same counters and the same failure reports.
 */
export class ConnectUdpLink extends UpstreamLink {
  private readonly link: LinkOwner;
  private readonly sessionHost: SessionHost;
  private readonly tunnel: HttpTunnel;
  private stream: Duplex | undefined;
  private accounted = false;

  constructor(owner: LinkOwner, state: UpstreamState, tunnel: HttpTunnel) {
    super(owner, state);
    this.link = owner;
    this.sessionHost = owner.host;
    this.tunnel = tunnel;
  }

  override open(): void {
    const state = this.state;
    const host = this.sessionHost;
    state.active++;
    state.counters.total++;
    host.counters.upstreamTotal++;
    host.counters.upstreamActive++;
    this.accounted = true;
    const stream = host.tunnels().openUdp(state, this.tunnel, this.link as unknown as TunnelPeer);
    this.stream = stream;
    host.socketOpened();
    let open = true;
    stream.on('close', () => {
      if (open) host.socketClosed();
      open = false;
      if (!this.closed) this.failed(new Error('The CONNECT-UDP stream closed.'));
    });
    stream.on('error', (err: Error) => {
      this.failed(err);
    });
    const parser = new CapsuleParser((payload) => {
      this.received(payload);
    });
    stream.on('data', (chunk: Buffer) => {
      if (!parser.push(chunk))
        this.failed(new Error('Malformed capsule from the CONNECT-UDP proxy.'));
    });
    stream.once(TUNNEL_READY, () => {
      this.ready = true;
      const queue = this.queue;
      if (queue === undefined || this.closed) return;
      this.queue = undefined;
      this.link.unqueued(queue.length);
      for (const msg of queue) if (!this.send(msg)) this.link.sendQueueFull(msg.length);
    });
  }

  override send(msg: Buffer): boolean {
    const stream = this.stream;
    if (!this.ready || stream === undefined) {
      (this.queue ??= []).push(msg);
      return true;
    }
    if (stream.writableLength > MAX_STREAM_BACKLOG) return false;
    const len = msg.length;
    this.datagramsSent++;
    this.bytesSent += len;
    const counters = this.sessionHost.counters;
    counters.upstreamTxDatagrams++;
    counters.upstreamTxBytes += len;
    this.state.counters.txDatagrams++;
    this.state.counters.txBytes += len;
    const [header, payload] = datagramCapsule(msg);
    stream.cork();
    stream.write(header);
    stream.write(payload);
    stream.uncork();
    return true;
  }

  private received(payload: Buffer): void {
    if (this.closed) return;
    const len = payload.length;
    const counters = this.sessionHost.counters;
    counters.upstreamRxDatagrams++;
    counters.upstreamRxBytes += len;
    this.state.counters.rxDatagrams++;
    this.state.counters.rxBytes += len;
    this.link.fromUpstream(this, Buffer.from(payload));
  }

  private failed(err: Error): void {
    if (this.closed) return;
    this.sessionHost.counters.upstreamRxErrors++;
    this.state.counters.errors++;
    this.link.linkFailed(this, err, this.ready ? 'receive' : 'setup');
  }

  override close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.queue = undefined;
    if (this.accounted) {
      this.accounted = false;
      this.state.active--;
      this.sessionHost.counters.upstreamActive--;
    }
    // Closing the request ends the proxy's UDP association (RFC 9298 section 3.1).
    this.stream?.destroy();
  }
}
