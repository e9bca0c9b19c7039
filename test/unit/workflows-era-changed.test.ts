/**
 * changedSince() on a fake device-mapper: the snapshot is taken, read and always dropped; a held
 * snapshot, a device without an era target, a status without a held root and a metadata/status
 * disagreement are typed errors; ranges convert to sectors and bytes with the last one clipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DevId, TargetLine, TargetStatus } from '../../src/dm';
import { changedSince, EraChangedError, rangesIn, type EraDm } from '../../src/workflows/era-backup';
import { MetadataDamage } from '../../src/pdata/reader';
import type { ChangedBlocks } from '../../src/pdata/era-changed';
import { sectors, targetBlocks } from '../../src/units';

function fakeEra(opts: { type?: string; held?: string; heldAfterTake?: string | null } = {}) {
  const log: string[] = [];
  let held = opts.held ?? '-';
  const line: TargetLine = { start: sectors(0), length: sectors(1000), type: opts.type ?? 'dmkit-era', params: '/dev/ram0 /dev/ram1 128' };
  const dm: EraDm = {
    table: async () => [line],
    status: async (): Promise<TargetStatus[]> => [{ start: line.start, length: line.length, type: line.type, status: `8 20/1024 7 ${held}` }],
    info: async () => ({ name: 'vol', uuid: 'U-1' }) as Awaited<ReturnType<EraDm['info']>>,
    message: async (_id: DevId, _s, text: string) => {
      log.push(text);
      if (text === 'take_metadata_snap') held = opts.heldAfterTake === undefined ? '42' : (opts.heldAfterTake ?? '-');
      if (text === 'drop_metadata_snap') held = '-';
      return undefined;
    },
  };
  return { dm, log };
}

const result = (rootsBlock: number): ChangedBlocks => ({
  blockSize: sectors(128),
  nrBlocks: targetBlocks(8),
  currentEra: 7,
  metadataUuid: '0'.repeat(32),
  sinceEra: 3,
  roots: 'snapshot',
  rootsBlock,
  ranges: [{ start: targetBlocks(1), end: targetBlocks(3) }, { start: targetBlocks(7), end: targetBlocks(8) }],
  changed: targetBlocks(3),
});

test('changedSince takes the snapshot, reads it and drops it', async () => {
  const { dm, log } = fakeEra();
  let readFrom = '';
  const r = await changedSince(dm, { name: 'vol' }, 3, { read: (dev, n) => ((readFrom = `${dev}@${n}`), result(42)) });
  assert.deepEqual(log, ['take_metadata_snap', 'drop_metadata_snap']);
  assert.equal(readFrom, '/dev/ram0@3');
  assert.equal(r.uuid, 'U-1');
  assert.equal(r.heldRoot, 42n);
  assert.equal(r.length, 1000n);
  assert.deepEqual(rangesIn(r, 'sectors', r.length).map((x) => [x.start, x.end]), [[128n, 384n], [896n, 1000n]]);
  assert.deepEqual(rangesIn(r, 'bytes').map((x) => [x.start, x.end]), [[65536n, 196608n], [458752n, 524288n]]);
  assert.deepEqual(rangesIn(r, 'blocks').map((x) => [x.start, x.end]), [[1n, 3n], [7n, 8n]]);
});

test('the snapshot is dropped when reading fails', async () => {
  const { dm, log } = fakeEra();
  await assert.rejects(changedSince(dm, { name: 'vol' }, 1, { read: () => { throw new MetadataDamage(9, 'btree node checksum mismatch'); } }), MetadataDamage);
  assert.deepEqual(log, ['take_metadata_snap', 'drop_metadata_snap']);
  const m = fakeEra();
  await assert.rejects(changedSince(m.dm, { name: 'vol' }, 1, { read: () => result(41) }), (e: unknown) => e instanceof EraChangedError && e.code === 'ERR_ERA_SNAPSHOT_MISMATCH');
  assert.deepEqual(m.log, ['take_metadata_snap', 'drop_metadata_snap']);
  const n = fakeEra({ heldAfterTake: null });
  await assert.rejects(changedSince(n.dm, { name: 'vol' }, 1, { read: () => result(42) }), (e: unknown) => e instanceof EraChangedError && e.code === 'ERR_ERA_STATUS');
  assert.deepEqual(n.log, ['take_metadata_snap', 'drop_metadata_snap']);
});

test('refusals change nothing', async () => {
  const held = fakeEra({ held: '17' });
  await assert.rejects(changedSince(held.dm, { name: 'vol' }, 1, { read: () => result(42) }), (e: unknown) => e instanceof EraChangedError && e.code === 'ERR_ERA_SNAPSHOT_HELD');
  const lin = fakeEra({ type: 'linear' });
  await assert.rejects(changedSince(lin.dm, { name: 'vol' }, 1, { read: () => result(42) }), (e: unknown) => e instanceof EraChangedError && e.code === 'ERR_ERA_NO_TARGET');
  const bad = fakeEra();
  for (const era of [-1, 2 ** 32, 0.5]) await assert.rejects(changedSince(bad.dm, { name: 'vol' }, era), RangeError);
  assert.deepEqual([...held.log, ...lin.log, ...bad.log], []);
});

test('a failing drop is reported, and never hides the failure before it', async () => {
  const { dm, log } = fakeEra();
  const message = dm.message;
  dm.message = async (id, s, text) => {
    await message(id, s, text);
    if (text === 'drop_metadata_snap') throw Object.assign(new Error('drop: EIO'), { code: 'EIO' });
    return undefined;
  };
  await assert.rejects(changedSince(dm, { name: 'vol' }, 1, { read: () => result(42) }), /drop: EIO/);
  await assert.rejects(changedSince(dm, { name: 'vol' }, 1, { read: () => { throw new MetadataDamage(3, 'bad'); } }), (e: unknown) => e instanceof MetadataDamage && /drop: EIO/.test(String((e as { dropError?: Error }).dropError?.message)));
  assert.deepEqual(log, ['take_metadata_snap', 'drop_metadata_snap', 'take_metadata_snap', 'drop_metadata_snap']);
});
