/**
 * Crash states of cache (`dmkit-cache`, and the in-tree `cache` where the kernel has it), writeback and
 * writethrough, under promotions and demotions.
 *
 * Layout. One ramdisk holds the cache device [0, CACHE) and the origin [CACHE, CACHE+ORIGIN); it sits on
 * dm-log-writes and two linear devices cut it in two, so one log orders every cache and origin write (one
 * disk with a volatile write cache, partitioned in two: a commit's flush of both devices is a FLUSH
 * entry). The metadata device is modelled as having no volatile cache, as in crash/clone.ts: a linear
 * device on a ramdisk of its own which, at each crash mark, is suspended (its in-flight IO completes, new
 * IO waits) while a MARK goes into the data log, the metadata is copied, and a FLUSH is sent to the data
 * log; then it is resumed. While the metadata is frozen no commit can complete, so no cache block can be
 * reused after the copy was taken: the writes logged between the MARK and that FLUSH are ones that had
 * completed by then, against the same metadata. A crash state of mark k is thus the data as of the MARK
 * plus any subset of those writes (or a torn 4 KiB one: states.ts), with the metadata copied at k.
 *
 * Record. The origin is stamped (base seed) and the cache device filled with another seed's stamps
 * (never a right answer) before logging starts. A user, one op at a time, reads a hot set of origin
 * blocks (a window of a few more blocks than the cache holds, moving along the origin, each block read
 * several times, so the policy promotes and evicts), and writes stamped 4 KiB pieces and whole blocks,
 * some followed by an fsync, some FUA. Marks are taken meanwhile from a timer; at each one the ops
 * acknowledged so far, and the last flush among them, are noted.
 *
 * Contract, on every state in user space: the metadata copy is unformatted (and then no mapping
 * exists) or cache_check passes on it, and a superblock naming mappings does not say clean shutdown
 * (the kernel then trusts stale dirty bits); the device's view (cache_dump's mappings: a mapped origin
 * block reads its cache block of the image, others the origin's) shows in every sector a stamp of that
 * sector whose seed is the last write acknowledged before a flush (or FUA) that completed before the mark,
 * or a later write, or the base stamp where no such write exists, never garbage or another sector's
 * data. A sample of states is recovered in the kernel on the crash images: the status's dirty count
 * equals its cached blocks equals the mappings (after an unclean shutdown every cached block is dirty; on
 * the in-tree cache at most: its smq policy writes dirty blocks back as soon as the device is idle),
 * the device reads exactly the view, and after a detach (cleaner until 0 dirty, then linear on the
 * origin: workflows/cache-attach.ts) the origin alone reads the view too; cache_check passes after.
 */
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { DeviceMapper } from '../../../dm';
import { cache as cacheCodec, type CacheInfo, type CacheIoMode } from '../../../targets';
import { alignedBuffer, describeSector, DirectFile, patternBuffer, readDirect, runChecker, STAMP_MAGIC, writeDirect, zero } from '../../../testing';
import { bytes, sectors } from '../../../units';
import { detachCache } from '../../../workflows';
import { MetadataImage, unformatted } from '../../../pdata/reader';
import { imageDigest, logIndex, replayImage } from '../logwrites';
import { crashPoints, enumerateStates } from '../states';
import { caseSeed, type LabContext, prng } from '../types';
import { type CrashPlan, Devices, MiB } from './rig';
import { endRecording } from './snapshot';
import type { CrashCounts } from './era';

const SECTOR = 512;
export const BLOCK_SECTORS = 64; // 32 KiB cache blocks
export const CACHE_BLOCKS = 16;
export const ORIGIN_BLOCKS = 64;
export const CACHE_SECTORS = CACHE_BLOCKS * BLOCK_SECTORS;
export const ORIGIN_SECTORS = ORIGIN_BLOCKS * BLOCK_SECTORS;
const BLOCK_BYTES = BLOCK_SECTORS * SECTOR;
const CACHE_BYTES = CACHE_SECTORS * SECTOR;
const TOTAL = (CACHE_SECTORS + ORIGIN_SECTORS) * SECTOR;
const META = 2 * MiB;
const GARBAGE = 0x6a4c; // the cache device before logging began
const HOT = CACHE_BLOCKS + 4; // the hot window, in origin blocks
const MAX_MARKS = 40;
/** Between two marks, per 400 ops of the workload (so the marks span the recording). */
const MARK_EVERY_MS = 70;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface CacheCrashDisks {
  /** The recorded disk (cache + origin), its log, the metadata, and where crash images are written. */
  rec: string;
  log: string;
  meta: string;
  crash: string;
  crashMeta: string;
}

