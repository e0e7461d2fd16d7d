import { InvalidOptionError } from '../errors.js';

/** A port for an encoded header: an integer 0-65535, else {@link InvalidOptionError} naming `name`. */
export function checkPort(port: unknown, name: string): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff)
    throw new InvalidOptionError(name, 'an integer from 0 to 65535', port);
  return port;
}
