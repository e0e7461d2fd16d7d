import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { PIPE_BUF, writeInPipePieces } from '../../src/cli/pipePieces.js';
import { fuzzRuns } from '../helpers/fuzz.js';

test('lines go out in pieces of at most PIPE_BUF bytes, each ending a line, nothing lost or reordered', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 3 * PIPE_BUF }), { minLength: 1, maxLength: 60 }),
      (lengths) => {
        const lines = Buffer.from(
          lengths.map((length, i) => `${String(i % 10).repeat(length)}\n`).join(''),
        );
        const pieces: Buffer[] = [];
        writeInPipePieces(lines, (piece) => pieces.push(Buffer.from(piece)));
        assert.deepEqual(Buffer.concat(pieces), lines, 'the same bytes, in order');
        for (const piece of pieces) {
          assert.equal(piece.at(-1), 0x0a, 'each piece ends a line');
          const newlines = piece.filter((byte) => byte === 0x0a).length;
          // Longer than PIPE_BUF only for one line that is longer by itself.
          if (piece.length > PIPE_BUF) assert.equal(newlines, 1, 'a long piece is one line');
        }
      },
    ),
    { numRuns: fuzzRuns(300) },
  );
});

test('lines that fit go out in one write', () => {
  const writes: Buffer[] = [];
  writeInPipePieces(Buffer.from('a\nb\n'), (piece) => writes.push(piece));
  assert.deepEqual(
    writes.map((piece) => piece.toString()),
    ['a\nb\n'],
  );
});
