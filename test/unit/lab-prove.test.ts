import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FIXES, parseProveArgs, proofResult, runVerdict, sawAssertionFailure, testCommand, testNamePattern, UsageError } from '../../src/lab/prove';

const ran = (passed: number, failed: number, skipped = 0) => ({ passed, failed, skipped });

test('a fix name and an optional kernel are read', () => {
  assert.deepEqual(parseProveArgs(['era-postsuspend']), { fix: 'era-postsuspend', kernel: undefined, lab: false });
  assert.deepEqual(parseProveArgs(['clone-flush', '--lab']), { fix: 'clone-flush', kernel: undefined, lab: true });
  assert.deepEqual(parseProveArgs(['--kernel', 'debug', 'tm-commit-order']), { fix: 'tm-commit-order', kernel: 'debug', lab: false });
  assert.deepEqual(parseProveArgs(['tm-commit-order', '--kernel=debian']), { fix: 'tm-commit-order', kernel: 'debian', lab: false });
});

test('unknown fixes, options and kernels get the usage with the known fixes', () => {
  for (const argv of [[], ['no-such-fix'], ['--frob', 'era-postsuspend'], ['era-postsuspend', '--kernel', 'vanilla'], ['era-postsuspend', 'tm-commit-order'], ['--help']]) {
    assert.throws(() => parseProveArgs(argv), (e: unknown) => {
      assert.ok(e instanceof UsageError, `${argv.join(' ')}: ${String(e)}`);
      assert.match(e.message, /usage: npm run prove/);
      for (const fix of Object.keys(FIXES)) assert.match(e.message, new RegExp(`^  ${fix} `, 'm'));
      return true;
    });
  }
  assert.throws(() => parseProveArgs(['toString']), UsageError, 'names from the prototype are not fixes');
});

test('the test name pattern selects "<fix>: ..." only', () => {
  const re = new RegExp(testNamePattern('era-postsuspend'));
  assert.ok(re.test('era-postsuspend: removing a suspended era device ...'));
  assert.ok(!re.test('era functional era-postsuspend: x'));
  assert.ok(!re.test('era-postsuspendx: y'));
  assert.ok(new RegExp(testNamePattern('a.b')).test('a.b: x') && !new RegExp(testNamePattern('a.b')).test('axb: x'));
  const cmd = testCommand('/usr/bin/node', 'tm-commit-order', FIXES['tm-commit-order']!);
  assert.deepEqual(cmd.slice(0, 2), ['/usr/bin/node', '--test']);
  assert.ok(cmd.includes('--test-name-pattern=^tm-commit-order:'));
  assert.ok(cmd.includes('dist/test/vm/era-tm-commit.test.js'));
});

test('every registered fix names test files that exist in the source tree', () => {
  const root = path.resolve(__dirname, '..', '..', '..');
  for (const [fix, proof] of Object.entries(FIXES)) {
    assert.ok(proof.files.length > 0, fix);
    for (const f of proof.files) {
      const src = path.join(root, f.replace(/^dist\//, '').replace(/\.js$/, '.ts'));
      assert.ok(fs.existsSync(src), `${fix}: ${src}`);
      assert.match(fs.readFileSync(src, 'utf8'), new RegExp(`'${fix}: `), `${fix}: ${f} has a test named '${fix}: ...'`);
    }
  }
});

test('a run passes only when tests ran, none failed, and the kernel stayed quiet', () => {
  const v = (o: Parameters<typeof runVerdict>[0]) => runVerdict(o).verdict;
  assert.equal(v({ exitCode: 0, splats: 0, counts: ran(2, 0, 1) }), 'pass');
  assert.equal(v({ exitCode: 1, splats: 0, counts: ran(1, 1), assertionFailed: true }), 'fail');
  assert.equal(v({ exitCode: 0, splats: 0, counts: ran(0, 0, 4) }), 'error', 'nothing ran');
  assert.equal(v({ exitCode: 0, splats: 1, counts: ran(2, 0) }), 'error');
  assert.equal(v({ exitCode: 1, splats: 0, counts: ran(3, 0) }), 'error', 'a non-zero exit is no pass even if the counts look fine');
  assert.equal(v({ exitCode: 126, splats: 0, counts: null }), 'error');
  assert.equal(v({ exitCode: null, splats: 0, counts: null }), 'error', 'the module build failed');
  assert.equal(v({ exitCode: 1, splats: 0, counts: null }), 'error', 'no test output at all');
});

test('a run fails only on an assertion, with no splat and no timeout; otherwise it is an error that says why', () => {
  assert.deepEqual(runVerdict({ exitCode: 125, splats: 2, counts: ran(1, 1), assertionFailed: true }), { verdict: 'error', why: 'kernel splat (2 line(s))' });
  assert.deepEqual(runVerdict({ exitCode: 124, splats: 0, counts: null }), { verdict: 'error', why: 'the run timed out' });
  assert.equal(runVerdict({ exitCode: 1, splats: 0, counts: ran(1, 1), assertionFailed: false }).verdict, 'error', 'a test that threw observed nothing');
  assert.equal(sawAssertionFailure("  error: 'x'\n  code: 'ERR_ASSERTION'\n"), true);
  assert.equal(sawAssertionFailure("  error: 'dd failed'\n  code: 'ERR_CHILD_PROCESS'\n"), false);
});

test('the proof holds only for pass with the fix and fail with the revert', () => {
  const pass = { verdict: 'pass' } as const;
  const fail = { verdict: 'fail' } as const;
  assert.deepEqual(proofResult('tm-commit-order', pass, fail), {
    line: '{"fix":"tm-commit-order","with_fix":"pass","with_revert":"fail"}',
    exitCode: 0,
  });
  assert.equal(proofResult('x', pass, pass).exitCode, 1);
  assert.match(proofResult('clone-flush', pass, fail, true).line, /^\{"fix":"clone-flush","lab":true,"with_fix":"pass","with_revert":"fail"\}$/);
  assert.equal(proofResult('x', fail, fail).exitCode, 1);
  const splat = proofResult('x', pass, { verdict: 'error', why: 'kernel splat (1 line(s))' });
  assert.equal(splat.exitCode, 1, 'a revert run that splatted proves nothing');
  assert.equal(splat.line, '{"fix":"x","with_fix":"pass","with_revert":"error","why":"with_revert: kernel splat (1 line(s))"}');
});
