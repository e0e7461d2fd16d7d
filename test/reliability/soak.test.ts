/**
 * Soak (only under `npm run test:soak`, L4PROXY_SOAK=1): mixed TCP and UDP load through one proxy
 * process for L4PROXY_SOAK_MINUTES (default 10), while upstreams change (setUpstreams every 5 s)
 * and are SIGKILLed and restarted (every 15 s). Every TCP exchange that completes carries exactly
 * its bytes; the others end with a reason; descriptors return to the baseline and stats add up.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { echoUpstream, proxyHost } from './child.js';
import type { Child } from './child.js';
import { eventually, exchange, randomPayload, runPool, setting, SOAK, udpOnce } from './load.js';

const MINUTES = setting('L4PROXY_SOAK_MINUTES', 10);

describe('soak', () => {
  test(
    `${MINUTES} minutes of mixed TCP and UDP load with upstream churn lose no byte and leak nothing`,
    {
      skip: SOAK ? false : 'soak runs only under npm run test:soak',
      timeout: (MINUTES + 5) * 60_000,
    },
    async (t) => {
      const upstreams: { child: Child; tcpPort: number; udpPort: number }[] = [];
      for (let i = 0; i < 3; i++) upstreams.push(await echoUpstream());
      t.after(() => Promise.all(upstreams.map((u) => u.child.stop())));
      const tcpList = (set: readonly number[]): object[] =>
        set.map((i) => ({ host: '127.0.0.1', port: upstreams[i]!.tcpPort, id: `u${i}` }));
      const udpList = (set: readonly number[]): object[] =>
        set.map((i) => ({ host: '127.0.0.1', port: upstreams[i]!.udpPort, id: `u${i}` }));
      const { child, tcpPort, udpPort } = await proxyHost({
        tcp: { upstreams: tcpList([0, 1, 2]) as never, idleTimeout: 30_000 },
        udp: { upstreams: udpList([0, 1, 2]) as never, maxResponses: 1, idleTimeout: 5_000 },
      });
      t.after(() => child.stop());
      const baselineFds = await child.fds();
      const baselineRss = await child.rss();
      const figures = {
        tcpExchanges: 0,
        tcpIntact: 0,
        tcpFailed: 0,
        lost: 0,
        bytesCompared: 0,
        udpSessions: 0,
        udpAnswered: 0,
        setUpstreams: 0,
        kills: 0,
        maxRss: baselineRss,
      };
      const deadline = Date.now() + MINUTES * 60_000;
      let nextChange = Date.now() + 5_000;
      let nextKill = Date.now() + 15_000;
      let round = 0;
      while (Date.now() < deadline) {
        round++;
        await Promise.all([
          runPool(200, 32, async () => {
            const data = randomPayload(1, 64 * 1024);
            data[0] = 0x47;
            const result = await exchange(tcpPort, data);
            figures.tcpExchanges++;
            figures.bytesCompared += result.received.length;
            if (result.intact) figures.tcpIntact++;
            else if (result.error === undefined) figures.lost++;
            else figures.tcpFailed++;
          }),
          runPool(200, 32, async () => {
            const data = randomPayload(1, 1200);
            const reply = await udpOnce(udpPort, data, 2_000);
            figures.udpSessions++;
            if (reply?.equals(data) === true) figures.udpAnswered++;
          }),
        ]);
        if (Date.now() > nextChange) {
          nextChange = Date.now() + 5_000;
          const set = [0, 1, 2].filter(() => Math.random() < 0.7);
          const chosen = set.length === 0 ? [round % 3] : set;
          await child.ask({ type: 'setUpstreams', tcp: tcpList(chosen), udp: udpList(chosen) });
          figures.setUpstreams++;
        }
        if (Date.now() > nextKill) {
          nextKill = Date.now() + 15_000;
          const victim = round % 3;
          const old = upstreams[victim]!;
          await old.child.stop('SIGKILL');
          upstreams[victim] = await echoUpstream(old.tcpPort, old.udpPort);
          figures.kills++;
        }
        figures.maxRss = Math.max(figures.maxRss, await child.rss());
      }
      await eventually(
        async () => {
          const report = await child.report();
          return (
            report.tcp!.downstream_cx_active === 0 &&
            report.udp!.downstream_sess_active === 0 &&
            (await child.fds()) === baselineFds
          );
        },
        'drained, fds at the baseline',
        30_000,
        200,
      );
      const report = await child.report(true);
      const tcp = report.tcp!;
      const udp = report.udp!;
      t.diagnostic(
        `soak ${MINUTES} min: ${JSON.stringify(figures)}; rss baseline ${baselineRss}, end ${await child.rss()}; ` +
          `tcp close reasons ${JSON.stringify(report.tally.closeReasons)}; udp drops ${udp.datagrams_dropped}`,
      );
      assert.equal(figures.lost, 0, 'no exchange ended cleanly with wrong bytes');
      assert.deepEqual(report.warnings, []);
      const closed = Object.values(tcp.close_reasons).reduce((a, b) => a + b, 0);
      assert.equal(tcp.downstream_cx_total, closed + tcp.downstream_cx_active);
      assert.equal(report.tally.unmatchedCloses, 0);
      const sessionsClosed = Object.values(udp.session_close_reasons).reduce((a, b) => a + b, 0);
      assert.equal(udp.downstream_sess_total, sessionsClosed + udp.downstream_sess_active);
    },
  );
});
