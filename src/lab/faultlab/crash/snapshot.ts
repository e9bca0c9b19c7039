/**
 * Crash states of the snapshot family (dmkit-snapshot and the in-tree snapshot), 1 and 4 persistent snapshots.
 *
 * Record. One ramdisk holds the origin [0, ORIGIN) and one 1 MiB COW per snapshot after it; it sits under
 * dm-log-writes and linear devices cut it into the origin and the COWs, so one log orders every origin
 * write, chunk copy and exception commit. The origin is stamped (base seed) before logging starts; the
 * snapshots are taken with the log running, then a seeded workload of stamped writes (to the origin and to
 * the snapshots, some followed by fsync) runs with a log mark before each op.
 *
 * Crash states: every FLUSH/FUA point with subsets of the pending writes and torn 4 KiB writes (states.ts).
 * Contract, checked on every state in user space (src/pdata/snapshot-cow.ts reads each COW):
 *  - every COW is a well-formed persistent store (new only while nothing was written yet; never damaged,
 *    never invalid: nothing overflows here);
 *  - a snapshot never shows bytes written to the origin after it was taken: every sector of its view (its
 *    exceptions' COW chunks, the origin elsewhere) is the base stamp or a write made to that snapshot;
 *  - the origin holds only the base stamp or origin writes;
 *  - writes acknowledged before a flush survive: an fsync'd write (to the origin or a snapshot) whose
 *    next op's mark is durable shows, or a later write over the same sector does.
 * The merge half (a merge crashed at any point resumes and ends with the origin equal to the snapshot) is
 * crash/snapshot-merge.ts.
 *
 * A limit of dm-log-writes with several snapshots: after one origin write, each snapshot's commit worker
 * flushes at once. log-writes hands the completed, unflushed writes (the chunk copies) to the flush that
 * is mapped first, and logs them when that flush completes; a flush mapped a moment later, by another
 * snapshot, can complete and be logged first, followed by its area write, so the log puts the copies
 * after an area that names them although that flush made them durable (CI once saw it: an exception
 * whose COW chunk was zero at the area's FUA point). The log cannot tell that case from a commit
 * without a flush, so with several snapshots every state includes the copies logged before the next
 * FLUSH entry (copies land in fresh chunks that no exception names until committed, so this changes
 * nothing else). The 1-snapshot workload, whose flushes never overlap, keeps the strict order: a copy
 * must be durable before the area naming it (checked: with the area write's PREFLUSH taken out, it fails
 * at its fifth crash state).
 */
import { DeviceMapper } from '../../../dm';
import { CowDamage, readCow } from '../../../pdata/snapshot-cow';
import { patternBuffer, readDirect, STAMP_MAGIC, writeDirect, zero } from '../../../testing';
import { bytes, sectors } from '../../../units';
import { createSnapshot, removeSnapshot, type SnapshotFamily } from '../../../workflows';
import { isDataEntry, LOG_FLAG, logIndex, replayImage, type WriteLog } from '../logwrites';
import { crashPoints, enumerateStates } from '../states';
import { caseSeed, type LabContext, prng } from '../types';
import { type CrashPlan, Devices, MiB } from './rig';
import type { CrashCounts } from './era';

export const ORIGIN = 2 * MiB;
export const COW = MiB;
export const CHUNK = 8; // sectors: 4 KiB
const SECTOR = 512;
export const ORIGIN_SECTORS = ORIGIN / SECTOR;

export interface SnapCrashDisks {
  rec: string;
  log: string;
}

export type Op = { on: number; start: number; length: number; seed: number; fsync: boolean }; // on: -1 origin, k snapshot k

export function workload(seed: number, ops: number, snaps: number): Op[] {
  const rand = prng(seed);
  const out: Op[] = [];
  for (let i = 0; i < ops; i++) {
    const on = rand() < 0.7 ? -1 : Math.floor(rand() * snaps);
    const length = 8 * (1 + Math.floor(rand() * 4)) - (rand() < 0.3 ? 4 : 0);
    const start = Math.floor(rand() * (ORIGIN_SECTORS - length));
    out.push({ on, start, length, seed: ((seed % 100000) + 100 + i) >>> 0, fsync: rand() < 0.4 });
  }
  return out;
}

