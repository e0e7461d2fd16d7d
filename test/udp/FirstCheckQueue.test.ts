import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { FirstCheckQueue } from '../../src/udp/FirstCheckQueue.js';
import type { QueuedCheck } from '../../src/udp/FirstCheckQueue.js';

/** A queued check that records when it ran in `ran`. */
function entry(name: string, ran: string[]): QueuedCheck {
  return {
    checkAt: 0,
    prevCheck: undefined,
    nextCheck: undefined,
    checkQueued: false,
    firstCheck: () => {
      ran.push(name);
    },
  };
}

describe('FirstCheckQueue', () => {
  test('runs the checks that are due, in the order they were queued, and keeps the others', (t) => {
    const queue = new FirstCheckQueue(1_000);
    t.after(() => {
      queue.close();
    });
    const ran: string[] = [];
    const now = Date.now();
    const [a, b, c] = [entry('a', ran), entry('b', ran), entry('c', ran)];
    queue.add(a, now - 2_000);
    queue.add(b, now - 1_500);
    queue.add(c, now);
    queue.due();
    assert.deepEqual(ran, ['a', 'b']);
    assert.equal(a.checkQueued, false);
    assert.equal(c.checkQueued, true);
    // The one left is run when its time comes, not again for the others.
    c.checkAt = now - 1;
    queue.due();
    assert.deepEqual(ran, ['a', 'b', 'c']);
    queue.due();
    assert.deepEqual(ran, ['a', 'b', 'c']);
  });

  test('a removed entry is never checked, wherever it was in the queue; removing twice is harmless', (t) => {
    const queue = new FirstCheckQueue(1_000);
    t.after(() => {
      queue.close();
    });
    const ran: string[] = [];
    const past = Date.now() - 5_000;
    const entries = ['a', 'b', 'c', 'd', 'e'].map((name) => entry(name, ran));
    for (const queued of entries) queue.add(queued, past);
    const [a, b, c, d, e] = entries as [
      QueuedCheck,
      QueuedCheck,
      QueuedCheck,
      QueuedCheck,
      QueuedCheck,
    ];
    queue.remove(c);
    queue.remove(a);
    queue.remove(e);
    queue.remove(c);
    assert.equal(c.prevCheck, undefined);
    assert.equal(c.nextCheck, undefined);
    queue.due();
    assert.deepEqual(ran, ['b', 'd']);
    assert.ok(!b.checkQueued && !d.checkQueued);
    // Emptied: a new entry is head and tail at once.
    const f = entry('f', ran);
    queue.add(f, past);
    queue.due();
    assert.deepEqual(ran, ['b', 'd', 'f']);
  });

  test('an entry due further ahead than the delay (the clock stepped back) is checked now', (t) => {
    const queue = new FirstCheckQueue(1_000);
    t.after(() => {
      queue.close();
    });
    const ran: string[] = [];
    queue.add(entry('before the step', ran), Date.now() + 3_600_000);
    queue.due();
    assert.deepEqual(ran, ['before the step']);
  });

  test('a check may end its session (remove itself) while the queue runs it', (t) => {
    const queue = new FirstCheckQueue(1_000);
    t.after(() => {
      queue.close();
    });
    const ran: string[] = [];
    const past = Date.now() - 5_000;
    const b = entry('b', ran);
    const a: QueuedCheck = {
      ...entry('a', ran),
      firstCheck: () => {
        ran.push('a');
        queue.remove(a);
        queue.remove(b);
      },
    };
    queue.add(a, past);
    queue.add(b, past);
    queue.due();
    assert.deepEqual(ran, ['a']);
  });

  test('its one timer fires at the delay', async (t) => {
    const queue = new FirstCheckQueue(20);
    t.after(() => {
      queue.close();
    });
    const started = Date.now();
    const checked = new Promise<number>((resolve) => {
      queue.add(
        {
          ...entry('a', []),
          firstCheck: () => {
            resolve(Date.now());
          },
        },
        started,
      );
    });
    // The queue's timer is unref'd (it must not hold a host open): this one, ref'd, keeps the
    // test's event loop alive until the check runs, or fails it after 10 s.
    let guard: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      guard = setTimeout(() => {
        reject(new Error('no check within 10 s'));
      }, 10_000);
    });
    const at = await Promise.race([checked, deadline]).finally(() => {
      clearTimeout(guard);
    });
    assert.ok(at - started >= 19, `checked after ${String(at - started)} ms`);
  });
});
