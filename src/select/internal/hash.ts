/**
 * xxHash32 (Yann Collet's XXH32): fast, well distributed and identical on every platform, so the
 * same key maps to the same upstream in every process and across restarts.
 */

const P1 = 0x9e3779b1;
const P2 = 0x85ebca77;
const P3 = 0xc2b2ae3d;
const P4 = 0x27d4eb2f;
const P5 = 0x165667b1;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function round(acc: number, input: number): number {
  return Math.imul(rotl((acc + Math.imul(input, P2)) | 0, 13), P1);
}

function read32(data: Uint8Array, i: number): number {
  // Bounds are checked by the callers' loop conditions; `?? 0` only satisfies the type checker.
  return (
    (data[i] ?? 0) |
    ((data[i + 1] ?? 0) << 8) |
    ((data[i + 2] ?? 0) << 16) |
    ((data[i + 3] ?? 0) << 24)
  );
}

/** XXH32 of the first `length` bytes of `data` with `seed`, as an unsigned 32-bit integer. */
export function xxHash32(data: Uint8Array, seed = 0, length = data.length): number {
  let i = 0;
  let h: number;
  if (length >= 16) {
    let v1 = (seed + P1 + P2) | 0;
    let v2 = (seed + P2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - P1) | 0;
    for (const limit = length - 16; i <= limit; i += 16) {
      v1 = round(v1, read32(data, i));
      v2 = round(v2, read32(data, i + 4));
      v3 = round(v3, read32(data, i + 8));
      v4 = round(v4, read32(data, i + 12));
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = (seed + P5) | 0;
  }
  h = (h + length) | 0;
  for (; i + 4 <= length; i += 4) {
    h = Math.imul(rotl((h + Math.imul(read32(data, i), P3)) | 0, 17), P4);
  }
  for (; i < length; i++) {
    h = Math.imul(rotl((h + Math.imul(data[i] ?? 0, P5)) | 0, 11), P1);
  }
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Reused so hashing a short string key allocates nothing. */
let scratch = new Uint8Array(256);
const encoder = new TextEncoder();

/** UTF-8 encodes `text` into the shared scratch buffer; returns the byte length. */
function encode(text: string): number {
  if (text.length * 3 > scratch.length) scratch = new Uint8Array(text.length * 3);
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const code = text.charCodeAt(i);
    if (code >= 0x80) return encoder.encodeInto(text, scratch).written;
    scratch[i] = code;
  }
  return n;
}

/** XXH32 of a key: a string is hashed as its UTF-8 bytes, so `'a'` and `Buffer.from('a')` agree. */
export function hashKey(key: string | Uint8Array, seed = 0): number {
  if (typeof key !== 'string') return xxHash32(key, seed);
  const length = encode(key); // may replace `scratch`, so read it after
  return xxHash32(scratch, seed, length);
}

/** XXH32 of `text` in UTF-8 followed by `index` as 4 little-endian bytes (ring points, probe seeds). */
export function hashWithIndex(text: string, index: number, seed = 0): number {
  const n = encode(text);
  if (n + 4 > scratch.length) {
    const bigger = new Uint8Array(n + 4);
    bigger.set(scratch.subarray(0, n));
    scratch = bigger;
  }
  scratch[n] = index & 0xff;
  scratch[n + 1] = (index >>> 8) & 0xff;
  scratch[n + 2] = (index >>> 16) & 0xff;
  scratch[n + 3] = (index >>> 24) & 0xff;
  return xxHash32(scratch, seed, n + 4);
}
