import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type { Server, Socket } from 'node:net';
import type { ProxyHeader } from '../../src/protocol/ProxyHeader.js';
import { ProxyHeaderParser, decodeProxyHeader } from '../../src/protocol/ProxyHeaderParser.js';
import { encodeProxyHeader } from '../../src/protocol/encodeProxyHeader.js';
import { proxyTlvs, readProxyTlvs } from '../../src/protocol/proxyTlvFields.js';
import { startHaproxy } from '../helpers/haproxy.js';
import { connect, listen, readAll, withTimeout } from '../helpers/net.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';
import { testCa } from '../helpers/tlsCa.js';
import { haproxyAcceptingProxy, nginxReportingClient } from '../helpers/proxyProtocolReceivers.js';

/** What the PROXY-aware Node server saw on one connection. */
interface Seen {
  header: ProxyHeader;
  payload: string;
}

/** A Node server that decodes the PROXY header with ProxyHeaderParser, then the payload until FIN. */
async function proxyAwareServer(): Promise<{
  port: number;
  seen: Seen[];
  next(): Promise<Seen>;
  close(): Promise<void>;
}> {
  const seen: Seen[] = [];
  const waiting: ((s: Seen) => void)[] = [];
  const sockets = new Set<Socket>();
  const server: Server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    const parser = new ProxyHeaderParser();
    let header: ProxyHeader | undefined;
    const payload: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      if (header !== undefined) {
        payload.push(chunk);
        return;
      }
      try {
        const result = parser.push(chunk);
        if (result === undefined) return;
        header = result.header;
        payload.push(result.rest);
      } catch (error) {
        socket.destroy(error as Error);
      }
    });
    socket.on('end', () => {
      if (header !== undefined) {
        const entry = { header, payload: Buffer.concat(payload).toString() };
        const waiter = waiting.shift();
        if (waiter) waiter(entry);
        else seen.push(entry);
      }
      socket.end('ok');
    });
  });
  const port = await listen(server);
  return {
    port,
    seen,
    next: () => {
      const ready = seen.shift();
      return withTimeout(
        ready ? Promise.resolve(ready) : new Promise<Seen>((resolve) => waiting.push(resolve)),
        5_000,
        'a PROXY header at the Node server',
      );
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
    },
  };
}

/** Sends `payload` through host:port, half-closes, and returns the client socket's local endpoint. */
async function sendThrough(
  host: string,
  port: number,
  payload: string,
): Promise<{ address: string; port: number; reply: string }> {
  const socket = await connect(port, host);
  const local = { address: socket.localAddress ?? '', port: socket.localPort ?? 0 };
  socket.end(payload);
  const reply = (await readAll(socket)).toString();
  socket.destroy();
  return { ...local, reply };
}

describe('PROXY protocol interop: haproxy as the sender', () => {
  test('ProxyHeaderParser decodes haproxy send-proxy and send-proxy-v2 (with CRC32C and UNIQUE_ID) over IPv4 and IPv6', async (t) => {
    if (!tool(t, 'haproxy')) return;
    const node = await proxyAwareServer();
    const ports = {
      v1: await freePort(),
      v2: await freePort(),
      v1six: await freePort('::1'),
      v2six: await freePort('::1'),
    };
    const haproxy = await startHaproxy(
      [
        'backend node_v1',
        `  server s1 127.0.0.1:${node.port} send-proxy`,
        'backend node_v2',
        `  server s1 127.0.0.1:${node.port} send-proxy-v2 proxy-v2-options crc32c,unique-id`,
        'frontend in_v1',
        `  bind 127.0.0.1:${ports.v1}`,
        `  bind [::1]:${ports.v1six}`,
        '  default_backend node_v1',
        'frontend in_v2',
        `  bind 127.0.0.1:${ports.v2}`,
        `  bind [::1]:${ports.v2six}`,
        '  unique-id-format %ci_%cp',
        '  default_backend node_v2',
      ].join('\n'),
    );
    try {
      const cases = [
        { host: '127.0.0.1', port: ports.v1, version: 1, protocol: 'TCP4' },
        { host: '127.0.0.1', port: ports.v2, version: 2, protocol: 'TCP4' },
        { host: '::1', port: ports.v1six, version: 1, protocol: 'TCP6' },
        { host: '::1', port: ports.v2six, version: 2, protocol: 'TCP6' },
      ] as const;
      for (const c of cases) {
        const client = await sendThrough(c.host, c.port, `hello over ${c.protocol} v${c.version}`);
        const { header, payload } = await node.next();
        assert.equal(header.version, c.version);
        assert.equal(header.protocol, c.protocol);
        assert.deepEqual(
          header.source,
          { address: client.address, port: client.port },
          'the real client',
        );
        assert.deepEqual(
          header.destination,
          { address: c.host, port: c.port },
          'the haproxy frontend',
        );
        assert.equal(payload, `hello over ${c.protocol} v${c.version}`);
        assert.equal(client.reply, 'ok');
        if (c.version === 2) {
          assert.ok(
            header.tlvs?.some((tlv) => tlv.type === 0x03),
            'haproxy sent a CRC32C TLV we verified',
          );
          assert.equal(
            readProxyTlvs(header.tlvs ?? []).uniqueId?.toString(),
            `${client.address}_${client.port}`,
          );
        }
      }
    } finally {
      await haproxy.stop();
      await node.close();
    }
  });
});

