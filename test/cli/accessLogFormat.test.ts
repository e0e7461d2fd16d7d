import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileFormat, parseAccessLogSetting } from '../../src/cli/accessLogFormat.js';
import { connect, readAll, readUntil, waitFor } from '../helpers/net.js';
import { testServer } from '../helpers/testServer.js';
import { configDir, listenPort, runCli, startCli } from './cli.js';
import { testCa } from '../helpers/tlsCa.js';
import { opensslClient, startOpensslServer } from '../helpers/openssl.js';
import { tool } from '../helpers/tools.js';

const echo = (t: { after(fn: () => unknown): void }): Promise<number> =>
  testServer(t, (socket) => socket.pipe(socket));

describe('access log formats', () => {
  test('Envoy-style operators, FIELD(path) for stage fields, "-" for what is missing', () => {
    const render = compileFormat(
      '[%START_TIME%] %LISTENER% %DOWNSTREAM_REMOTE_ADDRESS% -> %UPSTREAM_HOST% (%UPSTREAM_ID%) ' +
        '%BYTES_RECEIVED%/%BYTES_SENT% %DURATION%ms %CLOSE_REASON% sni=%REQUESTED_SERVER_NAME% ' +
        'tls=%FIELD(tls.version)% host=%FIELD(preread.http.host)% %ACCESS_LOG_TYPE% 100%',
    );
    const line = render(
      {
        listener: 'web',
        protocol: 'tcp',
        startTime: Date.UTC(2026, 0, 2, 3, 4, 5),
        clientAddress: '::1',
        clientPort: 4000,
        upstream: { id: 'app', host: '127.0.0.1', port: 80 },
        bytesFromClient: 10,
        bytesToClient: 20,
        durationMs: 7,
        reason: 'completed',
        tls: { version: 'TLSv1.3' },
      },
      'end',
    );
    assert.equal(
      line,
      '[2026-01-02T03:04:05.000Z] web [::1]:4000 -> 127.0.0.1:80 (app) 10/20 7ms completed sni=- tls=TLSv1.3 host=- TcpConnectionEnd 100%',
    );
    assert.throws(() => compileFormat('%NOPE%'), /unknown operator %NOPE%/);
  });

  test('a client-chosen value cannot end a text line or hold control characters: they are written \\xHH', () => {
    const render = compileFormat(
      '%LISTENER% user=%PREREAD(postgres.user)% host="%PREREAD(http1.host)%"',
    );
    const line = render(
      {
        listener: 'pg',
        protocol: 'tcp',
        preread: {
          postgres: { user: 'alice\nbob completed FORGED\r\x1b[2J\x9b\x7f\\x0a' },
          http1: { host: 'café.test"' },
        },
      },
      'end',
    );
    assert.equal(
      line,
      'pg user=alice\\x0Abob completed FORGED\\x0D\\x1B[2J\\x9B\\x7F\\x5Cx0a host="café.test""',
    );
  });

  test('the setting is validated with the path and what was expected', () => {
    assert.deepEqual(parseAccessLogSetting({ format: '%NOPE%' }).ok, false);
    const both = parseAccessLogSetting({ format: '%DURATION%', fields: ['id'] });
    assert.equal(both.ok ? '' : both.path, 'accessLog.fields');
    const interval = parseAccessLogSetting({ flushInterval: 5 });
    assert.equal(interval.ok ? '' : interval.path, 'accessLog.flushInterval');
    const unknown = parseAccessLogSetting({ colour: true });
    assert.equal(unknown.ok ? '' : unknown.path, 'accessLog.colour');
    assert.deepEqual(parseAccessLogSetting({ fields: ['id', 'reason'], flushOnConnected: true }), {
      ok: true,
      value: { fields: ['id', 'reason'], flushOnConnected: true },
    });
  });

  test('CLI: TLS (openssl s_client with a client certificate) and preread fields by name', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const ca = await testCa(t, openssl);
    const server = await ca.issue('localhost', ['localhost']);
    const client = await ca.issue('alice', ['alice'], 'client');
    const upstream = await echo(t);
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      accessLog: {
        format:
          '%LISTENER% tls=%DOWNSTREAM_TLS_VERSION% cipher=%DOWNSTREAM_TLS_CIPHER% sni=%REQUESTED_SERVER_NAME% peer=%DOWNSTREAM_PEER_SUBJECT% fp=%DOWNSTREAM_PEER_FINGERPRINT_256% host=%PREREAD(http1.host)% %CLOSE_REASON%',
      },
      listeners: [
        {
          name: 'tls',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          terminateTls: {
            certFile: server.certFile,
            keyFile: server.keyFile,
            caFile: ca.certFile,
            clientCertificate: 'required',
          },
          upstreams: [{ host: '127.0.0.1', port: upstream }],
        },
        {
          name: 'http',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          preread: { inspectors: ['http1'] },
          upstreams: [{ host: '127.0.0.1', port: upstream }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const tlsPort = await listenPort(cli, 'tls');
    const httpPort = await listenPort(cli, 'http');
    const out = await opensslClient(
      openssl,
      [
        '-connect',
        `127.0.0.1:${tlsPort}`,
        '-servername',
        'localhost',
        '-CAfile',
        ca.certFile,
        '-cert',
        client.certFile,
        '-key',
        client.keyFile,
        '-brief',
      ],
      'ping\n',
    );
    assert.match(out, /CONNECTION ESTABLISHED|Verification: OK/);
    const socket = await connect(httpPort);
    socket.write('GET / HTTP/1.1\r\nHost: Example.Test:8080\r\n\r\n');
    await waitFor(socket, 'data');
    socket.end();
    const textLine = async (match: RegExp): Promise<string> => {
      for (let i = 0; i < 100; i++) {
        const found = cli.text.find((line) => match.test(line));
        if (found !== undefined) return found;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`no access line matching ${String(match)}: ${JSON.stringify(cli.text)}`);
    };
    await textLine(
      /^tls tls=TLSv1\.3 cipher=TLS_\w+ sni=localhost peer=CN=alice fp=([0-9A-F]{2}:){31}[0-9A-F]{2} host=- \w+$/,
    );
    await textLine(/^http tls=- cipher=- sni=- peer=- fp=- host=example\.test:8080 \w+$/);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test("CLI: %UPSTREAM_WIRE_BYTES_*% with TLS origination are the bytes relayed, before TLS, as Envoy's TCP proxy counts them", async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const ca = await testCa(t, openssl);
    const server = await ca.issue('localhost', ['localhost', '127.0.0.1']);
    const upstream = await startOpensslServer(openssl, server);
    t.after(() => upstream.stop());
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      accessLog: {
        format:
          '%LISTENER% in=%BYTES_RECEIVED% out=%BYTES_SENT% up=%UPSTREAM_WIRE_BYTES_SENT% down=%UPSTREAM_WIRE_BYTES_RECEIVED% %CLOSE_REASON%',
      },
      listeners: [
        {
          name: 'originate',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          tls: { caFile: ca.certFile, servername: 'localhost' },
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli, 'originate');
    const socket = await connect(port);
    socket.write('hello proxy\n');
    await readUntil(socket, /yxorp olleh/);
    socket.end();
    await readAll(socket);
    let line: string | undefined;
    for (let i = 0; i < 100 && line === undefined; i++) {
      line = cli.text.find((text) => text.startsWith('originate in='));
      if (line === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // 12 bytes each way in clear; on the wire TLS added its handshake and 22+ bytes a record.
    const match = /^originate in=(\d+) out=(\d+) up=(\d+) down=(\d+) \w+$/.exec(line ?? '');
    assert.ok(match, `no access line: ${JSON.stringify(cli.text)}`);
    const [, received, sent, wireSent, wireReceived] = match.map(Number);
    assert.equal(received, 12);
    assert.equal(wireSent, received);
    assert.equal(wireReceived, sent);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('CLI: a PostgreSQL user with a newline is one escaped text line, not a forged second one', async (t) => {
    const upstream = await echo(t);
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      accessLog: { format: '%LISTENER% user=%PREREAD(postgres.user)% %CLOSE_REASON%' },
      listeners: [
        {
          name: 'pg',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          preread: { inspectors: ['postgres'] },
          upstreams: [{ host: '127.0.0.1', port: upstream }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    // A StartupMessage (protocol 3.0) whose user parameter holds a newline and a fake line.
    const parameters = Buffer.from('user\0alice\npg user=root completed\0database\0app\0\0');
    const head = Buffer.alloc(8);
    head.writeInt32BE(head.length + parameters.length, 0);
    head.writeInt32BE(196608, 4);
    const socket = await connect(port);
    socket.write(Buffer.concat([head, parameters]));
    await waitFor(socket, 'data');
    socket.end();
    await cli.waitLine('stderr', (l) => l.msg === 'ready');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
    const lines = cli.text.filter((line) => line.startsWith('pg '));
    assert.deepEqual(lines, ['pg user=alice\\x0Apg user=root completed completed']);
  });

  test('CLI: text lines at connect, periodically while open, and at the end', async (t) => {
    const upstream = await echo(t);
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      accessLog: {
        format:
          '%ACCESS_LOG_TYPE% %CONNECTION_ID% %UPSTREAM_HOST% connect=%UPSTREAM_CONNECT_TIME% in=%BYTES_RECEIVED% %CLOSE_REASON%',
        flushOnConnected: true,
        flushInterval: 200,
      },
      listeners: [
        {
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    const socket = await connect(port);
    socket.write('hello');
    await waitFor(socket, 'data');
    const lines: string[] = [];
    const textLines = async (match: RegExp): Promise<string> => {
      for (let i = 0; i < 100; i++) {
        const found = cli.text.find((line) => match.test(line));
        if (found !== undefined) return found;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(
        `no access line matching ${String(match)}; stdout text: ${JSON.stringify(cli.text)}`,
      );
    };
    lines.push(
      await textLines(/^TcpUpstreamConnected 1 127\.0\.0\.1:\d+ connect=\d+(\.\d+)? in=\d+ -$/),
    );
    lines.push(await textLines(/^TcpPeriodic 1 127\.0\.0\.1:\d+ connect=\d+(\.\d+)? in=5 -$/));
    socket.end();
    lines.push(
      await textLines(/^TcpConnectionEnd 1 127\.0\.0\.1:\d+ connect=\d+(\.\d+)? in=5 completed$/),
    );
    assert.equal(lines.length, 3);
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 0);
  });

  test('CLI: a field list keeps only those fields of the JSON line', async (t) => {
    const upstream = await echo(t);
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      accessLog: { fields: ['listener', 'upstream', 'reason', 'connectTimeMs'] },
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream, id: 'app' }],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const port = await listenPort(cli);
    const socket = await connect(port);
    socket.write('x');
    await waitFor(socket, 'data');
    socket.end();
    const line = await cli.waitLine('stdout', (l) => l.msg === 'connection closed');
    const { level, time, pid, hostname, msg, connectTimeMs, ...rest } = line;
    assert.deepEqual(rest, { listener: 'web', upstream: 'app', reason: 'completed' });
    assert.equal(typeof connectTimeMs, 'number');
    assert.deepEqual(
      [typeof level, typeof time, typeof pid, typeof hostname, msg],
      ['number', 'number', 'number', 'string', 'connection closed'],
    );
    const bad = dir.write('bad.json', {
      accessLog: { format: 'x %WHAT%' },
      listeners: [
        { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 1 }] },
      ],
    });
    const refused = await runCli(['--check', '--config', bad]);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /accessLog\.format: expected known operators .*unknown operator %WHAT%/,
    );
  });
});
