/**
 * The ioerr lab for the snapshot family (dmkit-snapshot; the in-tree snapshot at release scale).
 *
 * Contract: one origin volume with two persistent snapshots, A and B. A's COW device sits behind the counting
 * injector (dmkit-core, the whole device), B's COW on plain linear. A seeded workload of stamped writes (to
 * the origin, which copies chunks into both COWs and commits their exception areas, and to each snapshot)
 * runs once unarmed to count A's COW writes W and flushes F, then once per injection point: the n-th write
 * (n = 1..W) or flush (n = 1..F) to A's COW and every later one fails with EIO. The workload ends with an
 * origin write to chunks nobody copied yet, so every tripped case has an exception commit after the fault.
 * Then:
 *   - every origin write succeeded and the origin reads as its model (a failing snapshot never fails or
 *     changes its origin);
 *   - B is valid and reads as its model (one snapshot's COW errors leave the others alone);
 *   - A: tripped, it reports Invalid; not tripped, it is valid and reads as its model;
 *   - with the COW healthy again, A's COW activates refused, Invalid, or (when even the invalidating
 *     header write failed) as a well-formed store (src/pdata/snapshot-cow.ts finds no damage); the
 *     origin is still intact.
 * A case seed is the point: bits 31..28 = 4 (dmkit-snapshot) or 5 (snapshot), bit 26 = flushes, 23..0 = n.
 */
import { spawnSync } from 'node:child_process';
import { DeviceMapper, DmError } from '../../../dm';
import { readCow } from '../../../pdata/snapshot-cow';
import { linear } from '../../../targets';
import { DataModel, patternBuffer, prng, readDirect, stampDirect, writeDirectAsync } from '../../../testing';
import { sectors } from '../../../units';
import { createSnapshot, removeSnapshot, type SnapshotFamily } from '../../../workflows';
import type { LabContext } from '../types';
import type { FaultKind } from './injector';
import { removeIfThere, zeroDevice, type MetaRig } from './rig';

export const SNAP_IOERR_TARGETS = ['dmkit-snapshot', 'snapshot'] as const;
export type SnapIoerrTarget = (typeof SNAP_IOERR_TARGETS)[number];

const MiB = 1n << 20n;
const VOL = sectors((4n * MiB) / 512n);
const CHUNK = sectors(8);
const B_COW = sectors((2n * MiB) / 512n);
const N_MAX = (1 << 24) - 1;
const NAMES = { vol: 'ioerr-svol', a: 'ioerr-svol-a', b: 'ioerr-svol-b', bcow: 'ioerr-sbcow', again: 'ioerr-svol-again' };

export interface SnapPoint {
  target: SnapIoerrTarget;
  kind: FaultKind;
  n: number;
}

export function snapPointSeed(p: SnapPoint): number {
  return (((SNAP_IOERR_TARGETS.indexOf(p.target) + 4) << 28) | ((p.kind === 'flushes' ? 1 : 0) << 26) | p.n) >>> 0;
}

export function snapPointFromSeed(seed: number): SnapPoint | null {
  const target = SNAP_IOERR_TARGETS[(seed >>> 28) - 4];
  const n = seed & N_MAX;
  if (!target || n < 1) return null;
  return { target, kind: (seed >>> 26) & 1 ? 'flushes' : 'writes', n };
}

type Op = { on: 'origin' | 'a' | 'b'; start: bigint; length: bigint; seed: number };

/** The seeded workload: origin writes and snapshot writes in the first 3 MiB, then one origin write in the untouched last MiB. */
export function snapWorkload(seed: number, ops: number): Op[] {
  const rand = prng(seed);
  const out: Op[] = [];
  const room = Number(VOL) - 2048;
  for (let i = 0; i < ops; i++) {
    const r = rand();
    const on = r < 0.7 ? 'origin' : r < 0.85 ? 'a' : 'b';
    const length = BigInt(8 * (1 + Math.floor(rand() * 3)));
    const start = BigInt(Math.floor(rand() * (room - Number(length))));
    out.push({ on, start, length, seed: (seed % 100000) + 100 + i });
  }
  out.push({ on: 'origin', start: BigInt(room + 16), length: 64n, seed: (seed % 100000) + 99 });
  return out;
}

interface Rig {
  dm: DeviceMapper;
  meta: MetaRig;
  origin: string;
  bBacking: string;
}

interface CaseResult {
  writes: number;
  flushes: number;
  tripped: boolean;
  problems: string[];
  log: string[];
}

