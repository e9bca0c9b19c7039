/**
 * The corrupt lab for the snapshot family (dmkit-snapshot, and the in-tree snapshot where the kernel has it).
 *
 * Contract (persistent COW, ../shared/reference/kernel-facts.md §7): a seeded workload (one persistent
 * snapshot of a stamped volume, origin writes that copy chunks, writes to the snapshot itself) leaves a good
 * COW image. Each case changes the header (magic, valid, version, chunk_size: field-aware values, or random
 * bytes) or an exception area (new_chunk past the device / at a metadata chunk / at 0 / shared with another
 * entry, old_chunk past the origin / shared, random bytes and bit flips), writes the image to the COW device
 * and activates a snapshot on it. What the activation must do is predicted from the image itself, with the
 * format's rules (`predict` below):
 *   - a header that cannot be a snapshot's (magic, version, chunk size not a power of 2, a chunk too large
 *     for the device) or an exception outside the COW's data chunks: refused, -EINVAL, with a kernel log
 *     line (the in-tree target: refused with any errno);
 *   - valid = 0: the snapshot comes up Invalid;
 *   - magic 0: a new store, the snapshot reads as the origin does now;
 *   - anything else loads, and the snapshot must read, chunk for chunk, what the corrupted image says: the
 *     COW chunk its (last) exception names, or the origin's data where it has none;
 * and always: no oops (the VM lab fails the run on one), no hang (60 s watchdog), the origin volume intact
 * against its model after the snapshot is gone.
 * The in-tree target takes new_chunk unchecked (dm-snap-persistent.c insert_exceptions only moves
 * next_free past it): where dmkit must refuse and it loads, the case counts as known_upstream.
 *
 * A second family of cases is the overflow race of fix (d), `snapshot-header` (test/vm/snapshot-header.test.ts):
 * concurrent origin writes overflow a small persistent COW while copies are in flight (dmkit's test knob
 * invalidate_delay_ms widens the window); the header left on disk must be intact (magic, version 1, the
 * chunk size, valid 0) and a reactivation must come up Invalid. With the fix reverted the commits in
 * flight land in the header and this case fails.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../../dm';
import { areaLocation, COW_VERSION, EXCEPTION_BYTES, readCow, readCowHeader, SNAP_MAGIC, type CowImage } from '../../../pdata/snapshot-cow';
import { linear } from '../../../targets';
import { DataModel, patternBuffer, ramdisks, readDirect, Scope, stampDirect, writeDirect, writeDirectAsync } from '../../../testing';
import { bytes, sectors, type Sectors } from '../../../units';
import { createSnapshot, removeSnapshot, type SnapshotFamily } from '../../../workflows';
import { caseSeed, prng, type LabContext } from '../types';
import { deadline, Hang, kmsg } from './rigs';

export const SNAPSHOT_LAB_TYPES = ['snapshot', 'dmkit-snapshot'] as const;
export type SnapshotLabType = (typeof SNAPSHOT_LAB_TYPES)[number];

const SECTOR = 512;
const MiB = 1n << 20n;
const VOL_SECTORS = sectors((4n * MiB) / 512n);
const CHUNK = sectors(2); // 1 KiB chunks: 64 exceptions per area, so the workload spans several areas
const CHUNK_BYTES = Number(CHUNK) * SECTOR;
const COW_BYTES = Number(MiB); // 1024 chunks
const ORIGIN_CHUNKS = Number(VOL_SECTORS / CHUNK);
const KNOB = '/sys/module/dmkit_snapshot/parameters/invalidate_delay_ms';
const MAX_CHUNK_SECTORS = 1 << 21;

const IN_TREE_UNCHECKED = 'in-tree dm-snapshot: insert_exceptions (drivers/md/dm-snap-persistent.c) records an exception\'s new_chunk without checking it lies inside the COW device';

const familyOf = (type: SnapshotLabType): SnapshotFamily => (type === 'dmkit-snapshot' ? 'dmkit' : 'in-tree');

/*----------------------------------------------------------------
 * The format's rules: what an activation of an image must do
 *--------------------------------------------------------------*/

