/**
 * era functional suite, run against the in-tree `era` (the oracle) and `dmkit-era`: creation on zeroed
 * metadata, status and table, checkpoints, metadata snapshots, "blocks written since era N" against a
 * TypeScript model over seeded workloads, and bad tables and messages. Every test checks the data it wrote
 * and, after the device is gone, the metadata (era_check, era_invalidate, era_dump).
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Scope } from '../../src/testing';
import { dmsetup, dmsetupStatus, kernelLogMark } from '../../src/testing/dmsetup';
import {
  checkData, checkMetadata, createEra, deviceExists, diffBlocks, ERA_TYPES, EraModel, eraInvalidate, eraRigs, eraStatus,
  failingMessage, message, randomBlocks, rng, skipUnlessScaled, targetLogLines, writeBlocks,
} from '../../src/testing/era-fixtures';

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

for (const type of ERA_TYPES) {
  describe(`${type} functional`, () => {
    const skip = skipUnlessScaled(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('creates on zeroed metadata: status, table, checkpoints, data and metadata', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'eraf');
      const bs = 16;
      const model = new EraModel(rig!.originSectors / bs, bs);
      const dev = createEra(scope, 'eraf-basic', type, rig!, bs);

      const s0 = eraStatus(dev.name);
      assert.equal(s0.metadataBlockSectors, 8);
      assert.equal(s0.total, rig!.metaSectors / 8, 'total metadata blocks = metadata device / 4 KiB');
      assert.ok(s0.used > 0 && s0.used < s0.total, `used ${s0.used}/${s0.total}`);
      assert.equal(s0.era, 1, 'a fresh device starts in era 1');
      assert.equal(s0.heldRoot, null);
      const metaNum = dmsetup('info', '-c', '--noheadings', '-o', 'major,minor', '--separator', ':', rig!.meta.replace('/dev/mapper/', '')).trim();
      const table = dmsetup('table', dev.name).trim().split(/\s+/);
      assert.deepEqual(table.slice(0, 3), ['0', String(rig!.originSectors), type]);
      assert.equal(table[3], metaNum, 'metadata device as major:minor');
      assert.match(table[4]!, /^1:0$/, 'origin /dev/ram0 is 1:0');
      assert.equal(table[5], String(bs));

      writeBlocks(dev.path, model, [0, 1, 2, 7, 100], 1, 11);
      message(dev.name, 'checkpoint');
      assert.equal(eraStatus(dev.name).era, 2);
      writeBlocks(dev.path, model, [2, 3, 511], 2, 12);
      message(dev.name, 'checkpoint');
      message(dev.name, 'checkpoint');
      assert.equal(eraStatus(dev.name).era, 4, 'each checkpoint starts one era');
      writeBlocks(dev.path, model, [100], 4, 13);
      const s1 = eraStatus(dev.name);
      assert.ok(s1.used >= s0.used, `metadata use ${s0.used} -> ${s1.used}`);
      dev.remove();

      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, [0, 1, 2, 4, 5]), []);
      assert.deepEqual(eraInvalidate(rig!.meta, 2), [2, 3, 100, 511]);
    });

    test('metadata snapshots: take, a second take and a drop without one are EINVAL, era_invalidate reads the snapshot', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'eras');
      const bs = 8;
      const model = new EraModel(rig!.originSectors / bs, bs);
      const dev = createEra(scope, 'eras-snap', type, rig!, bs);
      writeBlocks(dev.path, model, range(0, 15).concat([20]), 1, 21);

      message(dev.name, 'take_metadata_snap');
      const held = eraStatus(dev.name);
      assert.ok(held.heldRoot !== null && held.heldRoot > 0, `status shows the held root: ${held.heldRoot}`);
      assert.equal(held.era, 2, 'taking a snapshot rolls the era over');
      // The snapshot is readable while the device is live; it holds era 1's writes.
      assert.equal(diffBlocks(model.writtenSince(1), eraInvalidate(rig!.meta, 1, { snapshot: true })), null);

      let mark = kernelLogMark();
      assert.notEqual(failingMessage(dev.name, 'take_metadata_snap').status, 0, 'a second take must fail');
      assert.equal(targetLogLines(mark, type).length, 1, `one log line for the second take: ${targetLogLines(mark, type).join(' | ')}`);
      assert.equal(eraStatus(dev.name).heldRoot, held.heldRoot, 'the first snapshot is still held');

      // Writes after the snapshot do not show in it.
      writeBlocks(dev.path, model, [30, 31], 2, 22);
      assert.equal(diffBlocks(range(0, 15).concat([20]), eraInvalidate(rig!.meta, 1, { snapshot: true })), null);

      message(dev.name, 'drop_metadata_snap');
      assert.equal(eraStatus(dev.name).heldRoot, null);
      mark = kernelLogMark();
      assert.notEqual(failingMessage(dev.name, 'drop_metadata_snap').status, 0, 'dropping with none held must fail');
      assert.equal(targetLogLines(mark, type).length, 1, `one log line for the second drop: ${targetLogLines(mark, type).join(' | ')}`);

      // A second snapshot after the drop works and sees both eras.
      message(dev.name, 'take_metadata_snap');
      assert.equal(eraStatus(dev.name).era, 3);
      assert.equal(diffBlocks(model.writtenSince(2), eraInvalidate(rig!.meta, 2, { snapshot: true })), null);
      message(dev.name, 'drop_metadata_snap');
      dev.remove();

      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, range(0, 4)), []);
    });

    test('seeded workloads: written-since N matches the model for every N', { skip }, () => {
      // Block sizes: the minimum, a non-power of two (sector_div path), and 64 KiB.
      for (const [seed, bs] of [[101, 8], [202, 24], [303, 128]] as const) {
        const inner = new Scope();
        try {
          const [rig] = eraRigs(inner, 1, 8, 4, 'erar');
          const length = rig!.originSectors - (rig!.originSectors % bs);
          const model = new EraModel(length / bs, bs);
          const dev = createEra(inner, 'erar-work', type, rig!, bs, length);
          const rand = rng(seed);
          const eras = 4;
          for (let e = 0; e < eras; e++) {
            const era = eraStatus(dev.name).era;
            // A few fresh random blocks, plus some rewritten from earlier eras.
            const fresh = randomBlocks(rand, model.nrBlocks, 20 + Math.floor(rand() * 40));
            const again = [...model.history.keys()].filter(() => rand() < 0.15);
            writeBlocks(dev.path, model, [...new Set([...fresh, ...again])], era, seed * 100 + e);
            if (e < eras - 1) message(dev.name, 'checkpoint');
          }
          const last = eraStatus(dev.name).era;
          assert.equal(last, eras, `era after ${eras - 1} checkpoints`);
          dev.remove();
          assert.deepEqual(checkData(rig!.origin, model), [], `data, seed ${seed}`);
          assert.deepEqual(checkMetadata(rig!.meta, model, [0, 1, 2, last, last + 1]), [], `metadata, seed ${seed} block size ${bs}`);
        } finally {
          inner.close();
        }
      }
    });

    test('malformed tables get EINVAL, one log line each, and leave no device', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'erab');
      const len = rig!.originSectors;
      const bad: Array<[string, string]> = [
        [`${rig!.meta} ${rig!.origin}`, 'two arguments'],
        [`${rig!.meta} ${rig!.origin} 8 8`, 'four arguments'],
        [`${rig!.meta}`, 'one argument'],
        [`${rig!.meta} ${rig!.origin} 0`, 'block size 0'],
        [`${rig!.meta} ${rig!.origin} 12`, 'block size not a multiple of 8'],
        [`${rig!.meta} ${rig!.origin} 4`, 'block size below 8'],
        [`${rig!.meta} ${rig!.origin} abc`, 'non-numeric block size'],
        [`${rig!.meta} ${rig!.origin} 8x`, 'trailing junk in block size'],
        [`${rig!.meta} ${rig!.origin} -8`, 'negative block size'],
        [`/dev/does-not-exist ${rig!.origin} 8`, 'missing metadata device'],
        [`${rig!.meta} /dev/does-not-exist 8`, 'missing origin device'],
      ];
      for (const [args, what] of bad) {
        const mark = kernelLogMark();
        const r = dmsetupStatus('create', 'erab-bad', '--table', `0 ${len} ${type} ${args}`);
        assert.notEqual(r.status, 0, `${what}: table '${args}' was accepted`);
        assert.match(r.stderr, /Invalid argument|No such device/, `${what}: ${r.stderr}`);
        const lines = targetLogLines(mark, type);
        assert.equal(lines.length, 1, `${what}: one log line, got:\n${lines.join('\n')}`);
        assert.equal(deviceExists('erab-bad'), false, `${what}: no half-made device is left`);
      }
      // The metadata was never formatted by a failed table, and a good table still works on it.
      const model = new EraModel(len / 8, 8);
      const dev = createEra(scope, 'erab-good', type, rig!, 8);
      writeBlocks(dev.path, model, [5], 1, 31);
      dev.remove();
      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, [0, 1, 2]), []);
    });

    test('malformed messages get EINVAL and one log line each; the device keeps working', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'eram');
      const model = new EraModel(rig!.originSectors / 8, 8);
      const dev = createEra(scope, 'eram-msg', type, rig!, 8);
      writeBlocks(dev.path, model, [1], 1, 41);
      const bad: string[][] = [['frobnicate'], ['checkpoint', 'now'], ['take_metadata_snap', '1'], ['drop_metadata_snap', 'x', 'y'], ['CHECKPOINTS']];
      for (const words of bad) {
        const mark = kernelLogMark();
        const r = failingMessage(dev.name, ...words);
        assert.notEqual(r.status, 0, `message '${words.join(' ')}' was accepted`);
        assert.match(r.stderr, /Invalid argument/, words.join(' '));
        const lines = targetLogLines(mark, type);
        assert.equal(lines.length, 1, `'${words.join(' ')}': one log line, got:\n${lines.join('\n')}`);
      }
      assert.equal(eraStatus(dev.name).era, 1, 'no bad message changed the era');
      writeBlocks(dev.path, model, [2], 1, 42);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, [3], 2, 43);
      dev.remove();
      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, [0, 1, 2, 3]), []);
    });
  });
}
