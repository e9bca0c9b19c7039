/**
 * Crash states of a snapshot merge (dmkit-merge, the in-tree snapshot-merge): the merge half of the snapshot
 * family's crash contract.
 *
 * Record. The rig of crash/snapshot.ts with one snapshot: the origin [0, ORIGIN) and its COW on one ramdisk
 * under dm-log-writes. A seeded workload writes the origin and the snapshot; both are fsync'd, the
 * snapshot's view is read (what the merge must give the origin), a log mark is set, and mergeSnapshot runs
 * the merge to its end (what `dmkit snapshot merge` does).
 *
 * Crash states: every FLUSH/FUA point from the mark on, with subsets of the pending writes and torn 4 KiB
 * writes (states.ts). Contract:
 *  - user space, every state: the COW is a valid persistent store, and the snapshot's view (the origin
 *    with the COW's remaining exceptions laid over it) is the view read at the mark, chunk for chunk. A
 *    merge may drop an exception only once the origin holds that chunk's data durably.
 *  - kernel, a sample of the distinct images: the merge target activated on the image resumes, finishes
 *    (allocated = metadata in its status), and leaves the origin equal to that view and the COW with no
 *    exception.
 */
import * as fs from 'node:fs';
import { DeviceMapper } from '../../../dm';
import { CowDamage, readCow } from '../../../pdata/snapshot-cow';
import { patternBuffer, readDirect, writeDirect } from '../../../testing';
import { sectors } from '../../../units';
import { createSnapshot, mergeSnapshot, SNAPSHOT_TYPES, type SnapshotFamily } from '../../../workflows';
import { logIndex, replayImage } from '../logwrites';
import { crashPoints, enumerateStates } from '../states';
import { caseSeed, type LabContext, prng } from '../types';
import type { CrashCounts } from './era';
import { type CrashPlan, Devices, MiB } from './rig';
import { CHUNK, COW, dropSnapshots, endRecording, ORIGIN, ORIGIN_SECTORS, prepareRecording, workload } from './snapshot';

const CHUNK_BYTES = CHUNK * 512;
const MARK = 'merge-start';

export interface MergeCrashDisks {
  rec: string;
  log: string;
  /** Where a crash image is written for the kernel to resume the merge. */
  crash: string;
}

/** The snapshot's view in `image` (origin + COW): the view, or what is wrong with the COW. */
export function mergedView(image: Buffer): { view: Buffer; exceptions: number } | { problem: string } {
  const origin = image.subarray(0, ORIGIN);
  const cowImg = image.subarray(ORIGIN, ORIGIN + COW);
  let cow;
  try {
    cow = readCow(cowImg, { chunkSize: sectors(CHUNK), originSectors: sectors(ORIGIN_SECTORS) });
  } catch (e) {
    if (e instanceof CowDamage) return { problem: `the COW is damaged: ${e.message}` };
    throw e;
  }
  if (cow.state !== 'valid') return { problem: `the COW is ${cow.state}` };
  const view = Buffer.from(origin);
  for (const e of cow.exceptions) cowImg.copy(view, Number(e.oldChunk) * CHUNK_BYTES, Number(e.newChunk) * CHUNK_BYTES, Number(e.newChunk) * CHUNK_BYTES + CHUNK_BYTES);
  return { view, exceptions: cow.exceptions.length };
}

/** The chunks where `got` differs from `want` (at most `limit`), described. */
export function chunkDiff(got: Buffer, want: Buffer, limit = 4): string[] {
  const out: string[] = [];
  for (let c = 0; c * CHUNK_BYTES < want.length && out.length < limit; c++) {
    const a = got.subarray(c * CHUNK_BYTES, (c + 1) * CHUNK_BYTES);
    const b = want.subarray(c * CHUNK_BYTES, (c + 1) * CHUNK_BYTES);
    if (!a.equals(b)) out.push(`chunk ${c} holds seed ${a.readUInt32LE(4)} (want ${b.readUInt32LE(4)})`);
  }
  return out;
}

async function waitMerged(dm: DeviceMapper, name: string, timeoutMs: number): Promise<string | null> {
  const until = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < until) {
    last = (await dm.status({ name }))[0]!.status.trim();
    const m = /^(\d+)\/(\d+) (\d+)/.exec(last);
    if (!m) return `merge status "${last}"`;
    if (m[1] === m[3]) return null;
    await new Promise((r) => setTimeout(r, 50));
  }
  return `the merge did not finish in ${timeoutMs / 1000} s (status "${last}")`;
}

/** Resumes the merge on `image` in the kernel; returns the problems found. */
async function resumeInKernel(dm: DeviceMapper, family: SnapshotFamily, image: Buffer, want: Buffer, crash: string): Promise<string[]> {
  writeDirect(crash, 0n, image);
  const devs = new Devices(dm);
  try {
    const origin = await devs.create('lab-mc-origin', 'linear', ORIGIN_SECTORS, `${crash} 0`);
    const cow = await devs.create('lab-mc-cow', 'linear', COW / 512, `${crash} ${ORIGIN_SECTORS}`);
    await devs.create('lab-mc', SNAPSHOT_TYPES[family].merge, ORIGIN_SECTORS, `${origin} ${cow} P ${CHUNK}`);
    const stuck = await waitMerged(dm, 'lab-mc', 60_000);
    if (stuck) return [stuck];
    const through = readDirect(dm.devicePath('lab-mc'), 0n, BigInt(ORIGIN), BigInt(MiB));
    await devs.teardown();
    const problems = chunkDiff(through, want).map((d) => `after the resumed merge, through the merge device: ${d}`);
    const after = readDirect(crash, 0n, BigInt(ORIGIN + COW), BigInt(MiB));
    problems.push(...chunkDiff(after.subarray(0, ORIGIN), want).map((d) => `after the resumed merge, the origin: ${d}`));
    const left = mergedView(after);
    if ('problem' in left) problems.push(`after the resumed merge: ${left.problem}`);
    else if (left.exceptions) problems.push(`after the resumed merge the COW still holds ${left.exceptions} exception(s)`);
    return problems;
  } finally {
    await devs.teardown();
  }
}