export type Prediction =
  | { kind: 'refuse'; why: string }
  | { kind: 'invalid' }
  | { kind: 'new' }
  | { kind: 'loaded'; chunkSectors: number; map: Map<number, number> };

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** What activating `image` (the whole COW device) must give, by the persistent format's rules. */
export function predict(image: Buffer): Prediction {
  const h = readCowHeader(image);
  if (h.magic === 0) return { kind: 'new' };
  if (h.magic !== SNAP_MAGIC) return { kind: 'refuse', why: `magic 0x${h.magic.toString(16)}` };
  if (h.version !== COW_VERSION) return { kind: 'refuse', why: `version ${h.version}` };
  const chunk = Number(h.chunkSize);
  if (!isPow2(chunk)) return { kind: 'refuse', why: `chunk size ${chunk} is not a power of 2` };
  if (chunk > MAX_CHUNK_SECTORS) return { kind: 'refuse', why: `chunk size ${chunk} too large` };
  const chunkBytes = chunk * SECTOR;
  const limit = Math.floor(image.length / chunkBytes);
  if (limit <= 1) return { kind: 'refuse', why: `chunk size ${chunk}: the device holds no exception area` };
  if (h.valid === 0) return { kind: 'invalid' };
  const per = chunkBytes / EXCEPTION_BYTES;
  const isArea = (c: number): boolean => c === 0 || (c - 1) % (per + 1) === 0;
  const map = new Map<number, number>();
  for (let area = 0; ; area++) {
    const at = areaLocation(per, area);
    if (at >= limit) break;
    let n = 0;
    for (; n < per; n++) {
      const off = at * chunkBytes + n * EXCEPTION_BYTES;
      const oldChunk = image.readBigUInt64LE(off);
      const newChunk = image.readBigUInt64LE(off + 8);
      if (newChunk === 0n) break;
      if (newChunk < 2n || newChunk >= BigInt(limit) || isArea(Number(newChunk))) {
        return { kind: 'refuse', why: `area ${area} entry ${n}: new_chunk ${newChunk} outside the ${limit} data chunks` };
      }
      if (oldChunk < BigInt(Number.MAX_SAFE_INTEGER)) map.set(Number(oldChunk), Number(newChunk)); // a later entry wins
    }
    if (n < per) break;
  }
  return { kind: 'loaded', chunkSectors: chunk, map };
}

/** The bytes a loaded snapshot must read: per chunk, the COW chunk its exception names, or the origin's data. */
function expectedSnapshot(p: Extract<Prediction, { kind: 'loaded' }>, image: Buffer, origin: DataModel): Buffer {
  const out = origin.expected(0n, Number(VOL_SECTORS));
  const cb = p.chunkSectors * SECTOR;
  for (const [oldChunk, newChunk] of p.map) {
    if (oldChunk * cb >= out.length) continue; // past the origin: never looked up
    image.copy(out, oldChunk * cb, newChunk * cb, newChunk * cb + cb);
  }
  return out;
}

/*----------------------------------------------------------------
 * Cases
 *--------------------------------------------------------------*/

interface SnapCase {
  seed: number;
  what: string;
  image: Buffer;
}

/** Byte offset of exception `i` (in the order of the good image) in the COW. */
function entryOffset(cow: CowImage, i: number): number {
  const per = cow.exceptionsPerArea;
  return areaLocation(per, Math.floor(i / per)) * CHUNK_BYTES + (i % per) * EXCEPTION_BYTES;
}