/** Per device (-1 origin, k snapshot k), per sector: the ops writing it, in order. */
export type Coverage = Map<number, number[][]>;

export function coverage(ops: readonly Op[], snaps: number): Coverage {
  const cov: Coverage = new Map();
  for (let on = -1; on < snaps; on++) cov.set(on, Array.from({ length: ORIGIN_SECTORS }, () => []));
  for (const [i, op] of ops.entries()) for (let s = op.start; s < op.start + op.length; s++) cov.get(op.on)![s]!.push(i);
  return cov;
}

/** The contract on one crash image; `durableOps` = ops whose following mark is durable. */
export function oracle(image: Buffer, ops: readonly Op[], cov: Coverage, snaps: number, baseSeed: number, durableOps: number): string[] {
  const problems: string[] = [];
  const check = (view: Buffer, on: number, what: string): void => {
    const perSector = cov.get(on)!;
    for (let s = 0; s < ORIGIN_SECTORS && problems.length < 4; s++) {
      const at = s * SECTOR;
      if (view.readUInt32LE(at) !== STAMP_MAGIC || view.readUInt32LE(at + 8) !== s || view.readUInt32LE(at + 12) !== 0) {
        problems.push(`${what} sector ${s} holds no stamp of its own sector (${view.readUInt32LE(at) === STAMP_MAGIC ? `sector ${view.readBigUInt64LE(at + 8)}` : 'zero/garbage'})`);
        return;
      }
      const seed = view.readUInt32LE(at + 4);
      const writers = perSector[s]!;
      if (!writers.length) {
        if (seed !== baseSeed) {
          problems.push(`${what} sector ${s} shows seed ${seed}: ${on >= 0 && ops.some((o) => o.on === -1 && o.seed === seed) ? 'a write made to the origin after the snapshot was taken' : 'never written there'}`);
          return;
        }
        continue;
      }
      let shown = seed === baseSeed ? -1 : -2; // the op whose seed shows (-1 base, -2 none)
      let mustFrom = -1; // the last durable fsync'd op covering s
      for (const i of writers) {
        if (ops[i]!.seed === seed) shown = i;
        if (ops[i]!.fsync && i < durableOps) mustFrom = i;
      }
      if (shown === -2) {
        problems.push(`${what} sector ${s} shows seed ${seed}: ${on >= 0 && ops.some((o) => o.on === -1 && o.seed === seed) ? 'a write made to the origin after the snapshot was taken' : 'never written there'}`);
        return;
      }
      if (mustFrom >= 0 && shown < mustFrom) problems.push(`${what} sector ${s} lost op ${mustFrom}'s fsync'd write (shows seed ${seed})`);
    }
  };
  const origin = image.subarray(0, ORIGIN);
  check(origin, -1, 'origin');
  for (let k = 0; k < snaps && problems.length === 0; k++) {
    const cowImg = image.subarray(ORIGIN + k * COW, ORIGIN + (k + 1) * COW);
    let cow;
    try {
      cow = readCow(cowImg, { chunkSize: sectors(CHUNK), originSectors: sectors(ORIGIN_SECTORS) });
    } catch (e) {
      if (e instanceof CowDamage) {
        problems.push(`snapshot ${k}'s COW is damaged: ${e.message}`);
        continue;
      }
      throw e;
    }
    if (cow.state === 'invalid') {
      problems.push(`snapshot ${k}'s COW says invalid`);
      continue;
    }
    const view = Buffer.from(origin);
    const cb = CHUNK * SECTOR;
    for (const e of cow.exceptions) cowImg.copy(view, Number(e.oldChunk) * cb, Number(e.newChunk) * cb, Number(e.newChunk) * cb + cb);
    check(view, k, `snapshot ${k} (${cow.state}, ${cow.exceptions.length} exceptions)`);
  }
  return problems;
}

/**
 * Per crash point (with several snapshots): the chunk copies logged after it and before the next FLUSH
 * entry. A copy is the first write to a COW data chunk (chunks 0 and 1 are the header and area 0; a
 * snapshot's own writes reach a chunk only after its copy was committed).
 */
