/**
 * Crash states of clone (`dmkit-clone`, or the in-tree `clone` where the kernel has it).
 *
 * Record. The destination is a volatile write cache: it sits on dm-log-writes, whose log holds a write
 * only once a later FLUSH covers it. The metadata device is modelled as having no volatile cache: it is a
 * linear device which, at each crash point, is suspended (in-flight metadata IO completes, new IO waits)
 * while a MARK goes into the destination's log and the metadata is copied, then resumed. (One shared log
 * would let the metadata's flushes flush the destination too and hide the ordering bug this is about.)
 * Meanwhile a user writes stamped sub-region and whole-region blocks, some with fsync, and background
 * hydration runs throttled so crash points fall mid-hydration.
 *
 * Crash states. For each mark: the destination as of the mark (native replay), plus every subset (or many
 * random subsets) of the writes logged after the mark up to the next FLUSH, plus torn 4 KiB writes; the
 * metadata is the copy taken at that mark.
 *
 * Contract, on every state in user space: the metadata is unformatted or a valid clone superblock and
 * bitset (pdata/reader.ts); every sector of a region it calls hydrated holds the source's stamp or a stamp
 * the user wrote to that sector — never the destination's pre-existing garbage nor another sector's data.
 * A sample of distinct states is recovered in the kernel: the clone is reopened (no_hydration) on the
 * crash images and every sector read through it must satisfy the same rule.
 */
import { DeviceMapper } from '../../../dm';
import { describeSector, patternBuffer, readDirect, STAMP_MAGIC, writeDirect, writeDirectAsync, zero } from '../../../testing';
import { bytes, sectors } from '../../../units';
import { MetadataDamage, MetadataImage, readCloneMetadata, unformatted } from '../../../pdata/reader';
import { logIndex, replayImage } from '../logwrites';
import { crashPoints, enumerateStates } from '../states';
import { caseSeed, LabContext, prng } from '../types';
import { CrashPlan, Devices, MiB } from './rig';
import type { CrashCounts } from './era';

const REGION = 128; // sectors: 64 KiB
const LENGTH = 8 * MiB; // 128 regions
const META = 2 * MiB;
const SRC_SEED = 1;
const GARBAGE = 0x6a4b; // the destination before logging began
const LOG_BYTES = 48 * MiB;
const MIN_PARTIAL_MARKS = 5;
const RECORD_ATTEMPTS = 3;
/** Hydration throttle during recording, percent: slow enough that 128 regions span many marks. */
const THROTTLE = 1;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface CloneDisks {
  src: string;
  dest: string;
  log: string;
  meta: string;
  crashDest: string;
  crashMeta: string;
}

/** Which seeds may legitimately stand in each sector: the source's and every user write's. */
class Seeds {
  private readonly bySector = new Map<number, Set<number>>();
  add(start: number, length: number, seed: number): void {
    for (let s = start; s < start + length; s++) {
      let set = this.bySector.get(s);
      if (!set) this.bySector.set(s, (set = new Set()));
      set.add(seed);
    }
  }
  allowed(sector: number, seed: number): boolean {
    return seed === SRC_SEED || (this.bySector.get(sector)?.has(seed) ?? false);
  }
}

/** Sectors of hydrated regions that hold bytes never written there (at most `limit`). */
function badHydratedSectors(dest: Buffer, hydrated: (region: number) => boolean, seeds: Seeds, limit = 4): string[] {
  const bad: string[] = [];
  for (let s = 0; s < LENGTH / 512 && bad.length < limit; s++) {
    if (!hydrated(Math.floor(s / REGION))) continue;
    // The stamp header (patterns.ts): magic, seed, sector number. Torn writes are whole sectors, so the
    // header names the write a sector came from.
    const at = s * 512;
    const ok = dest.readUInt32LE(at) === STAMP_MAGIC && dest.readBigUInt64LE(at + 8) === BigInt(s) && seeds.allowed(s, dest.readUInt32LE(at + 4));
    if (!ok) bad.push(`sector ${s} (region ${Math.floor(s / REGION)}): ${describeSector(dest, at)}`);
  }
  return bad;
}

function cloneOracle(meta: Buffer, dest: Buffer, seeds: Seeds): string[] {
  if (unformatted(new MetadataImage(meta))) return [];
  let md;
  try {
    md = readCloneMetadata(meta);
  } catch (e) {
    if (e instanceof MetadataDamage) return [`metadata damaged: ${e.message}`];
    throw e;
  }
  if (md.regionSectors !== REGION || md.targetSectors !== LENGTH / 512) return [`superblock region ${md.regionSectors}/target ${md.targetSectors} do not match the table`];
  const bad = badHydratedSectors(dest, (r) => md.hydrated.has(r), seeds);
  return bad.length ? [`hydrated regions hold bytes never written there: ${bad.join('; ')}`] : [];
}