/** The seeded plan of corruptions of `good` (a valid image with exceptions in more than one area). */
export function planCases(good: Buffer, base: number, type: string, scale: 'ci' | 'release'): SnapCase[] {
  const cow = readCow(good, { chunkSize: CHUNK, originSectors: VOL_SECTORS });
  const n = cow.exceptions.length;
  const limit = COW_BYTES / CHUNK_BYTES;
  const out: SnapCase[] = [];
  let i = 0;
  const add = (what: string, edit: (img: Buffer, rand: () => number) => string | void): void => {
    const seed = caseSeed(base, `corrupt/${type}`, i++);
    const rand = prng(seed);
    const img = Buffer.from(good);
    const more = edit(img, rand);
    if (!img.equals(good)) out.push({ seed, what: more ? `${what} ${more}` : what, image: img });
  };
  const u32 = (at: number, v: number) => (img: Buffer) => void img.writeUInt32LE(v >>> 0, at);
  const rounds = scale === 'ci' ? 1 : 3;
  for (const v of [0, SNAP_MAGIC ^ 1, 0xffffffff, 0x4e536e53]) add(`header magic := 0x${v.toString(16)}`, u32(0, v));
  for (const v of [0, 2, 0xffffffff]) add(`header valid := ${v}`, u32(4, v));
  for (const v of [0, 2, 0xffffffff]) add(`header version := ${v}`, u32(8, v));
  for (const v of [0, 1, 3, 4, 6, 16, MAX_CHUNK_SECTORS, 0x80000000, 0xffffffff]) {
    if (type === 'snapshot' && isPow2(v) && v > 64) continue; // the in-tree target allocates chunk-sized buffers before it checks the device's size
    add(`header chunk_size := ${v}`, u32(12, v));
  }
  const entry = (rand: () => number): number => Math.floor(rand() * n);
  for (let r = 0; r < rounds; r++) {
    const setNew = (v: bigint, what: string): void =>
      add(`exception new_chunk := ${what}`, (img, rand) => {
        const e = entry(rand);
        img.writeBigUInt64LE(v, entryOffset(cow, e) + 8);
        return `(entry ${e})`;
      });
    setNew(BigInt(limit), `${limit} (the device's end)`);
    setNew(0xffffffffffffffffn, '2^64-1');
    setNew(1n, '1 (exception area 0)');
    setNew(BigInt(areaLocation(cow.exceptionsPerArea, 1)), 'exception area 1');
    setNew(0n, '0 (a terminator: the list ends early)');
    add('exception new_chunk := another entry\'s (two chunks share one copy)', (img, rand) => {
      const a = entry(rand);
      const b = entry(rand);
      if (a === b) return;
      img.writeBigUInt64LE(img.readBigUInt64LE(entryOffset(cow, b) + 8), entryOffset(cow, a) + 8);
      return `(entry ${a} := entry ${b})`;
    });
    add('exception old_chunk := another entry\'s (one chunk copied twice)', (img, rand) => {
      const a = entry(rand);
      const b = entry(rand);
      if (a === b) return;
      img.writeBigUInt64LE(img.readBigUInt64LE(entryOffset(cow, b)), entryOffset(cow, a));
      return `(entry ${a} := entry ${b})`;
    });
    for (const [v, what] of [[BigInt(ORIGIN_CHUNKS), `${ORIGIN_CHUNKS} (the origin's end)`], [0xffffffffffffffffn, '2^64-1']] as const) {
      add(`exception old_chunk := ${what}`, (img, rand) => {
        const e = entry(rand);
        img.writeBigUInt64LE(v, entryOffset(cow, e));
        return `(entry ${e})`;
      });
    }
  }
  const randomCases = scale === 'ci' ? 6 : 60;
  for (let r = 0; r < randomCases; r++) {
    add('random', (img, rand) => {
      const kind = r % 3;
      if (kind === 0) {
        const k = 1 + Math.floor(rand() * 4);
        const at: number[] = [];
        for (let j = 0; j < k; j++) {
          const p = Math.floor(rand() * 16);
          img[p] = Math.floor(rand() * 256);
          at.push(p);
        }
        return `header bytes at ${at.join(',')}`;
      }
      const e = entry(rand);
      const off = entryOffset(cow, e) + Math.floor(rand() * EXCEPTION_BYTES);
      if (kind === 1) {
        img[off] = Math.floor(rand() * 256);
        return `exception-area byte ${off} (entry ${e})`;
      }
      const bit = Math.floor(rand() * 8);
      img[off] = img[off]! ^ (1 << bit);
      return `exception-area bit ${bit} of byte ${off} (entry ${e})`;
    });
  }
  return out;
}

/*----------------------------------------------------------------
 * The rig
 *--------------------------------------------------------------*/

interface SnapRig {
  type: SnapshotLabType;
  family: SnapshotFamily;
  prefix: string;
  vol: string;
  volPath: string;
  cow: string;
  cowDisk: string;
  originDev: string;
  origin: DataModel;
}

