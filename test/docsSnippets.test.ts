/**
 * The TypeScript examples of README.md and docs/*.md compile against the library's public API, as
 * a strict consumer would compile them (`strict`, `exactOptionalPropertyTypes`,
 * `noUncheckedIndexedAccess`): a renamed option, a changed signature or a stale import breaks
 * this test rather than a newcomer's first build. Every ```ts block is checked; `l4proxy` resolves
 * to src/index.ts. A block may use what its prose gives (`proxy`, `upstreams`, ...): the names in
 * GIVEN, declared with their types. A block of options alone (`quic: { ... }`) is checked as
 * options of a proxy. Only the snippets are type-checked (the library itself is by `tsc`), which
 * keeps this to a few seconds.
 */
import assert from 'node:assert/strict';
import {
  copyFileSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { closeAll, TOP_KEYS, validateConfig } from '../src/cli/config.js';
import { importListenerModules } from '../src/cli/moduleConfig.js';
import { selfSignedCertFiles } from './helpers/tlsPeers.js';
import { tool } from './helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const INDEX = `${ROOT}src/index.ts`;

/**
 * What the prose around a block gives it. A new example that needs another name adds it here (an
 * `any` only where the example shows a stand-in for the reader's own code).
 */
const GIVEN = `
import type { TcpProxy, UdpProxy, Upstream } from 'l4proxy';
import type { Socket } from 'node:net';
import type { ServerResponse } from 'node:http';
declare global {
  const proxy: TcpProxy;
  const tcp: TcpProxy;
  const udp: UdpProxy;
  const upstreams: Upstream[];
  const socket: Socket;
  const res: ServerResponse;
  const datagram: Buffer;
  const cert: string;
  const key: string;
  const apiCert: string;
  const apiKey: string;
  const expected: string;
  const trusted: Upstream;
  const untrusted: Upstream;
  // The reader's own code, shown by name only.
  const log: { info(entry: unknown, message: string): void };
  const lookupZone: any, isAllowed: any, zoneOf: any, histogram: any, quota: any, audit: any;
  const byId: any, use: any, forward: any, route: any, loadTlsSettings: any;
}
export {};
`;

interface Block {
  readonly where: string;
  readonly code: string;
}

function blocks(lang: 'ts' | 'json' | 'js'): Block[] {
  const files = [
    'README.md',
    ...readdirSync(`${ROOT}docs`)
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  return files.flatMap((file) => {
    const text = readFileSync(`${ROOT}${file}`, 'utf8');
    return [...text.matchAll(new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\``, 'gm'))].map(
      (match) => ({
        where: `${file}:${text.slice(0, match.index).split('\n').length}`,
        code: match[1] ?? '',
      }),
    );
  });
}

/**
 * The library's exports a block names without importing them get imported for it, unless it
 * imports from `l4proxy` itself: a block with its own import line is copied as it stands, so that
 * line must be complete (a name missing from it is reported as tsc's "Cannot find name").
 */
function withImports(code: string, exported: readonly string[]): string {
  const importsLibrary = /^import\s[^;]*\bfrom\s+'l4proxy'/m.test(code);
  const imported = new Set<string>();
  for (const [, names = ''] of code.matchAll(/import\s+(?:type\s+)?\{([^}]*)\}\s*from/g)) {
    for (const name of names.split(',')) {
      const local = name
        .trim()
        .replace(/^type\s+/, '')
        .split(/\s+as\s+/)
        .pop();
      if (local) imported.add(local);
    }
  }
  const declared = (name: string): boolean =>
    new RegExp(`\\b(type|interface|class|const|let|function)\\s+${name}\\b`).test(code);
  const optionsAlone = /^\s*\w+\s*:/.test(code); // `quic: { ... }`
  const missing = exported.filter(
    (name) =>
      !importsLibrary &&
      !imported.has(name) &&
      !declared(name) &&
      (new RegExp(`\\b${name}\\b`).test(code) ||
        (optionsAlone && /^(Tcp|Udp)ProxyOptions$/.test(name))),
  );
  const fs = /\breadFileSync\b/.test(code) && !imported.has('readFileSync');
  return [
    missing.length > 0 ? `import { ${missing.join(', ')} } from 'l4proxy';` : '',
    fs ? `import { readFileSync } from 'node:fs';` : '',
    optionsAlone
      ? `export const options: Partial<TcpProxyOptions> | Partial<UdpProxyOptions> = {\n${code}};`
      : code,
    'export {};',
  ].join('\n');
}

/** The names src/index.ts exports, read from its syntax (it re-exports by name only). */
function exportedNames(): string[] {
  const index = ts.createSourceFile(INDEX, readFileSync(INDEX, 'utf8'), ts.ScriptTarget.ES2023);
  return index.statements.flatMap((statement) =>
    ts.isExportDeclaration(statement) &&
    statement.exportClause !== undefined &&
    ts.isNamedExports(statement.exportClause)
      ? statement.exportClause.elements.map((element) => element.name.text)
      : [],
  );
}

