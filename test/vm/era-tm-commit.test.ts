/**
 * Fix (c), `tm-commit-order` (a9d45396f595 "dm transaction manager: fix corruption due to non-atomic
 * transaction commit"), found upstream by forcing IO errors at the crucial moment with dm-flakey.
 *
 * The metadata device is a dm table: block 0 (the superblock, 8 sectors) on linear, the rest on linear
 * that is switched, between commits, to `flakey ... 0 1 1 error_writes` (up 0 s, down 1 s: always down;
 * reads pass, writes fail). A checkpoint then has to commit, and must fail. With the fix the superblock is
 * written only after everything it points at was written and flushed, so the failing commit never writes
 * it; without it the superblock still reaches the disk (block 0 is healthy) pointing at blocks whose writes
 * failed. Before the device is torn down block 0 fails too, so the disk shows exactly what that commit
 * left: era_check must pass and reopening must track every acknowledged write (the model as of the last
 * successful commit).
 *
 * (brd has no volatile write cache, so the block layer completes empty flushes before they reach flakey:
 * a commit with no dirty blocks left "succeeds". That is why the teardown matters; the 'live' variant below
 * tests the fail mode that must stop such later commits, which the in-tree era lacks.)
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Scope } from '../../src/testing';
import {
  checkData, checkMetadata, createEra, ERA_TYPES, EraModel, EraType, eraRigs, eraStatus, failingMessage, message, randomBlocks, rng,
  skipUnlessScaled, swapTable, writeBlocks,
} from '../../src/testing/era-fixtures';

type Teardown = 'quiet' | 'live' | 'healed';

/**
 * The scenario; `teardown` says what the metadata device does while the failed device is removed:
 * 'quiet': every write fails, block 0 included, so the disk shows exactly what the failing commit left;
 * 'live': the superblock stays writable, so any later commit that "succeeds" (nothing dirty left to write
 * after the failed writes were dropped) can publish the failed transaction unless the target stops
 * committing after a metadata error (a fail mode).
 */
function failedCommitScenario(scope: Scope, type: EraType, teardown: Teardown): void {
  const [rig] = eraRigs(scope, 1, 8, 4, 'tm');
  const metaName = rig!.meta.replace('/dev/mapper/', '');
  const backing = '/dev/ram1';
  const body = rig!.metaSectors - 8;
  const healthy = [`0 8 linear ${backing} 0`, `8 ${body} linear ${backing} 8`];
  const bodyFails = [`0 8 linear ${backing} 0`, `8 ${body} flakey ${backing} 8 0 1 1 error_writes`];
  const allFail = [`0 8 flakey ${backing} 0 0 1 1 error_writes`, `8 ${body} flakey ${backing} 8 0 1 1 error_writes`];
  swapTable(metaName, healthy);

  const bs = 8;
  const model = new EraModel(rig!.originSectors / bs, bs);
  const rand = rng(0xc0);
  const dev = createEra(scope, 'tm-era', type, rig!, bs);
  for (let e = 1; e <= 3; e++) {
    assert.equal(eraStatus(dev.name).era, e);
    writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 40), e, 300 + e);
    if (e < 3) message(dev.name, 'checkpoint');
  }
  // Era 3's writes were acknowledged, so they are committed. Now the metadata body fails every write,
  // and a checkpoint has to commit. (No status calls from here on: the in-tree era commits on them.)
  swapTable(metaName, bodyFails);
  const checkpoint = failingMessage(dev.name, 'checkpoint');
  if (teardown === 'quiet') swapTable(metaName, allFail);
  if (teardown === 'healed') swapTable(metaName, healthy);
  // Removing the device still tries to commit (postsuspend) and writes back what it holds (dtr).
  dev.remove();
  swapTable(metaName, healthy);

  const problems: string[] = [];
  const raw = spawnSync('era_check', [rig!.meta], { encoding: 'utf8' });
  if (raw.status !== 0) {
    problems.push(`era_check after the failed commit: ${`${raw.stdout}${raw.stderr}`.trim().split('\n').slice(0, 6).join(' | ')}`);
  } else {
    // The previous transaction: reopening recovers era 3's committed writeset and starts era 4.
    const again = createEra(scope, 'tm-era', type, rig!, bs);
    const era = eraStatus(again.name).era;
    if (era !== 4) problems.push(`reopened in era ${era}, want 4 (the last committed era was 3)`);
    writeBlocks(again.path, model, [0, 1], era, 310);
    again.remove();
    problems.push(...checkMetadata(rig!.meta, model, [0, 1, 2, 3, 4, 5]));
    problems.push(...checkData(rig!.origin, model));
  }
  assert.deepEqual(problems, []);
  assert.notEqual(checkpoint.status, 0, 'the checkpoint whose commit failed must report the failure');
}

for (const type of ERA_TYPES) {
  describe(`${type} fix (c)`, () => {
    const skip = skipUnlessScaled(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('a commit whose metadata writes fail leaves the previous transaction on disk (every write failing until removed)', { skip }, () => {
      failedCommitScenario(scope, type, 'quiet');
    });

    const noFailMode = type === 'era' ? 'the in-tree era has no fail mode (kernel-facts §3 item 10): a later commit with nothing left to write publishes the failed transaction' : false;
    // The fix (c) proof: before the fix the failed flush left the superblock dirty in the block manager's
    // cache, where it waited for the next write-back: here the teardown after the error window ended.
    // The in-tree era is skipped here (not marked todo): its known failure would show in a revert run as
    // an assertion that proves nothing about dmkit.
    test('tm-commit-order: a failed commit leaves nothing to publish once the error window ends', { skip: skip || noFailMode }, () => {
      failedCommitScenario(scope, type, 'healed');
    });

    // Not part of the fix (c) proof: what happens on the commits after a failed one.
    test('after a failed commit, tearing the device down does not publish the failed transaction (fail mode)', { skip, todo: skip ? false : noFailMode }, () => {
      failedCommitScenario(scope, type, 'live');
    });
  });
}
