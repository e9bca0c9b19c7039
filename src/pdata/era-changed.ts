/**
 * "Which blocks changed since era N?" read from era metadata, with the semantics of thin-provisioning-
 * tools' `era_invalidate --written-since N`: a block is listed when its era-array entry is >= N or when
 * an archived writeset of an era >= N has its bit set. Like era_invalidate, the superblock's *current*
 * writeset is not consulted (opt in with `includeCurrent`); a metadata snapshot has none, since taking
 * it rolls the era over and archives the writeset.
 *
 * One difference by design: with `snapshot`, the roots are read from the held metadata snapshot.
 * era_invalidate 0.9.0 (Debian 12) accepts --metadata-snapshot but opens the live superblock's roots
 * anyway (its metadata(bm, snap) constructor ignores the location).
 *
 * Every block reached is validated (checksum, block number, node sanity) as in reader.ts; damage is a
 * MetadataDamage. The hot loops work on 32-bit words: the result is a bit set, OR-ed word by word from
 * the writesets and filled from the era array, then cut into maximal runs.
 */
import { CHECKSUM_SALT } from './checksum';
import { FileBlockReader } from './block-file';
import { ERA_MAGIC, MetadataDamage, MetadataImage, type BlockReader } from './reader';
import { sectors, targetBlocks, type Sectors, type TargetBlocks } from '../units';

export const ERA_MAX = 0xffffffff;

/** An end-exclusive run of era blocks. */
export interface BlockRange {
  readonly start: TargetBlocks;
  readonly end: TargetBlocks;
}

export interface ChangedBlocks {
  /** The era block size. */
  readonly blockSize: Sectors;
  readonly nrBlocks: TargetBlocks;
  readonly currentEra: number;
  /** The superblock's uuid field as 32 hex digits (the kernel leaves it zero). */
  readonly metadataUuid: string;
  readonly sinceEra: number;
  /** Where the roots came from, and that superblock's block (0, or the held snapshot's). */
  readonly roots: 'superblock' | 'snapshot';
  readonly rootsBlock: number;
  /** Merged, sorted, end-exclusive runs of changed blocks. */
  readonly ranges: readonly BlockRange[];
  /** Blocks in all ranges. */
  readonly changed: TargetBlocks;
}

export interface ChangedOptions {
  /** Read the held metadata snapshot's roots instead of the live superblock's (default false). */
  readonly snapshot?: boolean;
  /** Also list the superblock's current writeset when the current era is >= since (default false). */
  readonly includeCurrent?: boolean;
  /** Read with O_DIRECT (a live metadata device). */
  readonly direct?: boolean;
}

/** Checks an era number given by a caller: a whole number in [0, 2^32 - 1]. */
export function checkEra(era: unknown, what = 'era'): number {
  const n = typeof era === 'bigint' ? Number(era) : era;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > ERA_MAX) {
    throw new RangeError(`${what} must be a whole number from 0 to ${ERA_MAX}, got ${typeof era === 'string' ? JSON.stringify(era) : String(era)}`);
  }
  return n;
}

const SB = {
  blocknr: 8,
  uuid: 16,
  magic: 32,
  version: 40,
  dataBlockSize: 172,
  metadataBlockSize: 176,
  nrBlocks: 180,
  currentEra: 184,
  currentBits: 188,
  currentRoot: 192,
  writesetTree: 200,
  eraArray: 208,
  metadataSnap: 216,
} as const;

function eraSuperblock(img: MetadataImage, at: number, what: string): Buffer {
  const sb = img.checked(at, CHECKSUM_SALT.eraSuperblock, SB.blocknr, what);
  if (sb.readBigUInt64LE(SB.magic) !== ERA_MAGIC) throw new MetadataDamage(at, `${what} magic`);
  if (sb.readUInt32LE(SB.version) !== 1) throw new MetadataDamage(at, `${what} version ${sb.readUInt32LE(SB.version)}`);
  if (sb.readUInt32LE(SB.metadataBlockSize) !== 8) throw new MetadataDamage(at, `${what} metadata block size ${sb.readUInt32LE(SB.metadataBlockSize)}`);
  const bs = sb.readUInt32LE(SB.dataBlockSize);
  if (bs === 0 || bs % 8 !== 0) throw new MetadataDamage(at, `${what} data block size ${bs}`);
  return sb;
}