function diff(path: string, model: DataModel): string | undefined {
  let got: Buffer;
  try {
    got = readDirect(path, 0n, VOL * 512n, MiB);
  } catch (e) {
    return `read failed: ${(e as Error).message}`;
  }
  const want = model.expected(0n, Number(VOL));
  const cb = Number(CHUNK) * 512;
  for (let at = 0; at < want.length; at += cb) if (!got.subarray(at, at + cb).equals(want.subarray(at, at + cb))) return `chunk ${at / cb} differs`;
  return undefined;
}

async function statusOf(dm: DeviceMapper, name: string): Promise<string> {
  const [st] = await dm.status({ name });
  return st?.status ?? '';
}

async function cleanup(dm: DeviceMapper): Promise<void> {
  for (const n of [NAMES.again, NAMES.a, NAMES.b]) {
    if (spawnSync('dmsetup', ['info', n]).status === 0) await removeSnapshot(dm, n).catch(() => removeIfThere(dm, n));
  }
  for (const n of [NAMES.vol, `${NAMES.vol}-real`, NAMES.bcow]) await removeIfThere(dm, n);
}

async function runCase(rig: Rig, family: SnapshotFamily, ops: readonly Op[], point?: SnapPoint): Promise<CaseResult> {
  const { dm, meta } = rig;
  const problems: string[] = [];
  const log: string[] = [];
  await cleanup(dm);
  await meta.build('whole');
  zeroDevice(rig.bBacking, 64 * 1024);
  const origin = new DataModel(VOL, 4242);
  stampDirect(rig.origin, undefined, 0n, VOL, origin.baseSeed, { bs: MiB });
  await dm.create(NAMES.vol, { targets: [linear.line({ device: rig.origin, offset: sectors(0) }, { start: sectors(0), length: VOL, type: 'linear' })] });
  await dm.create(NAMES.bcow, { targets: [linear.line({ device: rig.bBacking, offset: sectors(0) }, { start: sectors(0), length: B_COW, type: 'linear' })] });
  await createSnapshot(dm, { origin: NAMES.vol, name: NAMES.a, cow: meta.path, chunkSize: CHUNK, store: 'P', family });
  await createSnapshot(dm, { origin: NAMES.vol, name: NAMES.b, cow: dm.devicePath(NAMES.bcow), chunkSize: CHUNK, store: 'P', family });
  const models = { origin, a: origin.clone(), b: origin.clone() };
  const paths = { origin: dm.devicePath(NAMES.vol), a: dm.devicePath(NAMES.a), b: dm.devicePath(NAMES.b) };
  const base = await meta.status();
  if (point) await meta.arm(point.kind, point.n - 1, 'error');
  let tripped = false;
  for (const [i, op] of ops.entries()) {
    let error: string | undefined;
    try {
      await writeDirectAsync(paths[op.on], op.start * 512n, patternBuffer(op.seed, sectors(op.start), Number(op.length)));
    } catch (e) {
      error = (e as Error).message;
    }
    const nowTripped = (await meta.status()).fault === 'tripped';
    if (nowTripped && !tripped) log.push(`injector tripped during op ${i} (${op.on} write)`);
    tripped = nowTripped;
    if (error === undefined) models[op.on].write(op.start, op.length, op.seed);
    else if (op.on === 'a' && tripped) log.push(`op ${i}: the write to A failed after the fault: ${error}`);
    else problems.push(`op ${i}: the ${op.on === 'origin' ? 'origin' : `snapshot ${op.on.toUpperCase()}`} write failed: ${error}`);
  }
  const end = await meta.status();
  const aStatus = await statusOf(dm, NAMES.a);
  const bStatus = await statusOf(dm, NAMES.b);
  log.push(`A: ${aStatus}; B: ${bStatus}`);
  const d0 = diff(paths.origin, models.origin);
  if (d0) problems.push(`the origin differs from its model: ${d0}`);
  if (bStatus.startsWith('Invalid')) problems.push(`snapshot B (healthy COW) reports ${bStatus}`);
  else {
    const d = diff(paths.b, models.b);
    if (d) problems.push(`snapshot B differs from its model: ${d}`);
  }
  if (tripped) {
    if (!aStatus.startsWith('Invalid')) problems.push(`snapshot A reports '${aStatus}' after its COW failed, want Invalid`);
  } else {
    if (aStatus.startsWith('Invalid')) problems.push(`snapshot A reports Invalid with no fault`);
    else {
      const d = diff(paths.a, models.a);
      if (d) problems.push(`snapshot A differs from its model: ${d}`);
    }
  }
  await removeSnapshot(dm, NAMES.a);
  await removeSnapshot(dm, NAMES.b);
  await meta.disarm();
  await meta.healthy();
  // Reactivation of A's COW, healthy again.
  try {
    await createSnapshot(dm, { origin: NAMES.vol, name: NAMES.again, cow: meta.path, chunkSize: CHUNK, store: 'P', family });
    const st = await statusOf(dm, NAMES.again);
    log.push(`A reactivated: ${st}`);
    await removeSnapshot(dm, NAMES.again);
    if (!st.startsWith('Invalid')) {
      try {
        readCow(readDirect(meta.path, 0n, 4n * MiB, MiB), { chunkSize: CHUNK, originSectors: VOL });
      } catch (e) {
        problems.push(`A's COW loads valid after the fault but is damaged: ${(e as Error).message}`);
      }
      if (!tripped) {
        /* no fault: the store must be the one the workload left (valid) */
      }
    } else if (!tripped) problems.push('A\'s COW reactivates Invalid with no fault');
  } catch (e) {
    if (!(e instanceof DmError)) throw e;
    log.push(`A reactivation refused: ${e.code}`);
    if (!tripped) problems.push(`A's COW is refused with no fault: ${e.message}`);
  }
  const d1 = diff(paths.origin, models.origin);
  if (d1) problems.push(`the origin differs from its model after A's reactivation: ${d1}`);
  await cleanup(dm);
  return { writes: end.writes - base.writes, flushes: end.flushes - base.flushes, tripped, problems, log };
}

