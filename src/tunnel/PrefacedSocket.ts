import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';

/**
 * A client socket with the bytes already read from it put back in front. The HTTP/2 server reads
 * a `net.Socket` natively (below JavaScript), so `unshift` cannot return the connection preface
 * to it; a plain Duplex is read through JavaScript instead. Used for cleartext HTTP/2 only.
 */
export class PrefacedSocket extends Duplex {
  private readonly socket: Socket;

  constructor(socket: Socket, seen: Buffer) {
    super({ allowHalfOpen: true });
    this.socket = socket;
    this.push(seen);
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (err?: Error | null) => void,
  ): void {
    this.socket.write(chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.socket.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.socket.destroy();
    callback(err);
  }
}