function removePrefix(prefix: string): void {
  const list = spawnSync('dmsetup', ['ls'], { encoding: 'utf8' }).stdout ?? '';
  const names = list.split('\n').map((l) => l.split(/\s+/)[0] ?? '').filter((n) => n.startsWith(prefix));
  const typeOf = (n: string): string => (spawnSync('dmsetup', ['table', n], { encoding: 'utf8' }).stdout ?? '').split(' ')[2] ?? '';
  const rank = (n: string): number => {
    const t = typeOf(n);
    return t.endsWith('snapshot') ? 0 : t.endsWith('origin') || t.endsWith('merge') ? 1 : n.endsWith('-real') ? 2 : 3;
  };
  for (const n of names.sort((a, b) => rank(a) - rank(b))) spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'remove', '--retry', n]);
}

async function linearOn(dm: DeviceMapper, name: string, dev: string, length: Sectors): Promise<string> {
  await dm.create(name, { targets: [linear.line({ device: dev, offset: sectors(0) }, { start: sectors(0), length, type: 'linear' })] });
  return dm.devicePath(name);
}

function kernelLinesSince(marker: string): string[] {
  const lines = (spawnSync('dmesg', { encoding: 'utf8' }).stdout ?? '').split('\n');
  let i = lines.length - 1;
  while (i >= 0 && !lines[i]!.includes(marker)) i--;
  return lines.slice(i + 1).filter(Boolean);
}

const errnoOf = (e: DmError): string => e.code;

/** The first chunk where `got` and `want` differ, described. */
function firstDiff(got: Buffer, want: Buffer, chunkBytes: number): string | undefined {
  if (got.length !== want.length) return `read ${got.length} bytes, want ${want.length}`;
  for (let at = 0; at < want.length; at += chunkBytes) {
    if (!got.subarray(at, at + chunkBytes).equals(want.subarray(at, at + chunkBytes))) return `chunk ${at / chunkBytes} (bytes ${at}..) differs`;
  }
  return undefined;
}

type Outcome = { created: false; code: string; message: string; logLines: number } | { created: true; status: string; read?: Buffer; readError?: string };

async function activate(dm: DeviceMapper, rig: SnapRig, name: string, marker: string, read: boolean): Promise<Outcome> {
  kmsg(marker);
  try {
    await deadline(createSnapshot(dm, { origin: rig.vol, name, cow: rig.cow, chunkSize: CHUNK, store: 'P', family: rig.family }), 'snapshot create');
  } catch (e) {
    if (e instanceof DmError) {
      const logLines = kernelLinesSince(marker).filter((l) => l.includes('device-mapper')).length;
      return { created: false, code: errnoOf(e), message: e.message, logLines };
    }
    throw e;
  }
  let status = '';
  let got: Buffer | undefined;
  let readError: string | undefined;
  try {
    const [st] = await deadline(dm.status({ name }), 'status');
    status = st?.status ?? '';
    if (read && !status.startsWith('Invalid')) {
      try {
        got = readDirect(dm.devicePath(name), 0n, VOL_SECTORS * 512n, MiB);
      } catch (e) {
        readError = (e as Error).message;
      }
    }
  } finally {
    await deadline(removeSnapshot(dm, name), 'snapshot remove');
  }
  return { created: true, status, ...(got ? { read: got } : {}), ...(readError ? { readError } : {}) };
}

async function openRig(dm: DeviceMapper, scope: Scope, type: SnapshotLabType, seed: number): Promise<SnapRig> {
  const [originDev, cowDisk] = ramdisks(scope, 2, bytes(16n * MiB)).map((d) => d.path) as [string, string];
  const prefix = `lcs-${type === 'dmkit-snapshot' ? 'k' : 't'}`;
  scope.defer(`remove ${prefix}-*`, () => removePrefix(`${prefix}-`));
  const cow = await linearOn(dm, `${prefix}-cow`, cowDisk, sectors(BigInt(COW_BYTES / SECTOR)));
  const origin = new DataModel(VOL_SECTORS, (seed % 100000) + 7);
  stampDirect(originDev, undefined, 0n, VOL_SECTORS, origin.baseSeed, { bs: MiB });
  const vol = `${prefix}-vol`;
  const volPath = await linearOn(dm, vol, originDev, VOL_SECTORS);
  return { type, family: familyOf(type), prefix, vol, volPath, cow, cowDisk, originDev, origin };
}

