/**
 * Preloaded (`node --import`) into a contender that `bench/instructions.js --warm` counts: on
 * SIGURG it turns V8's optimizing compiler off (`--no-opt`), so the operations counted after the
 * warm-up run the code the warm-up optimized, without compilations that a longer run would have
 * finished long before (under callgrind a warm-up of thousands of connections still compiles).
 * Says so on stderr once done.
 */
import { setFlagsFromString } from 'node:v8';

process.on('SIGURG', () => {
  setFlagsFromString('--no-opt');
  process.stderr.write('\nl4proxy-bench: jit frozen\n');
});
