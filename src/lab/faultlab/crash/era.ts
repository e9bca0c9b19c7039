/**
 * Crash states of era (in-tree `era` and `dmkit-era`).
 *
 * Record. One ramdisk holds the metadata [0, META) and the origin [META, META+DATA); it sits under
 * dm-log-writes, and two linear devices cut it into the era's metadata and origin devices. One log thus
 * orders every metadata and data write, as on a disk partitioned in two with one volatile write cache.
 * A seeded workload (block writes, fsyncs, checkpoints, metadata snapshots, suspend/resume) runs on era,
 * with a log mark before each step.
 *
 * Crash states. The log is replayed natively (logwrites.ts) at every FLUSH/FUA point, with every subset
 * (or many random subsets) of the writes still pending there and torn 4 KiB writes (states.ts).
 *
 * Contract, checked on every state in user space (pdata/reader.ts, our own checker of era's format):
 *  - the metadata is either unformatted (then no origin block was ever written) or a valid era
 *    superblock whose writesets, writeset tree and era array all validate;
 *  - era reports every block whose data reached the origin (a write is issued only after the bit for its
 *    block was committed, so no crash may show data era does not know about: the 2021 lost-writes bug).
 * A sample of distinct images is also recovered in the kernel: era is loaded on the image, the origin
 * read through it must equal the image, and after removal era_check passes and the contract still holds.
 *
 * Backups across the crash. At half of the states recovered in the kernel (and at the last one), an
 * incremental backup (src/workflows/backup.ts: metadata snapshot, changed blocks, copy engine) of the
 * recovered device since the era current before the workload's first write must hold every block whose
 * data reached the origin, with the origin's bytes, and every piece it holds must equal the origin's
 * bytes at its place. A snapshot the crash left held is dropped first, as an operator would
 * (`dmkit era metadata-snap NAME drop`).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceMapper } from '../../../dm';
import { era as eraTarget } from '../../../targets';
import { backup, EraChangedError, readBackupHeader } from '../../../workflows';
import { patternBuffer, readDirect, runChecker, writeDirect, writeFioIolog, zero } from '../../../testing';
import { bytes, sectors } from '../../../units';
import { eraWrittenBlocks, MetadataDamage, MetadataImage, readEraMetadata, unformatted } from '../../../pdata/reader';
import { LOG_FLAG, logIndex, replayImage } from '../logwrites';
import { crashPoints, enumerateStates } from '../states';
import { caseSeed, LabContext, prng } from '../types';
import { CrashPlan, Devices, MiB, nonZeroBlocks } from './rig';

const META = 2 * MiB;
const DATA = 2 * MiB;
const BLOCK = 4096; // era block: 8 sectors
export const LOG_BYTES = 48 * MiB;

export interface EraDisks {
  /** The recorded disk (metadata + origin), the log, and the disk crash images are written to. */
  rec: string;
  log: string;
  crash: string;
}

export interface CrashCounts {
  states: number;
  kernel: number;
  /** States showing a documented weakness of the in-tree target (not failures). */
  known: number;
  /** Recovered states where an incremental backup was taken and checked against the image. */
  backups: number;
}

/**
 * The in-tree era formats fresh metadata with one dm_tm_commit and no dm_tm_pre_commit before it, so the
 * superblock goes out in the same unordered batch as the blocks it points at: a crash during the very
 * first activation can leave a superblock over unwritten blocks (no data at risk: none was written yet,
 * but the device no longer opens). dmkit-era pre-commits first, and must never show this.
 */
const INTREE_FORMAT_NOT_ATOMIC = 'in-tree era: a crash while formatting leaves a superblock over unwritten blocks';

type Op = { kind: 'write'; blocks: number[]; fsync: boolean; concurrent: boolean } | { kind: 'checkpoint' } | { kind: 'snap' } | { kind: 'drop' } | { kind: 'cycle' };

function workload(seed: number, ops: number, nrBlocks: number): Op[] {
  const rand = prng(seed);
  const out: Op[] = [];
  let snap = false;
  for (let i = 0; i < ops; i++) {
    const r = rand();
    if (r < 0.6) {
      // Half the writes go one after the other, half at once (several in flight, so that dmkit-era
      // batches them and lets those arriving during a commit join it).
      const concurrent = rand() < 0.5;
      const n = concurrent ? 4 + Math.floor(rand() * 9) : 1 + Math.floor(rand() * 5);
      const blocks = new Set<number>();
      // Mostly fresh blocks (each needs a commit first), sometimes one already marked in this era.
      while (blocks.size < n) blocks.add(Math.floor(rand() * nrBlocks));
      out.push({ kind: 'write', blocks: [...blocks], fsync: rand() < 0.4, concurrent });
    } else if (r < 0.75) out.push({ kind: 'checkpoint' });
    else if (r < 0.85) {
      out.push(snap ? { kind: 'drop' } : { kind: 'snap' });
      snap = !snap;
    } else out.push({ kind: 'cycle' });
  }
  return out;
}

