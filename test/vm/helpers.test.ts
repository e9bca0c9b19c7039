/**
 * The guest helpers every later suite uses, exercised against the in-tree targets: ramdisks and loop
 * devices, stamped patterns, zeroed metadata and the thin-provisioning-tools checkers.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClean, deviceSize, loopDevice, ramdisks, runChecker, Scope, sh, stamp, verify, zero } from '../../src/testing';
import { bytes, sectors } from '../../src/units';
import { createDevice, dmsetup } from '../../src/testing/dmsetup';

const MiB = 1n << 20n;

describe('guest helpers', () => {
  let scope: Scope;
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => scope.close());

  test('ramdisks and loop devices have the sizes asked for and keep data', () => {
    const rams = ramdisks(scope, 2, bytes(8n * MiB));
    const loop = loopDevice(scope, bytes(24n * MiB));
    assert.equal(rams.length, 2);
    for (const r of rams) assert.equal(deviceSize(r.path), 8n * MiB);
    assert.equal(deviceSize(loop.path), 24n * MiB);
    for (const [i, d] of [...rams, loop].entries()) {
      const ext = { start: sectors(0), length: d.sectors };
      stamp(d.path, ext, 100 + i);
      assert.deepEqual(verify(d.path, ext, 100 + i), []);
    }
  });

  test('in-tree era on zeroed metadata: IO, checkpoint, status, then era_check and era_invalidate', () => {
    const [meta, origin] = ramdisks(scope, 2, bytes(32n * MiB));
    zero(meta!.path, bytes(4096));
    const blockSectors = 128n; // 64 KiB era blocks
    const era = createDevice(scope, 'era-helpers', `0 ${origin!.sectors} era ${meta!.path} ${origin!.path} ${blockSectors}`);

    const before = dmsetup('status', 'era-helpers').trim().split(/\s+/);
    const era0 = Number(before[5]);
    dmsetup('message', 'era-helpers', '0', 'checkpoint');
    // Blocks 3 and 10 written in the new era.
    for (const block of [3n, 10n]) stamp(era.path, { start: sectors(block * blockSectors), length: sectors(blockSectors) }, 7);
    dmsetup('message', 'era-helpers', '0', 'checkpoint');
    const era1 = Number(dmsetup('status', 'era-helpers').trim().split(/\s+/)[5]);
    assert.ok(era1 >= era0 + 2, `era advanced from ${era0} to ${era1}`);
    for (const block of [3n, 10n]) {
      assert.deepEqual(verify(origin!.path, { start: sectors(block * blockSectors), length: sectors(blockSectors) }, 7), []);
    }
    era.remove();

    assertClean('era_check', meta!.path);
    const changed = sh('era_invalidate', '--written-since', String(era0 + 1), meta!.path);
    assert.match(changed, /<block block="3"\/>/);
    assert.match(changed, /<block block="10"\/>/);
    assert.doesNotMatch(changed, /block="(?!3"|10")\d+"/);
  });

  test('a damaged era superblock is reported by era_check', () => {
    const [meta] = ramdisks(scope, 1, bytes(8n * MiB));
    zero(meta!.path, bytes(4096));
    const r = runChecker('era_check', meta!.path);
    assert.equal(r.ok, false, 'era_check accepted a zeroed superblock');
    assert.equal(r.status, 1);
  });
});
