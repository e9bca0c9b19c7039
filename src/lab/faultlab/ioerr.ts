/**
 * Lab component 'ioerr': IO errors at the crucial time (reliability goal G7, the a9d45396 property).
 *
 * For each target (dmkit-era, era, dmkit-clone) the metadata device is a dm table with the counting
 * injector (dmkit-core `fault` messages) in it. A seeded reference workload runs once unarmed to count
 * its metadata writes W and flushes F; then, rebuilt from scratch each time, it runs once per injection
 * point: the n-th write (n = 1..W) or flush (n = 1..F) and everything after it fails (error) or
 * silently vanishes (drop; see FAMILIES in ioerr/injector.ts for which families run and why).
 *
 * While the workload runs, the op during which the injector tripped splits it: ops before it completed
 * with every metadata write intact and must be durable; it and the ops after may or may not be. After
 * teardown the metadata device is made healthy and the target reopened: the checker must pass and the
 * state must lie between those two bounds (era: every block's era; clone: every region committed as
 * hydrated still hydrated, every hydrated region holding source or written data; data acknowledged
 * before the last successful commit reads back exactly).
 *
 * Teardown after an error: dmkit-era and dmkit-clone have a fail/read-only mode, so they are torn down
 * live (the superblock stays writable: a later commit must not publish the failed transaction) after
 * checking that they report the failure. The in-tree era has none: a later commit with nothing left to
 * write can publish the failed transaction (kernel-facts §3 item 10; the 'live' todo in
 * test/vm/era-tm-commit.test.ts), so its workload stops at the trip and every metadata write fails while
 * it is removed ('quiet'), which tests what it does promise: a failed commit leaves the previous one.
 *
 * A case seed is the injection point itself (ioerr/injector.ts pointSeed); the workload derives from the
 * base seed, so `--seed <base> --case <seed>` replays one point.
 */
import { DeviceMapper } from '../../dm';
import { spawnSync } from 'node:child_process';
import { patternBuffer, ramdisks, Scope } from '../../testing';
import { bytes, sectors } from '../../units';
import { caseSeed, type Component, type Counters, type LabContext } from './types';
import { CloneDriver, cloneWorkload, REGION_SECTORS, type CloneOp } from './ioerr/clone';
import type { Driver } from './ioerr/driver';
import { EraDriver, eraWorkload, type EraOp } from './ioerr/era';
import { CacheDriver, cacheWorkload, type CacheOp } from './ioerr/cache';
import { describePoint, FAMILIES, IOERR_TARGETS, type IoerrTarget, type Layout, MetaRig, pointFromSeed, pointSeed, type Point } from './ioerr/index';
import { removeIfThere, zeroDevice } from './ioerr/rig';
import { runSnapshotIoerr, SNAP_IOERR_TARGETS, snapPointFromSeed } from './ioerr/snapshot';
import * as fs from 'node:fs';

const MiB = 1 << 20;
const DATA_MIB = 4;
const META_MIB = 4;

interface Sizing {
  eraRounds: number;
  eraPerRound: number;
  cloneRounds: number;
  clonePartials: number;
  cacheRounds: number;
}

const SIZING: Record<'ci' | 'release', Sizing> = {
  ci: { eraRounds: 1, eraPerRound: 6, cloneRounds: 2, clonePartials: 3, cacheRounds: 1 }, // one era round: CI's 60-minute budget
  release: { eraRounds: 8, eraPerRound: 12, cloneRounds: 8, clonePartials: 5, cacheRounds: 8 },
};

interface Rigs {
  dm: DeviceMapper;
  meta: MetaRig;
  origin: string;
  cloneSource: string;
  cloneDest: string;
  zeroSource: string;
}

type AnyDriver = Driver<EraOp> | Driver<CloneOp> | Driver<CacheOp>;

interface Target {
  driver: AnyDriver;
  ops: readonly unknown[];
  /** Per-case preparation beyond the metadata device (the clone's destination is zeroed). */
  prepare(): void;
}

async function registered(dm: DeviceMapper, type: string): Promise<boolean> {
  if (type === 'era') spawnSync('modprobe', ['dm-era']);
  return dm.hasTarget(type);
}

