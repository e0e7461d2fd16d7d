import type { Socket } from 'node:net';

/** HTTP/2 frame types the hand-built attacks send and read (RFC 9113 section 6). */
export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

/** The END_HEADERS flag of HEADERS and CONTINUATION frames. */
export const END_HEADERS = 0x4;

/** The client connection preface and an empty SETTINGS frame. */
export function clientPreface(): Buffer {
  return Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)),
  ]);
}

/** One frame: its 9-byte header and `payload`. */
export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream, 5);
  return Buffer.concat([header, payload]);
}

/** An HPACK string literal, not Huffman-coded (RFC 7541 section 5.2). */
function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text);
  if (bytes.length >= 127) throw new RangeError('short strings only');
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/**
 * The HPACK block of `CONNECT authority`: `:method` (static index 2) and `:authority` (index 1)
 * as literals without indexing, so every stream's block is the same bytes.
 */
export function connectBlock(authority: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x02]),
    hpackString('CONNECT'),
    Buffer.from([0x01]),
    hpackString(authority),
  ]);
}

/** RST_STREAM of `stream` with `code` (default CANCEL, 8). */
export function rstStream(stream: number, code = 8): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, stream, payload);
}

/** What the server sent a raw HTTP/2 client: frames counted by type, and its GOAWAY if any. */
export interface ServerFrames {
  readonly count: Map<number, number>;
  goaway: { readonly lastStream: number; readonly code: number } | undefined;
}

/** Parses the frames `socket` reads (the server's SETTINGS, GOAWAY, ...) as they come. */
export function readFrames(socket: Socket): ServerFrames {
  const seen: ServerFrames = { count: new Map(), goaway: undefined };
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 9) {
      const length = pending.readUIntBE(0, 3);
      if (pending.length < 9 + length) break;
      const type = pending[3] ?? -1;
      seen.count.set(type, (seen.count.get(type) ?? 0) + 1);
      if (type === FRAME.GOAWAY)
        seen.goaway = { lastStream: pending.readUInt32BE(9), code: pending.readUInt32BE(13) };
      pending = pending.subarray(9 + length);
    }
  });
  return seen;
}
