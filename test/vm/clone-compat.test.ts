/**
 * dmkit-clone and the in-tree clone read each other's metadata (same on-disk format, facts §4). Runs where
 * both are registered: the debug kernel in ../shared/kernels has the in-tree dm-clone as a module (Debian's
 * 6.1 has none). Each side writes (sub-region and whole-region writes) with
 * hydration off, then the other opens the metadata, must see the same hydrated map and the same data,
 * hydrates to the end, and the first reopens the result. Status and table lines must be identical.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper, DmError } from '../../src/dm';
import { clone, cloneMessages } from '../../src/targets';
import { ramdisks, Scope, zero, type BlockDevice } from '../../src/testing';
import { bytes, sectors, targetBlocks } from '../../src/units';
import { assertModel, assertSuperblock, cloneStatus, DataModel, MiB, stampDirect, waitHydrated } from './clone-lib';

const REGION = sectors(128);
const LENGTH = sectors((16n * MiB) / 512n); // 256 regions
const SRC_SEED = 21;
const TYPES = ['dmkit-clone', 'clone'] as const;
type Kind = (typeof TYPES)[number];

const dm = DeviceMapper.open();
let skip: string | false = false;

before(async () => {
  for (const t of TYPES) {
    try {
      await dm.targetVersion(t);
    } catch (e) {
      if (!(e instanceof DmError)) throw e;
      skip = `target ${t} is not registered on this kernel (the in-tree clone exists on the debug kernel only)`;
    }
  }
});
after(() => dm.close());

function line(type: Kind, disks: BlockDevice[], opts: { noHydration?: boolean; threshold?: number } = {}) {
  const [meta, dest, src] = disks as [BlockDevice, BlockDevice, BlockDevice];
  return clone.line(
    {
      metadataDevice: meta.path, destinationDevice: dest.path, sourceDevice: src.path, regionSize: REGION,
      noHydration: opts.noHydration ?? false, hydrationThreshold: opts.threshold === undefined ? null : targetBlocks(BigInt(opts.threshold)),
    },
    { start: sectors(0), length: LENGTH, type },
  );
}

async function open(type: Kind, disks: BlockDevice[], opts: { noHydration?: boolean; threshold?: number } = {}): Promise<string> {
  await dm.create('cc', { targets: [line(type, disks, opts)] });
  return dm.devicePath('cc');
}

describe('clone metadata compatibility', () => {
  test('status and table lines are the same on both targets', async (t) => {
    if (skip) return t.skip(skip);
    const scope = new Scope();
    try {
      const disks = ramdisks(scope, 3, bytes(32n * MiB));
      const seen: Record<string, string[]> = {};
      for (const type of TYPES) {
        zero(disks[0]!.path, bytes(1n * MiB));
        await open(type, disks, { noHydration: true });
        await dm.message({ name: 'cc' }, undefined, cloneMessages.hydrationThreshold(targetBlocks(5n)));
        const st = (await dm.status({ name: 'cc' }))[0]!.status;
        const table = (await dm.table({ name: 'cc' }))[0]!.params;
        seen[type] = [st, table];
        await dm.remove({ name: 'cc' });
      }
      assert.deepEqual(seen['dmkit-clone'], seen['clone']);
    } finally {
      await dm.remove({ name: 'cc' }).catch(() => undefined);
      scope.close();
    }
  });

  for (const [a, b] of [['dmkit-clone', 'clone'], ['clone', 'dmkit-clone']] as const) {
    test(`${b} opens ${a}'s metadata, sees its map and data, finishes hydration; ${a} reopens the result`, async (t) => {
      if (skip) return t.skip(skip);
      const scope = new Scope();
      try {
        const disks = ramdisks(scope, 3, bytes(32n * MiB));
        const [meta, dest, src] = disks as [BlockDevice, BlockDevice, BlockDevice];
        stampDirect(src.path, undefined, 0n, LENGTH, SRC_SEED);
        zero(meta.path, bytes(1n * MiB));
        zero(dest.path, bytes(1n * MiB));
        const model = new DataModel(LENGTH, SRC_SEED);

        let path = await open(a, disks, { noHydration: true });
        stampDirect(path, model, 7n * REGION, REGION, 31); // whole region: hydrated without a copy
        stampDirect(path, model, 400n * 8n, 24n, 32, { fsync: true }); // inside region 25: copy then write
        stampDirect(path, model, 200n * REGION, 3n * REGION, 33, { fsync: true }); // three whole regions
        const mapA = (await cloneStatus(dm, 'cc')).hydrated;
        assert.equal(mapA, 5n, `${a} hydrated regions 7, 25, 200-202`);
        await dm.remove({ name: 'cc' });
        assertSuperblock(meta.path, REGION, LENGTH);

        path = await open(b, disks, { noHydration: true });
        assert.equal((await cloneStatus(dm, 'cc')).hydrated, mapA, `${b} sees ${a}'s hydrated map`);
        assertModel(path, model, `${b} reads ${a}'s data`);
        await dm.message({ name: 'cc' }, undefined, cloneMessages.hydrationThreshold(targetBlocks(64n)));
        await dm.message({ name: 'cc' }, undefined, cloneMessages.enableHydration());
        await waitHydrated(dm, 'cc');
        await dm.remove({ name: 'cc' });

        path = await open(a, disks);
        const st = await cloneStatus(dm, 'cc');
        assert.equal(st.hydrated, st.totalRegions, `${a} sees ${b}'s full map`);
        assertModel(path, model, `${a} reads the data after ${b} hydrated`);
        await dm.remove({ name: 'cc' });
      } finally {
        await dm.remove({ name: 'cc' }).catch(() => undefined);
        scope.close();
      }
    });
  }
});
