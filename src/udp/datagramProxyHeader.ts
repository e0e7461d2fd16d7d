import { encodeProxyHeader } from '../protocol/encodeProxyHeader.js';
import { sameFamily } from '../net/sameFamily.js';

/**
 * The PROXY protocol v2 header (UDP4, or UDP6 with IPv4 mapped when the ends differ) naming a
 * UDP client and the proxy address it reached. A wildcard bind address (`::`, `0.0.0.0`) is sent
 * as it is: the socket does not know which local address a datagram was sent to.
 */
export function datagramProxyHeader(
  clientAddress: string,
  clientPort: number,
  localAddress: string,
  localPort: number,
): Buffer {
  const ends = sameFamily(clientAddress, localAddress);
  if (ends === undefined) {
    return encodeProxyHeader({ version: 2, command: 'PROXY', protocol: 'UNKNOWN' });
  }
  return encodeProxyHeader({
    version: 2,
    command: 'PROXY',
    protocol: ends[0] === 'TCP4' ? 'UDP4' : 'UDP6',
    source: { address: ends[1], port: clientPort },
    destination: { address: ends[2], port: localPort },
  });
}

/** What a UDP health check sends before its probe, in the same datagram: a LOCAL header. */
export function localDatagramHeader(): Buffer {
  return encodeProxyHeader({ version: 2, command: 'LOCAL', protocol: 'UNKNOWN' });
}
