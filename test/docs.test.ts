import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  CloseReason,
  DropReason,
  ErrorCode,
  RejectReason,
  SessionCloseReason,
} from '../src/index.js';

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
