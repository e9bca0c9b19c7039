/**
 * Differential: one COW device, activated by the in-tree snapshot target and by dmkit-snapshot in turn,
 * gives the same data and the same exceptions. The in-tree target writes first (origin and snapshot
 * writes), dmkit's reads the COW back, adds its own, and the in-tree target reads the result; status
 * usage figures agree for the same COW. Skipped unless both families are registered.
 */
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper } from '../../src/dm';
import { ramdisks, Scope } from '../../src/testing';
import { bytes, sectors } from '../../src/units';
import { removeSnapshot } from '../../src/workflows';
import { familySkip, MiB, SnapRig, snapStatus, zeroStart } from './snapshot-lib';

const LENGTH = sectors((8n * MiB) / 512n);
const CHUNK = sectors(16); // 8 KiB
const dm = DeviceMapper.open();
after(() => dm.close());

describe('snapshot differential (in-tree and dmkit on one COW)', () => {
  let skip: string | undefined;
  let scope: Scope;
  before(async () => {
    skip = (await familySkip(dm, 'in-tree')) ?? (await familySkip(dm, 'dmkit'));
  });
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => scope.close());

  test('a COW written by one target reads the same through the other, both ways', async (t) => {
    if (skip) return t.skip(skip);
    const [originDev, cowDev] = ramdisks(scope, 2, bytes(16n * MiB)).map((d) => d.path) as [string, string];
    zeroStart(cowDev, MiB);
    const rig = await new SnapRig(dm, scope, 'df', 'in-tree', originDev, LENGTH, CHUNK, 5).open();
    let s = await rig.take(cowDev);
    for (let i = 0n; i < 40n; i++) rig.writeOrigin(i * 301n, 24n, 70 + Number(i));
    rig.writeSnap(s, 15000n, 40n, 90);
    rig.verifyData('written by the in-tree target');
    const first = await rig.verifyCow(s, 'written by the in-tree target');
    const firstStatus = await snapStatus(dm, s.name);

    for (const [family, seed] of [['dmkit', 110], ['in-tree', 150]] as const) {
      await removeSnapshot(dm, s.name);
      rig.snaps.length = 0;
      rig.family = family;
      s = await rig.take(cowDev, 'P', s);
      rig.verifyData(`read back by ${family}`);
      const again = await rig.verifyCow(s, `read back by ${family}`);
      if (seed === 110) {
        assert.deepEqual(again.exceptions, first.exceptions, 'the same exceptions, in the same order');
        assert.deepEqual(await snapStatus(dm, s.name), firstStatus, 'the same usage figures');
      }
      for (let i = 0n; i < 20n; i++) rig.writeOrigin(8000n + i * 173n, 16n, seed + Number(i));
      rig.writeSnap(s, 100n, 8n, seed + 30);
      rig.verifyData(`written by ${family}`);
      await rig.verifyCow(s, `written by ${family}`);
    }
  });
});
