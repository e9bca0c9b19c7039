import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunnerArgs } from '../../src/lab/faultlab/runner';
import { addCounters, caseSeed, prng, zeroCounters } from '../../src/lab/faultlab/types';

test('lab runner arguments: defaults, values, and clear errors', () => {
  assert.deepEqual(parseRunnerArgs([]), { scale: 'ci', seed: 1 });
  assert.deepEqual(parseRunnerArgs(['--scale', 'release', '--seed', '7', '--target', 'dmkit-era', '--only', 'crash,reload']), {
    scale: 'release', seed: 7, target: 'dmkit-era', only: ['crash', 'reload'],
  });
  assert.equal(parseRunnerArgs(['--only', 'fuzz', '--case', '12']).caseSeed, 12);
  for (const [argv, why] of [
    [['--scale', 'huge'], /ci or release/],
    [['--seed', '-1'], /whole number/],
    [['--seed'], /needs a value/],
    [['--only', 'nope'], /no component 'nope'/],
    [['--case', '3'], /--case needs --only/],
    [['--bogus'], /unknown option/],
  ] as const) {
    assert.throws(() => parseRunnerArgs(argv), why);
  }
});

test('counters add field by field; case seeds and the PRNG replay', () => {
  const c = addCounters(addCounters(zeroCounters(), { crash_states: 3, failures: 1 }), { crash_states: 2, malformed_inputs: 9 });
  assert.deepEqual(c, { ...zeroCounters(), crash_states: 5, malformed_inputs: 9, failures: 1 });
  assert.equal(caseSeed(1, 'crash', 4), caseSeed(1, 'crash', 4));
  assert.notEqual(caseSeed(1, 'crash', 4), caseSeed(1, 'crash', 5));
  assert.notEqual(caseSeed(1, 'crash', 4), caseSeed(2, 'crash', 4));
  const a = prng(99);
  const b = prng(99);
  const xs = Array.from({ length: 50 }, () => a());
  assert.deepEqual(xs, Array.from({ length: 50 }, () => b()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});
