import assert from 'node:assert/strict';
import type { Worker } from 'node:cluster';
import { test } from 'node:test';
import type { RelayedAdminRequest } from '../../src/admin/relayedRequest.js';
import type { PrimaryMessage } from '../../src/cli/messages.js';
import { WorkerRelay } from '../../src/cli/workerRelay.js';

/** A worker as the relay's replay uses it: connected, recording what it is sent. */
function recordingWorker(): { worker: Worker; sent: RelayedAdminRequest[] } {
  const sent: RelayedAdminRequest[] = [];
  const worker = {
    isConnected: () => true,
    send: (message: PrimaryMessage) => {
      if (message.type === 'l4proxy:admin') sent.push(message.request);
      return true;
    },
  } as unknown as Worker;
  return { worker, sent };
}

function control(path: string, body: Record<string, unknown> = {}): RelayedAdminRequest {
  return { method: 'POST', path, body, remoteAddress: '127.0.0.1' };
}

test('a restarted worker gets an old disable back however many weight changes came after', () => {
  const relay = new WorkerRelay(() => []);
  relay.remember(control('/upstreams/web/b/disable'));
  // A script adjusting weights all day long.
  for (let weight = 1; weight <= 1_500; weight++)
    relay.remember(control('/upstreams/web/a/weight', { weight }));
  relay.remember(control('/upstreams/web/%61/drain'));
  const { worker, sent } = recordingWorker();
  relay.replay(worker);
  assert.deepEqual(
    sent.map((r) => [r.path, r.body]),
    [
      ['/upstreams/web/b/disable', {}],
      ['/upstreams/web/a/weight', { weight: 1_500 }],
      ['/upstreams/web/%61/drain', {}],
    ],
    'the last mode and the last weight of each upstream, in order',
  );
});
