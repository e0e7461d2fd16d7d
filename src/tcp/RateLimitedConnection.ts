import type { RelaySocket } from '../net/RelaySocket.js';
import { RateLimiter } from '../net/RateLimiter.js';
import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { ClientIdentity } from './ClientPreface.js';
import type { ConnectionHost } from './ConnectionHost.js';
import type { ResolvedBandwidth } from './policyOptions.js';
import { TcpConnection } from './TcpConnection.js';

/** `[upload, download]` budgets; undefined is unlimited. */
type Budgets = [upload: RateLimiter | undefined, download: RateLimiter | undefined];

/** The budgets shared by many connections: one pair per proxy, or one pair per upstream. */
export class SharedBandwidth {
  private readonly perUpstream = new WeakMap<UpstreamState, Budgets>();
  private readonly proxyWide: Budgets;

  constructor(readonly limits: ResolvedBandwidth) {
    this.proxyWide = this.pair();
  }

  /** `[upload, download]` budgets for a connection to `state`. */
  budgets(state: UpstreamState | undefined): Budgets {
    if (this.limits.sharedPer === 'proxy' || state === undefined) return this.proxyWide;
    let pair = this.perUpstream.get(state);
    if (pair === undefined) {
      pair = this.pair();
      this.perUpstream.set(state, pair);
    }
    return pair;
  }

  private pair(): Budgets {
    const { sharedUpload, sharedDownload } = this.limits;
    return [
      sharedUpload === undefined ? undefined : new RateLimiter(sharedUpload),
      sharedDownload === undefined ? undefined : new RateLimiter(sharedDownload),
    ];
  }
}

/**
 * A debt under this many milliseconds of the rate is relayed at once: a timer cannot wait less,
 * and a new connection's first small write (its bucket starts empty) would otherwise always wait
 * a millisecond. It bounds what passes ahead of the rate to 1 ms of it.
 */
const SLACK_MS = 1;

function onUploadTimer(connection: RateLimitedConnection): void {
  connection.uploadMayResume();
}
function onDownloadTimer(connection: RateLimitedConnection): void {
  connection.downloadMayResume();
}

/**
 * A {@link TcpConnection} under `bandwidth` limits. A proxy without limits never creates one, so
 * its relay runs the plain class, untouched.
 *
 * Each chunk read is charged to the direction's budgets before it is relayed: when they have
 * the bytes, it goes on at once; when one is in debt, the chunk is held (with any that follow
 * before the sender is paused) and the proxy stops reading from the sender until the debt is
 * paid (a timer), then relays what it held and reads again, unless the receiver's write buffer
 * still holds it back (its 'drain' resumes it). So the limits hold from the first byte, also for
 * what the client sent before its upstream connected (relayed once paid for), and across many
 * connections sharing a budget. Memory: at most the one read per direction (and the early
 * bytes, `maxEarlyData`) per connection.
 */
export class RateLimitedConnection extends TcpConnection {
  private readonly upload: RateLimiter | undefined;
  private readonly download: RateLimiter | undefined;
  private sharedUpload: RateLimiter | undefined;
  private sharedDownload: RateLimiter | undefined;
  private uploadTimer: NodeJS.Timeout | undefined;
  private downloadTimer: NodeJS.Timeout | undefined;
  /** Client bytes charged and waiting for their budget, in order. */
  private heldUpload: Buffer[] | undefined;
  private heldDownload: Buffer[] | undefined;
  /** The upstream the early bytes wait to be flushed to, while their budget is paid. */
  private earlyTo: RelaySocket | undefined;
  /** A side's FIN that came while its bytes were held: passed on after them. */
  private clientEndHeld = false;
  private upstreamEndHeld = false;

  constructor(
    host: ConnectionHost,
    client: RelaySocket,
    id: number,
    identity: ClientIdentity,
    preface: Buffer[] | undefined,
    private readonly shared: SharedBandwidth,
  ) {
    super(host, client, id, identity, preface);
    const { upload, download } = shared.limits;
    this.upload = upload === undefined ? undefined : new RateLimiter(upload);
    this.download = download === undefined ? undefined : new RateLimiter(download);
  }

  /** @internal */
  override upstreamConnect(): void {
    // Per-upstream shared budgets are known once the upstream is.
    [this.sharedUpload, this.sharedDownload] = this.shared.budgets(this.upstream);
    super.upstreamConnect();
  }

  /**
   * What the client sent while its upstream was chosen and dialled (held, up to
   * `maxEarlyData`) is charged like any chunk, and flushed once the budgets have it.
   */
  protected override flushEarly(socket: RelaySocket): void {
    const bytes = this.earlyLength();
    const wait = bytes === 0 ? 0 : this.takeUpload(bytes);
    if (wait <= SLACK_MS) {
      super.flushEarly(socket);
      return;
    }
    this.earlyTo = socket;
    this.holdUpload(wait);
  }

