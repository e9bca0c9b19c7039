import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNodeTestSummary } from '../../src/lab/test-cli';

test('reads the last spec-reporter summary', () => {
  const out = 'ℹ tests 3\nℹ pass 3\nℹ fail 0\n...\nℹ tests 9\nℹ pass 6\nℹ fail 2\nℹ cancelled 1\nℹ skipped 1\nℹ todo 0\n';
  assert.deepEqual(parseNodeTestSummary(out), { passed: 6, failed: 3, skipped: 1 });
});

test('no summary means no counts', () => {
  assert.equal(parseNodeTestSummary('Segmentation fault\n'), null);
});