function targetFor(ctx: LabContext, rigs: Rigs, type: IoerrTarget): Target {
  const sz = SIZING[ctx.scale];
  const seed = caseSeed(ctx.seed, 'ioerr', IOERR_TARGETS.indexOf(type));
  const dataSectors = DATA_MIB * 2048;
  if (type === 'dmkit-clone') {
    const driver = new CloneDriver(rigs.dm, rigs.meta, rigs.cloneDest, rigs.cloneSource, rigs.zeroSource, dataSectors, SOURCE_SEED);
    return { driver, ops: cloneWorkload(seed, dataSectors / REGION_SECTORS, sz.cloneRounds, sz.clonePartials), prepare: () => zeroDevice(rigs.cloneDest, DATA_MIB * MiB) };
  }
  if (type === 'dmkit-cache') {
    // The clone's destination disk is free while the cache runs: its first 512 KiB are the cache device.
    const driver = new CacheDriver(rigs.dm, rigs.meta, rigs.origin, rigs.cloneDest, dataSectors, (seed ^ 0xcac4e) >>> 0);
    return { driver, ops: cacheWorkload(seed, sz.cacheRounds, sz.cacheRounds > 1 ? 4 : 6), prepare: () => driver.prepare() };
  }
  const driver = new EraDriver(rigs.dm, type, rigs.meta, rigs.origin, dataSectors);
  return { driver, ops: eraWorkload(seed, driver.nrBlocks, sz.eraRounds, sz.eraPerRound), prepare: () => undefined };
}

const SOURCE_SEED = 0x5eed;

interface CaseResult {
  writes: number;
  flushes: number;
  problems: string[];
  log: string[];
}

/** Runs the workload once on a fresh metadata device, with the fault armed when `point` is given. */
async function runCase(rigs: Rigs, t: Target, layout: Layout, point?: Point): Promise<CaseResult> {
  const d = t.driver as Driver<unknown>;
  const log: string[] = [];
  const problems: string[] = [];
  await d.remove();
  await rigs.meta.build(layout);
  t.prepare();
  await d.create();
  const base = await rigs.meta.status();
  if (point) await rigs.meta.arm(point.kind, point.n - 1, point.mode);

  let committed = t.ops.length;
  let attempted = 0;
  let tripped = false;
  let reported = false;
  const errorMode = point?.mode === 'error';
  for (let i = 0; i < t.ops.length; i++) {
    if (tripped && errorMode && !d.hasFailMode) break; // the in-tree era: stop at the failure
    const r = await d.run(t.ops[i]);
    attempted = i + 1;
    if (!r.ok) {
      log.push(`op ${i} ${JSON.stringify(t.ops[i]).slice(0, 80)} failed: ${r.error}`);
      if (tripped || (await rigs.meta.status()).fault === 'tripped') reported = true;
      else problems.push(`op ${i} failed with no fault injected: ${r.error}`);
    }
    if (!tripped && (await rigs.meta.status()).fault === 'tripped') {
      tripped = true;
      committed = i;
      log.push(`injector tripped during op ${i} (${(t.ops[i] as { kind: string }).kind})`);
    }
  }
  if (tripped && errorMode && d.hasFailMode) {
    const why = await d.probeFailMode();
    if (why) problems.push(why);
    else reported = true;
    if (!reported) problems.push('the target reported no error after its metadata write failed');
  }
  if (tripped && errorMode && !d.hasFailMode) await rigs.meta.quiet();
  await d.remove();
  let writes = 0;
  let flushes = 0;
  if (!(tripped && errorMode && !d.hasFailMode)) {
    const end = await rigs.meta.status();
    writes = end.writes - base.writes;
    flushes = end.flushes - base.flushes;
    if (point && !tripped && end.fault === 'tripped') log.push('injector tripped during teardown');
    if (point && end.fault === 'armed') log.push(`the workload did not reach ${point.kind.slice(0, -1)} ${point.n} this time (${writes} writes, ${flushes} flushes)`);
  }
  await rigs.meta.healthy();
  problems.push(...(await d.verify(t.ops, { committed, attempted })));
  return { writes, flushes, problems, log };
}

async function withRigs<T>(fn: (rigs: Rigs) => Promise<T>): Promise<T> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  try {
    const [origin, metaBacking, source, dest] = ramdisks(scope, 4, bytes(BigInt(DATA_MIB * MiB)));
    const fd = fs.openSync(source!.path, 'r+');
    fs.writeSync(fd, patternBuffer(SOURCE_SEED, sectors(0n), DATA_MIB * 2048));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const zeroSource = 'ioerr-zero';
    await removeIfThere(dm, zeroSource);
    await dm.create(zeroSource, { targets: [{ start: sectors(0n), length: sectors(BigInt(DATA_MIB * 2048)), type: 'zero', params: '' }] });
    const meta = new MetaRig(dm, metaBacking!.path, META_MIB * 2048);
    const rigs: Rigs = { dm, meta, origin: origin!.path, cloneSource: source!.path, cloneDest: dest!.path, zeroSource: `/dev/mapper/${zeroSource}` };
    try {
      return await fn(rigs);
    } finally {
      for (const n of ['ioerr-era', 'ioerr-clone', 'ioerr-cache', 'ioerr-cache-fast', meta.name, zeroSource]) await removeIfThere(dm, n).catch(() => undefined);
    }
  } finally {
    await dm.close();
    scope.close();
  }
}

