import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseVmArgs } from '../../src/lab/vm-cli';

test('options stop at the first word of the command', () => {
  const o = parseVmArgs(['--mem', '3072', '--cpus=1', '--timeout', '60', 'uname', '-r', '--mem', 'x']);
  assert.equal(o.memoryMiB, 3072);
  assert.equal(o.cpus, 1);
  assert.equal(o.timeoutSec, 60);
  assert.deepEqual(o.command, ['uname', '-r', '--mem', 'x']);
});

test('-- ends the options', () => {
  assert.deepEqual(parseVmArgs(['--kernel', 'debug', '--', '--weird-command']).command, ['--weird-command']);
});

test('kernel and reverts are read', () => {
  const o = parseVmArgs(['--kernel=debug', '--revert', 'era-postsuspend,tm-commit-order', 'true']);
  assert.equal(o.kernel, 'debug');
  assert.deepEqual(o.reverts, ['era-postsuspend', 'tm-commit-order']);
});

test('bad options are refused with usage', () => {
  assert.throws(() => parseVmArgs([]), /usage/);
  assert.throws(() => parseVmArgs(['--mem', 'lots', 'true']), /positive whole number/);
  assert.throws(() => parseVmArgs(['--frobnicate', 'true']), /unknown option/);
});
