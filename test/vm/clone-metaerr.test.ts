/**
 * dm-flakey errors at a clone commit (issue 5): the metadata device is a table of two segments over one
 * ramdisk — block 0 (the superblock) on linear, the rest on linear that is swapped for
 * `flakey ... 0 1 1 error_writes` (always down: reads pass, writes fail) between commits. A commit then
 * fails: the clone must switch to read-only mode (status `ro`), refuse what needs a metadata change, keep
 * serving reads, and after teardown (every metadata write failing, so nothing can reach the disk late) a
 * reopen on healthy metadata must show exactly the last committed transaction: the regions hydrated
 * before the failure, none of those marked after it, and the data as of that commit.
 *
 * The tm-commit-order proof (fix (c)) is the variant whose error window ends before the teardown: before
 * the fix a failed flush left the new superblock dirty in the block manager's cache, and the next
 * write-back (here the teardown, or the rollback's reopen) put it on disk pointing at blocks never written.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { inspect } from 'node:util';
import { DeviceMapper } from '../../src/dm';
import { clone } from '../../src/targets';
import { patternBuffer, ramdisks, Scope, zero, type BlockDevice } from '../../src/testing';
import { bytes, sectors } from '../../src/units';
import { assertModel, assertSuperblock, cloneStatus, DataModel, MiB, pickCloneType, stampDirect, writeDirect, type CloneKind } from './clone-lib';

const REGION = sectors(128);
const LENGTH = sectors((8n * MiB) / 512n); // 128 regions
const META = 4n * MiB / 512n;
const SRC_SEED = 41;

const dm = DeviceMapper.open();
let type: CloneKind | undefined;
let skip: string | undefined;
before(async () => {
  ({ type, skip } = await pickCloneType(dm));
});
after(() => dm.close());

function metaTable(backing: string, body: 'ok' | 'fail', sb: 'ok' | 'fail') {
  const seg = (start: bigint, length: bigint, state: 'ok' | 'fail') => ({
    start: sectors(start), length: sectors(length), type: state === 'ok' ? 'linear' : 'flakey',
    params: state === 'ok' ? `${backing} ${start}` : `${backing} ${start} 0 1 1 error_writes`,
  });
  return [seg(0n, 8n, sb), seg(8n, META - 8n, body)];
}

async function swap(name: string, targets: ReturnType<typeof metaTable>): Promise<void> {
  await dm.load({ name }, targets);
  await dm.suspend({ name });
  await dm.resume({ name });
}

/**
 * `teardown` says what the metadata does while the failed clone is removed: 'failing': every write fails,
 * the superblock's too, so the disk shows exactly what the failed commit itself wrote; 'healed': the error
 * window has ended, so anything the failed commit left dirty in the block manager's cache (the superblock,
 * before fix (c)) reaches the disk at the teardown's write-back.
 */
async function failedCommit(teardown: 'failing' | 'healed', flush: 'with-write' | 'later' = 'with-write'): Promise<void> {
    const scope = new Scope();
    const names: string[] = [];
    try {
      const [metaRam, dest, src] = ramdisks(scope, 3, bytes(16n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
      stampDirect(src.path, undefined, 0n, LENGTH, SRC_SEED);
      zero(metaRam.path, bytes(1n * MiB));
      await dm.create('me-meta', { targets: metaTable(metaRam.path, 'ok', 'ok') });
      names.push('me-meta');
      const meta = dm.devicePath('me-meta');
      const cloneLine = () => clone.line(
        { metadataDevice: meta, destinationDevice: dest.path, sourceDevice: src.path, regionSize: REGION, noHydration: true },
        { start: sectors(0), length: LENGTH, type: type! },
      );
      await dm.create('me-clone', { targets: [cloneLine()] });
      names.push('me-clone');
      const dev = dm.devicePath('me-clone');

      // Committed: whole regions 3 and 9, and a sub-region write in 20 (copy, then write), each fsync'd.
      const model = new DataModel(LENGTH, SRC_SEED);
      stampDirect(dev, model, 3n * REGION, REGION, 51, { fsync: true });
      stampDirect(dev, model, 9n * REGION, REGION, 52, { fsync: true });
      stampDirect(dev, model, 20n * REGION + 16n, 8n, 53, { fsync: true });
      const before = await cloneStatus(dm, 'me-clone');
      assert.equal(before.hydrated, 3n);
      assert.equal(before.mode, 'rw');

      // The metadata body now fails every write: the next commit must fail.
      await swap('me-meta', metaTable(metaRam.path, 'fail', 'ok'));
      let failed = false;
      try {
        if (flush === 'later') {
          // The write is acknowledged at once; the periodic commit (every second) fails before the
          // flush arrives and rolls its mark back, so that flush cannot promise the write is durable.
          writeDirect(dev, 40n * REGION * 512n, patternBuffer(54, sectors(40n * REGION), Number(REGION)));
          await new Promise((r) => setTimeout(r, 2500));
          const st = await cloneStatus(dm, 'me-clone', { noflush: true });
          assert.equal(st.mode, 'ro', 'the periodic commit failed');
          execFileSync('dd', ['if=/dev/null', `of=${dev}`, 'conv=fsync,notrunc', 'status=none']);
        } else {
          writeDirect(dev, 40n * REGION * 512n, patternBuffer(54, sectors(40n * REGION), Number(REGION)), { fsync: true });
        }
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        failed = true; // the write or its flush reports the failed commit
      }
      const during = await cloneStatus(dm, 'me-clone', { noflush: true });
      assert.equal(during.mode, 'ro', `status after the failed commit: ${inspect(during)}`);
      assert.ok(failed, 'the fsync whose commit failed must report an error');
      // Reads still work: the committed data and the source behind unhydrated regions.
      assertModel(dev, model, 'reads in read-only mode');

      // Teardown with every metadata write failing (nothing can publish late), or after the window.
      await swap('me-meta', metaTable(metaRam.path, teardown === 'failing' ? 'fail' : 'ok', teardown === 'failing' ? 'fail' : 'ok'));
      await dm.remove({ name: 'me-clone' }, { retry: true });
      names.pop();
      await swap('me-meta', metaTable(metaRam.path, 'ok', 'ok'));
      assertSuperblock(meta, REGION, LENGTH);

      await dm.create('me-clone', { targets: [cloneLine()] });
      names.push('me-clone');
      const again = await cloneStatus(dm, 'me-clone');
      assert.equal(again.mode, 'rw');
      assert.equal(again.hydrated, 3n, 'exactly the regions of the last commit are hydrated');
      assertModel(dev, model, 'data after reopening');
    } finally {
      for (const n of names.reverse()) await dm.remove({ name: n }, { retry: true }).catch(() => undefined);
      scope.close();
    }
}

describe('clone metadata errors', () => {
  test('a commit that fails under dm-flakey puts the clone in read-only mode; reopening shows the last commit', async (t) => {
    if (skip) return t.skip(skip);
    await failedCommit('failing');
  });

  test('after a commit failed, a later flush fails: the marks of acknowledged writes were rolled back', async (t) => {
    if (skip) return t.skip(skip);
    await failedCommit('failing', 'later');
  });

  test('tm-commit-order: after a failed commit and the end of the error window, teardown leaves the last committed transaction', async (t) => {
    if (skip) return t.skip(skip);
    await failedCommit('healed');
  });
});