export async function snapshotMergeCrashWorkload(ctx: LabContext, dm: DeviceMapper, type: string, disks: MergeCrashDisks, seed: number, plan: CrashPlan): Promise<CrashCounts> {
  const started = Date.now();
  const family: SnapshotFamily = type === 'dmkit-snapshot' ? 'dmkit' : 'in-tree';
  const counts: CrashCounts = { states: 0, kernel: 0, known: 0, backups: 0 };
  const { total, baseSeed, base } = prepareRecording(disks, seed, 1);
  const ops = workload(seed, plan.ops || 18, 1);
  const devs = new Devices(dm);
  let logBuf: Buffer;
  let want: Buffer;
  let merged = 0n;
  try {
    const lw = await devs.create('lab-mlw', 'log-writes', total / 512, `${disks.rec} ${disks.log}`);
    const origin = await devs.create('lab-morigin', 'linear', ORIGIN_SECTORS, `${lw} 0`);
    const cow = await devs.create('lab-mcow0', 'linear', COW / 512, `${lw} ${ORIGIN_SECTORS}`);
    const vol = await devs.create('lab-mvol', 'linear', ORIGIN_SECTORS, `${origin} 0`);
    try {
      await createSnapshot(dm, { origin: 'lab-mvol', name: 'lab-mvol-s0', cow, chunkSize: sectors(CHUNK), store: 'P', family });
      const snap = dm.devicePath('lab-mvol-s0');
      for (const op of ops) writeDirect(op.on < 0 ? vol : snap, BigInt(op.start * 512), patternBuffer(op.seed, sectors(BigInt(op.start)), op.length), { fsync: op.fsync });
      for (const path of [vol, snap]) {
        const fd = fs.openSync(path, 'r+');
        try {
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
      }
      want = readDirect(snap, 0n, BigInt(ORIGIN), BigInt(MiB));
      await dm.message({ name: 'lab-mlw' }, undefined, `mark ${MARK}`);
      merged = (await mergeSnapshot(dm, { name: 'lab-mvol-s0', pollIntervalMs: 50, timeoutMs: 300_000 })).merged;
    } finally {
      await dropSnapshots(dm, ['lab-mvol-s0'], 'lab-mvol');
    }
    logBuf = await endRecording(dm, devs, ['lab-mvol', 'lab-mcow0', 'lab-morigin'], 'lab-mlw', disks.log);
  } finally {
    await devs.teardown();
  }
  const recorded = Date.now();
  const log = logIndex(logBuf);
  const markAt = log.entries.find((e) => e.mark === MARK)?.index;
  if (markAt === undefined) throw new Error(`the log has no ${MARK} mark`);
  // The points whose state may hold a merge write: from the last one before the mark on.
  const all = crashPoints(log, 'durability');
  const first = Math.max(0, all.findIndex((p) => p.point > markAt) - 1);
  const points = all.slice(first);
  const rand = prng(caseSeed(seed, 'crash-merge-states', 0));
  const seen = new Set<string>();
  const perPoint = new Map<number, number>();
  const pointBudget = Math.max(1, Math.floor(plan.maxStates / Math.max(1, points.length)));
  for (const state of enumerateStates(log, points, { exhaustiveUpTo: plan.exhaustiveUpTo, randomSubsets: plan.randomSubsets, tornPerPoint: plan.tornPerPoint, rng: rand })) {
    const used = perPoint.get(state.point) ?? 0;
    if (used >= pointBudget) continue;
    perPoint.set(state.point, used + 1);
    counts.states += 1;
    const { digest, image } = await replayImage({ log: logBuf, index: log, base, length: total, apply: state.apply, ...(state.torn ? { torn: state.torn } : {}) });
    if (seen.has(digest)) continue;
    seen.add(digest);
    const got = mergedView(image!);
    let problems = 'problem' in got ? [got.problem] : chunkDiff(got.view, want!).map((d) => `the snapshot's view: ${d}`);
    if (!problems.length && counts.kernel < plan.kernelPerWorkload && seen.size % 3 === 1) {
      counts.kernel += 1;
      problems = await resumeInKernel(dm, family, image!, want!, disks.crash);
    }
    if (problems.length) {
      ctx.fail({
        component: 'crash',
        target: type,
        seed,
        detail: `merge, state ${state.label}: ${problems.join('; ')}`,
        log: `workload: ${JSON.stringify(ops)}\nlog entries: ${log.entries.length}, merge mark at entry ${markAt}, crash points: ${points.length}\nreplay: the .lwlog artifact is the recorded log; the base image is the origin stamped with seed ${baseSeed}, zeros after`,
        artifacts: { lwlog: logBuf },
      });
      break;
    }
  }
  ctx.log(`${type} merge workload ${seed}: ${ops.length} ops, ${merged} sectors merged, ${log.entries.length} log entries, ${points.length} crash points in the merge, ${counts.states} states (${seen.size} distinct images, ${counts.kernel} resumed in the kernel); record ${((recorded - started) / 1000).toFixed(0)} s, states ${((Date.now() - recorded) / 1000).toFixed(0)} s`);
  return counts;
}
