/**
 * docs/options.md, the completeness matrix, cannot drift: every option of the exported option
 * types (walked with the TypeScript compiler from src/index.ts) has its row and no row names an
 * option that is gone; every CLI key a row lists is a key the CLI validates (a wrong value is
 * refused naming it); a default the matrix states as a literal is the code's (read from the
 * option resolvers); every row names an anchor, a stats cell and a test file that exists.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { ConfigError, closeAll, validateConfig } from '../src/cli/config.js';
import { resolveAdminOptions } from '../src/admin/adminOptions.js';
import { resolveQuicOptions } from '../src/quic/quicOptions.js';
import { resolveTcpOptions } from '../src/tcp/TcpProxyOptions.js';
import { resolveTunnel } from '../src/transport/tunnelOptions.js';
import { resolveTunnelServerOptions } from '../src/tunnel/tunnelServerOptions.js';
import { resolveUdpOptions } from '../src/udp/UdpProxyOptions.js';
import { resolveHealthCheck, resolveOutlierDetection } from '../src/upstream/healthOptions.js';
import { resolveSlowStart } from '../src/upstream/SlowStart.js';
import { testCa } from './helpers/tlsCa.js';
import { tool } from './helpers/tools.js';

const root = (path: string): string => fileURLToPath(new URL(`../../${path}`, import.meta.url));

/** The public option types: what a user passes to a constructor, a method or a factory. */
const ROOTS = [
  'TcpProxyOptions',
  'UdpProxyOptions',
  'TunnelServerOptions',
  'AdminServerOptions',
  'DnsSourceOptions',
  'RunWorkersOptions',
  'Upstream',
  'ListenOptions',
  'BindOptions',
  'AdminListenOptions',
  'CloseOptions',
  'RandomOptions',
  'LeastConnectionsOptions',
  'ConsistentHashOptions',
  'FailoverOptions',
  'TlsClientHelloOptions',
  'Http1Options',
  'PostgresStartupOptions',
  'FirstLineOptions',
];

/** The type a property is declared in (an interface or a type alias), as `Owner.property`. */
function ownerName(declaration: ts.Declaration): string {
  for (let node: ts.Node = declaration.parent; !ts.isSourceFile(node); node = node.parent) {
    if (ts.isInterfaceDeclaration(node) || ts.isTypeAliasDeclaration(node)) return node.name.text;
  }
  return '?';
}

/** `Owner.property` of every option reachable from ROOTS (functions and Node's types are leaves). */
function exportedOptions(): Set<string> {
  const config = ts.getParsedCommandLineOfConfigFile(
    root('tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: () => undefined,
    },
  );
  assert.ok(config);
  const program = ts.createProgram([root('src/index.ts')], config.options);
  const checker = program.getTypeChecker();
  const index = program.getSourceFile(root('src/index.ts'));
  assert.ok(index);
  const module = checker.getSymbolAtLocation(index);
  assert.ok(module);
  const exports = new Map(checker.getExportsOfModule(module).map((s) => [s.name, s]));
  const fromNode = (type: ts.Type): boolean =>
    (((type.aliasSymbol ?? type.symbol) as ts.Symbol | undefined)?.declarations ?? []).some((d) =>
      d.getSourceFile().fileName.includes('node_modules'),
    );
  const found = new Set<string>();
  const walk = (type: ts.Type, seen: ReadonlySet<ts.Type>): void => {
    for (const member of type.isUnion() ? type.types : [type]) {
      if (checker.isArrayType(member)) {
        const element = checker.getTypeArguments(member as ts.TypeReference)[0];
        if (element !== undefined) walk(element, seen);
        continue;
      }
      if (!(member.flags & ts.TypeFlags.Object) && !member.isIntersection()) continue;
      if (member.getCallSignatures().length > 0 || fromNode(member) || seen.has(member)) continue;
      for (const property of checker.getPropertiesOfType(member)) {
        const declaration = property.valueDeclaration ?? property.declarations?.[0];
        if (declaration === undefined) continue;
        if (declaration.getSourceFile().fileName.includes('node_modules')) continue;
        found.add(`${ownerName(declaration)}.${property.name}`);
        walk(checker.getTypeOfSymbol(property), new Set([...seen, member]));
      }
    }
  };
  for (const name of ROOTS) {
    const symbol = exports.get(name);
    assert.ok(symbol, `${name} is exported from src/index.ts`);
    const target = symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
    walk(checker.getDeclaredTypeOfSymbol(target), new Set());
  }
  return found;
}

