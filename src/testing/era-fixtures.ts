/**
 * Shared pieces of the era suites: the target types under test (the in-tree `era` is the oracle for
 * `dmkit-era`), a TypeScript model of which block was written in which era, seeded workloads, and readers
 * for what the kernel and thin-provisioning-tools report (status, era_invalidate, era_dump).
 *
 * Every metadata read here goes to the device with O_DIRECT (dd iflag=direct) or through the tools, which
 * open with O_DIRECT; data is read after `blockdev --flushbufs`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { describeSector, flushBuffers, IN_VM, patternBuffer, prng, RELEASE_SCALE, Scope, sh, zero } from '.';
import { bytes, sectors } from '../units';
import { createDevice, dmsetup, dmsetupStatus, kernelLogSince, TestDevice } from './dmsetup';

export const ERA_TYPES = ['era', 'dmkit-era'] as const;
export type EraType = (typeof ERA_TYPES)[number];

const SECTOR = 512;

/*----------------------------------------------------------------
 * Which targets are registered
 *--------------------------------------------------------------*/

let targets: Set<string> | null = null;

/** Target names registered in the guest kernel (after loading dm-era, which only autoloads on first use). */
export function registeredTargets(): Set<string> {
  if (targets) return targets;
  spawnSync('modprobe', ['dm-era']);
  spawnSync('modprobe', ['dm-flakey']);
  spawnSync('modprobe', ['dmkit-era']);
  const r = spawnSync('dmsetup', ['targets'], { encoding: 'utf8' });
  targets = new Set((r.stdout ?? '').split('\n').map((l) => l.trim().split(/\s+/)[0]!).filter(Boolean));
  return targets;
}

/** Why a case of `type` cannot run here, or false when it can (for node:test's `skip`). */
export function skipUnless(...types: EraType[]): string | false {
  if (!IN_VM) return 'kernel test: run it in the VM lab (npm run vm -- node --test ...)';
  for (const t of types) {
    if (!registeredTargets().has(t)) {
      return t === 'dmkit-era'
        ? 'dmkit-era is not registered (dmsetup targets): kmod/era is not built or did not load in this lab run'
        : `target ${t} is not available in this kernel`;
    }
  }
  return false;
}

/**
 * skipUnless, and the in-tree era only at release scale: in CI, era-differential compares it with
 * dmkit-era, and the suites that run once per era type run on dmkit-era.
 */
export function skipUnlessScaled(type: EraType): string | false {
  if (type === 'era' && IN_VM && !RELEASE_SCALE) return 'the in-tree era runs this suite at release scale (DMKIT_SCALE=release npm test); in CI era-differential compares it with dmkit-era';
  return skipUnless(type);
}

/*----------------------------------------------------------------
 * Deterministic randomness
 *--------------------------------------------------------------*/

/** The shared seeded PRNG (src/testing/random.ts). */
export const rng = prng;

/** `count` distinct blocks below `nrBlocks`, sorted. */
export function randomBlocks(rand: () => number, nrBlocks: number, count: number): number[] {
  const set = new Set<number>();
  while (set.size < Math.min(count, nrBlocks)) set.add(Math.floor(rand() * nrBlocks));
  return [...set].sort((a, b) => a - b);
}

/*----------------------------------------------------------------
 * The model
 *--------------------------------------------------------------*/

/** Which blocks were written in which era, and with which data seed. */
export class EraModel {
  /** block -> eras it was written in. */
  readonly history = new Map<number, Set<number>>();
  /** block -> seed of the stamp it holds now. */
  readonly seeds = new Map<number, number>();

  constructor(public nrBlocks: number, readonly blockSectors: number) {}

  record(blocks: readonly number[], era: number, seed: number): void {
    for (const b of blocks) {
      if (b >= this.nrBlocks) throw new RangeError(`block ${b} is past the end (${this.nrBlocks})`);
      let eras = this.history.get(b);
      if (!eras) this.history.set(b, (eras = new Set()));
      eras.add(era);
      this.seeds.set(b, seed);
    }
  }

  lastEra(block: number): number {
    const eras = this.history.get(block);
    return eras ? Math.max(...eras) : 0;
  }

