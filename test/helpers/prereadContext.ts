import type { PrereadContext } from '../../src/index.js';

/** What an inspector is told about a plain client on loopback, for calling inspectors directly. */
export const prereadContext: PrereadContext = {
  clientAddress: '127.0.0.1',
  clientPort: 1,
  localAddress: '127.0.0.1',
  localPort: 2,
  proxyHeader: undefined,
  canStartTls: false,
  tls: undefined,
};
