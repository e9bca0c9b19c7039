/**
 * The related dm-era fixes (kernel-facts §3), each as a scenario on the in-tree era (which has them all)
 * and on dmkit-era: the block size may not change on reopen (fix 3); tiny devices digest each era's own
 * bits (fix 6, bitset cache); the committed writeset of the current era survives a crash (fix 1); a table
 * that is loaded and abandoned does not touch the metadata, and growing resizes in preresume (fix 7).
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Scope } from '../../src/testing';
import { dmsetup, dmsetupStatus, kernelLogMark } from '../../src/testing/dmsetup';
import {
  checkData, checkMetadata, copyDevice, createEra, deviceExists, deviceHash, ERA_TYPES, EraModel, eraDump, eraRigs, eraStatus,
  eraTable, message, randomBlocks, rng, skipUnlessScaled, targetLogLines, writeBlocks,
} from '../../src/testing/era-fixtures';

for (const type of ERA_TYPES) {
  describe(`${type} related fixes`, () => {
    const skip = skipUnlessScaled(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('era fix 3: reopening with a different block size is EINVAL and leaves the metadata as it was', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'era3');
      const model = new EraModel(rig!.originSectors / 8, 8);
      const dev = createEra(scope, 'era3-dev', type, rig!, 8);
      writeBlocks(dev.path, model, [3, 4, 1000], 1, 301);
      dev.remove();
      const before = deviceHash(rig!.meta, rig!.metaSectors);

      for (const other of [16, 128, 24]) {
        const mark = kernelLogMark();
        const r = dmsetupStatus('create', 'era3-other', '--table', eraTable(type, rig!.meta, rig!.origin, other, rig!.originSectors));
        assert.notEqual(r.status, 0, `block size ${other} was accepted on metadata made with 8`);
        assert.match(r.stderr, /Invalid argument/);
        assert.ok(targetLogLines(mark, type).length >= 1, 'the refusal is logged');
        assert.equal(deviceExists('era3-other'), false);
      }
      assert.equal(deviceHash(rig!.meta, rig!.metaSectors), before, 'refused tables did not write the metadata');

      const again = createEra(scope, 'era3-dev', type, rig!, 8);
      const era = eraStatus(again.name).era;
      assert.equal(era, 2, 'reopened with the right block size, in the next era');
      writeBlocks(again.path, model, [5], era, 302);
      again.remove();
      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, [1, 2, 3]), []);
    });

    test('era fix 6: a tiny device (<= 64 blocks) digests every era with its own bits', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'era6');
      for (const nrBlocks of [40]) {
        const model = new EraModel(nrBlocks, 8);
        const dev = createEra(scope, `era6-${nrBlocks}`, type, rig!, 8, nrBlocks * 8);
        // Era k writes a block set of its own, disjoint from era 1's, so a digest reusing era 1's cached
        // bitset word marks blocks with eras they were never written in.
        const sets = [[0, 1, 2, 3], [10, 11], [20, 39], [5, 33], [1, 12], [nrBlocks - 1]];
        for (const [i, blocks] of sets.entries()) {
          const era = eraStatus(dev.name).era;
          writeBlocks(dev.path, model, blocks, era, 600 + i);
          message(dev.name, 'checkpoint');
        }
        // Each write and message wakes the worker, which digests the archived eras in between.
        for (let i = 0; i < 3; i++) eraStatus(dev.name);
        const last = eraStatus(dev.name).era;
        dev.remove();
        assert.deepEqual(checkData(rig!.origin, model), [], `${nrBlocks} blocks: data`);
        assert.deepEqual(checkMetadata(rig!.meta, model, [1, 2, 4, last - 1, last + 1], { rawEraArray: true }), [], `${nrBlocks} blocks: metadata`);
        const raw = eraDump(rig!.meta);
        assert.ok(raw.eras.some((e) => e > 1), `${nrBlocks} blocks: some era was digested into the era array (writesets left: ${raw.writesets.join(',')})`);
      }
    });

    test('era fix 1: the committed writeset of the current era survives a crash', { skip }, () => {
      const [live, crash] = eraRigs(scope, 2, 8, 4, 'era1');
      const bs = 8;
      const model = new EraModel(live!.originSectors / bs, bs);
      const dev = createEra(scope, 'era1-live', type, live!, bs);
      const rand = rng(11);
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 40), 1, 111);
      message(dev.name, 'checkpoint');
      // Era 2: acknowledged and fsync'd, never archived, no suspend.
      const era2 = randomBlocks(rand, model.nrBlocks, 30);
      writeBlocks(dev.path, model, era2, 2, 112);

      // What a power cut now would leave: the devices' contents as they are, read with O_DIRECT.
      copyDevice(live!.meta, crash!.meta, live!.metaSectors);
      copyDevice(live!.origin, crash!.origin, live!.originSectors);
      dev.remove();
      assert.deepEqual(checkMetadata(live!.meta, model, [1, 2, 3]), [], 'the clean shutdown');

      const reopened = createEra(scope, 'era1-crash', type, crash!, bs);
      assert.equal(eraStatus(reopened.name).era, 3, 'the crashed era 2 is closed and era 3 starts');
      const more = [...randomBlocks(rand, model.nrBlocks, 5), era2[0]!];
      writeBlocks(reopened.path, model, more, 3, 113);
      reopened.remove();
      assert.deepEqual(checkData(crash!.origin, model), []);
      assert.deepEqual(checkMetadata(crash!.meta, model, [0, 1, 2, 3, 4]), [], 'after the crash');
    });

    test('era fix 7: a bigger table loaded and abandoned leaves the metadata alone; growing resizes in preresume', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'era7');
      const bs = 8;
      const small = 512; // blocks
      const big = rig!.originSectors / bs;
      const model = new EraModel(small, bs);
      const dev = createEra(scope, 'era7-dev', type, rig!, bs, small * bs);
      writeBlocks(dev.path, model, [0, 100, small - 1], 1, 701);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, [1, 101], 2, 702);

      dmsetup('suspend', dev.name);
      const before = deviceHash(rig!.meta, rig!.metaSectors);
      dmsetup('load', dev.name, '--table', eraTable(type, rig!.meta, rig!.origin, bs, big * bs));
      dmsetup('clear', dev.name);
      assert.equal(deviceHash(rig!.meta, rig!.metaSectors), before, 'loading and abandoning a table wrote the metadata');
      dmsetup('resume', dev.name);
      assert.equal(dmsetup('table', dev.name).trim().split(/\s+/)[1], String(small * bs), 'the small table is still live');
      const era = eraStatus(dev.name).era;
      writeBlocks(dev.path, model, [2], era, 703);

      // Now grow for real: the new size takes effect at resume.
      dmsetup('load', dev.name, '--table', eraTable(type, rig!.meta, rig!.origin, bs, big * bs));
      dmsetup('resume', dev.name);
      model.nrBlocks = big;
      const grown = eraStatus(dev.name).era;
      writeBlocks(dev.path, model, [3, small, big - 1], grown, 704);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, [small + 1], grown + 1, 705);
      const last = eraStatus(dev.name).era;
      dev.remove();

      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, [1, 2, last, last + 1]), []);
      assert.equal(eraDump(rig!.meta).nrBlocks, big);
    });
  });
}
