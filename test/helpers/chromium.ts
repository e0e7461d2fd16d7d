import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { withTimeout } from './net.js';

/**
 * A headless Chromium driven over the Chrome DevTools Protocol on a pipe
 * (`--remote-debugging-pipe`: JSON messages separated by NUL bytes on fds 3 and 4), so no
 * WebSocket client is needed on any Node version.
 */
export interface Browser {
  /** Opens `url` in a new tab of `width`x`height` CSS pixels. */
  open(url: string, width?: number, height?: number): Promise<Page>;
  /** Ends the browser (by its PID) and removes its profile directory. */
  close(): Promise<void>;
}

export interface Page {
  /** Evaluates `expression` in the page; resolves with its (JSON) value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy; resolves with its value. Bounded in time and count. */
  waitFor<T>(expression: string, what: string, ms?: number): Promise<T>;
  /** A PNG of the viewport. */
  screenshot(): Promise<Buffer>;
}

interface Pending {
  resolve(value: Record<string, unknown>): void;
  reject(error: Error): void;
}

/** Starts Chromium (`path`) headless with a fresh profile and no network beyond what pages ask. */
export function launchChromium(path: string): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'l4proxy-chromium-'));
  const child: ChildProcess = spawn(
    path,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-extensions',
      '--disable-dev-shm-usage',
      '--hide-scrollbars',
      '--remote-debugging-pipe',
      `--user-data-dir=${profile}`,
      'about:blank',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] },
  );
  const toBrowser = child.stdio[3] as Writable;
  const fromBrowser = child.stdio[4] as Readable;
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    if (stderr.length < 10_000) stderr += chunk.toString();
  });
  toBrowser.on('error', () => undefined);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      resolve();
    });
  });
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let buffered = '';
  fromBrowser.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let end: number;
    while ((end = buffered.indexOf('\0')) !== -1) {
      const message = JSON.parse(buffered.slice(0, end)) as {
        id?: number;
        result?: Record<string, unknown>;
        error?: { message: string };
      };
      buffered = buffered.slice(end + 1);
      if (message.id === undefined) continue;
      const waiter = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) waiter?.reject(new Error(`CDP: ${message.error.message}`));
      else waiter?.resolve(message.result ?? {});
    }
  });
  void exited.then(() => {
    for (const waiter of pending.values())
      waiter.reject(new Error(`chromium exited; stderr: ${stderr.slice(0, 2_000)}`));
    pending.clear();
  });

  const send = (
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> => {
    const id = nextId++;
    const message = JSON.stringify({ id, method, params, ...(sessionId && { sessionId }) });
    return withTimeout(
      new Promise<Record<string, unknown>>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        toBrowser.write(`${message}\0`);
      }),
      15_000,
      `CDP ${method}`,
    );
  };

  const browser: Browser = {
    async open(url, width = 1280, height = 800) {
      const { targetId } = (await send('Target.createTarget', { url: 'about:blank' })) as {
        targetId: string;
      };
      const { sessionId } = (await send('Target.attachToTarget', { targetId, flatten: true })) as {
        sessionId: string;
      };
      await send('Page.enable', {}, sessionId);
      await send(
        'Emulation.setDeviceMetricsOverride',
        { width, height, deviceScaleFactor: 1, mobile: width < 600 },
        sessionId,
      );
      await send('Page.navigate', { url }, sessionId);
      const evaluate = async <T>(expression: string): Promise<T> => {
        const reply = (await send(
          'Runtime.evaluate',
          { expression, returnByValue: true, awaitPromise: true },
          sessionId,
        )) as { result: { value?: unknown }; exceptionDetails?: { text: string } };
        if (reply.exceptionDetails) throw new Error(`page: ${reply.exceptionDetails.text}`);
        return reply.result.value as T;
      };
      return {
        evaluate,
        async waitFor<T>(expression: string, what: string, ms = 10_000): Promise<T> {
          const deadline = Date.now() + ms;
          for (let i = 0; i < 1_000; i++) {
            const value = await evaluate<T>(expression).catch(() => undefined);
            if (value) return value;
            if (Date.now() > deadline) break;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
          throw new Error(`timed out after ${ms} ms waiting for the page to show ${what}`);
        },
        async screenshot() {
          const { data } = (await send('Page.captureScreenshot', { format: 'png' }, sessionId)) as {
            data: string;
          };
          return Buffer.from(data, 'base64');
        },
      };
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        void send('Browser.close').catch(() => undefined);
        const timer = setTimeout(() => {
          if (child.pid !== undefined && child.exitCode === null)
            process.kill(child.pid, 'SIGKILL');
        }, 3_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(profile, { recursive: true, force: true });
    },
  };
  return Promise.resolve(browser);
}