/** A user op; writes are in origin sectors. */
export type CacheCrashOp =
  | { kind: 'read'; block: number }
  | { kind: 'write'; start: number; length: number; seed: number; sync: 'none' | 'fsync' | 'fua' };

/** The seeded workload: reads of a moving hot window (promotions, evictions) and stamped writes. */
export function cacheCrashOps(seed: number, count: number): CacheCrashOp[] {
  const rand = prng(seed);
  const ops: CacheCrashOp[] = [];
  for (let i = 0; i < count; i++) {
    const window = Math.floor(i / 40) * 7; // the hot set moves every 40 ops
    const hot = (): number => (window + Math.floor(rand() * HOT)) % ORIGIN_BLOCKS;
    const r = rand();
    if (r < 0.5) {
      ops.push({ kind: 'read', block: hot() });
      continue;
    }
    const block = rand() < 0.8 ? hot() : Math.floor(rand() * ORIGIN_BLOCKS);
    const whole = r > 0.88;
    const start = block * BLOCK_SECTORS + (whole ? 0 : 8 * Math.floor(rand() * (BLOCK_SECTORS / 8)));
    const s = rand();
    ops.push({ kind: 'write', start, length: whole ? BLOCK_SECTORS : 8, seed: ((seed % 100000) + 1000 + i) >>> 0, sync: s < 0.2 ? 'fsync' : s < 0.35 && !whole ? 'fua' : 'none' });
  }
  return ops;
}

/** What the user had been told at a mark: ops [0, done) acknowledged; writes up to `flushed` made durable by a flush. */
export interface AckState {
  done: number;
  /** Index of the last fsync'd op acknowledged before the mark (-1: none). */
  flushed: number;
  /** Ops issued before the mark's FLUSH completed (any of them may show). */
  issued: number;
}

/** Per sector of the origin: the ops writing it, in order. */
export function writersBySector(ops: readonly CacheCrashOp[]): number[][] {
  const by: number[][] = Array.from({ length: ORIGIN_SECTORS }, () => []);
  ops.forEach((op, i) => {
    if (op.kind === 'write') for (let s = op.start; s < op.start + op.length; s++) by[s]!.push(i);
  });
  return by;
}

/** Whether op i's write was durable at a mark with state `ack`. */
function durable(op: CacheCrashOp, i: number, ack: AckState): boolean {
  return op.kind === 'write' && (i <= ack.flushed || (op.sync === 'fua' && i < ack.done));
}

/**
 * Checks a view of the origin against what the user was told at the mark: every sector holds the stamp
 * of the last durable write to it (or the base stamp where there is none) or of a later write issued
 * before the mark's flush. Returns at most `limit` problems, one per block.
 */
export function checkView(view: Buffer, ops: readonly CacheCrashOp[], writers: readonly number[][], ack: AckState, baseSeed: number, limit = 4): string[] {
  const bad: string[] = [];
  for (let s = 0; s < ORIGIN_SECTORS && bad.length < limit; s++) {
    const at = s * SECTOR;
    const seed = view.readUInt32LE(at + 4);
    const ok = view.readUInt32LE(at) === STAMP_MAGIC && view.readBigUInt64LE(at + 8) === BigInt(s);
    let must = -1;
    const list = writers[s]!;
    for (const i of list) if (i < ack.issued && durable(ops[i]!, i, ack)) must = i;
    let allowed = ok && seed === (must < 0 ? baseSeed : (ops[must] as { seed: number }).seed);
    for (const i of list) if (!allowed && ok && i > must && i < ack.issued && (ops[i] as { seed: number }).seed === seed) allowed = true;
    if (allowed) continue;
    const want = must < 0 ? `base seed ${baseSeed}` : `op ${must}'s seed ${(ops[must] as { seed: number }).seed} (acknowledged before a flush)`;
    bad.push(`sector ${s} (block ${Math.floor(s / BLOCK_SECTORS)}): ${describeSector(view, at)}, want ${want}${list.some((i) => i > must && i < ack.issued) ? ' or a later write' : ''}`);
    s = (Math.floor(s / BLOCK_SECTORS) + 1) * BLOCK_SECTORS - 1;
  }
  return bad;
}

