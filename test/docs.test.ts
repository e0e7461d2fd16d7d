import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import {
  CloseReason,
  DropReason,
  ErrorCode,
  RejectReason,
  SessionCloseReason,
} from '../src/index.js';
import { NGINX_STREAM_MODULE } from './helpers/nginx.js';
import { tool } from './helpers/tools.js';

const run = promisify(execFile);

const read = (path: string): string =>
  readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

/** Every stable string a user may match on must be in the docs, in backticks. */
function assertDocumented(doc: string, values: readonly string[], what: string): void {
  const text = read(doc);
  const missing = values.filter((value) => !text.includes(`\`${value}\``));
  assert.deepEqual(missing, [], `${what} missing from ${doc}`);
}

test('every error code is documented in docs/errors.md', () => {
  assertDocumented('docs/errors.md', Object.values(ErrorCode), 'error codes');
});

test('every TCP close reason is documented in docs/tcp.md', () => {
  assertDocumented('docs/tcp.md', Object.values(CloseReason), 'close reasons');
});

test('every TCP rejection reason is documented in docs/tcp.md', () => {
  assertDocumented('docs/tcp.md', Object.values(RejectReason), 'rejection reasons');
});

test('every UDP session close reason and drop reason is documented in docs/udp.md', () => {
  assertDocumented('docs/udp.md', Object.values(SessionCloseReason), 'session close reasons');
  assertDocumented('docs/udp.md', Object.values(DropReason), 'drop reasons');
});

test('the README opens with the two commands a newcomer runs', () => {
  const head = read('README.md').split('\n').slice(0, 12).join('\n');
  assert.match(head, /npm install && npm start/);
  assert.match(head, /npm test/);
});

const DOCS = [
  'README.md',
  ...readdirSync(new URL('../../docs/', import.meta.url))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** The ```ts and ```json examples of a document, with the line each starts on. */
function examples(doc: string): { line: number; code: string }[] {
  const text = read(doc);
  return [...text.matchAll(/^```(?:ts|json)\n([\s\S]*?)^```/gm)].map((match) => ({
    line: text.slice(0, match.index).split('\n').length,
    code: match[1] ?? '',
  }));
}

const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}(?::\d+|\/\d{1,2})?$/;
/** Also catches a non-hex group (`2001:db8:lb::`), which a newcomer would copy as it is. */
const IPV6 = /^\[?[0-9a-z]{0,4}(?::[0-9a-z]{0,4}){2,7}\]?(?::\d+|\/\d{1,3})?$/i;

/** Whether `text` (`10.0.0.0/8`, `[::1]:53`, `2001:db8::/32`, `10.0.0.7:80`) is a valid address. */
function validAddress(text: string): boolean {
  const bracketed = /^\[(.*)\](?::\d+)?$/.exec(text);
  const bare = bracketed?.[1] ?? (IPV4.test(text) ? text.replace(/:\d+$/, '') : text);
  const [address = '', bits] = bare.split('/');
  const family = isIP(address);
  return family !== 0 && (bits === undefined || Number(bits) <= (family === 4 ? 32 : 128));
}

test('every IP address and CIDR in the examples of README.md and docs/*.md is one', () => {
  const bad = DOCS.flatMap((doc) =>
    examples(doc).flatMap(({ line, code }) =>
      [...code.matchAll(/['"]([^'"\s]+)['"]/g)]
        .map((match) => match[1] ?? '')
        .filter((text) => (IPV4.test(text) || IPV6.test(text)) && !validAddress(text))
        .map((text) => `${doc}:${line}: ${text}`),
    ),
  );
  assert.deepEqual(bad, []);
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/<[^>]+>/g, '')
    .replace(/[^\p{L}\p{N}\- _]/gu, '')
    .replace(/ /g, '-');
}

const anchorsByDoc = new Map<string, Set<string>>();