/** 32-bit view of a 4-byte-aligned slice (copied when it is not aligned). */
function words32(b: Buffer): Uint32Array {
  if (b.byteOffset % 4 === 0) return new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2);
  const c = new Uint8Array(b);
  return new Uint32Array(c.buffer, 0, b.length >>> 2);
}

class BitSet {
  words: Uint32Array;
  constructor(bits: number) {
    this.words = new Uint32Array(Math.ceil(bits / 32));
  }
  grow(bits: number): void {
    const need = Math.ceil(bits / 32);
    if (need <= this.words.length) return;
    const w = new Uint32Array(need);
    w.set(this.words);
    this.words = w;
  }
}

/** OR the bitset at `root` (nrBits bits) into `into`, validating every block. */
function orBitset(img: MetadataImage, root: number, nrBits: number, into: BitSet | null): void {
  if (!into) return img.walkArray(root, 8, Math.ceil(nrBits / 64), () => undefined);
  into.grow(nrBits);
  const w = into.words;
  const fullWords = nrBits >>> 5;
  const tailBits = nrBits & 31;
  img.walkArray(root, 8, Math.ceil(nrBits / 64), (first, values, nr) => {
    const v = words32(values);
    const base = 2 * first;
    const n = Math.min(2 * nr, fullWords - base);
    for (let i = 0; i < n; i++) w[base + i]! |= v[i]!;
    // The word holding bit nrBits - 1, when it is partial: bits past nrBits are not part of the set.
    if (tailBits && fullWords >= base && fullWords < base + 2 * nr) w[fullWords]! |= v[fullWords - base]! & ((1 << tailBits) - 1);
  });
}

/** Marks blocks whose era-array entry is >= since. */
function markEraArray(img: MetadataImage, root: number, nrBlocks: number, since: number, into: BitSet): void {
  const w = into.words;
  img.walkArray(root, 4, nrBlocks, (first, values, nr) => {
    const v = words32(values);
    for (let i = 0; i < nr; i++) {
      if (v[i]! >= since) {
        const b = first + i;
        w[b >>> 5]! |= 1 << (b & 31);
      }
    }
  });
}

/** Maximal runs of set bits, as [start0, end0, start1, end1, ...] (end-exclusive). */
export function runsOf(words: Uint32Array): number[] {
  const out: number[] = [];
  let open = -1;
  for (let i = 0; i < words.length; i++) {
    const x = words[i]!;
    if (x === 0) {
      if (open >= 0) {
        out.push(open, i * 32);
        open = -1;
      }
      continue;
    }
    if (x === 0xffffffff) {
      if (open < 0) open = i * 32;
      continue;
    }
    for (let bit = 0; bit < 32; bit++) {
      const set = (x >>> bit) & 1;
      if (set && open < 0) open = i * 32 + bit;
      else if (!set && open >= 0) {
        out.push(open, i * 32 + bit);
        open = -1;
      }
    }
  }
  if (open >= 0) out.push(open, words.length * 32);
  return out;
}

/** The changed-block runs as flat [start, end, ...] numbers plus the metadata facts (no unit objects). */
export interface ChangedRuns extends Omit<ChangedBlocks, 'ranges' | 'changed'> {
  readonly runs: readonly number[];
}

