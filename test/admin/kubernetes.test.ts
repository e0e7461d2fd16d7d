import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseAdminSetting } from '../../src/cli/adminConfig.js';

interface Container {
  ports: { name: string; containerPort: number }[];
  env?: { name: string; valueFrom?: unknown }[];
  readinessProbe?: { httpGet?: { path: string; port: string } };
  livenessProbe?: { httpGet?: { path: string; port: string } };
}

test('the example Deployment probes /ready and /live on the admin port its config opens', async () => {
  const { parseAllDocuments } = await import('yaml');
  const text = readFileSync(
    new URL('../../../docs/kubernetes/l4proxy.yaml', import.meta.url),
    'utf8',
  );
  const manifests = parseAllDocuments(text).map(
    (doc) => doc.toJS() as { kind: string; data?: Record<string, string>; spec?: unknown },
  );
  const config = JSON.parse(
    manifests.find((m) => m.kind === 'ConfigMap')?.data?.['l4proxy.json'] ?? '{}',
  ) as {
    admin?: unknown;
  };
  const admin = parseAdminSetting(config.admin);
  assert.ok(admin.ok, 'the config opens the admin API');
  const deployment = manifests.find((m) => m.kind === 'Deployment') as unknown as {
    spec: { template: { spec: { containers: Container[] } } };
  };
  const container = deployment.spec.template.spec.containers[0];
  assert.ok(container !== undefined);
  const adminPort = container.ports.find((p) => p.name === 'admin');
  assert.equal(adminPort?.containerPort, admin.value.listen.port);
  assert.deepEqual(container.readinessProbe?.httpGet, { path: '/ready', port: 'admin' });
  assert.deepEqual(container.livenessProbe?.httpGet, { path: '/live', port: 'admin' });
  // Off loopback the admin API refuses to start without a token: the pod must pass one.
  assert.ok(
    container.env?.some((e) => e.name === 'L4PROXY_ADMIN_TOKEN' && e.valueFrom !== undefined),
  );
});
