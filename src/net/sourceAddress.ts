import { isIP } from 'node:net';
import { InvalidOptionError } from '../errors.js';

/** An IP literal the proxy binds its upstream sockets to, or undefined. */
export function resolveSourceAddress(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || isIP(value) === 0)
    throw new InvalidOptionError(name, 'an IPv4 or IPv6 address literal', value);
  return value;
}
