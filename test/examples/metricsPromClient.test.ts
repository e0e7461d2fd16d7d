import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect, echoServer, readAll, waitFor } from '../helpers/net.js';
import { parseExposition } from '../metrics/exposition.js';
import { httpGet } from '../helpers/httpGet.js';

const main = fileURLToPath(new URL('../../examples/metrics-prom-client/main.js', import.meta.url));

/** Every series as `name{sorted labels} value`, the comparable content of an exposition. */
function series(text: string): string[] {
  const result: string[] = [];
  for (const [name, family] of parseExposition(text)) {
    for (const sample of family.samples) {
      result.push(
        `${family.type} ${name}${JSON.stringify(Object.entries(sample.labels).sort())} ${sample.value}`,
      );
    }
  }
  return result.sort();
}

test('the prom-client example exports the same series and values as proxy.metrics()', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const child = spawn(process.execPath, [main, '--upstream', `127.0.0.1:${echo.port}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  });
  const [line] = await waitFor<[string]>(createInterface({ input: child.stdout }), 'line', 20_000);
  const ready = JSON.parse(line) as { proxyPort: number; metricsPort: number };
  for (let i = 0; i < 3; i++) {
    const socket = await connect(ready.proxyPort);
    const body = readAll(socket);
    socket.end('ping');
    assert.equal((await body).toString(), 'ping');
  }
  const base = `http://127.0.0.1:${ready.metricsPort}`;
  const fromPromClient = series((await httpGet(`${base}/metrics`)).body);
  const native = series((await httpGet(`${base}/native`)).body);
  assert.deepEqual(fromPromClient, native);
  assert.ok(native.includes('counter l4proxy_tcp_downstream_cx_total[] 3'));
  const exited = waitFor(child, 'exit');
  process.kill(child.pid!, 'SIGTERM');
  await exited;
});