/** The seeded workload: one snapshot, origin writes and snapshot writes; returns the good image and the snapshot's model. */
async function build(dm: DeviceMapper, rig: SnapRig, seed: number): Promise<{ good: Buffer; model: DataModel; summary: string }> {
  writeDirect(rig.cow, 0n, Buffer.alloc(64 * 1024));
  const name = `${rig.prefix}-s`;
  await createSnapshot(dm, { origin: rig.vol, name, cow: rig.cow, chunkSize: CHUNK, store: 'P', family: rig.family });
  const model = rig.origin.clone();
  const rand = prng(seed);
  const snapPath = dm.devicePath(name);
  let w = 0;
  // About 150 chunks copied: three exception areas in use.
  for (let k = 0; k < 40; k++) {
    const len = BigInt(2 + 2 * Math.floor(rand() * 4));
    const start = BigInt(Math.floor(rand() * Number(VOL_SECTORS - len)));
    stampDirect(rig.volPath, rig.origin, start, len, seed + 1000 + w++);
  }
  for (let k = 0; k < 12; k++) {
    const len = BigInt(2 + 2 * Math.floor(rand() * 3));
    const start = BigInt(Math.floor(rand() * Number(VOL_SECTORS - len)));
    stampDirect(snapPath, model, start, len, seed + 1000 + w++);
  }
  const [st] = await dm.status({ name });
  await removeSnapshot(dm, name);
  const good = readDirect(rig.cow, 0n, BigInt(COW_BYTES), MiB);
  const cow = readCow(good, { chunkSize: CHUNK, originSectors: VOL_SECTORS });
  return { good, model, summary: `${cow.exceptions.length} exceptions in ${cow.areas} areas; status ${st?.status ?? '?'}` };
}

function originIntact(rig: SnapRig): string | undefined {
  const got = readDirect(rig.volPath, 0n, VOL_SECTORS * 512n, MiB);
  return firstDiff(got, rig.origin.expected(0n, Number(VOL_SECTORS)), CHUNK_BYTES);
}

/*----------------------------------------------------------------
 * The overflow race (fix d)
 *--------------------------------------------------------------*/

const RACE_VOL = sectors((16n * MiB) / 512n);
const RACE_WRITERS = 32;
const RACE_WRITE = 64n * 1024n;

function setKnob(ms: number): boolean {
  if (!fs.existsSync(KNOB)) return false;
  fs.writeFileSync(KNOB, `${ms}\n`);
  return true;
}

