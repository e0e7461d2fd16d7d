import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect, readAll } from '../helpers/net.js';
import { configDir, runCli } from './cli.js';
import { startTunnelCli } from './tunnelCli.js';

test('CLI tunnel listener headersTimeout: a request head still incomplete then is answered 408, logged refused headers_timeout; a bad value names its JSON path', async (t) => {
  const dir = configDir(t);
  const bad = dir.write('bad.json', {
    listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', headersTimeout: 0 }],
  });
  const refused = await runCli(['--config', bad, '--check']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /listeners\[0\]\.headersTimeout/);

  const tunnel = await startTunnelCli(t, {
    upstreams: [{ host: '127.0.0.1', port: 9 }],
    headersTimeout: 300,
  });
  const client = await connect(tunnel.port);
  t.after(() => client.destroy());
  // The request line, then nothing: the head never completes.
  client.write('CONNECT 127.0.0.1:9 HTTP/1.1\r\n');
  assert.match((await readAll(client, 5_000)).toString(), /^HTTP\/1\.1 408 /);
  const line = await tunnel.cli.waitLine('stdout', (l) => l.msg === 'tunnel closed');
  assert.equal(line.status, 408);
  assert.equal(line.refusal, 'headers_timeout');
  await tunnel.stop();
});
