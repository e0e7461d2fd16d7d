import { integer, optionalRecord, rejectUnknownKeys } from '../internal/validate.js';
import type { PrereadInspector } from './types.js';
import { MORE, SKIP } from './types.js';

/** Options of {@link firstLine}. */
export interface FirstLineOptions {
  /** Longest line (without its end) before the inspector skips. Default 1024. */
  readonly maxLength?: number;
}

/**
 * The first line of a text protocol (SMTP-style commands sent by the client, Redis inline
 * commands, a custom handshake): matches with `{ protocol: 'text', line }` once a `\n` arrives
 * (`line` without its `\r\n`, decoded as UTF-8). Skips when the line is longer than `maxLength`
 * or holds a NUL byte (binary).
 *
 * @example
 * selector: (ctx) => ctx.preread?.line?.line?.toString().startsWith('HELLO tenant-a') ? a : b
 */
export function firstLine(options: FirstLineOptions = {}): PrereadInspector {
  const raw = optionalRecord(options, 'firstLine options');
  rejectUnknownKeys(raw, ['maxLength'], 'firstLine');
  const maxLength = integer(raw.maxLength, 'firstLine.maxLength', 1024, { min: 1, max: 1 << 20 });
  return (bytes) => {
    const end = bytes.indexOf(0x0a);
    const length = end < 0 ? bytes.length : end;
    if (bytes.subarray(0, Math.min(length, maxLength + 1)).includes(0)) return SKIP;
    if (end < 0) {
      // A line of `maxLength` may have its `\r` in this read and its `\n` in the next.
      const text = bytes.length - (bytes[bytes.length - 1] === 0x0d ? 1 : 0);
      return text > maxLength ? SKIP : MORE;
    }
    const cut = end > 0 && bytes[end - 1] === 0x0d ? end - 1 : end;
    if (cut > maxLength) return SKIP;
    return {
      action: 'match',
      metadata: { protocol: 'text', line: bytes.toString('utf8', 0, cut) },
    };
  };
}