describe('PROXY protocol interop: haproxy send-proxy-v2-ssl-cn', () => {
  test('readProxyTlvs reads the SSL, ALPN, AUTHORITY and UNIQUE_ID TLVs haproxy writes as haproxy logs them', async (t) => {
    const openssl = tool(t, 'openssl');
    if (!tool(t, 'haproxy') || openssl === undefined) return;
    const ca = await testCa(t, openssl);
    const server = await ca.issue('localhost', ['localhost', 'name.test', 'other.test']);
    const client = await ca.issue('proxied-client.example', ['client.example'], 'client');
    const node = await proxyAwareServer();
    t.after(() => node.close());
    const port = await freePort();
    const haproxy = await startHaproxy(
      [
        'listen in',
        `  bind 127.0.0.1:${port} ssl crt ${server.bundleFile} ca-file ${ca.certFile} verify optional alpn h2,http/1.1`,
        '  unique-id-format %ci_%cp',
        '  log-format "LOGGED %[ssl_fc_protocol] %[ssl_fc_cipher] %[ssl_c_s_dn(cn)] %[ssl_fc_sni] %ID"',
        `  server s1 127.0.0.1:${node.port} send-proxy-v2-ssl-cn proxy-v2-options ssl,cert-sig,cert-key,ssl-cipher,authority,crc32c,unique-id`,
      ].join('\n'),
    );
    t.after(() => haproxy.stop());
    const visits = [
      { servername: 'Name.Test', ALPNProtocols: ['h2'], cert: client.cert, key: client.key },
      { servername: 'other.test', maxVersion: 'TLSv1.2' as const },
    ];
    for (const options of visits) {
      const socket = tls.connect({ port, host: '127.0.0.1', ca: ca.cert, ...options });
      socket.on('error', () => undefined);
      await withTimeout(once(socket, 'secureConnect'), 5_000, 'the TLS handshake with haproxy');
      const local = `${socket.localAddress ?? ''}_${socket.localPort ?? 0}`;
      const version = socket.getProtocol() ?? '';
      socket.end('over tls');
      const { header, payload } = await node.next();
      socket.destroy();
      assert.equal(payload, 'over tls');
      assert.ok(
        header.tlvs?.some((tlv) => tlv.type === 0x03),
        'a CRC32C TLV, verified',
      );
      const fields = readProxyTlvs(header.tlvs ?? []);
      const logged = await haproxy.waitForOutput(new RegExp(`LOGGED .* ${local}\\b`));
      const line = logged.split('\n').find((l) => l.includes(` ${local}`)) ?? '';
      const [, logVersion, logCipher, logCn, logSni] = line.split(' ');
      assert.equal(fields.authority, options.servername, 'AUTHORITY is the SNI as sent');
      assert.equal(logSni, options.servername);
      assert.equal(fields.alpn, options.ALPNProtocols?.[0]);
      assert.equal(fields.uniqueId?.toString(), local);
      assert.equal(fields.ssl?.version, version);
      assert.equal(fields.ssl.version, logVersion);
      assert.equal(fields.ssl.cipher, logCipher, "the cipher, in OpenSSL's name");
      assert.equal(fields.ssl.verify, 0);
      assert.equal(fields.ssl.sigAlg, 'ecdsa-with-SHA256');
      assert.equal(fields.ssl.keyAlg, 'EC256');
      if (options.cert === undefined) {
        assert.equal(fields.ssl.client, 0x01, 'PP2_CLIENT_SSL only');
        assert.equal(fields.ssl.cn, undefined);
        assert.equal(logCn, '-');
      } else {
        assert.equal(fields.ssl.client, 0x07, 'SSL, CERT_CONN and CERT_SESS');
        assert.equal(fields.ssl.cn, 'proxied-client.example', 'the CN');
        assert.equal(logCn, fields.ssl.cn);
      }
    }
  });
});

const claims = [
  {
    protocol: 'TCP4',
    source: { address: '203.0.113.7', port: 4242 },
    destination: { address: '198.51.100.1', port: 443 },
  },
  {
    protocol: 'TCP6',
    source: { address: '2001:db8::7', port: 6464 },
    destination: { address: '2001:db8::1', port: 443 },
  },
] as const;

function claimHeader(version: 1 | 2, claim: (typeof claims)[number]): Buffer {
  const header = { version, command: 'PROXY', ...claim } as const;
  if (version === 1) return encodeProxyHeader(header);
  return encodeProxyHeader(
    {
      ...header,
      tlvs: proxyTlvs({
        authority: 'example.com',
        uniqueId: Buffer.from('conn-1'),
        custom: [{ type: 0xe0, value: Buffer.from('x') }],
      }),
    },
    { crc32c: true },
  );
}