export interface CacheDump {
  blockSectors: number;
  cacheBlocks: number;
  policy: string;
  /** origin block -> cache block */
  mappings: Map<number, { cblock: number; dirty: boolean }>;
}

/** Parses cache_dump's XML: the superblock's geometry and every mapping. */
export function parseCacheDump(xml: string): CacheDump {
  const sb = /<superblock\b([^>]*)>/.exec(xml);
  if (!sb) throw new Error(`cache_dump printed no superblock: ${xml.slice(0, 200)}`);
  const attr = (name: string): string => {
    const m = new RegExp(`\\b${name}="([^"]*)"`).exec(sb[1]!);
    if (!m) throw new Error(`cache_dump's superblock has no ${name}`);
    return m[1]!;
  };
  const mappings = new Map<number, { cblock: number; dirty: boolean }>();
  for (const m of xml.matchAll(/<mapping\s+cache_block="(\d+)"\s+origin_block="(\d+)"\s+dirty="(true|false)"\s*\/>/g)) {
    const oblock = Number(m[2]);
    if (mappings.has(oblock)) throw new Error(`cache_dump maps origin block ${oblock} twice`);
    mappings.set(oblock, { cblock: Number(m[1]), dirty: m[3] === 'true' });
  }
  return { blockSectors: Number(attr('block_size')), cacheBlocks: Number(attr('nr_cache_blocks')), policy: attr('policy'), mappings };
}

/** What a read through the cache returns for an image [cache | origin]: mapped blocks from the cache. */
export function readThroughView(image: Buffer, mappings: CacheDump['mappings']): Buffer {
  const view = Buffer.from(image.subarray(CACHE_BYTES, CACHE_BYTES + ORIGIN_SECTORS * SECTOR));
  for (const [oblock, { cblock }] of mappings) image.copy(view, oblock * BLOCK_BYTES, cblock * BLOCK_BYTES, (cblock + 1) * BLOCK_BYTES);
  return view;
}

/** The superblock's clean-shutdown flag (flags word after the checksum). */
function cleanShutdown(meta: Buffer): boolean {
  return (meta.readUInt32LE(4) & 1) !== 0;
}

