/**
 * The dmkit CLI as an admin runs it (on PATH in the VM lab): queries agree with dmsetup, --json parses,
 * a whole create/status/remove cycle works, errors are one line with a documented exit code.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ramdisks, Scope } from '../../src/testing';
import { bytes } from '../../src/units';
import { dmsetup, dmsetupStatus } from '../../src/testing/dmsetup';

function dmkit(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('dmkit', args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('dmkit CLI', () => {
  const scope = new Scope();
  let ram = '';
  let sectorsOfRam = 0n;
  before(() => {
    const [d] = ramdisks(scope, 1, bytes(16n << 20n));
    ram = d!.path;
    sectorsOfRam = d!.sectors;
  });
  after(() => scope.close());

  test('targets --json lists the loaded targets, dmkit-core among them', () => {
    const r = dmkit('targets', '--json');
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { targets: Array<{ name: string; version: string | number[] }> } | Array<{ name: string }>;
    const names = (Array.isArray(doc) ? doc : doc.targets).map((t) => t.name).sort();
    const oracle = dmsetup('targets').trim().split('\n').map((l) => l.trim().split(/\s+/)[0]!).sort();
    assert.deepEqual(names, oracle);
    assert.ok(names.includes('dmkit-core'));
  });

  test('create, status --json, table and remove agree with dmsetup', () => {
    const table = `0 ${sectorsOfRam} dmkit-core ${ram} 0`;
    const c = dmkit('create', 'cli-core', '--table', table);
    assert.equal(c.status, 0, c.stderr);
    try {
      assert.equal(dmkit('table', 'cli-core').stdout.trim(), dmsetup('table', 'cli-core').trim());
      const st = dmkit('status', 'cli-core', '--json');
      assert.equal(st.status, 0, st.stderr);
      assert.match(st.stdout, /dmkit-core/);
      JSON.parse(st.stdout);
      const msg = dmkit('message', 'cli-core', '0', 'ping');
      assert.equal(msg.stdout.trim(), 'pong');
    } finally {
      const rm = dmkit('remove', 'cli-core');
      assert.equal(rm.status, 0, rm.stderr);
    }
    assert.notEqual(dmsetupStatus('info', 'cli-core').status, 0);
  });

  test('errors are one line with a documented exit code', () => {
    const missing = dmkit('status', 'cli-no-such-device');
    assert.equal(missing.status, 4);
    assert.equal(missing.stderr.trim().split('\n').length, 1);
    assert.match(missing.stderr, /^dmkit: /);
    const bad = dmkit('create', 'cli-bad', '--table', `0 ${sectorsOfRam} dmkit-core ${ram}`);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /EINVAL/);
    assert.notEqual(dmsetupStatus('info', 'cli-bad').status, 0, 'no half-made device');
    const usage = dmkit('frobnicate');
    assert.equal(usage.status, 2);
  });

  test('a user who is not root gets a clear message', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'dmkit', 'ls'], { encoding: 'utf8' });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /needs root/);
  });
});