export function copiesAfter(log: WriteLog, snaps: number): Map<number, number[]> {
  const copies: number[] = [];
  const seen = new Set<number>();
  const chunksPerCow = COW / (CHUNK * SECTOR);
  for (const e of log.entries) {
    if (!isDataEntry(e) || e.flags & LOG_FLAG.DISCARD) continue;
    const off = e.sector * SECTOR - ORIGIN;
    if (off < 0 || off >= snaps * COW) continue;
    const chunk = Math.floor(off / (CHUNK * SECTOR)); // over all COWs
    if (chunk % chunksPerCow < 2 || seen.has(chunk)) continue;
    seen.add(chunk);
    copies.push(e.index);
  }
  const out = new Map<number, number[]>();
  for (let p = -1, c = 0; p < log.entries.length; p++) {
    if (p >= 0 && !(log.entries[p]!.flags & (LOG_FLAG.FLUSH | LOG_FLAG.FUA))) continue;
    let next = p + 1;
    while (next < log.entries.length && !(log.entries[next]!.flags & LOG_FLAG.FLUSH)) next++;
    while (c < copies.length && copies[c]! <= p) c++;
    const mine: number[] = [];
    for (let j = c; j < copies.length && copies[j]! < next; j++) mine.push(copies[j]!);
    out.set(p, mine);
  }
  return out;
}

/** Zeroes the recording disks and stamps the origin: the image every crash state starts from. */
export function prepareRecording(disks: SnapCrashDisks, seed: number, snaps: number): { total: number; baseSeed: number; base: Buffer } {
  const total = ORIGIN + snaps * COW;
  const baseSeed = (seed % 100000) + 7;
  zero(disks.rec, bytes(BigInt(total)));
  zero(disks.log, bytes(BigInt(MiB)));
  writeDirect(disks.rec, 0n, patternBuffer(baseSeed, sectors(0n), ORIGIN_SECTORS));
  return { total, baseSeed, base: readDirect(disks.rec, 0n, BigInt(total), BigInt(MiB)) };
}

/** Removes the snapshots (newest first) and the `-real` device their origin left. */
export async function dropSnapshots(dm: DeviceMapper, names: readonly string[], vol: string): Promise<void> {
  for (const n of [...names].reverse()) await removeSnapshot(dm, n).catch(() => undefined);
  await dm.remove({ name: `${vol}-real` }, { retry: true }).catch(() => undefined);
}

/** Removes the recording devices (`upper`, in order, then the log-writes device) and returns the log. */
export async function endRecording(dm: DeviceMapper, devs: Devices, upper: readonly string[], lw: string, logDisk: string): Promise<Buffer> {
  for (const name of upper) await devs.remove(name);
  const st = (await dm.status({ name: lw }))[0]!.status.trim().split(/\s+/);
  await devs.remove(lw);
  const highest = Number(st[1] ?? 0) * 512 + 2 * MiB;
  return readDirect(logDisk, 0n, BigInt(Math.min(48 * MiB, Math.ceil(highest / MiB) * MiB)), BigInt(MiB));
}

