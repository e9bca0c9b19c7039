/**
 * The corrupt lab's guest side: per target type, the devices (brd ramdisks, a 4 MiB linear metadata
 * device), a short seeded workload that leaves a good metadata image, and how one case activates the
 * target, does a little IO and tells a clean refusal, a degraded mode and a working device apart.
 *
 * Data devices carry stamped sectors (src/testing/patterns.ts): every read through era or clone must
 * return, for sector S, a stamp of sector S with a seed this rig wrote (origin/source/destination base
 * seeds or a later write) — anything else is another block's data.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper, type TargetLine } from '../../../dm';
import { cache, clone, era, linear } from '../../../targets';
import { describeSector, patternBuffer, Scope, sh, stamp, type Checker } from '../../../testing';
import { sectors, type Sectors } from '../../../units';
import { prng } from '../types';
import type { Format } from './format';

export const META_BYTES = 4 << 20;
const SECTOR = 512;
const MiB = 1 << 20;
/** Watchdog for every kernel-facing step of a case (the kernel's hung-task detector also fires at 120 s). */
export const WATCHDOG_MS = 60_000;

export class Hang extends Error {}

/** Resolves like `p`, or rejects with Hang after `ms` (the operation is left behind: the target is abandoned). */
export function deadline<T>(p: Promise<T>, what: string, ms = WATCHDOG_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Hang(`${what} did not finish within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export type Health = 'ok' | 'degraded';

export interface Rig {
  /** dm target type, e.g. 'era', 'dmkit-era', 'dmkit-clone', 'cache'. */
  readonly type: string;
  readonly format: Format;
  readonly checker?: Checker;
  /** The metadata device (4 MiB). */
  readonly meta: string;
  /** A second 4 MiB device the checker reads each image from (the tools open with O_DIRECT: no tmpfs). */
  readonly checkDev: string;
  /** Seeds whose stamps may legitimately be read back (undefined: no data check for this target). */
  readonly seeds?: Set<number>;
  /** Blocks (4 KiB) of the device that hold stamps and take case IO. */
  readonly ioBlocks: number;
  /** The table of one case (rand may vary features). */
  table(rand: () => number): TargetLine;
  /** The message a case sends. */
  readonly message: string;
  /** Health from an INFO status line. */
  health(status: string): { health: Health; text: string };
  /** Runs the seeded workload on a fresh metadata device and leaves the good image behind (device removed). */
  build(dm: DeviceMapper, name: string, seed: number): Promise<string>;
}

/*----------------------------------------------------------------
 * Devices and images
 *--------------------------------------------------------------*/

function ramdisks(scope: Scope, count: number, mib: number): string[] {
  if (fs.existsSync('/sys/module/brd')) sh('modprobe', '-r', 'brd');
  sh('modprobe', 'brd', `rd_nr=${count}`, `rd_size=${mib * 1024}`, 'max_part=0');
  scope.defer('unload brd', () => sh('modprobe', '-r', 'brd'));
  return Array.from({ length: count }, (_, i) => `/dev/ram${i}`);
}

async function linearDevice(dm: DeviceMapper, scope: Scope, name: string, dev: string, len: Sectors, offset = sectors(0)): Promise<string> {
  await dm.create(name, { targets: [linear.line({ device: dev, offset }, { start: sectors(0), length: len })] });
  scope.defer(`remove ${name}`, () => void sh('dmsetup', '--noudevrules', '--noudevsync', 'remove', '--retry', name));
  return dm.devicePath(name);
}

/** The first `bytes` of a device, read with O_DIRECT. */
export function readImage(dev: string, bytes = META_BYTES): Buffer {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=1M', `count=${bytes / MiB}`, 'iflag=direct', 'status=none'], { maxBuffer: bytes + MiB });
  if (r.status !== 0 || r.stdout.length !== bytes) throw new Error(`reading ${dev}: ${r.stderr?.toString().trim()}`);
  return r.stdout;
}

/**
 * A buffer whose start suits O_DIRECT (512-byte aligned): Node gives no control over alignment, so probe
 * offsets into a larger allocation with a direct read of `fd` until one is accepted.
 */
function alignedView(fd: number, size: number): Buffer | undefined {
  const big = Buffer.allocUnsafeSlow(size + 4096);
  for (let off = 0; off < 4096; off += 16) {
    try {
      fs.readSync(fd, big, off, 512, 0);
      return big.subarray(off, off + size);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    }
  }
  return undefined;
}

const directViews = new Map<string, Buffer>();

/**
 * Writes a whole image over a metadata device with O_DIRECT (no page cache: the kernel's bufio and the
 * checkers read the device itself); falls back to buffered writes and fsync if direct IO is refused.
 */
export function writeImage(dev: string, image: Buffer): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dev, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    let view = directViews.get(dev);
    if (!view || view.length !== image.length) {
      view = alignedView(fd, image.length);
      if (view) directViews.set(dev, view);
    }
    if (view) {
      image.copy(view);
      if (fs.writeSync(fd, view, 0, view.length, 0) !== view.length) throw new Error(`short direct write to ${dev}`);
      return;
    }
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  const bfd = fs.openSync(dev, 'r+');
  try {
    fs.writeSync(bfd, image, 0, image.length, 0);
    fs.fsyncSync(bfd);
  } finally {
    fs.closeSync(bfd);
  }
}

export interface CheckerRun {
  status: number | null;
  output: string;
}

/** Runs a checker on a file without blocking the event loop. */
export function checkAsync(checker: Checker, file: string): Promise<CheckerRun> {
  return new Promise((resolve) => {
    const child = spawn(checker, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), WATCHDOG_MS);
    child.on('error', (e) => resolve({ status: null, output: e.message }));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ status: code, output: `${out.trim()}${signal ? ` (killed by ${signal})` : ''}` });
    });
  });
}

/** A line in the kernel log, so a splat names the case that caused it. */
export function kmsg(line: string): void {
  try {
    fs.writeFileSync('/dev/kmsg', `dmkit-lab: ${line.replace(/[^\x20-\x7e]/g, '?').slice(0, 900)}\n`);
  } catch {
    // not fatal: only attribution
  }
}

/*----------------------------------------------------------------
 * Data through the device
 *--------------------------------------------------------------*/

/** Why `buf` (sectors from `first`) is not made of known stamps of its own sectors, or undefined. */
export function foreignData(buf: Buffer, first: number, seeds: Set<number>): string | undefined {
  for (let i = 0; i < buf.length / SECTOR; i++) {
    const at = i * SECTOR;
    const s = first + i;
    const want = (seed: number): boolean => patternBuffer(seed, sectors(s), 1).equals(buf.subarray(at, at + SECTOR));
    const stampSeed = buf.readUInt32LE(at + 4);
    const ok = buf.readBigUInt64LE(at + 8) === BigInt(s) && seeds.has(stampSeed) && want(stampSeed);
    if (!ok) return `sector ${s}: found ${describeSector(buf, at)} (known seeds ${[...seeds].join(',')})`;
  }
  return undefined;
}

export interface IoResult {
  readError?: string;
  writeError?: string;
  foreign?: string;
}

/** Reads block `r` (checking its stamps when the rig has seeds) and writes block `w` with `seed`, fsynced. */
export async function caseIo(dev: string, rig: Rig, r: number, w: number, seed: number): Promise<IoResult> {
  const out: IoResult = {};
  const fh = await deadline(fs.promises.open(dev, 'r+'), `open ${dev}`);
  try {
    const buf = Buffer.alloc(4096);
    try {
      await deadline(fh.read(buf, 0, 4096, r * 4096), `read block ${r}`);
      if (rig.seeds) out.foreign = foreignData(buf, r * 8, rig.seeds);
    } catch (e) {
      if (e instanceof Hang) throw e;
      out.readError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    }
    rig.seeds?.add(seed);
    try {
      await deadline(fh.write(patternBuffer(seed, sectors(w * 8), 8), 0, 4096, w * 4096), `write block ${w}`);
      await deadline(fh.sync(), `fsync after writing block ${w}`);
    } catch (e) {
      if (e instanceof Hang) throw e;
      out.writeError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    }
  } finally {
    await deadline(fh.close(), `close ${dev}`);
  }
  return out;
}

async function writeBlocks(dev: string, blocks: readonly number[], seed: number, seeds: Set<number>): Promise<void> {
  seeds.add(seed);
  const fh = await fs.promises.open(dev, 'r+');
  try {
    for (const b of blocks) await fh.write(patternBuffer(seed, sectors(b * 8), 8), 0, 4096, b * 4096);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function pickBlocks(rand: () => number, n: number, count: number): number[] {
  const s = new Set<number>();
  while (s.size < Math.min(n, count)) s.add(Math.floor(rand() * n));
  return [...s].sort((a, b) => a - b);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function removeQuietly(dm: DeviceMapper, name: string): Promise<void> {
  await dm.remove({ name }, { retry: { count: 20, intervalMs: 100 } });
}

/** A 4 MiB device right after the metadata device on the same ramdisk, for the checker's copy. */
function checkDevice(dm: DeviceMapper, scope: Scope, disk: string): Promise<string> {
  return linearDevice(dm, scope, 'corrupt-check', disk, sectors(META_BYTES / SECTOR), sectors(META_BYTES / SECTOR));
}

/*----------------------------------------------------------------
 * era and dmkit-era
 *--------------------------------------------------------------*/

const ERA_MIB = 32;
const ERA_BLOCK = sectors(8);

export async function eraRig(dm: DeviceMapper, scope: Scope, type: 'era' | 'dmkit-era', baseSeed: number): Promise<Rig> {
  const [origin, metaDisk] = ramdisks(scope, 2, ERA_MIB) as [string, string];
  const meta = await linearDevice(dm, scope, 'corrupt-meta', metaDisk, sectors(META_BYTES / SECTOR));
  const seeds = new Set<number>();
  const originSeed = (baseSeed ^ 0x0e7a0001) >>> 0;
  stamp(origin, { start: sectors(0), length: sectors((ERA_MIB * MiB) / SECTOR) }, originSeed);
  seeds.add(originSeed);
  const length = sectors((ERA_MIB * MiB) / SECTOR);
  const nrBlocks = (ERA_MIB * MiB) / 4096;
  const line = (): TargetLine => era.line({ metadataDevice: meta, originDevice: origin, blockSize: ERA_BLOCK }, { start: sectors(0), length, type });
  return {
    type,
    format: 'era',
    checker: 'era_check',
    meta,
    checkDev: await checkDevice(dm, scope, metaDisk),
    seeds,
    ioBlocks: nrBlocks,
    table: line,
    message: 'checkpoint',
    health(status) {
      const st = era.parseStatus(status);
      return { health: 'error' in st ? 'degraded' : 'ok', text: status };
    },
    async build(dm2, name, seed) {
      writeImage(meta, Buffer.alloc(META_BYTES));
      const rand = prng(seed);
      await dm2.create(name, { targets: [line()] });
      const dev = dm2.devicePath(name);
      // Four eras of writes, a pause so the archived writesets are digested into the era array, then a
      // held metadata snapshot (it keeps the writeset just archived), more writes and a checkpoint.
      for (let e = 0; e < 4; e++) {
        await writeBlocks(dev, pickBlocks(rand, nrBlocks, 40), (seed + e + 1) >>> 0, seeds);
        await dm2.message({ name }, undefined, 'checkpoint');
      }
      await sleep(1500);
      await writeBlocks(dev, pickBlocks(rand, nrBlocks, 30), (seed + 10) >>> 0, seeds);
      await dm2.message({ name }, undefined, 'take_metadata_snap');
      await sleep(1500);
      await writeBlocks(dev, pickBlocks(rand, nrBlocks, 20), (seed + 11) >>> 0, seeds);
      await dm2.message({ name }, undefined, 'checkpoint');
      await writeBlocks(dev, pickBlocks(rand, nrBlocks, 10), (seed + 12) >>> 0, seeds);
      const [st] = await dm2.status({ name });
      await removeQuietly(dm2, name);
      return st?.status ?? '';
    },
  };
}

/*----------------------------------------------------------------
 * clone and dmkit-clone
 *--------------------------------------------------------------*/

/** 272 MiB in 8 KiB regions: 34816 regions, a bitset of two array blocks; IO stays in the first 16 MiB. */
const CLONE_MIB = 272;
const CLONE_IO_MIB = 16;
const CLONE_REGION = sectors(16);

export async function cloneRig(dm: DeviceMapper, scope: Scope, type: 'clone' | 'dmkit-clone', baseSeed: number): Promise<Rig> {
  const [source, dest, metaDisk] = ramdisks(scope, 3, CLONE_MIB) as [string, string, string];
  const meta = await linearDevice(dm, scope, 'corrupt-meta', metaDisk, sectors(META_BYTES / SECTOR));
  const seeds = new Set<number>();
  const srcSeed = (baseSeed ^ 0x5c000001) >>> 0;
  const dstSeed = (baseSeed ^ 0xde000001) >>> 0;
  const stamped = { start: sectors(0), length: sectors((CLONE_IO_MIB * MiB) / SECTOR) };
  stamp(source, stamped, srcSeed);
  stamp(dest, stamped, dstSeed);
  seeds.add(srcSeed).add(dstSeed);
  const length = sectors((CLONE_MIB * MiB) / SECTOR);
  const ioBlocks = (CLONE_IO_MIB * MiB) / 4096;
  const line = (noHydration: boolean): TargetLine =>
    clone.line({ metadataDevice: meta, destinationDevice: dest, sourceDevice: source, regionSize: CLONE_REGION, noHydration }, { start: sectors(0), length, type });
  return {
    type,
    format: 'clone',
    meta,
    checkDev: await checkDevice(dm, scope, metaDisk),
    seeds,
    ioBlocks,
    // Background hydration in a quarter of the cases: it walks the bitset while the case runs.
    table: (rand) => line(rand() >= 0.25),
    message: 'hydration_threshold 8',
    health(status) {
      const st = clone.parseStatus(status);
      return { health: 'fail' in st || 'error' in st || st.mode === 'ro' ? 'degraded' : 'ok', text: status };
    },
    async build(dm2, name, seed) {
      writeImage(meta, Buffer.alloc(META_BYTES));
      const rand = prng(seed);
      await dm2.create(name, { targets: [line(true)] });
      const dev = dm2.devicePath(name);
      // 4 KiB writes into 8 KiB regions: each hydrates its region from the source, then writes.
      for (let k = 0; k < 3; k++) await writeBlocks(dev, pickBlocks(rand, ioBlocks, 40), (seed + k + 1) >>> 0, seeds);
      const [st] = await dm2.status({ name });
      await removeQuietly(dm2, name);
      return st?.status ?? '';
    },
  };
}

/*----------------------------------------------------------------
 * cache (in-tree; cache_check is the oracle)
 *--------------------------------------------------------------*/

const CACHE_ORIGIN_MIB = 64;
const CACHE_FAST_MIB = 16;

/** The in-tree cache, or dmkit-cache (format 2 as well; its workload also discards, so the discard bitset has bits set). */
export async function cacheRig(dm: DeviceMapper, scope: Scope, baseSeed: number, type: 'cache' | 'dmkit-cache' = 'cache'): Promise<Rig> {
  const [origin, fastDisk, metaDisk] = ramdisks(scope, 3, CACHE_ORIGIN_MIB) as [string, string, string];
  const meta = await linearDevice(dm, scope, 'corrupt-meta', metaDisk, sectors(META_BYTES / SECTOR));
  const fast = await linearDevice(dm, scope, 'corrupt-fast', fastDisk, sectors((CACHE_FAST_MIB * MiB) / SECTOR));
  stamp(origin, { start: sectors(0), length: sectors((CACHE_ORIGIN_MIB * MiB) / SECTOR) }, (baseSeed ^ 0xcac00001) >>> 0);
  const length = sectors((CACHE_ORIGIN_MIB * MiB) / SECTOR);
  const ioBlocks = (CACHE_ORIGIN_MIB * MiB) / 4096;
  const line = (): TargetLine =>
    cache.line(
      { metadataDevice: meta, cacheDevice: fast, originDevice: origin, blockSize: sectors(64), metadata2: true, ioMode: 'writeback', policy: 'smq' },
      { start: sectors(0), length, type },
    );
  return {
    type,
    format: 'cache',
    checker: 'cache_check',
    meta,
    checkDev: await checkDevice(dm, scope, metaDisk),
    ioBlocks,
    table: line,
    message: 'migration_threshold 2048',
    health(status) {
      const st = cache.parseStatus(status);
      return { health: 'fail' in st || 'error' in st || st.mode === 'ro' || st.needsCheck ? 'degraded' : 'ok', text: status };
    },
    async build(dm2, name, seed) {
      writeImage(meta, Buffer.alloc(META_BYTES));
      const rand = prng(seed);
      await dm2.create(name, { targets: [line()] });
      const dev = dm2.devicePath(name);
      const unused = new Set<number>();
      // A hot 2 MiB read again and again (O_DIRECT, so each read reaches the cache) gets promoted;
      // writes to promoted blocks then leave them dirty.
      const hotStart = Math.floor(rand() * (ioBlocks / 512 - 1)) * 512;
      for (let round = 0; round < 8; round++) {
        sh('dd', `if=${dev}`, 'of=/dev/null', 'bs=32k', `skip=${hotStart / 8}`, 'count=64', 'iflag=direct', 'status=none');
        await sleep(100);
      }
      const hot = pickBlocks(rand, 512, 40).map((b) => hotStart + b);
      await writeBlocks(dev, hot, (seed + 1) >>> 0, unused);
      if (type === 'dmkit-cache') sh('blkdiscard', '-o', `${((hotStart + 2048) % (ioBlocks - 1024)) * 4096}`, '-l', `${4 * MiB}`, dev);
      const [st] = await dm2.status({ name });
      await removeQuietly(dm2, name);
      return st?.status ?? '';
    },
  };
}

/** Whether a target type is registered (loading its module if needed). */
export function available(dm: DeviceMapper, type: string): Promise<boolean> {
  return dm.hasTarget(type);
}
