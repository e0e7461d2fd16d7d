import net from 'node:net';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import http2 from 'node:http2';
import tls from 'node:tls';
import type { ServerHttp2Stream } from 'node:http2';
import { resetBehindEnd } from '../net/resetBehindEnd.js';

const { NGHTTP2_CONNECT_ERROR } = http2.constants;

/** How a relayed tunnel ended. */
export type RelayEnd =
  | 'completed'
  | 'client_reset'
  | 'target_reset'
  | 'idle_timeout'
  /** The server's `close()` cut it (a CLI drain). */
  | 'proxy_closed';

/**
 * Resets one side: RST for a TCP socket, RST_STREAM(CONNECT_ERROR) for an HTTP/2 stream. A stream
 * HTTP/2 closed already (END_STREAM both ways) that still holds bytes the relay had paused is
 * destroyed instead: Node destroys such a stream only once its reader took those bytes, and its
 * `close()` does nothing on a closed stream, so the tunnel stayed open for good.
 */
export function resetSide(side: Duplex): void {
  if (side.destroyed) return;
  if (isHttp2Stream(side)) {
    const stream = side as ServerHttp2Stream;
    if (stream.closed) stream.destroy();
    else stream.close(NGHTTP2_CONNECT_ERROR);
    return;
  }
  // A TLS socket wraps its TCP socket: resetting under it is not safe in Node; destroy it.
  if (
    side instanceof net.Socket &&
    !(side instanceof tls.TLSSocket) &&
    !side.writableEnded &&
    !side.connecting
  ) {
    try {
      side.resetAndDestroy();
      return;
    } catch {
      // Not a TCP handle: a plain destroy.
    }
  }
  side.destroy();
}

const NOTHING = Buffer.alloc(0);

/** How long the bytes queued on a client's stream may take to leave before its reset goes anyway. */
const RESET_FLUSH_MS = 1_000;

/**
 * Resets the client's side after the target reset: an HTTP/2 stream first sends what the target
 * sent before its reset (nghttp2 drops DATA still queued behind a RST_STREAM), for at most
 * {@link RESET_FLUSH_MS} (a client that stopped reading holds them for good); a socket is reset
 * at once, as the TCP relay does.
 */
function resetClient(client: Duplex): void {
  if (!isHttp2Stream(client) || client.destroyed || client.writableLength === 0) {
    resetSide(client);
    return;
  }
  const reset = (): void => {
    clearTimeout(timer);
    resetSide(client);
  };
  const timer = setTimeout(reset, RESET_FLUSH_MS);
  timer.unref();
  client.once('close', () => {
    clearTimeout(timer);
  });
  // Writes complete in order: this callback runs once the bytes before it were sent.
  client.write(NOTHING, reset);
}

/**
 * Whether a TCP socket that just ended was in fact reset: libuv may report a reset that follows
 * a read as an end of stream; a zero-length write fails at once on a reset socket (its 'error'
 * follows). The same probe as the TCP relay's.
 */
function revealsReset(side: Duplex): boolean {
  if (isHttp2Stream(side) || side.destroyed) return false;
  // The relay ended this side already (libuv refuses the write), or bytes are queued (the probe
  // would wait behind them): the descriptor is read instead, as TcpConnection does. Without it,
  // a target that answered and reset after the client's end gave the client a clean end.
  if (side.writableEnded || side.writableLength > 0)
    return side instanceof net.Socket && resetBehindEnd(side);
  side.write(NOTHING);
  return side.errored !== null;
}

function isHttp2Stream(side: Duplex): boolean {
  return 'rstCode' in side && 'session' in side;
}

/**
 * Relays bytes both ways between the tunnel's client side (a socket, or an HTTP/2 stream) and
 * the target socket: backpressure through `pipe`, half-close honoured (an end one way ends the
 * other side's writing only), a reset or error on one side resets the other, and `idleTimeout`
 * (0: none) measured on the target socket, which every byte crosses. `done` runs once, after
 * both sides closed.
 */
export function relayStreams(
  client: Duplex,
  target: Socket,
  idleTimeout: number,
  done: (end: RelayEnd, bytesIn: number, bytesOut: number) => void,
): void {
  let end: RelayEnd | undefined;
  let open = 2;
  const closed = (): void => {
    if (--open > 0) return;
    done(end ?? 'completed', target.bytesWritten, target.bytesRead);
  };
  client.on('error', (): void => {
    end ??= 'client_reset';
    resetSide(target);
  });
  target.on('error', (): void => {
    end ??= 'target_reset';
    resetClient(client);
  });
  client.once('close', closed);
  target.once('close', closed);
  // An HTTP/2 stream closed by RST_STREAM(CANCEL/NO_ERROR) emits 'aborted' and no error.
  if (isHttp2Stream(client))
    client.once('aborted', () => {
      end ??= 'client_reset';
      resetSide(target);
    });
  // A side that closed without an error and before ending cleanly: reset the other.
  client.once('close', () => {
    if (!target.destroyed && !client.readableEnded) {
      end ??= 'client_reset';
      resetSide(target);
    }
  });
  target.once('close', () => {
    if (!client.destroyed && !target.readableEnded) {
      end ??= 'target_reset';
      resetClient(client);
    }
  });
  if (idleTimeout > 0) {
    target.setTimeout(idleTimeout, () => {
      end ??= 'idle_timeout';
      target.destroy();
      client.destroy();
    });
  }
  client.pipe(target, { end: false });
  target.pipe(client, { end: false });
  // Each end is forwarded unless it was a reset in disguise (see revealsReset). A client may have
  // ended already: an HTTP/1.1 CONNECT then a FIN reaches the server before the tunnel opens, and
  // its 'end' is past; waiting for it would leave the target (and the tunnel) open for good.
  const clientEnded = (): void => {
    if (!revealsReset(client)) target.end();
  };
  if (client.readableEnded) clientEnded();
  else client.once('end', clientEnded);
  target.once('end', () => {
    if (!revealsReset(target)) client.end();
  });
}