async function runTarget(ctx: LabContext, rigs: Rigs, type: IoerrTarget, only?: Point): Promise<number> {
  const t = targetFor(ctx, rigs, type);
  let points = 0;
  const report = (p: Point, r: CaseResult): void => {
    if (!r.problems.length) return;
    ctx.fail({
      component: 'ioerr', target: type, seed: pointSeed(p),
      detail: `${describePoint(p)}: ${r.problems.join('; ')}`,
      log: [`point: ${JSON.stringify(p)}`, ...r.log, 'workload:', ...t.ops.map((o, i) => `  ${i}: ${JSON.stringify(o)}`)].join('\n'),
    });
  };
  if (only) {
    report(only, await runCase(rigs, t, only.layout, only));
    return 1;
  }
  const refs = new Map<Layout, CaseResult>();
  for (const layout of ['split', 'whole'] as const) {
    if (type === 'dmkit-cache' && layout === 'whole') continue; // only the drop family uses it
    const ref = await runCase(rigs, t, layout);
    refs.set(layout, ref);
    ctx.log(`${type} ${layout}: reference workload of ${t.ops.length} ops: ${ref.writes} metadata writes, ${ref.flushes} flushes`);
    if (ref.problems.length) ctx.fail({ component: 'ioerr', target: type, seed: 0, detail: `${type} ${layout} reference run (no fault): ${ref.problems.join('; ')}`, log: ref.log.join('\n') });
  }
  for (const f of FAMILIES) {
    if (type === 'dmkit-cache' && f.mode === 'drop') continue; // see ioerr/cache.ts
    const ref = refs.get(f.layout)!;
    const count = f.kind === 'writes' ? ref.writes : ref.flushes;
    const started = Date.now();
    let failed = 0;
    for (let n = 1; n <= count; n++) {
      const p: Point = { target: type, ...f, n };
      const r = await runCase(rigs, t, f.layout, p);
      if (r.problems.length) failed++;
      report(p, r);
      points++;
    }
    ctx.log(`${type} ${f.layout} ${f.mode} at ${f.kind} 1..${count}: ${count - failed}/${count} points hold (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  }
  return points;
}

export const component: Component = {
  name: 'ioerr',
  async run(ctx, only) {
    const snapPoint = only ? snapPointFromSeed(only.seed) : undefined;
    const point = only && !snapPoint ? pointFromSeed(only.seed) : undefined;
    if (only && !point && !snapPoint) throw new Error(`case seed ${only.seed} does not name an ioerr injection point`);
    let points = 0;
    await withRigs(async (rigs) => {
      // The snapshot family (ioerr/snapshot.ts): EIO at A's COW writes and flushes; the in-tree target at release scale.
      for (const type of SNAP_IOERR_TARGETS) {
        if (only && snapPoint?.target !== type) continue;
        if (!only && (!ctx.wants(type) || (type === 'snapshot' && ctx.scale === 'ci'))) continue;
        if (!(await registered(rigs.dm, type))) {
          ctx.log(`${type}: not registered in this kernel, skipped`);
          continue;
        }
        const rig = { dm: rigs.dm, meta: rigs.meta, origin: rigs.origin, bBacking: rigs.cloneDest };
        points += await runSnapshotIoerr(ctx, rig, type, caseSeed(ctx.seed, 'ioerr', 10 + SNAP_IOERR_TARGETS.indexOf(type)), snapPoint ?? undefined);
      }
      for (const type of IOERR_TARGETS) {
        if (snapPoint) continue;
        if (point && point.target !== type) continue;
        if (!point && !ctx.wants(type)) continue;
        if (!(await registered(rigs.dm, type))) {
          ctx.log(`${type}: not registered in this kernel, skipped`);
          continue;
        }
        points += await runTarget(ctx, rigs, type, point ?? undefined);
      }
    });
    const got: Partial<Counters> = { io_error_points: points };
    return got;
  },
};