  /** What `era_invalidate --written-since n` must list: blocks written in era n or later. */
  writtenSince(n: number): number[] {
    // Never-written blocks count as era 0, so n = 0 lists every block.
    if (n <= 0) return Array.from({ length: this.nrBlocks }, (_, b) => b);
    return [...this.history.keys()].filter((b) => this.lastEra(b) >= n).sort((a, b) => a - b);
  }

  /** The era array with every writeset folded in (`era_dump --logical`): last era per block, 0 = never. */
  logicalEras(): number[] {
    return Array.from({ length: this.nrBlocks }, (_, b) => this.lastEra(b));
  }
}

/*----------------------------------------------------------------
 * Data
 *--------------------------------------------------------------*/

/** Consecutive runs of sorted blocks. */
function runs(blocks: readonly number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const b of blocks) {
    const last = out.at(-1);
    if (last && last[0] + last[1] === b) last[1]++;
    else out.push([b, 1]);
  }
  return out;
}

/** Stamps whole blocks of `dev` with the pattern of `seed` (one open, one fsync), and records them. */
export function writeBlocks(dev: string, model: EraModel, blocks: readonly number[], era: number, seed: number): void {
  const sorted = [...blocks].sort((a, b) => a - b);
  const bs = model.blockSectors;
  const maxRun = Math.max(1, Math.floor(2048 / bs)); // at most 1 MiB per write
  const fd = fs.openSync(dev, 'r+');
  try {
    for (const [first, count] of runs(sorted)) {
      for (let b = first; b < first + count; b += maxRun) {
        const n = Math.min(maxRun, first + count - b);
        const buf = patternBuffer(seed, sectors(BigInt(b * bs)), n * bs);
        fs.writeSync(fd, buf, 0, buf.length, b * bs * SECTOR);
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  model.record(sorted, era, seed);
}

/**
 * Reads every block of the model from `dev` (an origin, after the era device is gone or idle) and lists the
 * blocks that do not hold their last stamp (written blocks) or zeros (never written). Each stamped sector's
 * header (magic, seed, sector number) is checked, and the first sector of every block in full; that names a
 * stale, zeroed or misplaced sector while staying cheap under TCG.
 */
export function checkData(dev: string, model: EraModel): string[] {
  flushBuffers(dev);
  const bs = model.blockSectors;
  const bad: string[] = [];
  const perRead = Math.max(1, Math.floor(2048 / bs));
  const buf = Buffer.alloc(perRead * bs * SECTOR);
  const zeroSector = Buffer.alloc(SECTOR);
  const fd = fs.openSync(dev, 'r');
  try {
    for (let first = 0; first < model.nrBlocks && bad.length < 10; first += perRead) {
      const count = Math.min(perRead, model.nrBlocks - first);
      const len = count * bs * SECTOR;
      const n = fs.readSync(fd, buf, 0, len, first * bs * SECTOR);
      if (n !== len) {
        bad.push(`blocks ${first}+${count}: short read (${n} of ${len} bytes)`);
        break;
      }
      for (let b = first; b < first + count && bad.length < 10; b++) {
        const seed = model.seeds.get(b);
        const at0 = (b - first) * bs * SECTOR;
        if (seed !== undefined) {
          const want = patternBuffer(seed, sectors(BigInt(b * bs)), 1);
          if (!buf.subarray(at0, at0 + SECTOR).equals(want)) {
            bad.push(`block ${b} sector ${b * bs}: want stamp of seed ${seed}, found ${describeSector(buf, at0)}`);
            continue;
          }
        }
        for (let s = 0; s < bs; s++) {
          const at = at0 + s * SECTOR;
          const sector = BigInt(b * bs + s);
          const ok = seed === undefined
            ? buf.subarray(at, at + SECTOR).equals(zeroSector)
            : buf.readUInt32LE(at) === STAMP_MAGIC && buf.readUInt32LE(at + 4) === seed >>> 0 && buf.readBigUInt64LE(at + 8) === sector;
          if (!ok) {
            bad.push(`block ${b} sector ${sector}: want ${seed === undefined ? 'zero' : `stamp of seed ${seed}`}, found ${describeSector(buf, at)}`);
            break;
          }
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return bad;
}

/** The stamp header's magic ("DMKT"), as src/testing/patterns.ts writes it. */
const STAMP_MAGIC = patternBuffer(0, sectors(0), 1).readUInt32LE(0);

/*----------------------------------------------------------------
 * Devices
 *--------------------------------------------------------------*/

export interface EraRig {
  /** Metadata device (a linear slice of a ramdisk, or what the test built). */
  meta: string;
  origin: string;
  /** Sectors of the origin. */
  originSectors: number;
  metaSectors: number;
}

/**
 * `count` metadata/origin pairs on brd: origin i is /dev/ram(2i), metadata i a linear device over the first
 * `metaMiB` of /dev/ram(2i+1) with a zeroed superblock. All ramdisks have `originMiB`.
 */
export function eraRigs(scope: Scope, count: number, originMiB: number, metaMiB: number, tag: string): EraRig[] {
  const disks = ramdisks2(scope, count * 2, originMiB);
  const rigs: EraRig[] = [];
  for (let i = 0; i < count; i++) {
    const metaSectors = metaMiB * 2048;
    const meta = createDevice(scope, `${tag}-meta${i}`, `0 ${metaSectors} linear ${disks[2 * i + 1]} 0`);
    zero(meta.path, bytes(64 * 1024));
    rigs.push({ meta: meta.path, origin: disks[2 * i]!, originSectors: originMiB * 2048, metaSectors });
  }
  return rigs;
}

function ramdisks2(scope: Scope, count: number, mib: number): string[] {
  if (fs.existsSync('/sys/module/brd')) sh('modprobe', '-r', 'brd');
  sh('modprobe', 'brd', `rd_nr=${count}`, `rd_size=${mib * 1024}`, 'max_part=0');
  scope.defer('unload brd', () => sh('modprobe', '-r', 'brd'));
  return Array.from({ length: count }, (_, i) => `/dev/ram${i}`);
}

export function eraTable(type: EraType, meta: string, origin: string, blockSectors: number | string, lengthSectors: number): string {
  return `0 ${lengthSectors} ${type} ${meta} ${origin} ${blockSectors}`;
}

export function createEra(scope: Scope, name: string, type: EraType, rig: EraRig, blockSectors: number, lengthSectors = rig.originSectors): TestDevice {
  return createDevice(scope, name, eraTable(type, rig.meta, rig.origin, blockSectors, lengthSectors));
}

export interface EraStatus {
  metadataBlockSectors: number;
  used: number;
  total: number;
  era: number;
  /** Block of the held metadata snapshot, or null ('-'). */
  heldRoot: number | null;
}

/** Parses `dmsetup status` of an era device. Never call it on a suspended device: the in-tree era waits for its worker. */
export function eraStatus(name: string): EraStatus {
  const f = dmsetup('status', name).trim().split(/\s+/);
  if (f.length !== 7) throw new Error(`unexpected era status: ${f.join(' ')}`);
  const [used, total] = f[4]!.split('/').map(Number);
  return { metadataBlockSectors: Number(f[3]), used: used!, total: total!, era: Number(f[5]), heldRoot: f[6] === '-' ? null : Number(f[6]) };
}

export function message(name: string, ...words: string[]): string {
  return dmsetup('message', name, '0', ...words);
}

/** Kernel log lines since `mark` that name the target: `era:` must not match `dmkit-era:`. */
export function targetLogLines(mark: number, type: EraType): string[] {
  const re = new RegExp(`(?<![\\w-])${type.replace(/[-]/g, '\\-')}:`);
  return kernelLogSince(mark).filter((l) => re.test(l));
}

/** A message meant to fail: returns dmsetup's status and stderr. */
export function failingMessage(name: string, ...words: string[]): { status: number | null; stderr: string } {
  return dmsetupStatus('message', name, '0', ...words);
}

/*----------------------------------------------------------------
 * What the tools read on disk
 *--------------------------------------------------------------*/

function parseBlocks(xml: string): number[] {
  const out: number[] = [];
  for (const m of xml.matchAll(/<block block\s*=\s*"(\d+)"\s*\/>|<range begin\s*=\s*"(\d+)"\s*end\s*=\s*"(\d+)"\s*\/>/g)) {
    if (m[1] !== undefined) out.push(Number(m[1]));
    else for (let b = Number(m[2]); b < Number(m[3]); b++) out.push(b);
  }
  return out.sort((a, b) => a - b);
}

/** `era_invalidate --written-since n` (end of a range is exclusive). */
export function eraInvalidate(meta: string, n: number, opts: { snapshot?: boolean } = {}): number[] {
  return parseBlocks(sh('era_invalidate', ...(opts.snapshot ? ['--metadata-snapshot'] : []), '--written-since', String(n), meta));
}

export interface EraDump {
  blockSize: number;
  nrBlocks: number;
  currentEra: number;
  /** Eras of the writesets still in the writeset tree. */
  writesets: number[];
  /** The era array (or with --logical the writesets folded in). */
  eras: number[];
}

export function eraDump(meta: string, opts: { logical?: boolean } = {}): EraDump {
  const r = spawnSync('era_dump', [...(opts.logical ? ['--logical'] : []), meta], { encoding: 'utf8', maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error(`era_dump ${meta} exited ${r.status}: ${r.stderr}`);
  const xml = r.stdout;
  const sb = /<superblock\b[^>]*>/.exec(xml)?.[0] ?? '';
  const attr = (name: string): number => Number(new RegExp(`${name}\\s*=\\s*"(\\d+)"`).exec(sb)?.[1] ?? NaN);
  const nrBlocks = attr('nr_blocks');
  const eras = new Array<number>(Number.isFinite(nrBlocks) ? nrBlocks : 0).fill(0);
  for (const m of xml.matchAll(/<era block\s*=\s*"(\d+)"\s+era\s*=\s*"(\d+)"\s*\/>/g)) eras[Number(m[1])] = Number(m[2]);
  const writesets = [...xml.matchAll(/<writeset era\s*=\s*"(\d+)"/g)].map((m) => Number(m[1]));
  return { blockSize: attr('block_size'), nrBlocks, currentEra: attr('current_era'), writesets, eras };
}

/** Differences between two sorted block lists, briefly. */
export function diffBlocks(want: readonly number[], got: readonly number[]): string | null {
  const w = new Set(want);
  const g = new Set(got);
  const missing = want.filter((b) => !g.has(b));
  const extra = got.filter((b) => !w.has(b));
  if (!missing.length && !extra.length) return null;
  const show = (a: number[]): string => `${a.slice(0, 12).join(',')}${a.length > 12 ? `,... (${a.length})` : ''}`;
  return `missing [${show(missing)}], unexpected [${show(extra)}]`;
}

/**
 * The whole on-disk contract after the target is gone: era_check passes, `era_invalidate --written-since n`
 * equals the model for every n in `eras`, the logical era array equals the model, and (with rawEraArray) the raw era array only
 * holds eras in which each block was really written. Returns the problems found (empty = all good).
 */
export function checkMetadata(meta: string, model: EraModel, eras: readonly number[], opts: { rawEraArray?: boolean; logical?: boolean } = {}): string[] {
  const problems: string[] = [];
  const check = spawnSync('era_check', [meta], { encoding: 'utf8' });
  if (check.status !== 0) {
    problems.push(`era_check ${meta} exited ${check.status}: ${`${check.stdout}${check.stderr}`.trim().split('\n').slice(0, 8).join(' | ')}`);
    return problems; // the readers below would only repeat the damage
  }
  for (const n of eras) {
    let got: number[];
    try {
      got = eraInvalidate(meta, n);
    } catch (e) {
      problems.push(`era_invalidate --written-since ${n}: ${(e as Error).message}`);
      continue;
    }
    const d = diffBlocks(model.writtenSince(n), got);
    if (d) problems.push(`era_invalidate --written-since ${n}: ${d}`);
  }
  try {
    const logical = opts.logical === false ? null : eraDump(meta, { logical: true });
    if (logical) {
      if (logical.nrBlocks !== model.nrBlocks) problems.push(`era_dump nr_blocks ${logical.nrBlocks}, want ${model.nrBlocks}`);
      const want = model.logicalEras();
      const wrong = want.map((e, b) => [b, e, logical.eras[b] ?? 0] as const).filter(([, e, g]) => e !== g);
      if (wrong.length) problems.push(`era_dump --logical: ${wrong.length} blocks differ, e.g. ${wrong.slice(0, 6).map(([b, e, g]) => `block ${b} era ${g} want ${e}`).join(', ')}`);
    }
    const raw = opts.rawEraArray ? eraDump(meta) : { eras: [] as number[] };
    const impossible = raw.eras
      .map((e, b) => [b, e] as const)
      .filter(([b, e]) => e !== 0 && !(model.history.get(b)?.has(e) ?? false));
    if (impossible.length) {
      problems.push(`era array marks blocks with eras they were not written in: ${impossible.slice(0, 6).map(([b, e]) => `block ${b} era ${e}`).join(', ')} (${impossible.length})`);
    }
  } catch (e) {
    problems.push((e as Error).message);
  }
  return problems;
}

/*----------------------------------------------------------------
 * Raw metadata images
 *--------------------------------------------------------------*/

/** Copies `sectorsToCopy` of `src` to `dst` (a device or a file), reading with O_DIRECT: what a power cut now would leave. */
export function copyDevice(src: string, dst: string, sectorsToCopy: number): void {
  const toDevice = fs.existsSync(dst) && fs.statSync(dst).isBlockDevice();
  sh('dd', `if=${src}`, `of=${dst}`, 'bs=64k', `count=${sectorsToCopy / 128}`, 'iflag=direct', toDevice ? 'oflag=direct' : 'conv=fsync', 'status=none');
}

/** sha256 of the first `sectorsToRead` of a device, read with O_DIRECT. */
export function deviceHash(dev: string, sectorsToRead: number): string {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=64k', `count=${sectorsToRead / 128}`, 'iflag=direct', 'status=none'], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`dd ${dev}: ${r.stderr?.toString()}`);
  return createHash('sha256').update(r.stdout).digest('hex');
}

/** A scratch file in the guest's tmpfs, removed with the scope. */
export function scratchFile(scope: Scope, name: string): string {
  const dir = fs.mkdtempSync('/tmp/dmkit-era-');
  scope.defer(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  return `${dir}/${name}`;
}

/** Whether a device node exists in dm (for "no device left behind"). */
export function deviceExists(name: string): boolean {
  return dmsetupStatus('info', name).status === 0;
}

/*----------------------------------------------------------------
 * A look at the superblock without the tools (they refuse live metadata)
 *--------------------------------------------------------------*/

function readBlock(dev: string, block: number | bigint): Buffer {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=4096', `skip=${block}`, 'count=1', 'iflag=direct', 'status=none'], { maxBuffer: 1 << 20 });
  if (r.status !== 0 || r.stdout.length !== 4096) throw new Error(`reading block ${block} of ${dev} failed: ${r.stderr?.toString()}`);
  return r.stdout;
}

/**
 * How many writesets the committed writeset tree holds (archived, not yet digested), read straight from
 * the superblock and the tree's root node: era_superblock is packed, writeset_tree_root sits at byte 200;
 * a btree node header has flags at 4 (2 = leaf) and nr_entries at 16. Null if the root is not a leaf.
 */
export function committedWritesets(meta: string): number | null {
  const sb = readBlock(meta, 0);
  const root = sb.readBigUInt64LE(200);
  const node = readBlock(meta, root);
  if (node.readUInt32LE(4) !== 2) return null;
  return node.readUInt32LE(16);
}

/** Loads a multi-line table into a device's inactive slot and swaps it in (suspend, resume). */
export function swapTable(name: string, lines: readonly string[]): void {
  const r = spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'load', name], { input: `${lines.join('\n')}\n`, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`dmsetup load ${name} failed: ${r.stderr}`);
  dmsetup('suspend', name);
  dmsetup('resume', name);
}
