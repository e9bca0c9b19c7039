/**
 * dmkit-era against the in-tree era: the same seeded IO on both (separate ramdisks) must give the same
 * era_invalidate output and the same era arrays; and metadata written by one must open in the other, which
 * then goes on tracking. era_check runs on every metadata device at the end of every test.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Scope, sh } from '../../src/testing';
import {
  checkData, checkMetadata, createEra, EraModel, eraDump, eraRigs, eraStatus, EraType, message, randomBlocks, rng, skipUnless,
  writeBlocks,
} from '../../src/testing/era-fixtures';

/** One era of a seeded workload: fresh random blocks plus rewrites of earlier ones. */
function eraWrites(rand: () => number, model: EraModel): number[] {
  const fresh = randomBlocks(rand, model.nrBlocks, 10 + Math.floor(rand() * 50));
  const again = [...model.history.keys()].filter(() => rand() < 0.2);
  return [...new Set([...fresh, ...again])].sort((a, b) => a - b);
}

describe('era vs dmkit-era', () => {
  const skip = skipUnless('era', 'dmkit-era');
  let scope: Scope;
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => scope.close());

  test('identical IO gives identical written-since output and era arrays', { skip }, () => {
    const types: EraType[] = ['era', 'dmkit-era'];
    const rigs = eraRigs(scope, 2, 8, 4, 'erad');
    const bs = 8;
    const models = types.map(() => new EraModel(rigs[0]!.originSectors / bs, bs));
    const devs = types.map((t, i) => createEra(scope, `erad-${t}`, t, rigs[i]!, bs));
    const rand = rng(4242);
    const eras = 6;
    for (let e = 0; e < eras; e++) {
      const blocks = eraWrites(rand, models[0]!);
      for (let i = 0; i < types.length; i++) {
        const era = eraStatus(devs[i]!.name).era;
        assert.equal(era, e + 1, `${types[i]} is in era ${e + 1}`);
        writeBlocks(devs[i]!.path, models[i]!, blocks, era, 900 + e);
      }
      if (e === 3) for (const d of devs) message(d.name, 'take_metadata_snap');
      else if (e === 4) for (const d of devs) {
        message(d.name, 'drop_metadata_snap');
        message(d.name, 'checkpoint');
      }
      else if (e < eras - 1) for (const d of devs) message(d.name, 'checkpoint');
    }
    const stats = devs.map((d) => eraStatus(d.name));
    assert.equal(stats[0]!.era, stats[1]!.era, 'same era after the same messages');
    for (const d of devs) d.remove();

    for (let i = 0; i < types.length; i++) {
      assert.deepEqual(checkData(rigs[i]!.origin, models[i]!), [], `${types[i]} data`);
      assert.deepEqual(checkMetadata(rigs[i]!.meta, models[i]!, [1, 3, eras], { rawEraArray: true }), [], `${types[i]} metadata`);
    }
    for (const n of [1, 2, 4, 5, eras]) {
      const out = rigs.map((r) => sh('era_invalidate', '--written-since', String(n), r.meta));
      assert.equal(out[1], out[0], `era_invalidate --written-since ${n}: dmkit-era differs from era`);
    }
    const dumps = rigs.map((r) => eraDump(r.meta, { logical: true }));
    assert.deepEqual(dumps[1]!.eras, dumps[0]!.eras, 'logical era arrays');
    assert.equal(dumps[1]!.currentEra, dumps[0]!.currentEra, 'current era in the superblock');
    assert.equal(dumps[1]!.nrBlocks, dumps[0]!.nrBlocks);
  });

  for (const [first, second] of [['dmkit-era', 'era'], ['era', 'dmkit-era']] as Array<[EraType, EraType]>) {
    test(`metadata written by ${first} opens in ${second}, which goes on tracking`, { skip }, () => {
      const [rig] = eraRigs(scope, 1, 8, 4, 'erax');
      const bs = 16;
      const model = new EraModel(rig!.originSectors / bs, bs);
      const rand = rng(first === 'era' ? 77 : 78);

      const a = createEra(scope, 'erax-a', first, rig!, bs);
      for (let e = 0; e < 4; e++) {
        const era = eraStatus(a.name).era;
        writeBlocks(a.path, model, eraWrites(rand, model), era, 700 + e);
        message(a.name, 'checkpoint');
      }
      const lastA = eraStatus(a.name).era;
      a.remove();
      assert.deepEqual(checkMetadata(rig!.meta, model, [1, lastA]), [], `after ${first}`);

      const b = createEra(scope, 'erax-b', second, rig!, bs);
      assert.equal(eraStatus(b.name).era, lastA + 1, `${second} continues from ${first}'s era`);
      for (let e = 0; e < 3; e++) {
        const era = eraStatus(b.name).era;
        writeBlocks(b.path, model, eraWrites(rand, model), era, 800 + e);
        if (e < 2) message(b.name, 'checkpoint');
      }
      const lastB = eraStatus(b.name).era;
      b.remove();

      assert.deepEqual(checkData(rig!.origin, model), []);
      assert.deepEqual(checkMetadata(rig!.meta, model, [1, lastA, lastA + 1, lastB], { rawEraArray: true }), [], `after ${second}`);
      assert.equal(eraDump(rig!.meta).currentEra, lastB, 'superblock era');
    });
  }
});