/**
 * Writes one era block at each of `blocks` with up to 16 writes in flight (fio, libaio, O_DIRECT; fio's
 * data is random, so never all zeroes), and flushes at the end when `fsync` is set.
 */
function writeAtOnce(dev: string, blocks: readonly number[], fsync: boolean): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-lab-era-'));
  try {
    const log = path.join(dir, 'writes.log');
    writeFioIolog(log, dev, blocks.map((b) => b * BLOCK), BLOCK);
    // Paced (one write every 0.25 ms), so that writes also arrive while a commit is under way.
    execFileSync('fio', ['--name=burst', `--read_iolog=${log}`, '--replay_no_stall=1', '--ioengine=libaio', '--iodepth=16', '--direct=1', '--rate_iops=4000',
      ...(fsync ? ['--end_fsync=1'] : [])], { stdio: ['ignore', 'ignore', 'pipe'] });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The contract on one crash image, in user space; returns what is wrong (empty when it holds). */
export function eraOracle(image: Buffer): string[] {
  const meta = image.subarray(0, META);
  const data = image.subarray(META, META + DATA);
  const changed = nonZeroBlocks(data, BLOCK);
  if (unformatted(new MetadataImage(meta))) {
    return changed.length ? [`metadata never committed, yet origin blocks ${changed.slice(0, 6).join(',')} hold data`] : [];
  }
  let md;
  try {
    md = readEraMetadata(meta);
  } catch (e) {
    if (e instanceof MetadataDamage) return [`metadata damaged: ${e.message}`];
    throw e;
  }
  // Fewer blocks is legitimate before the first resize commit (formatted with 0, resized in preresume);
  // a write to a block past nr_blocks shows up below as a block era does not report.
  if (md.nrBlocks > DATA / BLOCK) return [`superblock says ${md.nrBlocks} blocks, the origin has ${DATA / BLOCK}`];
  const written = eraWrittenBlocks(md);
  const lost = changed.filter((b) => !written.has(b));
  return lost.length ? [`era does not report ${lost.length} written block(s): ${lost.slice(0, 8).join(',')} (era ${md.currentEra})`] : [];
}

/**
 * Takes an incremental backup of the recovered era device `name` since `sinceEra` and checks it against
 * the crash image's origin `data`: every block holding data is in a piece, and every piece holds the
 * origin's bytes at its place. Returns what is wrong.
 */
async function checkBackupAcrossCrash(dm: DeviceMapper, name: string, sinceEra: number, data: Buffer): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-lab-backup-'));
  const file = path.join(dir, 'inc.img');
  try {
    const take = () => backup(dm, { name }, { since: sinceEra, to: file });
    try {
      await take();
    } catch (e) {
      if (!(e instanceof EraChangedError && e.code === 'ERR_ERA_SNAPSHOT_HELD')) throw e;
      await dm.message({ name }, undefined, 'drop_metadata_snap'); // the crash left a snapshot held
      await take();
    }
    const h = readBackupHeader(file);
    if (h.sinceEra !== sinceEra || h.full) return [`backup: header says since era ${h.sinceEra} (full ${h.full}), asked for ${sinceEra}`];
    const img = fs.readFileSync(file);
    const problems: string[] = [];
    const covered = new Uint8Array(DATA / BLOCK);
    for (const [i, p] of h.pieces.entries()) {
      const at = Number(p.deviceOffset), n = Number(p.length);
      if (!img.subarray(Number(p.imageOffset), Number(p.imageOffset) + n).equals(data.subarray(at, at + n))) {
        problems.push(`backup: piece ${i} (origin bytes ${at}..${at + n}) differs from the origin`);
        break;
      }
      for (let b = Math.ceil(at / BLOCK); (b + 1) * BLOCK <= at + n; b++) covered[b] = 1;
    }
    const missed = nonZeroBlocks(data, BLOCK).filter((b) => !covered[b]);
    if (missed.length) problems.push(`backup since era ${sinceEra} misses ${missed.length} block(s) whose data reached the origin: ${missed.slice(0, 8).join(',')}`);
    return problems;
  } catch (e) {
    return [`backup since era ${sinceEra} failed: ${(e as Error).message}`];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Loads `type` on a crash image written to disks.crash; checks read-back, era_check and the contract after removal. */
async function recoverInKernel(devs: Devices, type: string, disks: EraDisks, image: Buffer, backupSince: number | null): Promise<string[]> {
  const problems: string[] = [];
  const meta = await devs.create('lab-crash-meta', 'linear', META / 512, `${disks.crash} 0`);
  const origin = await devs.create('lab-crash-origin', 'linear', DATA / 512, `${disks.crash} ${META / 512}`);
  try {
    const era = await devs.create('lab-crash-era', type, DATA / 512, `${meta} ${origin} 8`);
    const got = readDirect(era, 0n, BigInt(DATA), BigInt(MiB));
    if (!got.equals(image.subarray(META, META + DATA))) problems.push('the origin read through era differs from the crash image');
    if (backupSince !== null) problems.push(...(await checkBackupAcrossCrash(devs.dm, 'lab-crash-era', backupSince, image.subarray(META, META + DATA))));
    await devs.remove('lab-crash-era');
  } catch (e) {
    problems.push(`${type} refused a crash image the user-space checker accepts: ${(e as Error).message}`);
  }
  const after = readDirect(meta, 0n, BigInt(META), BigInt(MiB));
  if (!unformatted(new MetadataImage(after))) {
    const check = runChecker('era_check', meta);
    if (!check.ok) problems.push(`after recovery: era_check exited ${check.status}: ${check.output.split('\n').slice(0, 4).join(' | ')}`);
    const again = Buffer.concat([after, image.subarray(META, META + DATA)]);
    problems.push(...eraOracle(again).map((p) => `after recovery: ${p}`));
  }
  await devs.remove('lab-crash-origin');
  await devs.remove('lab-crash-meta');
  return problems;
}

/** One recorded workload on `type` and all its crash states. */
export async function eraCrashWorkload(ctx: LabContext, dm: DeviceMapper, type: string, disks: EraDisks, seed: number, plan: CrashPlan): Promise<CrashCounts> {
  const started = Date.now();
  const devs = new Devices(dm);
  const counts: CrashCounts = { states: 0, kernel: 0, known: 0, backups: 0 };
  let firstEra = 1; // the era current before the workload's first write
  zero(disks.rec, bytes(BigInt(META + DATA)));
  zero(disks.log, bytes(BigInt(MiB)));
  const ops = workload(seed, plan.ops, DATA / BLOCK);
  let logBuf: Buffer;
  try {
    const lw = await devs.create('lab-lw', 'log-writes', (META + DATA) / 512, `${disks.rec} ${disks.log}`);
    const meta = await devs.create('lab-meta', 'linear', META / 512, `${lw} 0`);
    const origin = await devs.create('lab-origin', 'linear', DATA / 512, `${lw} ${META / 512}`);
    const era = await devs.create('lab-era', type, DATA / 512, `${meta} ${origin} 8`);
    const st0 = eraTarget.parseStatus((await dm.status({ name: 'lab-era' }))[0]!.status);
    if ('currentEra' in st0) firstEra = Number(st0.currentEra);
    for (const [i, op] of ops.entries()) {
      await dm.message({ name: 'lab-lw' }, undefined, `mark op-${i}-${op.kind}`);
      switch (op.kind) {
        case 'write': {
          const stamp = (b: number): Buffer =>
            patternBuffer((seed ^ (i << 8) ^ b) >>> 0 || 1, sectors(BigInt((META + b * BLOCK) / 512)), BLOCK / 512);
          if (op.concurrent) writeAtOnce(era, op.blocks, op.fsync);
          else for (const b of op.blocks) writeDirect(era, BigInt(b * BLOCK), stamp(b), { fsync: op.fsync });
          break;
        }
        case 'checkpoint':
          await dm.message({ name: 'lab-era' }, undefined, 'checkpoint');
          break;
        case 'snap':
          await dm.message({ name: 'lab-era' }, undefined, 'take_metadata_snap');
          break;
        case 'drop':
          await dm.message({ name: 'lab-era' }, undefined, 'drop_metadata_snap');
          break;
        case 'cycle':
          await dm.suspend({ name: 'lab-era' });
          await dm.resume({ name: 'lab-era' });
          break;
      }
    }
    await devs.remove('lab-era');
    await devs.remove('lab-origin');
    await devs.remove('lab-meta');
    const st = (await dm.status({ name: 'lab-lw' }))[0]!.status.trim().split(/\s+/);
    await devs.remove('lab-lw'); // writes the end mark and the entry count
    const highest = Number(st[1] ?? 0) * 512 + 2 * MiB;
    logBuf = readDirect(disks.log, 0n, BigInt(Math.min(LOG_BYTES, Math.ceil(highest / MiB) * MiB)), BigInt(MiB));
  } finally {
    await devs.teardown();
  }

  const recorded = Date.now();
  const log = logIndex(logBuf);
  const points = crashPoints(log, 'durability');
  const rand = prng(caseSeed(seed, 'crash-states', 0));
  const seen = new Set<string>();
  const perPoint = new Map<number, number>();
  const pointBudget = Math.max(1, Math.floor(plan.maxStates / Math.max(1, points.length)));
  // The format's writes all precede the log's first FLUSH (see INTREE_FORMAT_NOT_ATOMIC).
  const firstFlush = log.entries.findIndex((e) => (e.flags & LOG_FLAG.FLUSH) !== 0);
  for (const state of enumerateStates(log, points, { exhaustiveUpTo: plan.exhaustiveUpTo, randomSubsets: plan.randomSubsets, tornPerPoint: plan.tornPerPoint, rng: rand })) {
    // Every crash point gets its prefix state (the first it yields); the rest share the budget evenly.
    const used = perPoint.get(state.point) ?? 0;
    if (used >= pointBudget) continue;
    perPoint.set(state.point, used + 1);
    counts.states += 1;
    if (process.env['DMKIT_LAB_MEMLOG'] && counts.states % 50 === 0) {
      const m = process.memoryUsage();
      ctx.log(`mem at state ${counts.states} (kernel ${counts.kernel}): rss ${(m.rss / 2 ** 20).toFixed(0)} heap ${(m.heapUsed / 2 ** 20).toFixed(0)} external ${(m.external / 2 ** 20).toFixed(0)} arrayBuffers ${(m.arrayBuffers / 2 ** 20).toFixed(0)} MiB`);
    }
    const replayPlan = { log: logBuf, index: log, base: null, length: META + DATA, apply: state.apply, ...(state.torn ? { torn: state.torn } : {}) };
    const { digest, image } = await replayImage(replayPlan); // one pass: the image and its digest
    if (seen.has(digest)) continue; // an image already judged: the verdict depends on the image alone
    seen.add(digest);
    let problems = eraOracle(image!);
    if (problems.length && type === 'era' && /^metadata damaged/.test(problems[0]!) && state.point < firstFlush) {
      if (!counts.known) ctx.log(`known upstream weakness at ${state.label}: ${INTREE_FORMAT_NOT_ATOMIC} (${problems[0]})`);
      counts.known += 1;
      continue;
    }
    if (!problems.length && counts.kernel < plan.kernelPerWorkload && (seen.size % 3 === 1 || state.kind === 'prefix')) {
      await replayImage({ ...replayPlan, out: disks.crash });
      counts.kernel += 1;
      // A backup at every other recovered state, and at the last one the budget allows.
      const withBackup = counts.kernel % 2 === 1 || counts.kernel === plan.kernelPerWorkload;
      problems = await recoverInKernel(devs, type, disks, image!, withBackup ? firstEra : null).finally(() => devs.teardown());
      if (withBackup) counts.backups += 1;
    }
    if (problems.length) {
      ctx.fail({
        component: 'crash',
        target: type,
        seed,
        detail: `state ${state.label}: ${problems.join('; ')}`,
        log: `workload: ${JSON.stringify(ops)}\nlog entries: ${log.entries.length}, crash points: ${points.length}\nreplay: the .lwlog artifact is the recorded dm-log-writes log (base image: zeros, ${META + DATA} bytes)`,
        artifacts: { lwlog: logBuf },
      });
      break; // one report per workload is enough to replay it
    }
  }
  ctx.log(`${type} workload ${seed}: ${ops.length} ops, ${log.entries.length} log entries, ${points.length} crash points, ${counts.states} states (${seen.size} distinct images, ${counts.kernel} recovered in the kernel, ${counts.backups} backups checked); record ${((recorded - started) / 1000).toFixed(0)} s, states ${((Date.now() - recorded) / 1000).toFixed(0)} s`);
  return counts;
}
