import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { closeAll, ConfigError, loadConfigFile, validateConfig } from '../../src/cli/config.js';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import { configDir, configErrorOf, runCli } from './cli.js';

const tcp = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  protocol: 'tcp',
  listen: '127.0.0.1:0',
  upstreams: [{ host: '127.0.0.1', port: 80 }],
  ...extra,
});

describe('config validation', () => {
  test('an invalid library option is named with the file, the listener path and what was expected', () => {
    assert.equal(
      configErrorOf({ listeners: [tcp(), tcp({ upstreams: [{ host: 'a', port: 70000 }] })] }),
      'l4proxy.json: listeners[1].upstreams[0].port: expected an integer from 1 to 65535, received 70000',
    );
    assert.equal(
      configErrorOf({ listeners: [tcp({ connectTimeout: -1 })] }),
      'l4proxy.json: listeners[0].connectTimeout: expected milliseconds, an integer from 1 to 2147483647, received -1',
    );
    assert.equal(
      configErrorOf({ listeners: [{ ...tcp(), protocol: 'udp', proxyProtocol: 'v1' }] }),
      `l4proxy.json: listeners[0].proxyProtocol: expected 'v2' (v1 cannot carry UDP), received "v1"`,
    );
  });

  test('CLI fields are checked: protocol, listen, names, duplicates, top-level keys', () => {
    assert.equal(configErrorOf([]), 'l4proxy.json: expected a JSON object { "listeners": [...] }');
    assert.equal(
      configErrorOf({ listeners: [] }),
      'l4proxy.json: listeners: expected a non-empty array of listeners, received []',
    );
    assert.match(
      configErrorOf({ listeners: [tcp()], extra: 1 }),
      /^l4proxy\.json: extra: expected one of the known settings/,
    );
    assert.equal(
      configErrorOf({ listeners: [tcp({ protocol: 'sctp' })] }),
      'l4proxy.json: listeners[0].protocol: expected "tcp", "udp" or "tunnel", received "sctp"',
    );
    assert.equal(
      configErrorOf({ listeners: [tcp({ listen: '127.0.0.1' })] }),
      'l4proxy.json: listeners[0].listen: expected "host:port" (IPv6 as "[::1]:port") with a port from 0 to 65535, received "127.0.0.1"',
    );
    assert.equal(
      configErrorOf({
        listeners: [tcp({ listen: '127.0.0.1:9000' }), tcp({ listen: '127.0.0.1:9000' })],
      }),
      'l4proxy.json: listeners[1].listen: expected an address not used by listeners[0], received "127.0.0.1:9000"',
    );
    assert.equal(
      configErrorOf({ listeners: [tcp({ name: 'a' }), tcp({ name: 'a' })] }),
      'l4proxy.json: listeners[1].name: expected a name not used by listeners[0], received "a"',
    );
    assert.match(
      configErrorOf({ listeners: [tcp({ tcpFastOpen: true })] }),
      /^l4proxy\.json: listeners\[0\]\.tcpFastOpen: expected one of the known options \(name, protocol, listen, selector, dns, /,
    );
    assert.equal(
      configErrorOf({ listeners: [tcp()], workers: 0 }),
      'l4proxy.json: workers: expected an integer from 1 to 1024, or "auto", received 0',
    );
  });

  test('a bad mode is named at listeners[i].mode, TCP and UDP alike', () => {
    assert.match(
      configErrorOf({ listeners: [tcp({ mode: 'transparent' })] }),
      /^l4proxy\.json: listeners\[0\]\.mode: Proxy mode "transparent" is not supported/,
    );
    assert.match(
      configErrorOf({ listeners: [tcp(), { ...tcp(), protocol: 'udp', mode: 'tproxy' }] }),
      /^l4proxy\.json: listeners\[1\]\.mode: Proxy mode "tproxy" is not supported/,
    );
  });

  test('selectors are built by name or { type, ...options }, with errors under selector', () => {
    assert.equal(
      configErrorOf({ listeners: [tcp({ selector: 'fastest' })] }),
      'l4proxy.json: listeners[0].selector: expected one of roundRobin, random, leastConnections, consistentHash, failover or an object { "type": name, ...options }, received "fastest"',
    );
    assert.equal(
      configErrorOf({
        listeners: [tcp({ selector: { type: 'consistentHash', algorithm: 'jump' } })],
      }),
      `l4proxy.json: listeners[0].selector.algorithm: expected 'maglev' or 'ring', received "jump"`,
    );
    assert.equal(
      configErrorOf({
        listeners: [
          tcp({ selector: { type: 'failover', within: { type: 'leastConnections', choices: 0 } } }),
        ],
      }),
      'l4proxy.json: listeners[0].selector.within.choices: expected an integer from 1 to 64, received 0',
    );
    const config = validateConfig(
      {
        listeners: [
          tcp({ selector: 'leastConnections' }),
          tcp({
            selector: { type: 'consistentHash', algorithm: 'ring', key: 'serverName' },
            sni: true,
          }),
          tcp({ selector: { type: 'failover', within: 'random' }, proxyProtocol: 'v2' }),
          {
            ...tcp({ selector: 'roundRobin' }),
            protocol: 'udp',
            proxyProtocol: 'v2',
            idleTimeout: 1000,
          },
        ],
        drainTimeout: 1000,
        logLevel: 'warn',
        metrics: '127.0.0.1:0',
      },
      'l4proxy.json',
    );
    assert.equal(config.listeners.length, 4);
    assert.ok(config.listeners[0]?.proxy instanceof TcpProxy);
    assert.ok(config.listeners[3]?.proxy instanceof UdpProxy);
    assert.deepEqual(config.settings, {
      metrics: { host: '127.0.0.1', port: 0 },
      drainTimeout: 1000,
      logLevel: 'warn',
    });
    closeAll(config.listeners);
  });

  test('a missing file or broken JSON is reported with the file name', async (t) => {
    const dir = configDir(t);
    await assert.rejects(
      loadConfigFile('/nonexistent/l4proxy.json'),
      /^ConfigError: \/nonexistent\/l4proxy\.json: cannot read the file: ENOENT/,
    );
    const broken = dir.write('broken.json', '{ "listeners": [ }');
    await assert.rejects(loadConfigFile(broken), (err: Error) =>
      err.message.startsWith(`${broken}: invalid JSON at line 1, column 18: `),
    );
    const cases: [string, string][] = [
      ['{\n  "listeners": [\n    { "protocol": "tcp", "listen": x }\n  ]\n}', 'line 3, column 36'],
      ['{ "a": [1, 2,] }', 'line 1, column 14'],
      ['{ "a": 1 }\n}', 'line 2, column 1'],
      ['{ "a": "tab\there" }', 'line 1, column 8'],
      ['', 'line 1, column 1'],
    ];
    for (const [text, where] of cases) {
      const file = dir.write('case.json', text);
      await assert.rejects(loadConfigFile(file), (err: Error) =>
        err.message.startsWith(`${file}: invalid JSON at ${where}: `),
      );
    }
  });

  test('a file starting with a UTF-8 byte order mark (Notepad, PowerShell) is read; --check says ok', async (t) => {
    const dir = configDir(t);
    const file = dir.write(
      'bom.json',
      `\uFEFF${JSON.stringify({
        listeners: [
          { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 1 }] },
        ],
      })}\r\n`,
    );
    const config = await loadConfigFile(file);
    assert.equal(config.listeners.length, 1);
    closeAll(config.listeners);
    const checked = await runCli(['--check', '--config', file]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /: ok, 1 listener/);
  });

  test('a listen address given as a port alone, number or string, says how it is written', () => {
    for (const listen of [8080, '8080']) {
      assert.equal(
        configErrorOf({ listeners: [tcp({ listen })] }),
        `l4proxy.json: listeners[0].listen: expected "host:port" (IPv6 as "[::1]:port") with a port from 0 to 65535; a port alone is ":8080", received ${JSON.stringify(listen)}`,
      );
      // The same hint for a tunnel listener.
      assert.equal(
        configErrorOf({
          listeners: [{ protocol: 'tunnel', listen, route: 'any', upstreams: [] }],
        }),
        `l4proxy.json: listeners[0].listen: expected "host:port" (IPv6 as "[::1]:port") with a port from 0 to 65535; a port alone is ":8080", received ${JSON.stringify(listen)}`,
      );
    }
  });

  test('an unknown key names the key a typo most likely meant, among those a config file knows', () => {
    const shortened = (json: unknown): string =>
      configErrorOf(json).replace(/ \((name|\$schema), [^)]*\)/, ' (...)');
    assert.equal(
      shortened({ listener: [tcp()] }),
      'l4proxy.json: listener: expected one of the known settings (...) (did you mean "listeners"?)',
    );
    assert.equal(
      shortened({ listeners: [tcp({ dsn: { name: 'db.test' } })] }),
      'l4proxy.json: listeners[0].dsn: expected one of the known options (...) (did you mean "dns"?), received an object',
    );
    assert.equal(
      shortened({ listeners: [tcp({ conectTimeout: 5000 })] }),
      'l4proxy.json: listeners[0].conectTimeout: expected one of the known options (...) (did you mean "connectTimeout"?), received 5000',
    );
  });

  test('an unknown listener key lists the keys a JSON listener knows: dns and name, not upstreamSource or mode', () => {
    assert.throws(
      () =>
        validateConfig(
          { listeners: [{ protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [], typo: 1 }] },
          'l4proxy.json',
        ),
      (err: Error) =>
        err instanceof ConfigError &&
        /listeners\[0\]\.typo: expected one of the known options \(name, protocol, listen, selector, dns, /.test(
          err.message,
        ) &&
        !/upstreamSource|\bmode\b/.test(err.message),
    );
  });
});

describe('config: DNS discovery and health per listener', () => {
  test('a listener without upstreams or a dns block is refused: it could never forward a byte', async () => {
    const expected =
      'expected a non-empty array of { "host", "port" } (or a "dns" block that discovers them)';
    const bare = tcp();
    delete bare.upstreams;
    assert.equal(
      configErrorOf({ listeners: [tcp(), bare] }),
      `l4proxy.json: listeners[1].upstreams: ${expected}, received nothing`,
    );
    assert.equal(
      configErrorOf({ listeners: [{ ...tcp(), protocol: 'udp', upstreams: [] }] }),
      `l4proxy.json: listeners[0].upstreams: ${expected}, received []`,
    );
    // With dns, an empty list is the documented start (the first answer fills it).
    const dns = { name: 'db.example.test', type: 'A', port: 5432, servers: ['127.0.0.1:1'] };
    const config = validateConfig({ listeners: [tcp({ upstreams: [], dns })] }, 'l4proxy.json');
    const proxy = config.listeners[0]?.proxy;
    assert.ok(proxy instanceof TcpProxy);
    await proxy.close({ drainTimeout: 0 });
  });

  test('a dns block becomes the listener upstream source; its errors name listeners[i].dns.<option>', async () => {
    assert.equal(
      configErrorOf({ listeners: [tcp({ dns: { name: 'db.example.test', type: 'A' } })] }),
      'l4proxy.json: listeners[0].dns.port: expected an integer from 1 to 65535, received undefined',
    );
    assert.match(
      configErrorOf({ listeners: [tcp({ dns: { name: 'x.test', type: 'MX', port: 1 } })] }),
      /^l4proxy\.json: listeners\[0\]\.dns\.type: expected /,
    );
    assert.match(
      configErrorOf({ listeners: [tcp({ healthCheck: { interval: 'often' } })] }),
      /^l4proxy\.json: listeners\[0\]\.healthCheck\.interval: expected /,
    );
    const config = validateConfig(
      {
        listeners: [
          tcp({
            dns: { name: 'db.example.test', type: 'A', port: 5432, servers: ['127.0.0.1:1'] },
            healthCheck: { interval: 60_000 },
            outlierDetection: { consecutiveFailures: 3 },
          }),
        ],
      },
      'l4proxy.json',
    );
    const proxy = config.listeners[0]?.proxy;
    assert.ok(proxy instanceof TcpProxy);
    await proxy.close({ drainTimeout: 0 });
  });
});
