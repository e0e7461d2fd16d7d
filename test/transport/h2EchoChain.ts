import type { TestContext } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import { echoServer } from '../helpers/net.js';

/**
 * A TcpProxy whose one upstream is an echo server reached through a TunnelServer over HTTP/2
 * CONNECT, all three closed after the test. `port` is the proxy's.
 */
export async function h2EchoChain(t: TestContext): Promise<{ proxy: TcpProxy; port: number }> {
  const echo = await echoServer();
  const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
  const { port: tunnelPort } = await server.listen({ port: 0, host: '127.0.0.1' });
  const proxy = new TcpProxy({
    upstreams: [
      {
        host: '127.0.0.1',
        port: tunnelPort,
        tunnel: { target: `127.0.0.1:${String(echo.port)}`, protocol: 'h2' },
      },
    ],
  });
  t.after(async () => {
    await proxy.close();
    await server.close();
    await echo.close();
  });
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
  return { proxy, port };
}
