import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

test('docs/images/status-page.png exists: the screenshot docs/operations.md shows', () => {
  const png = readFileSync(new URL('../../../docs/images/status-page.png', import.meta.url));
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  // IHDR: width and height of what `npm run docs:screenshot` captures.
  assert.equal(png.toString('latin1', 12, 16), 'IHDR');
  assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [1200, 1000]);
  const docs = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
  assert.match(docs, /!\[[^\]]+\]\(images\/status-page\.png\)/);
});