/** The anchors a document defines: its headings (repeats numbered) and its `<a id>`s. */
function anchors(doc: string): Set<string> {
  const known = anchorsByDoc.get(doc);
  if (known !== undefined) return known;
  const text = read(doc).replace(/^```[\s\S]*?^```/gm, '');
  const found = new Set<string>();
  const seen = new Map<string, number>();
  for (const [, heading = ''] of text.matchAll(/^#{1,6}\s+(.*)$/gm)) {
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    found.add(count === 0 ? base : `${base}-${count}`);
  }
  for (const [, id = ''] of text.matchAll(/<a id="([^"]+)"/g)) found.add(id);
  anchorsByDoc.set(doc, found);
  return found;
}

test('every link between the docs reaches a file that exists, and a heading or anchor in it', () => {
  const REPO = 'https://github.com/l4proxy/l4proxy/blob/main/';
  const examplesReadmes = readdirSync(new URL('../../examples/', import.meta.url))
    .map((dir) => `examples/${dir}/README.md`)
    .filter((file) => existsSync(new URL(`../../${file}`, import.meta.url)));
  const dead = [...DOCS, 'CHANGELOG.md', ...examplesReadmes].flatMap((doc) => {
    const text = read(doc).replace(/^```[\s\S]*?^```/gm, '');
    return [...text.matchAll(/\]\(([^)\s]+)\)/g)].flatMap(([, target = '']) => {
      const local = target.startsWith(REPO) ? `/${target.slice(REPO.length)}` : target;
      if (/^[a-z]+:/.test(local)) return [];
      const [path = '', hash] = local.split('#');
      const file =
        path === ''
          ? doc
          : path.startsWith('/')
            ? path.slice(1)
            : normalize(join(dirname(doc), path));
      if (!existsSync(new URL(`../../${file}`, import.meta.url))) return [`${doc}: ${target}`];
      const missing = hash !== undefined && file.endsWith('.md') && !anchors(file).has(hash);
      return missing ? [`${doc}: ${target} (no such heading)`] : [];
    });
  });
  assert.deepEqual(dead, []);
});

/** The ```nginx or ```haproxy blocks of the docs, each a configuration a reader may copy. */
function peerConfigs(lang: 'nginx' | 'haproxy'): { where: string; code: string }[] {
  return DOCS.flatMap((doc) => {
    const text = read(doc);
    return [...text.matchAll(new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\``, 'gm'))].map(
      (match) => ({
        where: `${doc}:${text.slice(0, match.index).split('\n').length}`,
        code: match[1] ?? '',
      }),
    );
  });
}

test('the nginx and HAProxy configurations the docs show pass nginx -t and haproxy -c', async (t) => {
  const nginx = tool(t, 'nginx');
  const haproxy = tool(t, 'haproxy');
  if (nginx === undefined || haproxy === undefined) return;
  const nginxBlocks = peerConfigs('nginx');
  const haproxyBlocks = peerConfigs('haproxy');
  assert.ok(nginxBlocks.length >= 2 && haproxyBlocks.length >= 3, 'the blocks are found');
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-docs-peers-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  // Neither checker binds the addresses, so 10.0.0.7 and ports in use are fine.
  const check = async (where: string, program: string, args: string[]): Promise<string[]> => {
    try {
      await run(program, args, { timeout: 10_000 });
      return [];
    } catch (err) {
      const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string };
      return [`${where}: ${stdout}${stderr}`];
    }
  };
  const errors: string[] = [];
  for (const [i, { where, code }] of nginxBlocks.entries()) {
    const file = join(dir, `nginx-${String(i)}.conf`);
    const module = existsSync(NGINX_STREAM_MODULE) ? `load_module ${NGINX_STREAM_MODULE};` : '';
    const head = `${module}\nerror_log ${join(dir, 'error.log')};\npid ${join(dir, 'nginx.pid')};`;
    writeFileSync(file, `${head}\nevents {}\n${code}`);
    errors.push(...(await check(where, nginx, ['-t', '-q', '-c', file, '-p', dir])));
  }
  for (const [i, { where, code }] of haproxyBlocks.entries()) {
    const file = join(dir, `haproxy-${String(i)}.cfg`);
    writeFileSync(file, code);
    errors.push(...(await check(where, haproxy, ['-c', '-f', file])));
  }
  assert.deepEqual(errors, []);
});

