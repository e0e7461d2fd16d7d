/**
 * Preloaded (`node --import`) into a contender that `bench/instructions.js --warm` counts: on
 * SIGURG it turns V8's optimizing compilers off (`--no-opt`, `--no-maglev`), so the operations
 * counted after the warm-up run the code the warm-up optimized, without compilations that a
 * longer run would have finished long before (under callgrind a warm-up of thousands of
 * connections still compiles). Says so on stderr once done.
 */
import { setFlagsFromString } from 'node:v8';

process.on('SIGURG', () => {
  setFlagsFromString('--no-opt');
  // Node 26's V8 also optimizes with Maglev by default (Node 20's and 22's do not).
  setFlagsFromString('--no-maglev');
  process.stderr.write('\nl4proxy-bench: jit frozen\n');
});