  /** @internal */
  override clientData(chunk: Buffer): boolean {
    // Before the connect, the chunk joins the early bytes (charged when they are flushed).
    if (!this.connected) return super.clientData(chunk);
    const wait = this.takeUpload(chunk.length);
    if (wait <= SLACK_MS && this.uploadTimer === undefined) return super.clientData(chunk);
    // Received now, relayed later (or never, if the connection ends first): counted now.
    this.bytesFromClient += chunk.length;
    // A copy: a chunk read into the shared buffer is reused by the next read.
    (this.heldUpload ??= []).push(Buffer.from(chunk));
    if (wait > 0) this.holdUpload(wait);
    return false;
  }

  /** @internal */
  override upstreamData(chunk: Buffer): boolean {
    const wait = this.takeDownload(chunk.length);
    if (wait <= SLACK_MS && this.downloadTimer === undefined) return super.upstreamData(chunk);
    this.bytesFromUpstream += chunk.length;
    this.upstreamCounters.rxBytes += chunk.length;
    (this.heldDownload ??= []).push(Buffer.from(chunk));
    if (wait > 0) this.holdDownload(wait);
    return false;
  }

  /** Charges `bytes` from the client; the milliseconds until the budgets have them (0: now). */
  private takeUpload(bytes: number): number {
    return Math.max(this.upload?.take(bytes) ?? 0, this.sharedUpload?.take(bytes) ?? 0);
  }

  /** Stops reading the client for `wait` ms: what it sent is relayed then. */
  private holdUpload(wait: number): void {
    if (this.uploadTimer === undefined) this.host.stats.uploadThrottled++;
    else clearTimeout(this.uploadTimer);
    this.client.pause();
    this.uploadTimer = setTimeout(onUploadTimer, wait, this);
  }

  /** Charges `bytes` from the upstream; the milliseconds until the budgets have them (0: now). */
  private takeDownload(bytes: number): number {
    return Math.max(this.download?.take(bytes) ?? 0, this.sharedDownload?.take(bytes) ?? 0);
  }

  /** Stops reading the upstream for `wait` ms: what it sent is relayed then. */
  private holdDownload(wait: number): void {
    if (this.downloadTimer === undefined) this.host.stats.downloadThrottled++;
    else clearTimeout(this.downloadTimer);
    this.upstreamSocket?.pause();
    this.downloadTimer = setTimeout(onDownloadTimer, wait, this);
  }

  /** @internal */
  override clientEnd(): void {
    if (this.uploadTimer === undefined) super.clientEnd();
    else this.clientEndHeld = true;
  }

  /** @internal */
  override upstreamEnd(): void {
    if (this.downloadTimer === undefined) super.upstreamEnd();
    else this.upstreamEndHeld = true;
  }

  /** The upstream drained; the client may send again unless its budget is still in debt. @internal */
  override upstreamDrain(): void {
    if (this.uploadTimer === undefined) super.upstreamDrain();
  }

  /** @internal */
  override clientDrain(): void {
    if (this.downloadTimer === undefined) super.clientDrain();
  }

  /**
   * The upload debt is paid: relay what was held, pass on a FIN that waited for it, and read
   * the client again, unless the upstream is full. @internal
   */
  uploadMayResume(): void {
    this.uploadTimer = undefined;
    const early = this.earlyTo;
    this.earlyTo = undefined;
    if (early !== undefined) {
      if (early !== this.upstreamSocket) return;
      super.flushEarly(early);
    }
    const held = this.heldUpload;
    this.heldUpload = undefined;
    let flowing = true;
    if (held !== undefined)
      for (const chunk of held) flowing = this.forwardClient(chunk) && flowing;
    if (this.clientEndHeld) {
      this.clientEndHeld = false;
      super.clientEnd();
    } else if (flowing && this.upstreamSocket?.writableNeedDrain !== true) this.client.resume();
  }

  /** @internal */
  downloadMayResume(): void {
    this.downloadTimer = undefined;
    const held = this.heldDownload;
    this.heldDownload = undefined;
    let flowing = true;
    if (held !== undefined)
      for (const chunk of held) flowing = this.forwardUpstream(chunk) && flowing;
    if (this.upstreamEndHeld) {
      this.upstreamEndHeld = false;
      super.upstreamEnd();
    } else if (flowing && !this.client.writableNeedDrain) this.upstreamSocket?.resume();
  }

  /** Bytes are held for a budget (either way): the idle clocks wait for them. */
  protected override throttled(): boolean {
    return this.uploadTimer !== undefined || this.downloadTimer !== undefined;
  }

  protected override clearTimers(): void {
    super.clearTimers();
    if (this.uploadTimer !== undefined) clearTimeout(this.uploadTimer);
    if (this.downloadTimer !== undefined) clearTimeout(this.downloadTimer);
    this.uploadTimer = this.downloadTimer = undefined;
    this.heldUpload = this.heldDownload = this.earlyTo = undefined;
  }
}
