/**
 * changedSince() and `dmkit era changed` on live era devices, the in-tree `era` and `dmkit-era`: stamped
 * writes across several checkpoints, then for several eras N the listing taken through a fresh metadata
 * snapshot must (a) cover every block the model wrote in era N or later, (b) equal era_invalidate
 * --metadata-snapshot run while the same snapshot is held (as block sets and as XML text, byte for byte),
 * and (c) be what the offline reader lists from a copy of the metadata taken under that snapshot. The
 * snapshot is dropped every time (the status shows no held root afterwards), the CLI's xml equals
 * era_invalidate's, era_check is clean and the origin holds every stamp.
 */
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DeviceMapper } from '../../src/dm';
import { Scope } from '../../src/testing';
import { sh } from '../../src/testing/devices';
import {
  checkData, checkMetadata, createEra, diffBlocks, ERA_TYPES, EraModel, eraInvalidate, eraRigs, eraStatus, message, randomBlocks, rng, scratchFile, skipUnlessScaled, writeBlocks,
} from '../../src/testing/era-fixtures';
import { changedBlocksFromMetadata, changedSince, eraInvalidateXml, rangesIn, type ChangedBlocks } from '../../src/workflows';

const dm = DeviceMapper.open();
after(() => dm.close());

const CLI = path.join(__dirname, '..', '..', '..', 'bin', 'dmkit');

const blocksOf = (r: Pick<ChangedBlocks, 'ranges'>): number[] => r.ranges.flatMap((x) => Array.from({ length: Number(x.end - x.start) }, (_, i) => Number(x.start) + i));
const xmlOf = (r: Pick<ChangedBlocks, 'ranges'>): string => eraInvalidateXml(r.ranges.flatMap((x) => [Number(x.start), Number(x.end)]));

