/**
 * The era-postsuspend race (fix (a), 9ae6e8b1c9bb), as a scenario shared by its named test
 * (era-postsuspend.test.ts) and the crash and fault lab's 'reload' component.
 *
 * An era device with a backlog of archived writesets to digest is suspended while its worker digests; a
 * new era device is made on the same metadata while the old one stays suspended with its bufio client; the
 * new one does IO and a checkpoint; then the old one is removed. Its destructor writes whatever dirty
 * buffers it still holds. With the fix there are none (postsuspend drains the worker, then commits).
 * Without it, the digest steps that ran after postsuspend's commit left dirty blocks at locations the
 * committed space map calls free, which the new instance has since allocated for its own metadata: the
 * old dtr writes stale blocks over them. Checks: with the new instance quiesced, removing the old one
 * leaves the metadata bytes unchanged; era_check on a raw copy right after the old dtr; at the end
 * era_check and era_invalidate for every era against the model, and the data.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { DeviceMapper } from '../dm';
import { Scope, zero } from '.';
import { bytes } from '../units';
import {
  checkData, checkMetadata, committedWritesets, copyDevice, createEra, deviceHash, EraModel, EraType, eraRigs, eraStatus, message,
  randomBlocks, rng, writeBlocks,
} from './era-fixtures';

const ORIGIN_MIB = 64;
// Small metadata: the space map's allocation cursor wraps often, so the blocks the old instance dirtied
// after its commit (free in that commit) are soon allocated, written and used by the new instance.
const META_MIB = 1;
const BLOCK = 8; // sectors: 16384 blocks, so each archived writeset takes 100+ digest steps
const ERAS_BEFORE_SUSPEND = 2;
// Era k writes every STRIDE[k]-th block, so every digest step finds marked bits; the last era, whose digest
// runs when the device is suspended, is the densest (its digest takes the longest).
const STRIDE = [4, 2];

export interface RaceResult {
  /** What went wrong, one entry per failing iteration (empty when the fix holds). */
  problems: string[];
  /** Archived writesets still to digest when the old device was suspended, per iteration. */
  pendingAtSuspend: number[];
}

/** Runs the race `iterations` times on `type` (devices live in `scope`). */
export async function postsuspendRace(scope: Scope, type: EraType, iterations: number, seed: number): Promise<RaceResult> {
  const found: string[] = [];
  // The second pair's metadata device holds the raw copy (era_check needs O_DIRECT, which tmpfs lacks).
  const [rig, spare] = eraRigs(scope, 2, ORIGIN_MIB, META_MIB, 'ps');
  const nrBlocks = rig!.originSectors / BLOCK;
  const data = new EraModel(nrBlocks, BLOCK); // every write of every iteration, for the data check
  const image = spare!.meta;
  const pendingAtSuspend: number[] = [];
  const rand = rng(seed);
  const dm = DeviceMapper.open();

  try {
    for (let it = 0; it < iterations; it++) {
      zero(rig!.meta, bytes(64 * 1024));
      const model = new EraModel(nrBlocks, BLOCK);
      const write = (dev: string, blocks: number[], era: number, seed: number): void => {
        writeBlocks(dev, model, blocks, era, seed);
        data.record(blocks, era, seed);
      };

      const old = createEra(scope, 'ps-old', type, rig!, BLOCK);
      let era = 0;
      for (let k = 0; k < ERAS_BEFORE_SUSPEND; k++) {
        era = eraStatus(old.name).era;
        const stride = STRIDE[k]!;
        const blocks = Array.from({ length: nrBlocks / stride }, (_, i) => i * stride + ((k + it) % stride));
        write(old.path, blocks, era, 1000 * it + k);
        if (k < ERAS_BEFORE_SUSPEND - 1) message(old.name, 'checkpoint');
      }
      // The last checkpoint archives a writeset whose digest takes many worker steps; suspend while it
      // runs: both ioctls from this process, microseconds apart, not two dmsetup processes.
      await dm.message({ name: old.name }, undefined, 'checkpoint');
      await dm.suspend({ name: old.name });
      era += 1; // the (empty) era the checkpoint started, archived by postsuspend
      pendingAtSuspend.push(committedWritesets(rig!.meta) ?? -1);

      // A new instance takes over the metadata while the old one is suspended, alive, with its buffers.
      const fresh = createEra(scope, 'ps-new', type, rig!, BLOCK);
      const e1 = eraStatus(fresh.name).era;
      assert.equal(e1, era + 1, 'the new instance continues after the old one\'s last era');
      // Many small fsync'd batches: each is a commit that allocates, so the new instance's allocations
      // sweep the free space, the old instance's stale blocks included.
      for (let b = 0; b < 24; b++) write(fresh.path, randomBlocks(rand, nrBlocks, 8), e1, 1000 * it + 60);
      message(fresh.name, 'checkpoint');
      for (let b = 0; b < 24; b++) write(fresh.path, randomBlocks(rand, nrBlocks, 8), e1 + 1, 1000 * it + 61);

      const last = eraStatus(fresh.name).era;
      // Quiesce the new instance (its postsuspend commits; nothing of it runs after that), then remove
      // the old one. Its dtr must not write a single metadata block: everything it ever changed was
      // committed before the new instance read the metadata. With the bug it writes the digest steps
      // that ran after its commit, over blocks the new instance may have allocated since.
      await dm.suspend({ name: fresh.name });
      const before = deviceHash(rig!.meta, rig!.metaSectors);
      old.remove();
      const after = deviceHash(rig!.meta, rig!.metaSectors);
      copyDevice(rig!.meta, image, rig!.metaSectors);
      const crash = spawnSync('era_check', [image], { encoding: 'utf8' });
      fresh.remove();

      const problems: string[] = [];
      if (after !== before) problems.push('removing the suspended old table wrote the metadata the new table owns');
      if (crash.status !== 0) problems.push(`era_check of the metadata right after the old table's dtr: ${`${crash.stdout}${crash.stderr}`.trim().split('\n').slice(0, 6).join(' | ')}`);
      problems.push(...checkMetadata(rig!.meta, model, Array.from({ length: last + 1 }, (_, n) => n + 1), { logical: false }));
      if (problems.length) found.push(`iteration ${it + 1} of ${iterations}: ${problems.join('; ')}`);
    }
  } finally {
    await dm.close();
  }
  const dataProblems = checkData(rig!.origin, data);
  if (dataProblems.length) found.push(`data: ${dataProblems.slice(0, 4).join('; ')}`);
  return { problems: found, pendingAtSuspend };
}
