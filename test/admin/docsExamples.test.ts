import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { shell } from '../helpers/curl.js';
import { testServer } from '../helpers/testServer.js';
import { tool } from '../helpers/tools.js';
import { startAdminCli } from '../helpers/adminCli.js';

/** An upstream that accepts and says nothing. */
const upstream = (t: { after(fn: () => unknown): void }): Promise<number> =>
  testServer(t, () => undefined);

const TOKEN = 'docs-example-token';

/** The admin section of docs/operations.md. */
function adminSection(): string {
  const text = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
  const start = text.indexOf('## Admin API and status page');
  const end = text.indexOf('\n## ', start + 1);
  assert.ok(start !== -1 && end !== -1);
  return text.slice(start, end);
}

test('docs/operations.md: every curl example of the admin API runs against a real l4proxy', async (t) => {
  if (tool(t, 'curl') === undefined) return;
  const section = adminSection();
  const lines = [...section.matchAll(/^curl .*$/gm)].map((m) => m[0]);
  assert.ok(lines.length >= 12, `found ${lines.length} curl examples`);
  const { cli, admin } = await startAdminCli(t, {
    token: TOKEN,
    upstreams: { 'app-1': await upstream(t), 'app-2': await upstream(t) },
  });
  for (const line of lines) {
    const result = await shell(line, { ADMIN: admin, TOKEN });
    assert.equal(result.code, 0, `${line}: ${result.stderr}${result.stdout}`);
    assert.ok(result.stdout.length > 0, `${line} printed nothing`);
  }
  const actions = cli.stderr.filter((l) => l.msg === 'admin action').map((l) => l.action);
  assert.deepEqual(actions, ['drain', 'enable', 'disable', 'weight', 'weight', 'enable', 'close']);

  // The documented /upstreams entry has exactly the fields the API returns.
  const documented =
    /One upstream of `GET \/upstreams`[^`]*`[^`]*`\)[^\n]*\n\n```json\n([\s\S]*?)\n```/.exec(
      section,
    );
  assert.ok(documented?.[1] !== undefined, 'the documented upstream JSON');
  const real = await shell(`curl -fsS -H "Authorization: Bearer $TOKEN" http://$ADMIN/upstreams`, {
    ADMIN: admin,
    TOKEN,
  });
  const report = (
    JSON.parse(real.stdout) as { listeners: { web: { upstreams: Record<string, unknown>[] } } }
  ).listeners.web.upstreams[0];
  const shape = (value: unknown): unknown =>
    value !== null && typeof value === 'object'
      ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, shape(v)]))
      : typeof value;
  assert.deepEqual(shape(JSON.parse(documented[1])), shape(report));
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(), 0);
});