/** One round of the overflow race; returns the problem found, or undefined. */
async function raceRound(dm: DeviceMapper, rig: SnapRig, round: number, seed: number): Promise<string | undefined> {
  const prefix = `${rig.prefix}r${round}`;
  writeDirect(rig.cowDisk, 0n, Buffer.alloc(64 * 1024));
  try {
    const cow = await linearOn(dm, `${prefix}-cow`, rig.cowDisk, sectors(BigInt(COW_BYTES / SECTOR)));
    const model = new DataModel(RACE_VOL, (seed % 100000) + 11);
    stampDirect(rig.originDev, undefined, 0n, RACE_VOL, model.baseSeed, { bs: MiB });
    const vol = `${prefix}-vol`;
    const volPath = await linearOn(dm, vol, rig.originDev, RACE_VOL);
    const name = `${prefix}-s`;
    await createSnapshot(dm, { origin: vol, name, cow, chunkSize: CHUNK, store: 'P', family: rig.family });
    const writes = Array.from({ length: RACE_WRITERS }, (_, w) => {
      const start = BigInt(w) * 4n * (RACE_WRITE / 512n) + BigInt(round % 8) * 64n;
      const s = (seed % 100000) + 1000 * (round + 1) + w;
      model.write(start, RACE_WRITE / 512n, s);
      return writeDirectAsync(volPath, start * 512n, patternBuffer(s, sectors(start), Number(RACE_WRITE / 512n)));
    });
    const results = await deadline(Promise.allSettled(writes), 'origin writes during the overflow');
    const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    if (failed.length) return `origin writes failed during the overflow: ${failed[0]}`;
    const [st] = await dm.status({ name });
    if (st?.status !== 'Invalid') return `the overflowed snapshot reports '${st?.status}', want Invalid`;
    await removeSnapshot(dm, name);
    const got = readDirect(volPath, 0n, RACE_VOL * 512n, MiB);
    const d = firstDiff(got, model.expected(0n, Number(RACE_VOL)), CHUNK_BYTES);
    if (d) return `the origin lost a write: ${d}`;
    const h = readCowHeader(readDirect(cow, 0n, 4096n, 4096n));
    const shown = `magic 0x${h.magic.toString(16)} valid ${h.valid} version ${h.version} chunk_size ${h.chunkSize}`;
    if (h.magic !== SNAP_MAGIC || h.version !== COW_VERSION || h.chunkSize !== CHUNK || h.valid !== 0) {
      return `the header on disk after the overflow is not an intact invalid header: ${shown} (want magic 0x${SNAP_MAGIC.toString(16)} valid 0 version ${COW_VERSION} chunk_size ${CHUNK})`;
    }
    let again: string;
    try {
      again = (await createSnapshot(dm, { origin: vol, name: `${prefix}-a`, cow, chunkSize: CHUNK, store: 'P', family: rig.family })).name;
    } catch (e) {
      return `reactivating the invalidated COW was refused (${(e as Error).message}); header ${shown}`;
    }
    const [st2] = await dm.status({ name: again });
    await removeSnapshot(dm, again);
    if (st2?.status !== 'Invalid') return `reactivated, the snapshot reports '${st2?.status}', want Invalid`;
    return undefined;
  } finally {
    removePrefix(`${prefix}-`);
  }
}

/*----------------------------------------------------------------
 * One target
 *--------------------------------------------------------------*/

