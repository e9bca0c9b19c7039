/**
 * The user-space metadata reader (src/pdata/reader.ts), the crash lab's fast oracle, against the kernel
 * and thin-provisioning-tools: on metadata written by both era targets, what it reads (writesets, era
 * array) must equal era_dump --logical / era_invalidate and the model; on clone metadata, its hydrated
 * bitset must agree with the kernel's status. One flipped byte in a block it reaches must be caught.
 */
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper } from '../../src/dm';
import { eraWrittenBlocks, MetadataDamage, readCloneMetadata, readEraMetadata } from '../../src/pdata/reader';
import { ramdisks, readDirect, Scope, zero } from '../../src/testing';
import { bytes, sectors } from '../../src/units';
import { createEra, ERA_TYPES, EraModel, eraDump, eraRigs, eraStatus, message, randomBlocks, rng, skipUnless, writeBlocks } from '../../src/testing/era-fixtures';
import { cloneStatus, pickCloneType, stampDirect, waitFor, type CloneKind } from './clone-lib';

const MiB = 1 << 20;

for (const type of ERA_TYPES) {
  describe(`pdata reader on ${type} metadata`, () => {
    const skip = skipUnless(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('writesets and era array read back as era_dump and the model say; damage is caught', { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 2, 'pr');
      const bs = 8;
      const model = new EraModel(rig!.originSectors / bs, bs);
      const rand = rng(0x51);
      const dev = createEra(scope, 'pr-era', type, rig!, bs);
      for (let e = 0; e < 4; e++) {
        const era = eraStatus(dev.name).era;
        writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 30), era, 700 + e);
        if (e < 3) message(dev.name, 'checkpoint');
      }
      dev.remove();
      const image = readDirect(rig!.meta, 0n, BigInt(rig!.metaSectors * 512), BigInt(MiB));
      const md = readEraMetadata(image);
      assert.equal(md.nrBlocks, model.nrBlocks);
      assert.deepEqual([...eraWrittenBlocks(md)].sort((a, b) => a - b), [...model.history.keys()].sort((a, b) => a - b), 'blocks era reports');
      // Folding the writesets into the era array gives era_dump --logical.
      const logical = Array.from(md.eraArray);
      for (const [era, ws] of [...md.archived.entries()].sort((a, b) => a[0] - b[0])) for (const b of ws.members()) logical[b] = Math.max(logical[b]!, era);
      if (md.current) for (const b of md.current.members()) logical[b] = Math.max(logical[b]!, md.currentEra);
      assert.deepEqual(logical, eraDump(rig!.meta, { logical: true }).eras, 'era_dump --logical');
      assert.deepEqual(logical, model.logicalEras(), 'the model');

      // Flip one byte of a btree node the reader reaches (the writeset tree's root).
      const root = Number(image.readBigUInt64LE(200));
      const bad = Buffer.from(image);
      bad[root * 4096 + 100] ^= 0x40;
      assert.throws(() => readEraMetadata(bad), (e) => e instanceof MetadataDamage && /checksum/.test(e.message));
      const moved = Buffer.from(image);
      image.copy(moved, 4096 * (root + 1), 4096 * root, 4096 * (root + 1)); // a valid node at the wrong place
      moved.writeBigUInt64LE(BigInt(root + 1), 200);
      assert.throws(() => readEraMetadata(moved), (e) => e instanceof MetadataDamage);
    });
  });
}

describe('pdata reader on clone metadata', () => {
  const dm = DeviceMapper.open();
  const scope = new Scope();
  let type: CloneKind | undefined;
  let skip: string | undefined;
  after(async () => {
    await dm.remove({ name: 'pr-clone' }).catch(() => undefined);
    scope.close();
    await dm.close();
  });

  test('the hydrated bitset agrees with the kernel\'s count', async (t) => {
    ({ type, skip } = await pickCloneType(dm));
    if (skip) return t.skip(skip);
    const [src, dest, meta] = ramdisks(scope, 3, bytes(16n << 20n));
    stampDirect(src!.path, undefined, 0n, 16384n, 3);
    zero(meta!.path, bytes(4096n));
    const length = 16384; // 8 MiB: 128 regions of 64 KiB
    await dm.create('pr-clone', { targets: [{ start: sectors(0n), length: sectors(BigInt(length)), type: type!, params: `${meta!.path} ${dest!.path} ${src!.path} 128 1 no_hydration` }] });
    const path = dm.devicePath('pr-clone');
    // Whole-region writes hydrate exactly those regions.
    const regions = [0, 5, 6, 77, 127];
    for (const r of regions) stampDirect(path, undefined, BigInt(r * 128), 128n, 9);
    await waitFor('a commit', 5000, async () => ((await cloneStatus(dm, 'pr-clone')).hydrated === BigInt(regions.length) ? true : undefined));
    await dm.remove({ name: 'pr-clone' });
    const md = readCloneMetadata(readDirect(meta!.path, 0n, 4n * BigInt(MiB), BigInt(MiB)));
    assert.equal(md.regionSectors, 128);
    assert.equal(md.targetSectors, length);
    assert.deepEqual([...md.hydrated.members()], regions);
  });
});
