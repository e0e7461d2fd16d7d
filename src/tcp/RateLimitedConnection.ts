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
 * After each chunk is relayed, the direction's budgets are charged; when one is in debt the
 * proxy stops reading from the sender until the debt is paid (a timer), and only then reads
 * again, unless the receiver's write buffer still holds it back (its 'drain' resumes it).
 * Nothing is buffered beyond the one chunk already read.
 */
export class RateLimitedConnection extends TcpConnection {
  private readonly upload: RateLimiter | undefined;
  private readonly download: RateLimiter | undefined;
  private sharedUpload: RateLimiter | undefined;
  private sharedDownload: RateLimiter | undefined;
  private uploadTimer: NodeJS.Timeout | undefined;
  private downloadTimer: NodeJS.Timeout | undefined;

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
    const before = this.bytesToUpstream;
    super.upstreamConnect();
    // What the client sent while its upstream was chosen and dialled (held, up to
    // `maxEarlyData`) has just gone out: charged like any chunk, so that it counts against the
    // budgets instead of coming on top of them.
    const early = this.bytesToUpstream - before;
    if (early > 0) this.chargeUpload(early);
  }

  /** @internal */
  override clientData(chunk: Buffer): boolean {
    const flowing = super.clientData(chunk);
    if (!this.connected) return flowing;
    return this.chargeUpload(chunk.length) && flowing;
  }

  /** Charges `bytes` sent to the upstream; false when the client is paused to pay for them. */
  private chargeUpload(bytes: number): boolean {
    const wait = Math.max(this.upload?.take(bytes) ?? 0, this.sharedUpload?.take(bytes) ?? 0);
    if (wait === 0) return true;
    this.host.stats.uploadThrottled++;
    this.client.pause();
    if (this.uploadTimer !== undefined) clearTimeout(this.uploadTimer);
    this.uploadTimer = setTimeout(onUploadTimer, wait, this);
    return false;
  }

  /** @internal */
  override upstreamData(chunk: Buffer): boolean {
    const flowing = super.upstreamData(chunk);
    const wait = Math.max(
      this.download?.take(chunk.length) ?? 0,
      this.sharedDownload?.take(chunk.length) ?? 0,
    );
    if (wait === 0) return flowing;
    this.host.stats.downloadThrottled++;
    this.upstreamSocket?.pause();
    if (this.downloadTimer !== undefined) clearTimeout(this.downloadTimer);
    this.downloadTimer = setTimeout(onDownloadTimer, wait, this);
    return false;
  }

  /** The upstream drained; the client may send again unless its budget is still in debt. @internal */
  override upstreamDrain(): void {
    if (this.uploadTimer === undefined) super.upstreamDrain();
  }

  /** @internal */
  override clientDrain(): void {
    if (this.downloadTimer === undefined) super.clientDrain();
  }

  /** The upload debt is paid: read the client again, unless the upstream is still full. @internal */
  uploadMayResume(): void {
    this.uploadTimer = undefined;
    if (this.upstreamSocket?.writableNeedDrain !== true) this.client.resume();
  }

  /** @internal */
  downloadMayResume(): void {
    this.downloadTimer = undefined;
    if (!this.client.writableNeedDrain) this.upstreamSocket?.resume();
  }

  protected override clearTimers(): void {
    super.clearTimers();
    if (this.uploadTimer !== undefined) clearTimeout(this.uploadTimer);
    if (this.downloadTimer !== undefined) clearTimeout(this.downloadTimer);
    this.uploadTimer = this.downloadTimer = undefined;
  }
}
