import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { test } from 'node:test';
import { startPrimaryAdmin } from '../../src/cli/primaryAdmin.js';
import { failAccept } from '../helpers/acceptError.js';
import { httpGet } from '../helpers/httpGet.js';

test("an accept error (EMFILE, ENOBUFS) neither crashes nor stops the cluster primary's admin server", async (t) => {
  const { server, address } = await startPrimaryAdmin(
    { listen: { host: '127.0.0.1', port: 0 } },
    {
      ready: () => true,
      relay: () => Promise.reject(new Error('no workers here')),
      remember: () => undefined,
      collect: () => Promise.resolve(new Map()),
      families: () => Promise.resolve([]),
    },
  );
  t.after(() => {
    server.close();
  });
  // Before: no 'error' listener after listen(), so the emit threw out of the accept callback
  // (an uncaught exception ending the primary, and with it every worker).
  assert.doesNotThrow(() => {
    failAccept(server, constants.errno.EMFILE);
    failAccept(server, constants.errno.ENOBUFS);
  });
  assert.equal(server.listening, true);
  const reply = await httpGet(`http://${address}/live`);
  assert.equal(reply.status, 200);
});
