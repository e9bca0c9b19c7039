/**
 * Fix (d), `snapshot-header` (61578dcd3faf "dm snapshot: fix header corruption race on invalidation"):
 * a persistent snapshot that overflows is invalidated, which writes `valid = 0` into its header. Built in
 * the buffer that exception commits write into, that header picked up the exceptions of copies completing
 * at the same moment (or the zeroing of the next area), and the next activation found a header with a
 * wrong magic or chunk size 0. The fix builds and writes the header from a buffer of its own.
 *
 * Scenario, repeated: many concurrent origin writes into a COW that holds about half of them, with 1 KiB
 * chunks (64 exceptions per area, so the copies in flight at the overflow wrap an area); dmkit's test
 * knob `invalidate_delay_ms` (test builds only) holds the header between being built and being written,
 * so with the revert the in-flight commits land in it every time. Afterwards the origin holds every write,
 * the snapshot reports Invalid, the header on disk is intact (magic, valid 0, version 1, chunk size), and
 * activating the COW again gives an Invalid snapshot rather than a refused or corrupt one.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { DeviceMapper } from '../../src/dm';
import { COW_VERSION, readCowHeader, SNAP_MAGIC } from '../../src/pdata/snapshot-cow';
import { patternBuffer, readDirect, writeDirectAsync } from '../../src/testing';
import { sectors } from '../../src/units';
import { createSnapshot, removeSnapshot, type SnapshotFamily } from '../../src/workflows';
import { describeFamilies, MiB, removeDevices, slice, SnapRig, snapStatus, zeroStart } from './snapshot-lib';

const LENGTH = sectors((16n * MiB) / 512n);
const CHUNK = sectors(2); // 1 KiB: 64 exceptions per area
const COW = sectors((1n * MiB) / 512n); // 1024 chunks: about 1000 copies fit
const WRITERS = 32;
const WRITE = 64n * 1024n; // bytes per writer: 2 MiB in all, twice what the COW holds
const ROUNDS = 3;
const KNOB = '/sys/module/dmkit_snapshot/parameters/invalidate_delay_ms';

const dm = DeviceMapper.open();
after(() => dm.close());

function setKnob(family: SnapshotFamily, ms: number): boolean {
  if (family !== 'dmkit' || !fs.existsSync(KNOB)) return false;
  fs.writeFileSync(KNOB, `${ms}\n`);
  return true;
}

describeFamilies(
  dm,
  'snapshot overflow race',
  (c) => {
    const { family } = c;

    test('snapshot-header: an overflow while copies are in flight leaves a valid header (magic, version, chunk size)', async (t) => {
      if (c.skip) return t.skip(c.skip);
      const { scope } = c;
      const [originDev, cowDisk] = c.disks(2, 32n * MiB) as [string, string];
      const knob = setKnob(family, 200);
      t.diagnostic(knob ? 'invalidate_delay_ms = 200' : 'no invalidate_delay_ms knob: the race runs unwidened');
      for (let round = 0; round < ROUNDS; round++) {
        const what = `round ${round + 1}`;
        const prefix = `sh${round}`;
        zeroStart(cowDisk, MiB);
        const cow = await slice(dm, scope, `${prefix}-cow`, cowDisk, COW);
        const rig = await new SnapRig(dm, scope, prefix, family, originDev, LENGTH, CHUNK, 100 + round).open();
        const s = await rig.take(cow, 'P');

        // Every writer at once, each on its own 64 KiB (chunk-aligned, nothing shared), 4 KiB per request.
        const writes = Array.from({ length: WRITERS }, (_, w) => {
          const start = BigInt(w) * 4n * (WRITE / 512n) + BigInt(round) * 64n; // spread, and moved each round
          const seed = 1000 * (round + 1) + w;
          rig.origin.write(start, WRITE / 512n, seed);
          return writeDirectAsync(rig.volPath, start * 512n, patternBuffer(seed, sectors(start), Number(WRITE / 512n)));
        });
        const results = await Promise.allSettled(writes);
        const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
        assert.deepEqual(failed, [], `${what}: origin writes succeed while the snapshot overflows`);

        assert.deepEqual(await snapStatus(dm, s.name), { problem: 'Invalid' }, `${what}: the overflowed persistent snapshot is Invalid`);
        rig.snaps.length = 0; // the snapshot no longer holds a model
        const vol = rig.volPath;
        assert.deepEqual(
          (() => {
            const bad: string[] = [];
            const got = readDirect(vol, 0n, LENGTH * 512n, 1n << 20n);
            const want = rig.origin.expected(0n, Number(LENGTH));
            if (!got.equals(want)) bad.push('the volume differs from its model');
            return bad;
          })(),
          [],
          `${what}: every origin write landed`,
        );
        await removeSnapshot(dm, s.name);

        // The header on disk, field by field (assertions, so a corrupt header fails here on observed data).
        const h = readCowHeader(readDirect(cow, 0n, 4096n, 4096n));
        const shown = `magic 0x${h.magic.toString(16)} valid ${h.valid} version ${h.version} chunk_size ${h.chunkSize}`;
        assert.equal(h.magic, SNAP_MAGIC, `${what}: header magic (${shown})`);
        assert.equal(h.version, COW_VERSION, `${what}: header version (${shown})`);
        assert.equal(h.chunkSize, CHUNK, `${what}: header chunk size (${shown})`);
        assert.equal(h.valid, 0, `${what}: the header says invalid (${shown})`);

        // Reactivation: the COW loads again and reports Invalid.
        let again: string | undefined;
        try {
          again = (await createSnapshot(dm, { origin: rig.vol, name: `${prefix}-again`, cow, chunkSize: CHUNK, store: 'P', family })).name;
        } catch (e) {
          assert.fail(`${what}: activating the invalidated COW again was refused (${(e as Error).message}); header ${shown}`);
        }
        assert.deepEqual(await snapStatus(dm, again), { problem: 'Invalid' }, `${what}: reactivated, still Invalid`);
        await removeSnapshot(dm, again);
        await dm.remove({ name: rig.vol }, { retry: true });
        removeDevices(`${prefix}-`);
      }
    });
  },
  (family) => void setKnob(family, 0),
);
