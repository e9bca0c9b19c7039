/**
 * Snapshot contents against a model, per family (in-tree, dmkit): origin writes with 1 and 4 snapshots of
 * one origin, reads and writes to the snapshots themselves, then every COW device read back by our own
 * reader (src/pdata/snapshot-cow.ts), and persistence: a snapshot removed and activated again from its COW
 * reads the same.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper } from '../../src/dm';
import { sectors } from '../../src/units';
import { removeSnapshot } from '../../src/workflows';
import { describeFamilies, MiB, showJson, SnapRig, snapStatus } from './snapshot-lib';

const LENGTH = sectors((8n * MiB) / 512n);
const CHUNK = sectors(8); // 4 KiB

const dm = DeviceMapper.open();

describeFamilies(
  dm,
  'snapshot data',
  (c) => {
    const { family } = c;

    test('one snapshot: origin writes leave it at the old data; its own reads and writes; COW and persistence', async (t) => {
      if (c.skip) return t.skip(c.skip);
      const { scope } = c;
      const [origin, cowDev] = c.disks(2, 16n * MiB) as [string, string];
      const rig = await new SnapRig(dm, scope, 'sd1', family, origin, LENGTH, CHUNK, 1).open();
      const s = await rig.take(cowDev);
      rig.verifyData('just taken');
      await rig.verifyCow(s, 'just taken');

      rig.writeOrigin(16n, 1n, 11); // one sector inside chunk 2
      rig.writeOrigin(64n, 8n, 12); // exactly chunk 8
      rig.writeOrigin(100n, 16n, 13); // straddles chunks 12..14
      rig.writeOrigin(2048n, 128n, 14, { fsync: true }); // 64 KiB: chunks 256..271
      rig.writeOrigin(64n, 8n, 15); // chunk 8 again: no second copy
      rig.writeSnap(s, 4096n, 8n, 21); // a chunk the origin never wrote
      rig.writeSnap(s, 2050n, 4n, 22); // part of a chunk already copied
      rig.writeOrigin(4096n, 8n, 16); // origin write to a chunk the snapshot already owns
      rig.verifyData('after writes');
      const cow = await rig.verifyCow(s, 'after writes');
      assert.equal(cow.exceptions.length, 22);

      // The volume is restored by removing its only snapshot; the COW comes back as it was.
      await removeSnapshot(dm, s.name);
      assert.deepEqual((await dm.table({ name: rig.vol })).map((l) => l.type), ['linear']);
      rig.snaps.length = 0;
      const again = await rig.take(s.cow, 'P', s);
      rig.verifyData('reactivated from its COW');
      await rig.verifyCow(again, 'reactivated from its COW');
    });

    test('four snapshots taken between writes each read as the origin did when taken', async (t) => {
      if (c.skip) return t.skip(c.skip);
      const { scope } = c;
      const devs = c.disks(5, 16n * MiB);
      const rig = await new SnapRig(dm, scope, 'sd4', family, devs[0]!, LENGTH, CHUNK, 2).open();
      const stores = ['P', 'PO', 'P', 'N'] as const;
      for (let i = 0; i < 4; i++) {
        await rig.take(devs[i + 1]!, stores[i]);
        // Overlapping writes: some chunks are copied into several COWs at different times.
        rig.writeOrigin(BigInt(i) * 512n, 1024n, 30 + i);
        rig.writeOrigin(8192n + BigInt(i) * 8n, 4n, 40 + i);
        rig.writeOrigin(12000n, 96n, 50 + i);
      }
      rig.writeSnap(rig.snaps[1]!, 16000n, 16n, 61);
      rig.writeSnap(rig.snaps[3]!, 0n, 8n, 62);
      rig.verifyData('four snapshots');
      for (const s of rig.snaps) if (s.store !== 'N') await rig.verifyCow(s, 'four snapshots');
      const transient = await snapStatus(dm, rig.snaps[3]!.name);
      assert.ok('allocated' in transient && transient.metadata === 0n, `a transient store has no metadata: ${showJson(transient)}`);
      assert.equal((await snapStatus(dm, rig.snaps[3]!.name) as { allocated: bigint }).allocated, BigInt(rig.snaps[3]!.copied.size) * CHUNK);
    });
  },
);