interface Row {
  readonly option: string;
  readonly cli: string;
  readonly defaultValue: string;
  readonly anchor: string;
  readonly stats: string;
  readonly test: string;
}

/** The rows of every table in docs/options.md whose first cell is `` `Owner.property` ``. */
function matrixRows(): Row[] {
  const rows: Row[] = [];
  for (const line of readFileSync(root('docs/options.md'), 'utf8').split('\n')) {
    const cells = line
      .split(/(?<!\\)\|/)
      .slice(1, -1)
      .map((cell) => cell.trim());
    const option = /^`(\w+\.\w+)`$/.exec(cells[0] ?? '')?.[1];
    if (option === undefined) continue;
    assert.equal(cells.length, 6, `docs/options.md row ${option} has 6 cells`);
    const [, cli = '', defaultValue = '', anchor = '', stats = '', testCell = ''] = cells;
    rows.push({ option, cli, defaultValue, anchor, stats, test: testCell });
  }
  return rows;
}

const rows = matrixRows();

test('docs/options.md has one row per exported option, and none for an option that is gone', () => {
  const options = exportedOptions();
  assert.ok(options.size > 150, `the walk found the options (${options.size})`);
  const listed = rows.map((row) => row.option);
  const twice = listed.filter((option, i) => listed.indexOf(option) !== i);
  assert.deepEqual(twice, [], 'options listed twice');
  assert.deepEqual(
    [...options].filter((option) => !listed.includes(option)).sort(),
    [],
    'exported options without a row in docs/options.md',
  );
  assert.deepEqual(
    listed.filter((option) => !options.has(option)),
    [],
    'rows of docs/options.md naming no exported option',
  );
});

test('every row of docs/options.md states a default, an anchor, what counts it and a test file that exists', () => {
  for (const row of rows) {
    assert.notEqual(row.defaultValue, '', `${row.option}: default`);
    assert.notEqual(row.anchor, '', `${row.option}: anchor (or "no equivalent")`);
    assert.notEqual(row.stats, '', `${row.option}: stats/metrics (or "—")`);
    const files = [...row.test.matchAll(/`(test\/[^`]+\.ts)`/g)].map((m) => m[1] ?? '');
    assert.ok(files.length > 0, `${row.option}: a test file`);
    for (const file of files) assert.ok(existsSync(root(file)), `${row.option}: ${file} exists`);
    assert.ok(
      /`(tcp|udp|tunnel|file):[^`]+`/.test(row.cli) || row.cli.startsWith('—'),
      `${row.option}: a CLI key, or "—" and why there is none`,
    );
  }
});

/** A certificate and key OpenSSL loads: a TLS block checks some keys only after loading them. */
let pem = { cert: '', key: '' };

/**
 * Siblings a key needs before its own value is looked at (a selector's type, a required key),
 * by the prefix of the key and, where it differs, the listener kind.
 */
const context = (): readonly (readonly [
  prefix: string,
  value: Record<string, unknown>,
  kind?: string,
])[] => [
  ['selector', { type: 'consistentHash' }],
  ['preread', { inspectors: { probe: { type: 'tls' } } }],
  ['acceptProxyProtocol', { trusted: ['127.0.0.1'] }],
  ['proxyProtocol', { version: 'v2' }],
  ['slowStart', { window: 1000 }],
  ['quic.quicLb', { serverIdLength: 4, servers: { '01020304': 'a' } }],
  ['healthCheck.udp', { send: 'ping' }],
  ['healthCheck', { udp: { send: 'ping' } }, 'udp'],
  ['upstreams[].tunnel', { target: 'example.com:443' }],
  ['dns', { name: 'localhost', port: 9 }],
  ['terminateTls', { ...pem }],
  ['terminateTls.certificates[]', { serverNames: ['example.com'], ...pem }],
  ['admin', { listen: '127.0.0.1:0' }, 'file'],
];