/** The points a scale runs: all of them at release, an even spread of `ciPoints` at CI. */
function pointsOf(count: number, scale: 'ci' | 'release', ciPoints: number): number[] {
  if (scale === 'release' || count <= ciPoints) return Array.from({ length: count }, (_, i) => i + 1);
  const out = new Set<number>();
  for (let i = 0; i < ciPoints; i++) out.add(1 + Math.round((i * (count - 1)) / (ciPoints - 1)));
  return [...out];
}

export async function runSnapshotIoerr(ctx: LabContext, rig: Rig, target: SnapIoerrTarget, base: number, only?: SnapPoint): Promise<number> {
  const family: SnapshotFamily = target === 'dmkit-snapshot' ? 'dmkit' : 'in-tree';
  const ops = snapWorkload(base, ctx.scale === 'ci' ? 12 : 24);
  const report = (p: SnapPoint, r: CaseResult): void => {
    if (!r.problems.length) return;
    ctx.fail({
      component: 'ioerr', target, seed: snapPointSeed(p),
      detail: `${target} EIO at COW ${p.kind === 'writes' ? 'write' : 'flush'} ${p.n}: ${r.problems.join('; ')}`,
      log: [...r.log, 'workload:', ...ops.map((o, i) => `  ${i}: ${o.on} ${o.start}+${o.length} seed ${o.seed}`)].join('\n'),
    });
  };
  try {
    if (only) {
      report(only, await runCase(rig, family, ops, only));
      return 1;
    }
    const ref = await runCase(rig, family, ops);
    ctx.log(`${target}: reference workload of ${ops.length} writes: ${ref.writes} COW writes, ${ref.flushes} flushes`);
    if (ref.problems.length) {
      ctx.fail({ component: 'ioerr', target, seed: 0, detail: `${target} reference run (no fault): ${ref.problems.join('; ')}`, log: ref.log.join('\n') });
      return 0;
    }
    let points = 0;
    for (const kind of ['writes', 'flushes'] as const) {
      const count = kind === 'writes' ? ref.writes : ref.flushes;
      const started = Date.now();
      let failed = 0;
      const ns = pointsOf(count, ctx.scale, 5);
      for (const n of ns) {
        const p = { target, kind, n };
        const r = await runCase(rig, family, ops, p);
        if (r.problems.length) failed++;
        if (!r.tripped) ctx.log(`${target} ${kind} ${n}: the injector did not trip`);
        report(p, r);
        points++;
      }
      ctx.log(`${target} EIO at ${kind} ${ns.length < count ? `${ns.length} of 1..${count}` : `1..${count}`}: ${ns.length - failed}/${ns.length} points hold (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }
    return points;
  } finally {
    await cleanup(rig.dm).catch(() => undefined);
  }
}
