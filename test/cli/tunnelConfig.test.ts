import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { closeAll, ConfigError, validateConfig } from '../../src/cli/config.js';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { HttpTunnel, TunnelPeer } from '../../src/index.js';
import { connect, echoServer, readAll } from '../helpers/net.js';
import { taggedEcho } from '../helpers/testServer.js';
import { testCa } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import { configDir, configErrorOf, listenPort, startCli } from './cli.js';

const peer: TunnelPeer = {
  protocol: 'tcp',
  clientAddress: '127.0.0.7',
  clientPort: 5000,
  serverName: 'db.example',
};

test('CLI tunnel upstreams: {sni}/{client} targets, tls.caFile read into tls.ca', () => {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tunnel-cli-'));
  const caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, 'PEM TEXT');
  try {
    const config = validateConfig(
      {
        listeners: [
          {
            protocol: 'tcp',
            listen: '127.0.0.1:0',
            sni: { required: false },
            upstreams: [
              {
                host: '127.0.0.1',
                port: 3128,
                tunnel: { target: '{sni}:5432', tls: { caFile, servername: 'proxy' } },
              },
              { host: '127.0.0.1', port: 3129, tunnel: { protocol: 'h2', target: '{client}:22' } },
            ],
          },
        ],
      },
      'test.json',
    );
    const [first, second] = config.listeners[0]?.proxy.upstreams() ?? [];
    const tunnel = first?.upstream.tunnel as HttpTunnel;
    assert.equal(typeof tunnel.target, 'function');
    assert.equal((tunnel.target as (p: TunnelPeer) => string)(peer), 'db.example:5432');
    assert.deepEqual(tunnel.tls, { servername: 'proxy', ca: 'PEM TEXT' });
    const other = second?.upstream.tunnel as HttpTunnel;
    assert.equal((other.target as (p: TunnelPeer) => string)(peer), '127.0.0.7:22');
    // An IPv6 client (or an IPv4 one on a dual-stack listener) is bracketed: a valid authority.
    for (const clientAddress of ['::1', '::ffff:127.0.0.7'])
      assert.equal(
        (other.target as (p: TunnelPeer) => string)({ ...peer, clientAddress }),
        `[${clientAddress}]:22`,
      );
    closeAll(config.listeners);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI tunnel upstreams: a relative tls.caFile is read from the config file directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tunnel-cli-'));
  writeFileSync(join(dir, 'corp-ca.pem'), 'RELATIVE PEM');
  try {
    assert.notEqual(process.cwd(), dir);
    const config = validateConfig(
      {
        listeners: [
          {
            protocol: 'tcp',
            listen: '127.0.0.1:0',
            upstreams: [
              {
                host: '127.0.0.1',
                port: 3128,
                tunnel: { target: 'db:5432', tls: { caFile: 'corp-ca.pem' } },
              },
            ],
          },
        ],
      },
      join(dir, 'l4proxy.json'),
    );
    const [upstream] = config.listeners[0]?.proxy.upstreams() ?? [];
    assert.deepEqual((upstream?.upstream.tunnel as HttpTunnel).tls, { ca: 'RELATIVE PEM' });
    closeAll(config.listeners);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CLI tunnel errors name the option path', () => {
  const listener = (tunnel: unknown) => ({
    listeners: [
      {
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 3128, tunnel }],
      },
    ],
  });
  assert.throws(
    () => validateConfig(listener({ target: 'x:1', tls: { caFile: '/nonexistent/ca.pem' } }), 'f'),
    (err: unknown) =>
      err instanceof ConfigError && err.path === 'listeners[0].upstreams[0].tunnel.tls.caFile',
  );
  assert.throws(
    () => validateConfig(listener({ target: 'no-port' }), 'f'),
    (err: unknown) =>
      err instanceof ConfigError && err.path === 'listeners[0].upstreams[0].tunnel.target',
  );
  assert.throws(
    () => validateConfig(listener({ target: 'x:1', protocol: 'h3' }), 'f'),
    (err: unknown) =>
      err instanceof ConfigError && err.path === 'listeners[0].upstreams[0].tunnel.protocol',
  );
});