const OPTIONS: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2023,
  lib: ['lib.es2023.d.ts'],
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  types: ['node'],
  strict: true,
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  skipLibCheck: true,
  noEmit: true,
  paths: { l4proxy: [INDEX] },
};

test('every TypeScript example of README.md and docs/*.md compiles against the public API', () => {
  const found = blocks('ts');
  assert.ok(found.length >= 40, `found ${found.length} blocks`);
  const exported = exportedNames();
  assert.ok(exported.includes('TcpProxy'));

  const files = new Map<string, string>([[`${ROOT}.docs/given.d.ts`, GIVEN]]);
  found.forEach((block, i) => {
    files.set(`${ROOT}.docs/block${i}.mts`, withImports(block.code, exported));
  });
  const base = ts.createCompilerHost(OPTIONS);
  const host: ts.CompilerHost = {
    ...base,
    fileExists: (name) => files.has(name) || base.fileExists(name),
    readFile: (name) => files.get(name) ?? base.readFile(name),
    getSourceFile: (name, version, ...rest) => {
      const text = files.get(name);
      return text === undefined
        ? base.getSourceFile(name, version, ...rest)
        : ts.createSourceFile(name, text, version, true);
    },
  };
  const program = ts.createProgram([...files.keys()], OPTIONS, host);
  const errors = found.flatMap((block, i) => {
    const file = program.getSourceFile(`${ROOT}.docs/block${i}.mts`);
    assert.ok(file);
    return [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)].map(
      (d) => `${block.where}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
    );
  });
  assert.deepEqual(errors, []);
});

/** Top-level settings of a config file (a block of them alone gets a listener to validate). */
const SETTINGS = TOP_KEYS.filter((key) => key !== '$schema' && key !== 'listeners');

/**
 * A JSON block as a whole config file: a file as is, a listener inside `listeners`, settings
 * beside a listener; undefined for JSON that is not a config (an API answer) or not JSON
 * (`"upstreams": [...]`).
 */
function asConfig(code: string): Record<string, unknown> | undefined {
  let json: unknown;
  try {
    json = JSON.parse(code);
  } catch {
    return undefined;
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined;
  const record = json as Record<string, unknown>;
  if ('listeners' in record) return record;
  if ('protocol' in record && 'listen' in record) return { listeners: [record] };
  if (!Object.keys(record).every((key) => SETTINGS.includes(key))) return undefined;
  const listener = {
    protocol: 'tcp',
    listen: '127.0.0.1:0',
    upstreams: [{ host: '::1', port: 1 }],
  };
  return { ...record, listeners: [listener] };
}

/** Every `*File` value becomes a file in `dir` (a key or a certificate), named after its base. */
function withFiles(value: unknown, dir: string, pem: { key: string; cert: string }): unknown {
  if (Array.isArray(value)) return value.map((each) => withFiles(each, dir, pem));
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, each]) => {
      if (!key.endsWith('File') || typeof each !== 'string')
        return [key, withFiles(each, dir, pem)];
      copyFileSync(key === 'keyFile' ? pem.key : pem.cert, join(dir, basename(each)));
      return [key, basename(each)];
    }),
  );
}

test('every CLI config example of docs/*.md passes the validation of l4proxy --check', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  // A block that is not JSON (a `[...]` placeholder) would otherwise be left out here, unseen.
  const notJson = blocks('json').flatMap((block) => {
    try {
      JSON.parse(block.code);
      return [];
    } catch (err) {
      return [`${block.where}: ${(err as Error).message}`];
    }
  });
  assert.deepEqual(notJson, [], 'json blocks that do not parse');
  const configs = blocks('json').flatMap((block) => {
    const config = asConfig(block.code);
    return config === undefined ? [] : [{ ...block, config }];
  });
  assert.ok(configs.length >= 7, `found ${configs.length} config examples`);
  assert.ok(
    configs.some(({ config }) => JSON.stringify(config).includes('"module":')),
    'a config with a listener module is among them',
  );
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-docs-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const pem = await selfSignedCertFiles(openssl, dir, 'docs.test');
  // A listener's `module` is the docs' own: a js block of the same page opening `// hooks.mjs`.
  for (const block of blocks('js')) {
    const name = /^\/\/ (\S+\.mjs)\n/.exec(block.code)?.[1];
    if (name !== undefined) writeFileSync(join(dir, name), block.code);
  }
  const file = join(dir, 'l4proxy.json');
  const errors: string[] = [];
  for (const { where, config } of configs) {
    try {
      const json = withFiles(config, dir, pem);
      // As --check does: the modules imported first, then the options validated.
      const unimported = await importListenerModules(json, file);
      if (unimported !== undefined) throw new Error(`${unimported.path}: ${unimported.message}`);
      closeAll(validateConfig(json, file).listeners);
    } catch (err) {
      errors.push(`${where}: ${(err as Error).message}`);
    }
  }
  assert.deepEqual(errors, []);
});
