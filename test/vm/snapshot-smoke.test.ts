/**
 * Smoke test of dmkit-origin, dmkit-snapshot and dmkit-merge (kmod/snapshot): one persistent snapshot of a
 * stamped origin keeps the old data while the origin takes new data; the in-tree snapshot target reads
 * the COW device ours wrote, and ours reads the one the in-tree target wrote (same data, same usage);
 * dmkit-merge copies the snapshot back and leaves the origin equal to it; malformed tables are refused.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper, DmError } from '../../src/dm';
import { snapshot, snapshotMerge, snapshotMergeDone, snapshotOrigin, type SnapshotStatus, type SnapshotUsage } from '../../src/targets';
import { ramdisks, Scope, zero, type BlockDevice } from '../../src/testing';
import { bytes, sectors, type Sectors } from '../../src/units';
import { assertModel, DataModel, MiB, stampDirect, waitFor } from './clone-lib';

const LENGTH = sectors((8n * MiB) / 512n);
const CHUNK = sectors(16);
const BASE = 101;

const dm = DeviceMapper.open();
let skip: string | false = false;
let inTree = true;

before(async () => {
  try {
    await dm.targetVersion('dmkit-snapshot');
  } catch (e) {
    if (!(e instanceof DmError)) throw e;
    skip = 'dmkit-snapshot is not registered';
  }
  try {
    await dm.targetVersion('snapshot');
  } catch (e) {
    if (!(e instanceof DmError)) throw e;
    inTree = false;
  }
});
after(() => dm.close());

type Flavour = 'dmkit' | 'in-tree';
const NAMES = {
  dmkit: { origin: 'dmkit-origin', snapshot: 'dmkit-snapshot' },
  'in-tree': { origin: 'snapshot-origin', snapshot: 'snapshot' },
} as const;

function originLine(f: Flavour, origin: BlockDevice) {
  return snapshotOrigin.line({ origin: origin.path }, { start: sectors(0), length: LENGTH, type: NAMES[f].origin });
}

function snapLine(f: Flavour, origin: BlockDevice, cow: BlockDevice) {
  return snapshot.line({ origin: origin.path, cow: cow.path, store: 'P', chunkSize: CHUNK }, { start: sectors(0), length: LENGTH, type: NAMES[f].snapshot });
}

/** Origin device `so` and snapshot `ss`, loaded with the origin suspended as the targets require. */
async function openPair(f: Flavour, origin: BlockDevice, cow: BlockDevice): Promise<{ o: string; s: string }> {
  await dm.create('so', { targets: [originLine(f, origin)] });
  await dm.suspend({ name: 'so' });
  await dm.create('ss', { targets: [snapLine(f, origin, cow)] });
  await dm.resume({ name: 'so' });
  return { o: dm.devicePath('so'), s: dm.devicePath('ss') };
}

async function closeAll(): Promise<void> {
  for (const name of ['ss', 'so', 'sm']) await dm.remove({ name }).catch(() => undefined);
}

async function usage(name: string): Promise<SnapshotUsage> {
  const [line] = await dm.status({ name });
  assert.ok(line, `${name} has a status line`);
  const st: SnapshotStatus = snapshot.parseStatus(line.status);
  assert.ok('allocated' in st, `${name} status: ${line.status}`);
  return st;
}

/** Origin writes (sub-chunk, chunk-crossing, several chunks) and snapshot writes, recorded in the models. */
function writeBoth(paths: { o: string; s: string }, origin: DataModel, snap: DataModel, seed: number, at: bigint): void {
  const c = at * CHUNK;
  stampDirect(paths.o, origin, c + 3n, 4n, seed); // inside one chunk
  stampDirect(paths.o, origin, c + 10n * CHUNK + 8n, 2n * CHUNK, seed + 1, { fsync: true }); // across 3 chunks
  stampDirect(paths.o, origin, c + 200n * CHUNK, 8n * CHUNK, seed + 2); // 8 whole chunks
  stampDirect(paths.s, snap, c + 40n * CHUNK + 2n, 5n, seed + 3, { fsync: true }); // a write to the snapshot itself
  stampDirect(paths.o, origin, c + 40n * CHUNK, CHUNK, seed + 4); // the origin under it changes too
}