export async function runSnapshotTarget(ctx: LabContext, dm: DeviceMapper, type: SnapshotLabType, only?: { seed: number }): Promise<{ images: number; known: number }> {
  const started = Date.now();
  const scope = new Scope();
  let images = 0;
  let known = 0;
  let hung = false;
  const tally = new Map<string, number>();
  const bump = (k: string): void => void tally.set(k, (tally.get(k) ?? 0) + 1);
  try {
    const rig = await openRig(dm, scope, type, ctx.seed);
    const built = await build(dm, rig, caseSeed(ctx.seed, `corrupt/${type}/build`, 0) % 1_000_000);
    ctx.log(`${type}: good COW image: ${built.summary}`);
    const fail = (seed: number, detail: string, log = ''): void => {
      ctx.fail({ component: 'corrupt', target: type, seed, detail, log: `${log}\nkernel log (tail):\n${kernelLinesSince('dmkit-lab: ').slice(-30).join('\n')}` });
    };
    // Baseline: the good image loads valid and reads as the snapshot's model.
    const base = await activate(dm, rig, `${rig.prefix}-s`, `corrupt ${type} baseline`, true);
    const want = built.model.expected(0n, Number(VOL_SECTORS));
    if (!base.created || !base.read || firstDiff(base.read, want, CHUNK_BYTES)) {
      fail(ctx.seed, `good COW image unusable: ${base.created ? `status ${base.status}, ${base.read ? firstDiff(base.read, want, CHUNK_BYTES) : base.readError}` : `${base.code} ${base.message}`}`);
      return { images: 0, known: 0 };
    }
    const cases = planCases(built.good, ctx.seed, type, ctx.scale).filter((c) => !only || c.seed === only.seed);
    const raceRounds = ctx.scale === 'ci' ? 2 : 6;
    for (const c of cases) {
      images++;
      const p = predict(c.image);
      writeDirect(rig.cow, 0n, c.image);
      let o: Outcome;
      try {
        o = await activate(dm, rig, `${rig.prefix}-s`, `corrupt ${type} case ${c.seed}: ${c.what}`, p.kind === 'loaded' || p.kind === 'new');
      } catch (e) {
        if (e instanceof Hang) {
          fail(c.seed, `hang: ${e.message}; corruption: ${c.what}`);
          hung = true;
          break;
        }
        fail(c.seed, `unexpected error: ${(e as Error).message}; corruption: ${c.what}`, (e as Error).stack ?? '');
        continue;
      }
      const problem = judge(type, p, o, c.image, rig.origin);
      if (problem === 'known') {
        known++;
        bump('known_upstream');
      } else if (problem) fail(c.seed, `${problem}; corruption: ${c.what} (predicted ${p.kind}${p.kind === 'refuse' ? `: ${p.why}` : ''})`);
      else bump(o.created ? (o.status.startsWith('Invalid') ? 'invalid' : 'loaded') : `refused ${o.code}`);
      const lost = originIntact(rig);
      if (lost) fail(c.seed, `the origin changed under a corrupt snapshot: ${lost}; corruption: ${c.what}`);
    }
    if (!hung) {
      const knob = type === 'dmkit-snapshot' && setKnob(200);
      try {
        for (let r = 0; r < raceRounds; r++) {
          const seed = caseSeed(ctx.seed, `corrupt/${type}/race`, r);
          if (only && only.seed !== seed) continue;
          images++;
          kmsg(`corrupt ${type} overflow race round ${r} (case ${seed})`);
          try {
            const problem = await raceRound(dm, rig, r, seed);
            if (problem) fail(seed, `overflow race (invalidate_delay_ms ${knob ? 200 : 'absent'}): ${problem}`);
            else bump('race: intact invalid header');
          } catch (e) {
            if (e instanceof Hang) {
              fail(seed, `overflow race: hang: ${e.message}`);
              hung = true;
              break;
            }
            fail(seed, `overflow race: unexpected error: ${(e as Error).message}`, (e as Error).stack ?? '');
          }
        }
      } finally {
        if (knob) setKnob(0);
      }
    }
    ctx.log(`${type}: ${images} corrupted images in ${((Date.now() - started) / 1000).toFixed(0)} s: ${[...tally].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    if (known) ctx.log(`${type}: known upstream: ${IN_TREE_UNCHECKED}`);
  } finally {
    if (!hung) {
      try {
        scope.close();
      } catch (e) {
        ctx.log(`${type}: ${(e as Error).message}`);
      }
    }
  }
  return { images, known };
}

/** What is wrong with an outcome given the prediction: a problem, 'known' (a documented upstream weakness), or undefined. */
function judge(type: SnapshotLabType, p: Prediction, o: Outcome, image: Buffer, origin: DataModel): string | 'known' | undefined {
  const inTree = type === 'snapshot';
  if (!o.created) {
    if (o.logLines < 1) return `refused (${o.code}) without a kernel log line`;
    if (p.kind === 'refuse') return inTree || o.code === 'EINVAL' ? undefined : `refused with ${o.code}, want EINVAL`;
    if (p.kind === 'invalid') return undefined; // refusing an invalid store is as good as loading it Invalid
    return `refused (${o.code}: ${o.message}), but the image is a ${p.kind === 'new' ? 'new store (magic 0)' : 'loadable COW'}`;
  }
  const invalid = o.status.startsWith('Invalid');
  switch (p.kind) {
    case 'refuse':
      return inTree ? 'known' : `loaded (status '${o.status}'), want refused: ${p.why}`;
    case 'invalid':
      return invalid ? undefined : `loaded with status '${o.status}', want Invalid (header valid = 0)`;
    case 'new':
    case 'loaded': {
      if (invalid) return `came up Invalid, but the image is ${p.kind === 'new' ? 'a new store' : 'loadable'}`;
      if (o.readError) return `reading the snapshot failed: ${o.readError}`;
      if (!o.read) return 'the snapshot was not read';
      const want = p.kind === 'new' ? origin.expected(0n, Number(VOL_SECTORS)) : expectedSnapshot(p, image, origin);
      const d = firstDiff(o.read, want, CHUNK_BYTES);
      return d ? `the snapshot reads other data than its COW image says: ${d}` : undefined;
    }
  }
}
