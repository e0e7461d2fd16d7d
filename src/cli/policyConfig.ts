import { InvalidOptionError } from '../errors.js';
import { isRecord } from '../internal/validate.js';

/** Bytes per second per unit; bits are divided by 8 (nginx writes rates in bytes, iperf3 in bits). */
const UNITS: Readonly<Record<string, number>> = {
  b: 1 / 8,
  bit: 1 / 8,
  kbit: 1_000 / 8,
  mbit: 1_000_000 / 8,
  gbit: 1_000_000_000 / 8,
  B: 1,
  kB: 1_000,
  KB: 1_000,
  MB: 1_000_000,
  GB: 1_000_000_000,
  KiB: 1_024,
  MiB: 1_048_576,
  GiB: 1_073_741_824,
};

const RATE = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)?(?:\/s)?\s*$/;

/**
 * A rate as a config file may write it: a number (bytes per second) or a string with a unit,
 * `"30mbit"`, `"25Mbit/s"`, `"4MB"`, `"512KiB/s"`. Returns bytes per second (an integer).
 */
export function parseRate(value: unknown, option: string): unknown {
  if (typeof value !== 'string') return value;
  const match = RATE.exec(value);
  const unit = match?.[2] ?? 'B';
  const factor = UNITS[unit] ?? UNITS[unit.toLowerCase()];
  if (match?.[1] === undefined || factor === undefined)
    throw new InvalidOptionError(
      option,
      'bytes per second, or a rate such as "30mbit", "25Mbit/s", "4MB", "512KiB/s"',
      value,
    );
  return Math.round(Number(match[1]) * factor);
}

/**
 * The connection-policy keys of a listener, in the forms a config file may use (rates with
 * units), turned into what `TcpProxy` takes. Everything else (caps are `upstreams[i].maxConnections`,
 * durations are milliseconds) passes through to the library, which validates it.
 *
 * @throws {InvalidOptionError} naming the option (the caller maps it to a `ConfigError`).
 */
export function applyPolicyConfig(options: Record<string, unknown>): void {
  const bandwidth = options.bandwidth;
  if (!isRecord(bandwidth)) return;
  const converted: Record<string, unknown> = { ...bandwidth };
  for (const key of ['upload', 'download'])
    if (key in bandwidth) converted[key] = parseRate(bandwidth[key], `bandwidth.${key}`);
  const shared = bandwidth.shared;
  if (isRecord(shared)) {
    const sharedConverted: Record<string, unknown> = { ...shared };
    for (const key of ['upload', 'download'])
      if (key in shared) sharedConverted[key] = parseRate(shared[key], `bandwidth.shared.${key}`);
    converted.shared = sharedConverted;
  }
  options.bandwidth = converted;
}
