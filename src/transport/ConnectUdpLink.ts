import type { Duplex } from 'node:stream';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { LinkOwner } from '../udp/UpstreamLink.js';
import { UpstreamLink } from '../udp/UpstreamLink.js';
import { CapsuleParser, datagramCapsule } from './capsules.js';
import { refusedUnprocessed } from './h2Connect.js';
import { TUNNEL_READY } from './httpConnect.js';
import type { HttpTunnel, TunnelPeer } from './tunnelOptions.js';

/** Bytes a session may have queued on its stream before datagrams are dropped (per session). */
const MAX_STREAM_BACKLOG = 256 * 1024;
/** How long a closed session's request may take to end on both sides before it is reset. */
const END_GRACE_MS = 1_000;

/**
 * A UDP session's link to its upstream through an HTTP/2 proxy: one RFC 9298 CONNECT-UDP
 * request, datagrams as DATAGRAM capsules, closed with the session. It stands in for the
 * session's dgram link, with the same counters and the same failure reports.
 */
export class ConnectUdpLink extends UpstreamLink {
  private readonly tunnel: HttpTunnel;
  private stream: Duplex | undefined;
  /** The request was refused unprocessed once and sent again (it is not sent a third time). */
  private resent = false;

  constructor(owner: LinkOwner, state: UpstreamState, tunnel: HttpTunnel) {
    super(owner, state);
    this.tunnel = tunnel;
  }

  override open(): void {
    this.countOpened();
    this.openStream();
  }

  /** Sends the request; the stream replaces any earlier one (whose events are then ignored). */
  private openStream(): void {
    const host = this.host;
    const stream = host
      .tunnels()
      .openUdp(this.state, this.tunnel, this.owner as unknown as TunnelPeer);
    this.stream = stream;
    host.socketOpened();
    let open = true;
    const current = (): boolean => this.stream === stream && !this.closed;
    stream.on('close', () => {
      if (open) host.socketClosed();
      open = false;
      if (current()) this.failed(new Error('The CONNECT-UDP stream closed.'));
    });
    stream.on('error', (err: Error) => {
      if (!current()) return;
      // Refused unprocessed (REFUSED_STREAM, beyond a GOAWAY's last stream): the proxy did
      // nothing with it, so it is sent again once (RFC 9113 section 8.7), as a TCP tunnel is;
      // the datagrams queued for it wait for the new one instead of being dropped.
      if (!this.ready && !this.resent && refusedUnprocessed(err)) {
        this.resent = true;
        this.openStream();
        return;
      }
      this.failed(err);
    });
    const parser = new CapsuleParser((payload) => {
      this.received(payload);
    });
    stream.on('data', (chunk: Buffer) => {
      if (!parser.push(chunk))
        this.failed(new Error('Malformed capsule from the CONNECT-UDP proxy.'));
    });
    // The proxy's END_STREAM ends the UDP association (RFC 9298 section 3.1); our side of the
    // stream stays open, so without this the session would send into it until its idle timeout.
    stream.once('end', () => {
      if (current()) this.failed(new Error('The CONNECT-UDP proxy ended the stream.'));
    });
    stream.once(TUNNEL_READY, () => {
      if (this.stream !== stream) return;
      this.ready = true;
      if (!this.closed) this.flushQueue();
    });
  }

  override send(msg: Buffer): boolean {
    const stream = this.stream;
    if (!this.ready || stream === undefined) {
      (this.queue ??= []).push(msg);
      return true;
    }
    // The PROXY header goes in each datagram, as on a direct link: the tunnel proxy relays the
    // UDP payload as it is, and the target reads the header first.
    const header = this.owner.proxyHeader;
    if (header !== undefined && header.length + msg.length > this.maxPayload) {
      this.owner.oversized(msg.length);
      return true;
    }
    if (stream.writableLength > MAX_STREAM_BACKLOG) return false;
    this.countSent(msg.length);
    stream.cork();
    for (const piece of datagramCapsule(msg, header)) stream.write(piece);
    stream.uncork();
    return true;
  }

  private received(payload: Buffer): void {
    if (this.closed) return;
    this.countReceived(payload.length);
    this.owner.fromUpstream(this, Buffer.from(payload));
  }

  private failed(err: Error): void {
    if (this.closed) return;
    this.countFailure();
    this.owner.linkFailed(this, err, this.ready ? 'receive' : 'setup');
  }

  override close(): void {
    const answered = this.ready;
    if (!this.markClosed()) return;
    const stream = this.stream;
    if (stream === undefined || stream.destroyed) return;
    // Closing the request ends the proxy's UDP association (RFC 9298 section 3.1). An answered
    // one ends with END_STREAM: destroy() sends RST_STREAM, and an nghttp2 proxy's rapid-reset
    // guard closes the whole connection (every session on it) after about a thousand of those.
    // One that is not answered yet, or a proxy that does not end its side, is reset.
    if (!answered) {
      stream.destroy();
      return;
    }
    stream.end();
    const timer = setTimeout(() => {
      stream.destroy();
    }, END_GRACE_MS);
    timer.unref();
    stream.once('close', () => {
      clearTimeout(timer);
    });
  }
}