for (const type of ERA_TYPES) {
  describe(`${type}: changed blocks`, () => {
    const skip = skipUnlessScaled(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('changedSince covers every write and equals era_invalidate on the same snapshot', { skip }, async () => {
      const [rig] = eraRigs(scope, 1, 16, 4, 'ercg');
      const bs = 16; // 8 KiB blocks: 2048 of them
      const model = new EraModel(rig!.originSectors / bs, bs);
      const dev = createEra(scope, `ercg-${type}`, type, rig!, bs);
      const rand = rng(type === 'era' ? 171 : 172);

      // Four eras of writes: scattered blocks, a run, a block rewritten later.
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 40).concat([7]), 1, 1);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, Array.from({ length: 64 }, (_, i) => 1000 + i), 2, 2);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 25), 3, 3);
      message(dev.name, 'checkpoint');
      writeBlocks(dev.path, model, [7, 2047], 4, 4);
      assert.equal(eraStatus(dev.name).era, 4);

      const copy = scratchFile(scope, 'ercg-meta.bin');
      for (const since of [1, 2, 3, 4, 5]) {
        let underSnapshot: { ours: ChangedBlocks; toolXml: string; offline: ChangedBlocks } | undefined;
        const r = await changedSince(dm, { name: dev.name }, since, {
          read: (meta, n) => {
            const ours = changedBlocksFromMetadata(meta, n, { snapshot: true, direct: true });
            const toolXml = sh('era_invalidate', '--metadata-snapshot', '--written-since', String(n), meta);
            sh('dd', `if=${meta}`, `of=${copy}`, 'bs=1M', 'iflag=direct', 'status=none');
            const offline = changedBlocksFromMetadata(copy, n, { snapshot: true });
            underSnapshot = { ours, toolXml, offline };
            return ours;
          },
        });
        assert.ok(underSnapshot);
        const want = model.writtenSince(since);
        assert.equal(diffBlocks(want, blocksOf(r)), null, `since ${since}: every written block, nothing else`);
        assert.equal(xmlOf(r), underSnapshot.toolXml, `since ${since}: the XML is era_invalidate's`);
        assert.deepEqual(blocksOf(underSnapshot.offline), blocksOf(r), `since ${since}: a copy of the metadata reads the same`);
        assert.equal(r.roots, 'snapshot');
        assert.equal(r.blockSize, BigInt(bs));
        assert.equal(r.nrBlocks, BigInt(model.nrBlocks));
        assert.equal(r.length, BigInt(rig!.originSectors));
        assert.equal(eraStatus(dev.name).heldRoot, null, 'the snapshot was dropped');
        const secs = rangesIn(r, 'sectors', r.length);
        assert.equal(secs.reduce((n, x) => n + (x.end - x.start), 0n), BigInt(want.length * bs));
      }
      // Each listing rolled the era over; writes now land in a later era and show up from it.
      const era = eraStatus(dev.name).era;
      writeBlocks(dev.path, model, [3], era, 9);
      assert.deepEqual(blocksOf(await changedSince(dm, { name: dev.name }, era)), [3]);

      // The CLI on the live device prints era_invalidate's XML for the same history.
      message(dev.name, 'take_metadata_snap');
      const toolXml = sh('era_invalidate', '--metadata-snapshot', '--written-since', '2', rig!.meta);
      message(dev.name, 'drop_metadata_snap');
      const cli = spawnSync(process.execPath, [CLI, 'era', 'changed', dev.name, '--since', '2', '--format', 'xml'], { encoding: 'utf8' });
      assert.equal(cli.status, 0, cli.stderr);
      assert.equal(cli.stdout, toolXml);
      assert.equal(eraStatus(dev.name).heldRoot, null);

      dev.remove();
      assert.equal(spawnSync('era_check', [rig!.meta]).status, 0, 'era_check is clean');
      assert.deepEqual(eraInvalidate(rig!.meta, 1), model.writtenSince(1));
      assert.deepEqual(checkData(rig!.origin, model), []);
      fs.rmSync(copy, { force: true });
    });

    /*
     * Between commits dmkit-era shadows the bitset blocks the last commit marked words in, betting that
     * the next commit marks words there again (kmod/era: era_md_prepare_marks). With 4 KiB blocks one
     * bitset block holds 509 words (32576 blocks), so 320 MiB of origin spans three. Batches of writes
     * keep to one bitset block (the bet holds), hop between them (it fails, and is dropped until it holds
     * again), span all three, and cross a checkpoint (a new bitset): every written block must be listed,
     * era_check must be clean and every stamp in place. brd allocates only the pages written.
     */
    test('marks spread over several bitset blocks, where the blocks shadowed ahead are right or wrong', { skip }, async () => {
      const [rig] = eraRigs(scope, 1, 320, 8, 'ersp');
      const bs = 8;
      const perBitsetBlock = 509 * 64;
      const model = new EraModel(rig!.originSectors / bs, bs);
      assert.ok(model.nrBlocks > 2 * perBitsetBlock, 'the writeset spans three bitset blocks');
      const dev = createEra(scope, `ersp-${type}`, type, rig!, bs);
      const rand = rng(type === 'era' ? 181 : 182);
      const inBitsetBlock = (k: number, n: number): number[] => {
        const first = k * perBitsetBlock;
        const span = Math.min(perBitsetBlock, model.nrBlocks - first);
        return randomBlocks(rand, span, n).map((b) => first + b);
      };

      let seed = 10;
      const batches: number[][] = [];
      for (let i = 0; i < 6; i++) batches.push(inBitsetBlock(0, 6));
      for (const k of [1, 2, 0, 2, 1, 1, 1, 0]) batches.push(inBitsetBlock(k, 6));
      batches.push([0, 1, 2].flatMap((k) => inBitsetBlock(k, 4)));
      batches.push([perBitsetBlock - 1, perBitsetBlock, model.nrBlocks - 1]);
      for (const blocks of batches) writeBlocks(dev.path, model, blocks, 1, seed++);
      message(dev.name, 'checkpoint');
      for (const k of [2, 2, 0, 1, 1]) writeBlocks(dev.path, model, inBitsetBlock(k, 5), 2, seed++);
      assert.equal(eraStatus(dev.name).era, 2);

      for (const since of [1, 2]) {
        assert.equal(diffBlocks(model.writtenSince(since), blocksOf(await changedSince(dm, { name: dev.name }, since))), null, `since ${since}: every written block, nothing else`);
      }
      dev.remove();
      assert.deepEqual(checkMetadata(rig!.meta, model, [1, 2, 3]), []);
      assert.deepEqual(checkData(rig!.origin, model), []);
    });
  });
}