async function recoverInKernel(devs: Devices, type: string, disks: CloneDisks, seeds: Seeds): Promise<string[]> {
  try {
    const dev = await devs.create('lab-crash-clone', type, LENGTH / 512, `${disks.crashMeta} ${disks.crashDest} ${disks.src} ${REGION} 1 no_hydration`);
    const got = readDirect(dev, 0n, BigInt(LENGTH), BigInt(MiB));
    await devs.remove('lab-crash-clone');
    const bad = badHydratedSectors(got, () => true, seeds);
    return bad.length ? [`reading through the reopened clone: ${bad.join('; ')}`] : [];
  } catch (e) {
    return [`${type} refused crash images the user-space checker accepts: ${(e as Error).message}`];
  }
}

export async function cloneCrashWorkload(ctx: LabContext, dm: DeviceMapper, type: string, disks: CloneDisks, seed: number, plan: CrashPlan, throttle: (percent: number) => void): Promise<CrashCounts> {
  const started = Date.now();
  const devs = new Devices(dm);
  const counts: CrashCounts = { states: 0, kernel: 0, known: 0, backups: 0 };
  const base = patternBuffer(GARBAGE, sectors(0n), LENGTH / 512);
  let seeds = new Seeds();
  let points: Array<{ mark: string; meta: Buffer }> = [];
  let logBuf: Buffer = Buffer.alloc(0);
  let partial = new Set<number>();
  // The workload means something only if hydration was under way across the crash window: the copies
  // taken at the marks must show several distinct partly hydrated maps. (A faster copy engine once
  // finished before the third mark, and the revert switch went unnoticed.) How many there are depends on
  // the machine's timing (one CI run got 4 of the 5 needed), so a short recording is made again, same
  // seed, up to three times; only the last one counts.
  for (let attempt = 1; attempt <= RECORD_ATTEMPTS; attempt++) {
    const rand = prng(seed);
    writeDirect(disks.src, 0n, patternBuffer(SRC_SEED, sectors(0n), LENGTH / 512));
    writeDirect(disks.dest, 0n, base);
    zero(disks.meta, bytes(4096n));
    zero(disks.log, bytes(BigInt(MiB)));
    seeds = new Seeds();
    points = [];
    try {
      const dest = await devs.create('lab-cl-dest', 'log-writes', LENGTH / 512, `${disks.dest} ${disks.log}`);
      const meta = await devs.create('lab-cl-meta', 'linear', META / 512, `${disks.meta} 0`);
      throttle(THROTTLE);
      const dev = await devs.create('lab-cl', type, LENGTH / 512, `${meta} ${dest} ${disks.src} ${REGION} 0 2 hydration_threshold 1`);
      let writing = true;
      const writer = (async () => {
        for (let i = 0; writing && i < 300; i++) {
          const region = Math.floor(rand() * (LENGTH / 512 / REGION));
          const whole = rand() < 0.2;
          const start = region * REGION + (whole ? 0 : 8 * Math.floor(rand() * (REGION / 8)));
          const len = whole ? REGION : 8;
          const s = (seed ^ (i + 1) * 0x10001) >>> 0 || 2;
          seeds.add(start, len, s); // recorded before it is issued: a crash may keep it or not
          await writeDirectAsync(dev, BigInt(start * 512), patternBuffer(s, sectors(BigInt(start)), len), { fsync: rand() < 0.3 });
          await sleep(20);
        }
      })();
      for (let k = 0; k < 40; k++) {
        await sleep(60);
        await dm.suspend({ name: 'lab-cl-meta' }, { noflush: true });
        try {
          const mark = `crash-${k}`;
          await dm.message({ name: 'lab-cl-dest' }, undefined, `mark ${mark}`);
          points.push({ mark, meta: readDirect(disks.meta, 0n, BigInt(META), BigInt(MiB)) });
        } finally {
          await dm.resume({ name: 'lab-cl-meta' });
        }
      }
      writing = false;
      await writer;
      throttle(100);
      await devs.remove('lab-cl');
      await devs.remove('lab-cl-meta');
      const st = (await dm.status({ name: 'lab-cl-dest' }))[0]!.status.trim().split(/\s+/);
      await devs.remove('lab-cl-dest');
      const highest = Number(st[1] ?? 0) * 512 + 2 * MiB;
      logBuf = readDirect(disks.log, 0n, BigInt(Math.min(LOG_BYTES, Math.ceil(highest / MiB) * MiB)), BigInt(MiB));
    } finally {
      throttle(100);
      await devs.teardown();
    }

    partial = new Set<number>();
    for (const p of points) {
      let n = 0;
      try {
        if (!unformatted(new MetadataImage(p.meta))) n = readCloneMetadata(p.meta).hydrated.count();
      } catch (e) {
        if (!(e instanceof MetadataDamage)) throw e; // the oracle below reports it
      }
      if (n > 0 && n < LENGTH / 512 / REGION) partial.add(n);
    }
    if (partial.size >= MIN_PARTIAL_MARKS) break;
    if (attempt < RECORD_ATTEMPTS) ctx.log(`${type} workload ${seed}: ${partial.size} distinct partly hydrated maps (need ${MIN_PARTIAL_MARKS}); recording again`);
  }
  const recorded = Date.now();
  if (partial.size < MIN_PARTIAL_MARKS) {
    ctx.fail({
      component: 'crash',
      target: type,
      seed,
      detail: `hydration was not under way across the crash window: ${partial.size} distinct partly hydrated maps at ${points.length} marks (need ${MIN_PARTIAL_MARKS}); slow it down further`,
    });
  }
  const log = logIndex(logBuf);
  const metaAt = new Map(points.map((p) => [p.mark, p.meta]));
  const markPoints = crashPoints(log, { marks: /^crash-\d+$/ });
  const stateRand = prng(caseSeed(seed, 'crash-states', 1));
  const seen = new Set<string>();
  const perPoint = new Map<number, number>();
  const pointBudget = Math.max(1, Math.floor(plan.maxStates / Math.max(1, markPoints.length)));
  let failed = false;
  for (const state of enumerateStates(log, markPoints, { exhaustiveUpTo: plan.exhaustiveUpTo, randomSubsets: plan.randomSubsets, tornPerPoint: plan.tornPerPoint, rng: stateRand })) {
    const mark = log.entries[state.point]?.mark;
    const meta = mark ? metaAt.get(mark) : undefined;
    if (!meta) continue; // the end-of-log point: no metadata copy was taken there
    // Every crash point gets its prefix state (the first it yields); the rest share the budget evenly.
    const used = perPoint.get(state.point) ?? 0;
    if (used >= pointBudget) continue;
    perPoint.set(state.point, used + 1);
    counts.states += 1;
    if (counts.states % 100 === 0) ctx.log(`${type} workload ${seed}: ${counts.states} states, ${seen.size} distinct, ${counts.kernel} in the kernel, ${((Date.now() - recorded) / 1000).toFixed(0)} s`);
    const replayPlan = { log: logBuf, index: log, base, length: LENGTH, apply: state.apply, ...(state.torn ? { torn: state.torn } : {}) };
    const { digest, image } = await replayImage(replayPlan); // one pass: the image and its digest
    const key = `${mark}:${digest}`;
    if (seen.has(key)) continue; // the same images as a state already judged
    seen.add(key);
    let problems = cloneOracle(meta, image!, seeds);
    if (!problems.length && counts.kernel < plan.kernelPerWorkload && !unformatted(new MetadataImage(meta)) && (seen.size % 4 === 1 || state.kind === 'prefix')) {
      await replayImage({ ...replayPlan, out: disks.crashDest });
      writeDirect(disks.crashMeta, 0n, meta);
      counts.kernel += 1;
      problems = await recoverInKernel(devs, type, disks, seeds).finally(() => devs.teardown());
    }
    if (problems.length) {
      failed = true;
      ctx.fail({
        component: 'crash',
        target: type,
        seed,
        detail: `state ${state.label}: ${problems.join('; ')}`,
        log: `destination log entries: ${log.entries.length}, crash points: ${markPoints.length}\nartifacts: .lwlog = the destination's dm-log-writes log (base: stamp of seed ${GARBAGE}), .meta = the metadata copy at ${mark}`,
        artifacts: { lwlog: logBuf, meta },
      });
      break;
    }
  }
  ctx.log(`${type} workload ${seed}: ${points.length} marks (${partial.size} distinct partly hydrated maps), ${log.entries.length} log entries, ${counts.states} states (${seen.size} distinct, ${counts.kernel} recovered in the kernel)${failed ? ', FAILED' : ''}; record ${((recorded - started) / 1000).toFixed(0)} s, states ${((Date.now() - recorded) / 1000).toFixed(0)} s`);
  return counts;
}