/** Options of the selector or inspector type a row is of. */
const TYPED: Readonly<Record<string, readonly [prefix: string, type: string]>> = {
  LeastConnectionsOptions: ['selector', 'leastConnections'],
  ConsistentHashOptions: ['selector', 'consistentHash'],
  FailoverOptions: ['selector', 'failover'],
  RandomOptions: ['selector', 'random'],
  TlsClientHelloOptions: ['preread.inspectors.probe', 'tls'],
  Http1Options: ['preread.inspectors.probe', 'http1'],
  PostgresStartupOptions: ['preread.inspectors.probe', 'postgres'],
  FirstLineOptions: ['preread.inspectors.probe', 'firstLine'],
};

/** Sets `path` (`a.b`, `upstreams[].c`: the first upstream) in `target`, creating objects. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const steps = path.split('.');
  let node: Record<string, unknown> = target;
  steps.forEach((step, i) => {
    const array = step.endsWith('[]');
    const key = array ? step.slice(0, -2) : step;
    if (i === steps.length - 1) {
      node[key] = value;
      return;
    }
    if (array) {
      const list = (node[key] ?? [{}]) as Record<string, unknown>[];
      node[key] = list;
      node = list[0] as Record<string, unknown>;
      return;
    }
    const next = (node[key] ?? {}) as Record<string, unknown>;
    node[key] = next;
    node = next;
  });
}

/** A config with `path` of a `kind` listener (or of the file, `file`) set to `value`. */
function configWith(row: Row, kind: string, path: string, value: unknown): unknown {
  const listener: Record<string, unknown> = {
    protocol: kind === 'file' ? 'tcp' : kind,
    listen: '127.0.0.1:0',
    upstreams: [{ host: '127.0.0.1', port: 9 }],
  };
  const typed = TYPED[row.option.slice(0, row.option.indexOf('.'))];
  const all: ReturnType<typeof context> =
    typed === undefined ? context() : [...context(), [typed[0], { type: typed[1] }]];
  const target: Record<string, unknown> = kind === 'file' ? {} : listener;
  for (const [prefix, siblings, only] of all) {
    if (!path.startsWith(`${prefix}.`) || (only ?? kind) !== kind) continue;
    // A health check is TCP, UDP or HTTP: a key of the TCP or HTTP one is checked without the UDP probe.
    if (prefix === 'healthCheck' && /^healthCheck\.(?:tcp|http)\b/.test(path)) continue;
    for (const [key, sibling] of Object.entries(structuredClone(siblings)))
      setPath(target, `${prefix}.${key}`, sibling);
  }
  if (path.startsWith('dns.')) delete listener.upstreams;
  setPath(target, path, value);
  return kind === 'file' ? { listeners: [listener], ...target } : { listeners: [listener] };
}

/** How the config refuses a key it does not know (library options, CLI keys, `admin`). */
const UNKNOWN_KEY = /one of the known \w+/;

/** Values no option takes in all its forms: each key refuses at least one of them. */
const WRONG: readonly unknown[] = [{ $wrong: true }, '$wrong', 1.5, -1, [{ $wrong: true }]];