export async function snapshotCrashWorkload(ctx: LabContext, dm: DeviceMapper, type: string, disks: SnapCrashDisks, seed: number, snaps: number, plan: CrashPlan): Promise<CrashCounts> {
  const started = Date.now();
  const family: SnapshotFamily = type === 'dmkit-snapshot' ? 'dmkit' : 'in-tree';
  const counts: CrashCounts = { states: 0, kernel: 0, known: 0, backups: 0 };
  const { total, baseSeed, base } = prepareRecording(disks, seed, snaps);
  const ops = workload(seed, plan.ops || 18, snaps);
  const devs = new Devices(dm);
  let logBuf: Buffer;
  const names = Array.from({ length: snaps }, (_, k) => `lab-svol-s${k}`);
  try {
    const lw = await devs.create('lab-slw', 'log-writes', total / SECTOR, `${disks.rec} ${disks.log}`);
    const origin = await devs.create('lab-sorigin', 'linear', ORIGIN_SECTORS, `${lw} 0`);
    const cows: string[] = [];
    for (let k = 0; k < snaps; k++) cows.push(await devs.create(`lab-scow${k}`, 'linear', COW / SECTOR, `${lw} ${(ORIGIN + k * COW) / SECTOR}`));
    const vol = await devs.create('lab-svol', 'linear', ORIGIN_SECTORS, `${origin} 0`);
    try {
      for (let k = 0; k < snaps; k++) await createSnapshot(dm, { origin: 'lab-svol', name: names[k], cow: cows[k]!, chunkSize: sectors(CHUNK), store: 'P', family });
      for (const [i, op] of ops.entries()) {
        await dm.message({ name: 'lab-slw' }, undefined, `mark op-${i}`);
        const path = op.on < 0 ? vol : dm.devicePath(names[op.on]!);
        writeDirect(path, BigInt(op.start * SECTOR), patternBuffer(op.seed, sectors(BigInt(op.start)), op.length), { fsync: op.fsync });
      }
      await dm.message({ name: 'lab-slw' }, undefined, `mark op-${ops.length}`);
    } finally {
      await dropSnapshots(dm, names, 'lab-svol');
    }
    logBuf = await endRecording(dm, devs, ['lab-svol', ...Array.from({ length: snaps }, (_, k) => `lab-scow${snaps - 1 - k}`), 'lab-sorigin'], 'lab-slw', disks.log);
  } finally {
    await devs.teardown();
  }
  const recorded = Date.now();
  const log = logIndex(logBuf);
  // Mark op-i's entry index: ops before i were acknowledged (and fsync'd ones flushed) before it.
  const markAt = new Map<number, number>();
  for (const e of log.entries) {
    const m = e.mark?.match(/^op-(\d+)$/);
    if (m) markAt.set(Number(m[1]), e.index);
  }
  const points = crashPoints(log, 'durability');
  const cov = coverage(ops, snaps);
  const rand = prng(caseSeed(seed, 'crash-states', 0));
  const seen = new Set<string>();
  const perPoint = new Map<number, number>();
  const early = snaps > 1 ? copiesAfter(log, snaps) : new Map<number, number[]>();
  const pointBudget = Math.max(1, Math.floor(plan.maxStates / Math.max(1, points.length)));
  for (const state of enumerateStates(log, points, { exhaustiveUpTo: plan.exhaustiveUpTo, randomSubsets: plan.randomSubsets, tornPerPoint: plan.tornPerPoint, rng: rand })) {
    const used = perPoint.get(state.point) ?? 0;
    if (used >= pointBudget) continue;
    const copies = early.get(state.point) ?? [];
    if (state.torn && copies.includes(state.torn.entry)) continue; // a copy counts as durable here
    perPoint.set(state.point, used + 1);
    counts.states += 1;
    const apply = copies.length ? Uint32Array.from(new Set([...state.apply, ...copies])).sort() : state.apply;
    const { digest, image } = await replayImage({ log: logBuf, index: log, base, length: total, apply, ...(state.torn ? { torn: state.torn } : {}) });
    if (seen.has(digest)) continue;
    seen.add(digest);
    // Ops [0, durable) are done: the mark after each is inside the durable prefix.
    let durable = 0;
    while (durable < ops.length && (markAt.get(durable + 1) ?? Infinity) <= state.point) durable++;
    const problems = oracle(image!, ops, cov, snaps, baseSeed, durable);
    if (problems.length) {
      ctx.fail({
        component: 'crash',
        target: type,
        seed,
        detail: `${snaps} snapshot(s), state ${state.label}${copies.length ? ` (+ copies {${copies.join(',')}})` : ''}: ${problems.join('; ')}`,
        log: `workload: ${JSON.stringify(ops)}\nlog entries: ${log.entries.length}, crash points: ${points.length}\nreplay: the .lwlog artifact is the recorded log; the base image is the origin stamped with seed ${baseSeed}, zeros after`,
        artifacts: { lwlog: logBuf },
      });
      break;
    }
  }
  ctx.log(`${type} ${snaps} snapshot(s) workload ${seed}: ${ops.length} ops, ${log.entries.length} log entries, ${points.length} crash points, ${counts.states} states (${seen.size} distinct images); record ${((recorded - started) / 1000).toFixed(0)} s, states ${((Date.now() - recorded) / 1000).toFixed(0)} s`);
  return counts;
}