describe('PROXY protocol interop: haproxy as the receiver', () => {
  test('haproxy accept-proxy believes encodeProxyHeader v1 and v2 (with CRC32C and TLVs), IPv4 and IPv6', async (t) => {
    if (!tool(t, 'haproxy')) return;
    const haproxy = await haproxyAcceptingProxy('client=%ci:%cp');
    try {
      for (const version of [1, 2] as const) {
        for (const claim of claims) {
          const socket = await connect(haproxy.port);
          const reply = readAll(socket);
          socket.write(claimHeader(version, claim));
          socket.end(`ping v${version}`);
          assert.equal(
            (await reply).toString(),
            `ping v${version}`,
            'haproxy took the header off and relayed the payload',
          );
          socket.destroy();
          await haproxy.waitForOutput(
            new RegExp(
              `client=${claim.source.address.replace(/[.]/g, '\\.')}:${claim.source.port}`,
            ),
          );
        }
      }
    } finally {
      await haproxy.stop();
    }
  });

  test('a v1 TCP6 address reads as haproxy reads it and as v2 decodes its bytes; what haproxy refuses is refused', async (t) => {
    if (!tool(t, 'haproxy')) return;
    const decode = (line: string): string => {
      try {
        const header = new ProxyHeaderParser().push(Buffer.from(line, 'latin1'))?.header;
        return header?.protocol === 'TCP6' ? header.source.address : 'none';
      } catch {
        return 'refused';
      }
    };
    const haproxy = await haproxyAcceptingProxy('client=%ci:%cp');
    try {
      // Spellings of one address each (upper case, zeros written out, a dotted tail or not).
      const spellings = [
        '::FFFF:192.0.2.7',
        '::ffff:c000:207',
        '0:0:0:0:0:ffff:192.0.2.7',
        '0:0::1',
        '2001:0DB8:0000:0000:0000:0000:0000:0007',
        '2001:db8:0:0:1:0:0:1',
        '::1:2:3:4:5:6:7',
      ];
      for (const [i, address] of spellings.entries()) {
        const port = 4000 + i;
        const line = `PROXY TCP6 ${address} ::1 ${port} 443\r\n`;
        const ours = decode(line);
        const v2 = decodeProxyHeader(
          encodeProxyHeader({
            version: 2,
            command: 'PROXY',
            protocol: 'TCP6',
            source: { address, port },
            destination: { address: '::1', port: 443 },
          }),
        );
        assert.equal(v2.header.protocol === 'TCP6' && v2.header.source.address, ours, address);
        const socket = await connect(haproxy.port);
        const reply = readAll(socket);
        socket.end(`${line}ping`);
        assert.equal((await reply).toString(), 'ping', `haproxy took ${address}`);
        socket.destroy();
        const logged = await haproxy.waitForOutput(new RegExp(`client=\\S+:${port}`));
        const haproxyRead = new RegExp(`client=(\\S+):${port}`).exec(logged)?.[1];
        assert.equal(ours, haproxyRead, address);
      }
      const refused = ['fe80::1%eth0', '::ffff:01.2.3.4', '1:2:3:4:5:6:7:8:9', ':::1', '1.2.3.4'];
      for (const [i, address] of refused.entries()) {
        assert.equal(decode(`PROXY TCP6 ${address} ::1 5000 443\r\n`), 'refused', address);
        const socket = await connect(haproxy.port);
        const reply = readAll(socket);
        socket.end(`PROXY TCP6 ${address} ::1 5000 443\r\nping`);
        assert.equal((await reply).toString(), '', `haproxy refused ${address}`);
        socket.destroy();
        await haproxy.waitForOutput(new RegExp(`(invalid PROXY protocol header[^]*){${i + 1}}`));
      }
    } finally {
      await haproxy.stop();
    }
  });

  test('haproxy accept-proxy refuses a v2 header whose CRC32C we corrupted', async (t) => {
    if (!tool(t, 'haproxy')) return;
    const haproxy = await haproxyAcceptingProxy();
    try {
      const bytes = claimHeader(2, claims[0]);
      bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
      const socket = await connect(haproxy.port);
      const reply = readAll(socket);
      socket.write(bytes);
      socket.write('ping');
      assert.equal((await reply).toString(), '', 'haproxy closed without relaying');
      socket.destroy();
    } finally {
      await haproxy.stop();
    }
  });
});

describe('PROXY protocol interop: nginx as the receiver', () => {
  test('nginx proxy_protocol reports the client encodeProxyHeader claims, v1 and v2, IPv4 and IPv6', async (t) => {
    if (!tool(t, 'nginx')) return;
    const nginx = await nginxReportingClient();
    try {
      for (const version of [1, 2] as const) {
        for (const claim of claims) {
          const socket = await connect(nginx.port);
          const reply = readAll(socket);
          socket.write(claimHeader(version, claim));
          assert.equal(
            (await reply).toString(),
            `${claim.source.address}:${claim.source.port}\n`,
            `v${version} ${claim.protocol}`,
          );
          socket.destroy();
        }
      }
    } finally {
      await nginx.stop();
    }
  });
});