test('the Kubernetes manifests parse, their l4proxy configuration is valid, and they mean what their comments say', async () => {
  const { parseAllDocuments } = await import('yaml');
  const { closeAll, validateConfig } = await import('../src/cli/config.js');
  const { parseCliArgs } = await import('../src/cli/args.js');
  const documents = parseAllDocuments(read('docs/kubernetes/l4proxy.yaml'));
  assert.ok(Array.isArray(documents));
  const manifests = documents.map((doc) => {
    assert.deepEqual(doc.errors, [], 'no YAML errors');
    return doc.toJS() as Manifest;
  });
  assert.deepEqual(
    manifests.map((m) => m.kind),
    ['Service', 'ConfigMap', 'Deployment', 'Service'],
  );
  const configText = manifests[1]?.data?.['l4proxy.json'];
  assert.ok(configText !== undefined);
  const config = validateConfig(JSON.parse(configText) as unknown, 'l4proxy.json');
  assert.deepEqual(
    config.listeners.map((l) => l.config.protocol),
    ['tcp', 'udp'],
    'a TCP and a UDP listener',
  );
  closeAll(config.listeners);

  const pod = manifests[2]?.spec?.template?.spec;
  assert.ok(pod);
  const [container] = pod.containers;
  assert.ok(container);
  const [program, ...argv] = container.command;
  assert.match(
    program ?? '',
    /node_modules\/\.bin\/l4proxy$/,
    'the bin itself (npx does not forward SIGTERM)',
  );
  const args = parseCliArgs(argv);
  assert.ok(args.drainTimeout !== undefined, '--drain-timeout is set');
  assert.ok(
    args.drainTimeout < pod.terminationGracePeriodSeconds * 1000,
    `the drain (${args.drainTimeout} ms) ends before the pod is killed (${pod.terminationGracePeriodSeconds} s)`,
  );

  assert.equal(pod.securityContext?.runAsNonRoot, true, 'non-root');
  for (const each of [...pod.initContainers, ...pod.containers]) {
    const context = each.securityContext ?? {};
    assert.equal(context.allowPrivilegeEscalation, false, each.name);
    assert.equal(context.readOnlyRootFilesystem, true, each.name);
    assert.deepEqual(context.capabilities?.drop, ['ALL'], each.name);
  }
  const ports = container.ports.map((p) => p.containerPort);
  assert.ok(
    ports.every((port) => port > 1024),
    'unprivileged ports only',
  );
});

interface Container {
  name: string;
  command: string[];
  ports: { containerPort: number }[];
  securityContext?:
    | {
        allowPrivilegeEscalation?: boolean;
        readOnlyRootFilesystem?: boolean;
        capabilities?: { drop?: string[] } | undefined;
      }
    | undefined;
}

interface Manifest {
  kind: string;
  data?: Record<string, string>;
  spec?: {
    template?: {
      spec?: {
        terminationGracePeriodSeconds: number;
        securityContext?: { runAsNonRoot?: boolean };
        initContainers: Container[];
        containers: Container[];
      };
    };
  };
}

/** The keys the CLI knows at `config`'s `zzz_unknown`, from the list its refusal names. */
async function keysKnownBeside(config: Record<string, unknown>): Promise<string[]> {
  const { closeAll, validateConfig } = await import('../src/cli/config.js');
  try {
    closeAll(validateConfig(config, 'l4proxy.json').listeners);
  } catch (err) {
    const list = /expected one of the known [\w ]+ \(([^)]+)\)/.exec((err as Error).message)?.[1];
    assert.ok(list !== undefined, (err as Error).message);
    return list.split(', ');
  }
  assert.fail('an unknown key is refused');
}

test('every key a config file may hold (top level, admin, each listener protocol) is documented', async () => {
  const options = read('docs/options.md');
  const prose = read('docs/operations.md') + read('docs/tunneling.md');
  const upstreams = [{ host: '::1', port: 1 }];
  const listener = (protocol: string): Record<string, unknown> => ({
    protocol,
    listen: '127.0.0.1:0',
    ...(protocol === 'tunnel' ? {} : { upstreams }),
    zzz_unknown: 1,
  });
  const places: [kind: string, config: Record<string, unknown>][] = [
    ['file', { listeners: [], zzz_unknown: 1 }],
    ['admin', { admin: { zzz_unknown: 1 }, listeners: [] }],
    ...['tcp', 'udp', 'tunnel'].map((p): [string, Record<string, unknown>] => [
      p,
      { listeners: [listener(p)] },
    ]),
  ];
  const undocumented: string[] = [];
  let checked = 0;
  for (const [kind, config] of places) {
    for (const key of await keysKnownBeside(config)) {
      checked++;
      // A library option: its matrix row names `tcp:key`; a key of the CLI's own: its table.
      const inMatrix = options.includes(`\`${kind}:${key}`);
      const inProse = prose.includes(`\`${key}\``) || prose.includes(`"${key}":`);
      if (!inMatrix && !inProse) undocumented.push(`${kind}: ${key}`);
    }
  }
  assert.deepEqual(undocumented, []);
  assert.ok(checked > 120, `${checked} keys checked`);
});