test('every CLI key docs/options.md lists is validated by the CLI: a wrong value is refused naming the key', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const issued = await (await testCa(t, openssl)).issue('example.com', ['example.com']);
  pem = { cert: issued.cert, key: issued.key };
  let checked = 0;
  const failures: string[] = [];
  for (const row of rows) {
    for (const [, kind = '', path = ''] of row.cli.matchAll(/`(tcp|udp|tunnel|file):([^`]+)`/g)) {
      const named = `${kind === 'file' ? '' : 'listeners[0].'}${path.replaceAll('[]', '[0]')}`;
      const messages: string[] = [];
      const refused = WRONG.some((value) => {
        let listeners: Parameters<typeof closeAll>[0] = [];
        try {
          listeners = validateConfig(configWith(row, kind, path, value), 'l4proxy.json').listeners;
        } catch (err) {
          assert.ok(err instanceof ConfigError, `${row.option} ${kind}:${path}: ${String(err)}`);
          messages.push(err.message);
          // An unknown key is refused too, but as unknown: that is no key the CLI has.
          if (err.path === named && UNKNOWN_KEY.test(err.message)) return false;
          return (
            err.path === named ||
            (/^[.[]/.test(err.path.slice(named.length)) && err.path.startsWith(named))
          );
        } finally {
          closeAll(listeners);
        }
        messages.push(`accepted ${JSON.stringify(value)}`);
        return false;
      });
      if (!refused)
        failures.push(
          `${row.option}: ${kind}:${path} is not refused naming ${named}: ${messages.join(' / ')}`,
        );
      checked++;
    }
  }
  assert.deepEqual(failures, [], 'CLI keys the config does not validate as the matrix says');
  assert.ok(checked > 150, `CLI keys checked: ${checked}`);
});

/** What the code applies when an option is left out, by owner type. */
function codeDefaults(): Readonly<Record<string, Readonly<Record<string, unknown>>>> {
  const tcp = resolveTcpOptions({});
  const tunnel = resolveTunnelServerOptions({});
  return {
    TcpProxyOptions: { ...tcp.options },
    TcpPolicyOptions: { ...tcp.options },
    UpstreamOptions: { ...tcp.manager },
    UdpProxyOptions: { ...resolveUdpOptions({}).options },
    TunnelServerOptions: { ...tunnel },
    AdminServerOptions: { ...resolveAdminOptions({ proxies: {} }) },
    UdpQuicOptions: { ...resolveQuicOptions(true) },
    HealthCheckOptions: { ...resolveHealthCheck({}, 'healthCheck', 'tcp') },
    OutlierDetectionOptions: { ...resolveOutlierDetection({}, 'outlierDetection') },
    SlowStartOptions: { ...resolveSlowStart({ window: 1 }, 'slowStart'), window: undefined },
    HttpTunnel: { ...resolveTunnel({ target: 'example.com:443' }), target: undefined },
  };
}

/** The value of a default cell that opens with a literal: `` `5000` ms ``, `` `'handle'` ``. */
function literal(cell: string): unknown {
  const text = /^`([^`]+)`/.exec(cell)?.[1];
  if (text === undefined) return undefined;
  if (text === 'Infinity') return Infinity;
  if (text === 'true' || text === 'false') return text === 'true';
  if (/^-?\d[\d_]*(\.\d+)?$/.test(text)) return Number(text.replaceAll('_', ''));
  const quoted = /^'([^']*)'$/.exec(text);
  return quoted === null ? undefined : quoted[1];
}

test('a default docs/options.md states as a literal is the one the code applies', () => {
  const defaults = codeDefaults();
  let checked = 0;
  for (const row of rows) {
    const [owner = '', name = ''] = row.option.split('.');
    const resolved = defaults[owner];
    if (resolved === undefined || !(name in resolved)) continue;
    const code = resolved[name];
    if (typeof code === 'object' || typeof code === 'function' || code === undefined) continue;
    // A default in words (`off`, `none`) is not compared: only literals are.
    const stated = literal(row.defaultValue);
    if (stated === undefined) continue;
    assert.equal(stated, code, `${row.option}: docs/options.md says ${row.defaultValue}`);
    checked++;
  }
  assert.ok(checked > 40, `defaults checked: ${checked}`);
});

test('README and the docs link the matrix', () => {
  assert.match(readFileSync(root('README.md'), 'utf8'), /docs\/options\.md/);
  assert.match(readFileSync(root('docs/operations.md'), 'utf8'), /\(options\.md\)/);
});
