/**
 * What the TCP relay needs of a socket: the part of `net.Socket` that `TcpConnection` uses. A
 * `net.Socket` is one; so is the lighter {@link HandleSocket}, which the relay uses for plain TCP
 * (`relay: 'handle'`, the default).
 */
export interface RelaySocket {
  // Listener arguments differ per event; `net.Socket` types them the same way.
  /* eslint-disable @typescript-eslint/no-explicit-any */
  on(event: string, listener: (...args: any[]) => void): this;
  once(event: string, listener: (...args: any[]) => void): this;
  off(event: string, listener: (...args: any[]) => void): this;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  listenerCount(event: string): number;
  write(chunk: Uint8Array): boolean;
  end(): this;
  destroy(error?: Error): this;
  resetAndDestroy(): this;
  pause(): this;
  resume(): this;
  isPaused(): boolean;
  cork(): void;
  uncork(): void;
  setNoDelay(noDelay?: boolean): this;
  setKeepAlive(enable?: boolean, initialDelay?: number): this;
  readonly destroyed: boolean;
  readonly errored: Error | null;
  readonly connecting: boolean;
  readonly readableEnded: boolean;
  readonly writableEnded: boolean;
  readonly writableLength: number;
  readonly writableCorked: number;
  readonly writableNeedDrain: boolean;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly remoteFamily?: string | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}