export function changedRunsFromImage(img: MetadataImage, sinceEra: number, opts: ChangedOptions = {}): ChangedRuns {
  const since = checkEra(sinceEra, 'since era');
  const live = eraSuperblock(img, 0, 'era superblock');
  let sb = live;
  let rootsBlock = 0;
  if (opts.snapshot) {
    rootsBlock = Number(live.readBigUInt64LE(SB.metadataSnap));
    if (rootsBlock === 0) throw new EraSnapshotMissing();
    sb = eraSuperblock(img, rootsBlock, 'era metadata snapshot superblock');
  }
  const nrBlocks = sb.readUInt32LE(SB.nrBlocks);
  const currentEra = sb.readUInt32LE(SB.currentEra);
  const result = new BitSet(nrBlocks);
  img.walkBtree(Number(sb.readBigUInt64LE(SB.writesetTree)), 12, (key, value) => {
    if (key > BigInt(ERA_MAX)) throw new MetadataDamage(0, `writeset era ${key} exceeds 32 bits`);
    const era = Number(key);
    const bits = value.readUInt32LE(0);
    const root = Number(value.readBigUInt64LE(4));
    // Every writeset is read (and so validated) as era_invalidate does; only the recent ones count.
    orBitset(img, root, bits, era >= since ? result : null);
  });
  markEraArray(img, Number(sb.readBigUInt64LE(SB.eraArray)), nrBlocks, since, result);
  if (opts.includeCurrent && !opts.snapshot && currentEra >= since) {
    const root = Number(sb.readBigUInt64LE(SB.currentRoot));
    if (root !== 0) orBitset(img, root, sb.readUInt32LE(SB.currentBits), result);
  }
  return {
    blockSize: sectors(sb.readUInt32LE(SB.dataBlockSize)),
    nrBlocks: targetBlocks(nrBlocks),
    currentEra,
    metadataUuid: sb.subarray(SB.uuid, SB.uuid + 16).toString('hex'),
    sinceEra: since,
    roots: opts.snapshot ? 'snapshot' : 'superblock',
    rootsBlock,
    runs: runsOf(result.words),
  };
}

export function toChangedBlocks(r: ChangedRuns): ChangedBlocks {
  const ranges: BlockRange[] = [];
  let changed = 0;
  const { runs, ...rest } = r;
  for (let i = 0; i < runs.length; i += 2) {
    ranges.push({ start: targetBlocks(runs[i]!), end: targetBlocks(runs[i + 1]!) });
    changed += runs[i + 1]! - runs[i]!;
  }
  return { ...rest, ranges, changed: targetBlocks(changed) };
}

/** A snapshot was asked for but the superblock holds none. */
export class EraSnapshotMissing extends Error {
  readonly code = 'ERR_ERA_NO_METADATA_SNAPSHOT';
  constructor() {
    super('no metadata snapshot is held (the era superblock\'s metadata_snap is 0)');
    this.name = 'EraSnapshotMissing';
  }
}

/**
 * The blocks changed since `sinceEra` in era metadata: a metadata file or device path, an image in
 * memory, or a BlockReader.
 */
export function changedBlocksFromMetadata(source: string | Buffer | BlockReader, sinceEra: number, opts: ChangedOptions = {}): ChangedBlocks {
  return toChangedBlocks(changedRunsFromMetadata(source, sinceEra, opts));
}

export function changedRunsFromMetadata(source: string | Buffer | BlockReader, sinceEra: number, opts: ChangedOptions = {}): ChangedRuns {
  checkEra(sinceEra, 'since era');
  if (typeof source === 'string') {
    const file = new FileBlockReader(source, { direct: opts.direct ?? false });
    try {
      return changedRunsFromImage(new MetadataImage(file), sinceEra, opts);
    } finally {
      file.close();
    }
  }
  if (!Buffer.isBuffer(source) && (typeof source !== 'object' || source === null || typeof (source as BlockReader).read !== 'function')) {
    throw new TypeError('metadata source must be a path, a Buffer or a BlockReader');
  }
  return changedRunsFromImage(new MetadataImage(source), sinceEra, opts);
}

/** era_invalidate's XML for these runs, byte for byte. */
export function eraInvalidateXml(runs: readonly number[]): string {
  const parts: string[] = ['<blocks>\n'];
  for (let i = 0; i < runs.length; i += 2) {
    const s = runs[i]!;
    const e = runs[i + 1]!;
    parts.push(e - s === 1 ? `  <block block="${s}"/>\n` : `  <range begin="${s}" end = "${e}"/>\n`);
  }
  parts.push('</blocks>\n');
  return parts.join('');
}
