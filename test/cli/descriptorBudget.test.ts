import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { closeAll, validateConfig } from '../../src/cli/config.js';
import { capsAboveLimit, derivedCap } from '../../src/cli/descriptorBudget.js';
import { descriptorBudget, openFilesLimit } from '../../src/internal/descriptorBudget.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            512                  4096                 files
Max locked memory         8388608              8388608              bytes
`;

describe('the open-files limit split between listeners', () => {
  test('the soft limit is read from /proc/self/limits; unlimited or unreadable derives nothing', () => {
    assert.equal(
      openFilesLimit(() => LIMITS),
      512,
    );
    assert.equal(
      openFilesLimit(() => LIMITS.replace(/512 /, 'unlimited')),
      undefined,
    );
    assert.equal(
      openFilesLimit(() => {
        throw new Error('ENOENT');
      }),
      undefined,
    );
    if (process.platform === 'linux') assert.ok((openFilesLimit() ?? 0) > 0, 'this process');
  });

  test('a tenth is reserved (at least 128, at most half), the rest split equally; TCP gets half its share, UDP all of it', () => {
    assert.deepEqual(descriptorBudget(512, 2), { openFiles: 512, reserved: 128, perListener: 192 });
    assert.deepEqual(descriptorBudget(65_536, 4), {
      openFiles: 65_536,
      reserved: 6_554,
      perListener: 14_745,
    });
    assert.deepEqual(descriptorBudget(100, 1), { openFiles: 100, reserved: 50, perListener: 50 });
    assert.equal(descriptorBudget(undefined, 2), undefined);
    const budget = descriptorBudget(512, 2);
    assert.deepEqual(derivedCap('tcp', {}, budget), { option: 'maxConnections', value: 96 });
    assert.deepEqual(derivedCap('udp', {}, budget), { option: 'maxSessions', value: 192 });
    // Per-packet balancing keeps a socket to each upstream in every session.
    const three = [1, 2, 3].map((port) => ({ host: '127.0.0.1', port }));
    assert.deepEqual(derivedCap('udp', { perPacketBalancing: true, upstreams: three }, budget), {
      option: 'maxSessions',
      value: 64,
    });
    // An explicit value wins, whatever it is.
    assert.equal(derivedCap('tcp', { maxConnections: 100_000 }, budget), undefined);
    assert.equal(derivedCap('udp', { maxSessions: 100_000 }, budget), undefined);
    // A share too small for one connection still admits one.
    assert.deepEqual(derivedCap('tcp', {}, descriptorBudget(3, 3)), {
      option: 'maxConnections',
      value: 1,
    });
  });

  test('a tunnel listener that sets no maxConnections / maxTunnels gets half its share for each; an explicit one wins', () => {
    const config = validateConfig(
      {
        listeners: [
          {
            name: 'own-connections',
            protocol: 'tunnel',
            listen: '127.0.0.1:0',
            upstreams: [{ host: '127.0.0.1', port: 1 }],
            maxConnections: 7,
          },
          {
            name: 'own-both',
            protocol: 'tunnel',
            listen: '127.0.0.1:1',
            upstreams: [{ host: '127.0.0.1', port: 1 }],
            maxConnections: 7,
            maxTunnels: 9,
          },
        ],
      },
      'l4proxy.json',
      () => 628,
    );
    assert.deepEqual(config.descriptors, { openFiles: 628, reserved: 128, perListener: 250 });
    const [own, both] = config.tunnels;
    assert.ok(own && both);
    assert.deepEqual(own.derivedCaps, [{ option: 'maxTunnels', value: 125 }]);
    assert.equal(own.options.maxConnections, 7);
    assert.equal(own.options.maxTunnels, 125);
    assert.equal(both.derivedCaps, undefined);
    assert.equal(both.options.maxTunnels, 9);
    const unknown = validateConfig(
      {
        listeners: [
          {
            protocol: 'tunnel',
            listen: '127.0.0.1:0',
            upstreams: [{ host: '127.0.0.1', port: 1 }],
          },
        ],
      },
      'l4proxy.json',
      () => undefined,
    );
    assert.equal(unknown.tunnels[0]?.derivedCaps, undefined);
    assert.equal(unknown.tunnels[0]?.options.maxTunnels, undefined);
  });

  test('validateConfig: every listener counts in the split, tunnel ones included; explicit caps are kept and raw stays as written', () => {
    const config = validateConfig(
      {
        listeners: [
          { protocol: 'tcp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 1 }] },
          {
            protocol: 'udp',
            listen: '127.0.0.1:0',
            upstreams: [{ host: '127.0.0.1', port: 1 }],
          },
          {
            name: 'capped',
            protocol: 'udp',
            listen: '127.0.0.1:1',
            upstreams: [{ host: '127.0.0.1', port: 1 }],
            maxSessions: 10,
          },
          {
            protocol: 'tunnel',
            listen: '127.0.0.1:0',
            upstreams: [{ host: '127.0.0.1', port: 1 }],
          },
        ],
      },
      'l4proxy.json',
      () => 1_128,
    );
    closeAll(config.listeners);
    assert.deepEqual(config.descriptors, { openFiles: 1_128, reserved: 128, perListener: 250 });
    assert.deepEqual(
      config.listeners.map((l) => l.config.derivedCap),
      [{ option: 'maxConnections', value: 125 }, { option: 'maxSessions', value: 250 }, undefined],
    );
    assert.equal(config.listeners[0]?.config.raw.maxConnections, undefined, 'raw as written');
    // The tunnel listener: a descriptor a client connection, one a tunnel (its upstream).
    assert.deepEqual(config.tunnels[0]?.derivedCaps, [
      { option: 'maxConnections', value: 125 },
      { option: 'maxTunnels', value: 125 },
    ]);
    const tunnel = config.tunnels[0];
    assert.ok(tunnel);
    assert.equal(tunnel.options.maxConnections, 125);
    assert.equal(tunnel.options.maxTunnels, 125);
    assert.equal(tunnel.raw.maxTunnels, undefined, 'raw as written');
    // An explicit cap is kept even above the limit; the command warns of it at start.
    assert.deepEqual(
      capsAboveLimit(
        [
          { name: 'a', protocol: 'tcp', raw: { maxConnections: 500 } },
          { name: 'b', protocol: 'tcp', raw: { maxConnections: 501 } },
          { name: 'c', protocol: 'udp', raw: { maxSessions: 1_001 } },
          { name: 'd', protocol: 'udp', raw: {} },
          // A tunnel listener: a descriptor a client connection, one a tunnel.
          { name: 'e', protocol: 'tunnel', raw: { maxConnections: 500, maxTunnels: 500 } },
          { name: 'f', protocol: 'tunnel', raw: { maxConnections: 500, maxTunnels: 501 } },
          { name: 'g', protocol: 'tunnel', raw: { maxTunnels: 1_001 } },
          { name: 'h', protocol: 'tunnel', raw: {} },
        ],
        { openFiles: 1_128, reserved: 128, perListener: 250 },
      ),
      [
        { listener: 'b', maxConnections: 501 },
        { listener: 'c', maxSessions: 1_001 },
        { listener: 'f', maxConnections: 500, maxTunnels: 501 },
        { listener: 'g', maxTunnels: 1_001 },
      ],
    );
    const unknown = validateConfig(
      {
        listeners: [
          { protocol: 'udp', listen: '127.0.0.1:0', upstreams: [{ host: '127.0.0.1', port: 1 }] },
        ],
      },
      'l4proxy.json',
      () => undefined,
    );
    closeAll(unknown.listeners);
    assert.equal(unknown.descriptors, undefined);
    assert.equal(unknown.listeners[0]?.config.derivedCap, undefined);
  });
});