/** cache_check and cache_dump on one metadata copy, written to `scratch` (the tools open it O_DIRECT): its mappings, or what is wrong. */
function judgeMetadata(meta: Buffer, scratch: string): { dump: CacheDump } | { problem: string } {
  if (unformatted(new MetadataImage(meta))) return { dump: { blockSectors: BLOCK_SECTORS, cacheBlocks: CACHE_BLOCKS, policy: '', mappings: new Map() } };
  writeDirect(scratch, 0n, meta);
  const check = runChecker('cache_check', scratch);
  if (!check.ok) return { problem: `cache_check exited ${check.status}: ${check.output.split('\n').slice(0, 4).join(' | ')}` };
  const r = spawnSync('cache_dump', [scratch], { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.status !== 0) return { problem: `cache_dump exited ${r.status}: ${(r.stderr ?? '').slice(0, 300)}` };
  const dump = parseCacheDump(r.stdout);
  if (dump.blockSectors !== BLOCK_SECTORS || dump.cacheBlocks !== CACHE_BLOCKS) return { problem: `superblock: block size ${dump.blockSectors}, ${dump.cacheBlocks} cache blocks; the table says ${BLOCK_SECTORS}, ${CACHE_BLOCKS}` };
  for (const [o, { cblock }] of dump.mappings) if (o >= ORIGIN_BLOCKS || cblock >= CACHE_BLOCKS) return { problem: `mapping origin block ${o} -> cache block ${cblock} is out of range` };
  if (dump.mappings.size && cleanShutdown(meta)) return { problem: `the superblock says clean shutdown while ${dump.mappings.size} blocks are cached: their stale dirty bits would be trusted` };
  return { dump };
}

function cacheParams(type: string, mode: CacheIoMode, metadata2: boolean, meta: string, fast: string, origin: string): string {
  return `${meta} ${fast} ${origin} ${BLOCK_SECTORS} ${metadata2 ? 2 : 1} ${mode}${metadata2 ? ' metadata2' : ''} ${type === 'cache' ? 'smq' : 'dmkit-lru'} 0`;
}

function firstDifference(got: Buffer, want: Buffer): string {
  for (let at = 0; at < want.length; at += SECTOR) {
    if (!got.subarray(at, at + SECTOR).equals(want.subarray(at, at + SECTOR))) return `sector ${at / SECTOR} (block ${Math.floor(at / BLOCK_BYTES)}): ${describeSector(got, at)}, the view has ${describeSector(want, at)}`;
  }
  return 'no difference';
}

async function cacheInfo(dm: DeviceMapper, name: string): Promise<CacheInfo> {
  const text = (await dm.status({ name }))[0]?.status ?? '';
  const st = cacheCodec.parseStatus(text);
  if ('fail' in st || 'error' in st) throw new Error(`${name} reports '${text.trim()}'`);
  return st as CacheInfo;
}

/** Loads `type` on the crash images (disks.crash, disks.crashMeta); checks status, read-back and detach. */
async function recoverInKernel(devs: Devices, type: string, mode: CacheIoMode, metadata2: boolean, disks: CacheCrashDisks, dump: CacheDump, view: Buffer): Promise<string[]> {
  const problems: string[] = [];
  const fast = await devs.create('lab-crash-cfast', 'linear', CACHE_SECTORS, `${disks.crash} 0`);
  const origin = await devs.create('lab-crash-corigin', 'linear', ORIGIN_SECTORS, `${disks.crash} ${CACHE_SECTORS}`);
  try {
    const dev = await devs.create('lab-crash-cache', type, ORIGIN_SECTORS, cacheParams(type, mode, metadata2, disks.crashMeta, fast, origin));
    const st = await cacheInfo(devs.dm, 'lab-crash-cache');
    if (st.cacheUsed !== BigInt(dump.mappings.size)) problems.push(`status: ${st.cacheUsed} cache blocks used, the metadata maps ${dump.mappings.size}`);
    // smq (in-tree) writes dirty blocks back as soon as the device is idle, so its count may already have dropped.
    if (type === 'cache' ? st.dirty > st.cacheUsed : st.dirty !== st.cacheUsed) problems.push(`status after the crash: ${st.dirty} dirty of ${st.cacheUsed} cached blocks (every cached block must count as dirty)`);
    const got = readDirect(dev, 0n, BigInt(ORIGIN_SECTORS * SECTOR), BigInt(BLOCK_BYTES));
    if (!got.equals(view)) problems.push(`read through the recovered cache differs from the view: ${firstDifference(got, view)}`);
    await detachCache(devs.dm, { name: 'lab-crash-cache', pollIntervalMs: 50, timeoutMs: 60_000 });
    const after = readDirect(origin, 0n, BigInt(ORIGIN_SECTORS * SECTOR), BigInt(BLOCK_BYTES));
    if (!after.equals(view)) problems.push(`after detach the origin differs from the view: ${firstDifference(after, view)}`);
  } catch (e) {
    problems.push(`${type} on crash images the user-space checker accepts: ${(e as Error).message}`);
  }
  await devs.teardown();
  const check = runChecker('cache_check', disks.crashMeta);
  if (!check.ok) problems.push(`after recovery and detach: cache_check exited ${check.status}: ${check.output.split('\n').slice(0, 4).join(' | ')}`);
  return problems;
}

interface Recording {
  logBuf: Buffer;
  marks: Array<{ mark: string; meta: Buffer; ack: AckState }>;
  last: CacheInfo;
}

/** Runs the workload on `type` over the log, taking a metadata copy and a FLUSH at each crash mark. */
async function record(dm: DeviceMapper, devs: Devices, type: string, mode: CacheIoMode, metadata2: boolean, disks: CacheCrashDisks, ops: readonly CacheCrashOp[]): Promise<Recording> {
  const markEvery = (MARK_EVERY_MS * ops.length) / 400;
  const marks: Recording['marks'] = [];
  let last: CacheInfo;
  const lw = await devs.create('lab-ca-lw', 'log-writes', TOTAL / SECTOR, `${disks.rec} ${disks.log}`);
  const fast = await devs.create('lab-ca-fast', 'linear', CACHE_SECTORS, `${lw} 0`);
  const origin = await devs.create('lab-ca-origin', 'linear', ORIGIN_SECTORS, `${lw} ${CACHE_SECTORS}`);
  const meta = await devs.create('lab-ca-meta', 'linear', META / SECTOR, `${disks.meta} 0`);
  const dev = await devs.create('lab-ca', type, ORIGIN_SECTORS, cacheParams(type, mode, metadata2, meta, fast, origin));
  const file = await DirectFile.open(dev);
  const lwFile = await fs.promises.open(lw, fs.constants.O_RDONLY);
  const buf = alignedBuffer(BLOCK_BYTES);
  let done = 0;
  let flushed = -1;
  let writing = true;
  try {
    const writer = (async () => {
      for (const [i, op] of ops.entries()) {
        if (!writing) break;
        if (op.kind === 'read') {
          for (let k = 0; k < 3; k++) await file.read(op.block * BLOCK_BYTES, buf);
        } else {
          const data = buf.subarray(0, op.length * SECTOR);
          patternBuffer(op.seed, sectors(BigInt(op.start)), op.length).copy(data);
          await file.write(op.start * SECTOR, data, op.sync === 'fsync' ? 'flush' : op.sync === 'fua' ? 'fua' : 'direct');
          if (op.sync === 'fsync') flushed = i;
        }
        done = i + 1;
        await sleep(4);
      }
      writing = false;
    })();
    for (let k = 0; writing && k < MAX_MARKS; k++) {
      await sleep(markEvery);
      const ack = { done, flushed, issued: 0 };
      await dm.suspend({ name: 'lab-ca-meta' }, { noflush: true });
      try {
        const mark = `crash-${k}`;
        await dm.message({ name: 'lab-ca-lw' }, undefined, `mark ${mark}`);
        const copy = readDirect(disks.meta, 0n, BigInt(META), BigInt(MiB));
        await lwFile.datasync(); // ends the mark's pending writes before any commit can complete
        ack.issued = Math.min(ops.length, done + 1);
        marks.push({ mark, meta: copy, ack });
      } finally {
        await dm.resume({ name: 'lab-ca-meta' });
      }
    }
    writing = false;
    await writer;
    last = await cacheInfo(dm, 'lab-ca');
  } finally {
    writing = false;
    await file.close();
    await lwFile.close();
  }
  const logBuf = await endRecording(dm, devs, ['lab-ca', 'lab-ca-meta', 'lab-ca-origin', 'lab-ca-fast'], 'lab-ca-lw', disks.log);
  return { logBuf, marks, last };
}

/** One recorded workload on `type` in `mode` and its crash states. */
export async function cacheCrashWorkload(ctx: LabContext, dm: DeviceMapper, type: string, mode: CacheIoMode, disks: CacheCrashDisks, seed: number, plan: CrashPlan): Promise<CrashCounts> {
  const started = Date.now();
  const counts: CrashCounts = { states: 0, kernel: 0, known: 0, backups: 0 };
  const metadata2 = (seed + (mode === 'writeback' ? 1 : 0)) % 2 === 1; // both formats, in both modes, over many seeds
  const baseSeed = (seed % 100000) + 11;
  const ops = cacheCrashOps(seed, plan.ops || 400);
  const writers = writersBySector(ops);
  zero(disks.meta, bytes(4096n));
  zero(disks.log, bytes(BigInt(MiB)));
  writeDirect(disks.rec, 0n, Buffer.concat([patternBuffer(GARBAGE, sectors(0n), CACHE_SECTORS), patternBuffer(baseSeed, sectors(0n), ORIGIN_SECTORS)]));
  const base = readDirect(disks.rec, 0n, BigInt(TOTAL), BigInt(MiB));
  const devs = new Devices(dm);
  let rec: Recording;
  try {
    rec = await record(dm, devs, type, mode, metadata2, disks, ops);
  } finally {
    await devs.teardown();
  }
  const recorded = Date.now();
  const what = `${type} ${mode}${metadata2 ? ' metadata2' : ''} workload ${seed}`;
  const fail = (detail: string, meta?: Buffer): void =>
    ctx.fail({
      component: 'crash',
      target: type,
      seed,
      detail: `${mode}: ${detail}`,
      log: `workload (${ops.length} ops): ${JSON.stringify(ops)}\nreplay: the .lwlog artifact is the log of the data disk [cache ${CACHE_BYTES} bytes | origin]; base: cache stamped with seed ${GARBAGE}, origin with seed ${baseSeed}${meta ? '; .meta = the metadata copy at the crash mark' : ''}`,
      artifacts: meta ? { lwlog: rec.logBuf, meta } : { lwlog: rec.logBuf },
    });
  // The workload means something only if blocks moved in and out of the cache across the crash window.
  // smq (the in-tree policy) fills the cache and then, on a workload this short (even 4 times longer),
  // demotes nothing: on the in-tree cache only promotions are required.
  const needDemotions = type !== 'cache';
  if (rec.last.promotions < BigInt(CACHE_BLOCKS) || (needDemotions && (rec.last.promotions === BigInt(CACHE_BLOCKS) || rec.last.demotions === 0n))) {
    fail(`the workload did not churn the cache: ${rec.last.promotions} promotions, ${rec.last.demotions} demotions`);
    return counts;
  }
  const log = logIndex(rec.logBuf);
  const byMark = new Map(rec.marks.map((m) => [m.mark, m]));
  const points = crashPoints(log, { marks: /^crash-\d+$/ });
  const judged = new Map<string, ReturnType<typeof judgeMetadata>>();
  const seen = new Set<string>();
  const perPoint = new Map<number, number>();
  const pointBudget = Math.max(1, Math.floor(plan.maxStates / Math.max(1, points.length)));
  let cached = 0;
  let failed = false;
  const kernelStride = Math.max(1, Math.floor(plan.maxStates / 2 / Math.max(1, plan.kernelPerWorkload)));
  let nextKernel = 1;
  try {
    for (const state of enumerateStates(log, points, { exhaustiveUpTo: plan.exhaustiveUpTo, randomSubsets: plan.randomSubsets, tornPerPoint: plan.tornPerPoint, rng: prng(caseSeed(seed, 'crash-states', 2)) })) {
      const mark = log.entries[state.point]?.mark;
      const m = mark ? byMark.get(mark) : undefined;
      if (!m) continue; // the end of the log: no metadata copy there
      const used = perPoint.get(state.point) ?? 0;
      if (used >= pointBudget) continue;
      perPoint.set(state.point, used + 1);
      counts.states += 1;
      const metaKey = imageDigest(m.meta);
      let verdict = judged.get(metaKey);
      if (!verdict) judged.set(metaKey, (verdict = judgeMetadata(m.meta, disks.crashMeta)));
      const replayPlan = { log: rec.logBuf, index: log, base, length: TOTAL, apply: state.apply, ...(state.torn ? { torn: state.torn } : {}) };
      const { digest, image } = await replayImage(replayPlan);
      const key = `${metaKey}:${digest}`;
      if (seen.has(key)) continue;
      seen.add(key);
      let problems: string[];
      if ('problem' in verdict) problems = [`metadata: ${verdict.problem}`];
      else {
        const view = readThroughView(image!, verdict.dump.mappings);
        problems = checkView(view, ops, writers, m.ack, baseSeed).map((p) => `through the cache: ${p}`);
        cached = Math.max(cached, verdict.dump.mappings.size);
        if (!problems.length && counts.kernel < plan.kernelPerWorkload && verdict.dump.mappings.size > 0 && seen.size >= nextKernel) {
          nextKernel = seen.size + kernelStride; // spread over the marks, not spent on the first ones
          await replayImage({ ...replayPlan, out: disks.crash });
          writeDirect(disks.crashMeta, 0n, m.meta);
          counts.kernel += 1;
          problems = await recoverInKernel(devs, type, mode, metadata2, disks, verdict.dump, view);
        }
      }
      if (problems.length) {
        failed = true;
        fail(`state ${state.label} (acknowledged ops ${m.ack.done}, last fsync op ${m.ack.flushed}): ${problems.join('; ')}`, m.meta);
        break;
      }
    }
  } finally {
    await devs.teardown();
  }
  ctx.log(`${what}: ${rec.marks.length} marks, ${judged.size} distinct metadata copies (up to ${cached} blocks cached), ${rec.last.promotions} promotions, ${rec.last.demotions} demotions, ${log.entries.length} log entries, ${counts.states} states (${seen.size} distinct, ${counts.kernel} recovered in the kernel)${failed ? ', FAILED' : ''}; record ${((recorded - started) / 1000).toFixed(0)} s, states ${((Date.now() - recorded) / 1000).toFixed(0)} s`);
  return counts;
}
