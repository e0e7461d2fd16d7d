/*
 * RFC 9297 capsules on an HTTP stream, as RFC 9298 (CONNECT-UDP) uses them: each UDP payload
 * travels in a DATAGRAM capsule (type 0x00) whose value is a Context ID (0 for UDP payloads)
 * followed by the payload. Integers are QUIC variable-length integers (RFC 9000 section 16).
 */

/** Capsule type of HTTP Datagrams (RFC 9297 section 3.5). */
export const DATAGRAM_CAPSULE = 0;

/** The largest DATAGRAM capsule accepted: a UDP payload (65 527 bytes) plus its Context ID. */
export const MAX_CAPSULE = 65_536;

function varintLength(value: number): number {
  if (value < 0x40) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x40000000) return 4;
  return 8;
}

function writeVarint(target: Buffer, offset: number, value: number): number {
  const length = varintLength(value);
  if (length === 1) target[offset] = value;
  else if (length === 2) target.writeUInt16BE(0x4000 | value, offset);
  else if (length === 4) target.writeUInt32BE((0x80000000 | value) >>> 0, offset);
  else target.writeBigUInt64BE(0xc000000000000000n | BigInt(value), offset);
  return offset + length;
}

/** Reads a varint at `offset`: [value, next offset], or undefined when more bytes are needed. */
function readVarint(source: Buffer, offset: number): [number, number] | undefined {
  if (offset >= source.length) return undefined;
  const first = source[offset] ?? 0;
  const length = 1 << (first >> 6);
  if (offset + length > source.length) return undefined;
  let value = first & 0x3f;
  for (let i = 1; i < length; i++) value = value * 256 + (source[offset + i] ?? 0);
  return [value, offset + length];
}

/**
 * One DATAGRAM capsule carrying `payload` with Context ID 0 (a header and the payload), with
 * `prefix` (a PROXY header) before the payload in the same UDP payload, uncopied.
 */
export function datagramCapsule(payload: Buffer, prefix?: Buffer): Buffer[] {
  const valueLength = 1 + (prefix === undefined ? 0 : prefix.length) + payload.length;
  const header = Buffer.allocUnsafe(1 + varintLength(valueLength) + 1);
  let offset = writeVarint(header, 0, DATAGRAM_CAPSULE);
  offset = writeVarint(header, offset, valueLength);
  header[offset] = 0;
  return prefix === undefined ? [header, payload] : [header, prefix, payload];
}

/**
 * Splits a capsule stream into UDP payloads: DATAGRAM capsules with Context ID 0 are delivered,
 * other capsule types (whatever their length) and context IDs are skipped, as RFC 9297 requires
 * of unknown ones. `push` returns false when the stream is malformed (a DATAGRAM capsule over
 * {@link MAX_CAPSULE}).
 */
export class CapsuleParser {
  private readonly deliver: (payload: Buffer) => void;
  /** Bytes of an incomplete capsule, joined only once `need` bytes are there. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private need = 0;
  /** Bytes of a skipped capsule still to come. */
  private skip = 0;

  constructor(deliver: (payload: Buffer) => void) {
    this.deliver = deliver;
  }

  push(chunk: Buffer): boolean {
    if (this.skip > 0) {
      const dropped = Math.min(this.skip, chunk.length);
      this.skip -= dropped;
      if (dropped === chunk.length) return true;
      return this.parse(chunk.subarray(dropped));
    }
    if (this.held.length === 0) return this.parse(chunk);
    // A capsule arriving in many small reads is copied once, not once per read.
    this.held.push(Buffer.from(chunk));
    this.heldBytes += chunk.length;
    if (this.heldBytes < this.need) return true;
    const joined = Buffer.concat(this.held, this.heldBytes);
    this.held = [];
    this.heldBytes = 0;
    return this.parse(joined);
  }

  private parse(buffer: Buffer): boolean {
    let offset = 0;
    for (;;) {
      const type = readVarint(buffer, offset);
      const length = type && readVarint(buffer, type[1]);
      if (type === undefined || length === undefined) {
        // The header itself is incomplete (at most 16 bytes): any further byte may finish it.
        this.hold(buffer.subarray(offset), 0);
        return true;
      }
      const end = length[1] + length[0];
      if (type[0] !== DATAGRAM_CAPSULE) {
        // RFC 9297 3.2: a capsule of another type is skipped whatever its length, never held.
        if (end > buffer.length) {
          this.skip = end - buffer.length;
          return true;
        }
        offset = end;
        continue;
      }
      if (length[0] > MAX_CAPSULE) return false;
      if (end > buffer.length) {
        this.hold(buffer.subarray(offset), end - offset);
        return true;
      }
      const context = readVarint(buffer.subarray(0, end), length[1]);
      if (context?.[0] === 0) this.deliver(buffer.subarray(context[1], end));
      offset = end;
    }
  }

  private hold(rest: Buffer, need: number): void {
    if (rest.length === 0) return;
    this.held = [Buffer.from(rest)];
    this.heldBytes = rest.length;
    this.need = need;
  }
}

/** Expands an RFC 9298 URI template with the target host and port (percent-encoded). */
export function expandUdpPath(template: string, host: string, port: number): string {
  return template
    .replace('{target_host}', encodeURIComponent(host))
    .replace('{target_port}', String(port));
}