describe('dmkit-snapshot smoke', () => {
  test('a persistent snapshot keeps the old data; the in-tree target reads our COW and the reverse; a merge restores it', async (t) => {
    if (skip) return t.skip(skip);
    const scope = new Scope();
    try {
      const [origin, cow] = ramdisks(scope, 2, bytes(8n * MiB)) as [BlockDevice, BlockDevice];
      stampDirect(origin.path, undefined, 0n, LENGTH, BASE);
      zero(cow.path, bytes(1n * MiB));
      const originModel = new DataModel(LENGTH, BASE);
      const snapModel = new DataModel(LENGTH, BASE);

      // Ours writes the COW.
      let paths = await openPair('dmkit', origin, cow);
      writeBoth(paths, originModel, snapModel, 10, 0n);
      assertModel(paths.o, originModel, 'origin through dmkit-origin');
      assertModel(paths.s, snapModel, 'dmkit-snapshot after origin writes');
      const ours = await usage('ss');
      // 1 + 3 + 8 + 1 chunks copied (chunk 40 once), plus the header and area 0.
      assert.deepEqual(ours, { allocated: (2n + 13n) * CHUNK, total: LENGTH, metadata: 2n * CHUNK } as SnapshotUsage);
      assert.match((await dm.table({ name: 'ss' }))[0]!.params, new RegExp(`^\\S+ \\S+ P ${CHUNK}$`), 'table line');
      await closeAll();
      assertModel(origin.path, originModel, 'raw origin after dmkit');

      if (inTree) {
        // The in-tree target reads our COW: same data, same usage.
        await dm.create('ss', { targets: [snapLine('in-tree', origin, cow)] });
        assertModel(dm.devicePath('ss'), snapModel, 'in-tree snapshot reading the COW dmkit-snapshot wrote');
        assert.deepEqual(await usage('ss'), ours, 'in-tree usage of our COW');
        await closeAll();

        // The in-tree target writes more; ours reads it.
        paths = await openPair('in-tree', origin, cow);
        writeBoth(paths, originModel, snapModel, 20, 300n);
        const theirs = await usage('ss');
        assert.equal(theirs.allocated, ours.allocated + 13n * CHUNK, 'the in-tree target added 13 chunks');
        await closeAll();
        await dm.create('ss', { targets: [snapLine('dmkit', origin, cow)] });
        assertModel(dm.devicePath('ss'), snapModel, 'dmkit-snapshot reading the COW the in-tree target extended');
        assert.deepEqual(await usage('ss'), theirs, 'our usage of the in-tree COW');
        await closeAll();
      }

      // Merge: the merge device shows the snapshot all along, then the origin holds it.
      await dm.create('sm', {
        targets: [snapshotMerge.line({ origin: origin.path, cow: cow.path, store: 'P', chunkSize: CHUNK }, { start: sectors(0), length: LENGTH, type: 'dmkit-merge' })],
      });
      const merged = dm.devicePath('sm');
      assertModel(merged, snapModel, 'dmkit-merge device while merging');
      const done = await waitFor('the merge to finish', 30_000, async () => {
        const [line] = await dm.status({ name: 'sm' });
        const st = snapshotMerge.parseStatus(line!.status);
        assert.ok('allocated' in st, `merge status: ${line!.status}`);
        return snapshotMergeDone(st) ? st : undefined;
      });
      assert.equal(done.metadata, 2n * CHUNK, 'a finished merge leaves the header and area 0');
      assertModel(merged, snapModel, 'dmkit-merge device after the merge');
      await closeAll();
      assertModel(origin.path, snapModel, 'raw origin after the merge');
    } finally {
      await closeAll();
      scope.close();
    }
  });

  test('malformed tables are refused with EINVAL and leave no device', async (t) => {
    if (skip) return t.skip(skip);
    const scope = new Scope();
    try {
      const [origin, cow] = ramdisks(scope, 2, bytes(8n * MiB)) as [BlockDevice, BlockDevice];
      zero(cow.path, bytes(1n * MiB));
      const bad: Array<[string, string]> = [
        ['dmkit-snapshot', `${origin.path} ${cow.path} P`],
        ['dmkit-snapshot', `${origin.path} ${cow.path} X 16`],
        ['dmkit-snapshot', `${origin.path} ${cow.path} P 12`],
        ['dmkit-snapshot', `${origin.path} ${cow.path} N 0`],
        ['dmkit-snapshot', `${origin.path} ${cow.path} P 16 1 discard_passdown_origin`],
        ['dmkit-snapshot', `${origin.path} ${cow.path} P 16 3 a b c`],
        ['dmkit-snapshot', `${origin.path} ${origin.path} P 16`],
        ['dmkit-merge', `${origin.path} ${cow.path} N 16`],
        ['dmkit-origin', `${origin.path} extra`],
      ];
      for (const [type, params] of bad) {
        await assert.rejects(
          dm.create('sbad', { targets: [{ start: sectors(0), length: LENGTH as Sectors, type, params }] }),
          (e: unknown) => e instanceof DmError && (e as DmError & { errno?: number }).errno === 22,
          `${type} ${params} is refused with EINVAL`,
        );
        assert.equal((await dm.list()).some((d) => d.name === 'sbad'), false, `${type} ${params} leaves no device`);
      }
    } finally {
      await dm.remove({ name: 'sbad' }).catch(() => undefined);
      scope.close();
    }
  });
});