test('CLI tunnel upstreams pass usePost and postPath through: the tunnel is an HTTP/2 POST to that path', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    route: 'any',
    postPath: '/tunnel',
  });
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  /** The TCP proxy the CLI builds for a tunnel upstream POSTing to `postPath`, listening. */
  const cliProxy = async (postPath: string): Promise<{ proxy: TcpProxy; port: number }> => {
    const config = validateConfig(
      {
        listeners: [
          {
            protocol: 'tcp',
            listen: '127.0.0.1:0',
            maxConnectAttempts: 1,
            upstreams: [
              {
                host: '127.0.0.1',
                port,
                tunnel: { protocol: 'h2', target: 'db:5432', usePost: true, postPath },
              },
            ],
          },
        ],
      },
      'test.json',
    );
    const proxy = config.listeners[0]?.proxy;
    assert.ok(proxy instanceof TcpProxy);
    t.after(() => proxy.close({ drainTimeout: 0 }));
    return { proxy, port: (await proxy.listen({ port: 0, host: '127.0.0.1' })).port };
  };
  const posting = await cliProxy('/tunnel');
  const client = await connect(posting.port);
  client.end('posted bytes');
  assert.equal((await readAll(client)).toString(), 'posted bytes');
  // The same upstream POSTing elsewhere is refused with 405: the path (and so POST) reached the
  // wire. A CONNECT would have been accepted whatever the path.
  const elsewhere = await cliProxy('/elsewhere');
  const refused = new Promise<unknown>((resolve) => {
    elsewhere.proxy.once('connectionClose', (summary) => {
      resolve(summary.error);
    });
  });
  const refusedClient = await connect(elsewhere.port);
  await readAll(refusedClient);
  refusedClient.destroy();
  assert.equal(((await refused) as { status?: number } | undefined)?.status, 405);
  assert.equal(server.stats().tunnel_opened_total, 1);
});

test('CLI: SIGHUP re-reads a renewed tunnel tls.caFile (new tunnels trust the new CA)', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const oldCa = await testCa(t, openssl);
  const newCa = await testCa(t, openssl, 'renewed CA');
  const [oldCert, newCert] = await Promise.all(
    [oldCa, newCa].map((ca) => ca.issue('localhost', ['localhost'])),
  );
  const target = await taggedEcho(t, 'A:');
  // The tunnel proxy, TLS with a certificate of the old CA.
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: target }],
    terminateTls: { cert: oldCert?.cert ?? '', key: oldCert?.key ?? '' },
  });
  const { port: proxyPort } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  const dir = configDir(t);
  dir.write('proxy-ca.pem', oldCa.cert);
  const listener = {
    name: 'via-tunnel',
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    maxConnectAttempts: 1,
    upstreams: [
      {
        host: '127.0.0.1',
        port: proxyPort,
        tunnel: {
          target: `127.0.0.1:${String(target)}`,
          tls: { caFile: 'proxy-ca.pem', servername: 'localhost' },
        },
      },
    ],
  };
  const file = dir.write('l4proxy.json', { listeners: [listener] });
  const cli = startCli(t, ['--config', file]);
  const port = await listenPort(cli);
  const exchange = async (text: string): Promise<string> => {
    const socket = await connect(port);
    const reply = readAll(socket);
    socket.end(text);
    return (await reply).toString();
  };
  assert.equal(await exchange('before'), 'A:before');
  // The proxy's certificate is renewed under a new CA, and the CA file with it.
  server.setTerminateTls({ cert: newCert?.cert ?? '', key: newCert?.key ?? '' });
  dir.write('proxy-ca.pem', newCa.cert);
  process.kill(cli.pid, 'SIGHUP');
  const reloaded = await cli.waitLine('stderr', (l) => l.msg.startsWith('config reloaded'));
  assert.deepEqual(reloaded.needsRestart, []);
  assert.equal(await exchange('after'), 'A:after');
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
});

test('an unknown tunnel listener key lists the keys a JSON tunnel listener knows: dns, not upstreamSource', () => {
  const message = configErrorOf({
    listeners: [
      { protocol: 'tunnel', listen: '127.0.0.1:0', dsn: { name: 'db.example.test', port: 5432 } },
    ],
  });
  assert.match(
    message,
    /^l4proxy\.json: listeners\[0\]\.dsn: expected one of the known options \(name, protocol, listen, selector, module, dns, unixSocket, backlog, upstreams, /,
  );
  assert.match(message, /\(did you mean "dns"\?\)/);
  assert.doesNotMatch(message, /upstreamSource/);
});

test('a tunnel listener upstream whose metadata.authority is no host:port is refused naming it', () => {
  const message = configErrorOf({
    listeners: [
      {
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        upstreams: [{ host: '127.0.0.1', port: 5432, metadata: { authority: 'db.internal' } }],
      },
    ],
  });
  assert.match(message, /^l4proxy\.json: listeners\[0\]\.upstreams\[0\]\.metadata\.authority: /);
});
