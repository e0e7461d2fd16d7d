import assert from 'node:assert/strict';
import { test } from 'node:test';
import { socketServer } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { runCli } from './cli.js';
import { startTunnelCli } from './tunnelCli.js';

test('tunnel:sourceAddress: curl through the listener reaches the target from that address; a bad one is refused', async (t) => {
  if (tool(t, 'curl') === undefined) return;
  // An HTTP answer naming the address the connection came from.
  const target = await socketServer((socket) => {
    socket.end(`HTTP/1.0 200 OK\r\n\r\nfrom ${socket.remoteAddress ?? ''}`);
  });
  t.after(() => target.close());
  const tunnel = await startTunnelCli(t, {
    upstreams: [{ host: '127.0.0.1', port: target.port }],
    sourceAddress: '127.0.0.2',
  });
  const answer = await tunnel.curl(`http://127.0.0.1:${String(target.port)}/`);
  assert.equal(answer.stdout, 'from 127.0.0.2 200', answer.stderr);
  const bad = tunnel.dir.write('bad.json', {
    listeners: [{ protocol: 'tunnel', listen: '127.0.0.1:0', sourceAddress: ['127.0.0.1', 'x'] }],
  });
  const refused = await runCli(['--config', bad, '--check']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /listeners\[0\]\.sourceAddress: /);
  await tunnel.stop();
});
