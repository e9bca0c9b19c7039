/**
 * A writer of era metadata images, for host tests and the P6 benchmark: superblock, metadata space map
 * (index block, bitmap blocks, an empty ref-count tree), the writeset tree with one bitset per archived
 * era, the current writeset's bitset and the era array, optionally a held metadata snapshot with trees of
 * its own. Layouts follow kernel-facts.md §2-3; era_check accepts the images and era_invalidate reads them
 * (test/unit/era-changed.test.ts checks both).
 *
 * Bit sets are Uint32Arrays: block b is bit (b & 31) of word b >>> 5, which is also the on-disk order
 * (a bitset's le64 word k is u32 words 2k and 2k + 1, little end first).
 */
import { blockChecksum, CHECKSUM_SALT } from '../pdata/checksum';
import { ERA_MAGIC, METADATA_BLOCK_BYTES as B } from '../pdata/reader';
import { prng } from './random';

export interface EraWriteset {
  readonly era: number;
  readonly nrBits: number;
  readonly bits: Uint32Array;
}

/** What a set of era roots describes: the era array and the archived writesets. */
export interface EraContent {
  /** Last era each block was written in (digested), one entry per origin block. */
  readonly eraArray: Uint32Array;
  readonly writesets: readonly EraWriteset[];
}

export interface EraImageSpec extends EraContent {
  readonly blockSizeSectors: number;
  readonly nrBlocks: number;
  readonly currentEra: number;
  /** The current era's writeset (default: an empty one of nrBlocks bits). */
  readonly current?: { readonly nrBits: number; readonly bits: Uint32Array };
  readonly uuid?: Buffer;
  /** A held metadata snapshot: a second superblock whose roots point at this content. */
  readonly snapshot?: EraContent;
  /** Free blocks after the used ones (default 64). */
  readonly spareBlocks?: number;
}

const NODE_HEADER = 32;
const ARRAY_HEADER = 24;
const INTERNAL = 1;
const LEAF = 2;
const ENTRIES_PER_BITMAP = (B - 16) * 4;
const MAX_INDEX_ENTRIES = 255;

/** A fresh bit set of `n` bits. */
export function bitSet(n: number): Uint32Array {
  return new Uint32Array(Math.ceil(n / 32));
}

export function setBit(bits: Uint32Array, b: number): void {
  bits[b >>> 5]! |= 1 << (b & 31);
}

class Builder {
  readonly blocks: Buffer[] = [];
  readonly salts: number[] = [];
  readonly refs: number[] = [];

  alloc(salt: number): number {
    const n = this.blocks.length;
    this.blocks.push(Buffer.alloc(B));
    this.salts.push(salt);
    this.refs.push(1);
    return n;
  }

  /** A btree holding `count` entries (keys ascending); returns the root. */
  btree(count: number, valueSize: number, key: (i: number) => bigint, value: (i: number, out: Buffer) => void): number {
    const max = (n: number): number => 3 * Math.floor((B - NODE_HEADER) / (8 + n) / 3);
    let level: { block: number; low: bigint }[] = [];
    const node = (internal: boolean, vsize: number, n: number, fill: (j: number, keys: Buffer, vals: Buffer) => void): number => {
      const blk = this.alloc(CHECKSUM_SALT.btreeNode);
      const b = this.blocks[blk]!;
      const m = max(vsize);
      b.writeUInt32LE(internal ? INTERNAL : LEAF, 4);
      b.writeBigUInt64LE(BigInt(blk), 8);
      b.writeUInt32LE(n, 16);
      b.writeUInt32LE(m, 20);
      b.writeUInt32LE(vsize, 24);
      for (let j = 0; j < n; j++) fill(j, b.subarray(NODE_HEADER + 8 * j, NODE_HEADER + 8 * j + 8), b.subarray(NODE_HEADER + 8 * m + vsize * j, NODE_HEADER + 8 * m + vsize * (j + 1)));
      return blk;
    };
    // Spread entries evenly so that no non-root node falls under a third full.
    const spread = (total: number, per: number): number[] => {
      const nodes = Math.max(1, Math.ceil(total / per));
      const base = Math.floor(total / nodes);
      return Array.from({ length: nodes }, (_, i) => base + (i < total % nodes ? 1 : 0));
    };
    let at = 0;
    for (const n of spread(count, max(valueSize))) {
      const first = at;
      const blk = node(false, valueSize, n, (j, k, v) => {
        k.writeBigUInt64LE(key(first + j));
        value(first + j, v);
      });
      level.push({ block: blk, low: count ? key(first) : 0n });
      at += n;
    }
    while (level.length > 1) {
      const up: typeof level = [];
      let i = 0;
      for (const n of spread(level.length, max(8))) {
        const kids = level.slice(i, i + n);
        const blk = node(true, 8, n, (j, k, v) => {
          k.writeBigUInt64LE(kids[j]!.low);
          v.writeBigUInt64LE(BigInt(kids[j]!.block));
        });
        up.push({ block: blk, low: kids[0]!.low });
        i += n;
      }
      level = up;
    }
    return level[0]!.block;
  }

  /** A dm_array of `count` values of `valueSize` bytes; `put(i, block, at)` writes value i. */
  array(count: number, valueSize: number, put: (i: number, b: Buffer, at: number) => void): number {
    const per = Math.floor((B - ARRAY_HEADER) / valueSize);
    const locs: number[] = [];
    for (let first = 0; first < count; first += per) {
      const nr = Math.min(per, count - first);
      const blk = this.alloc(CHECKSUM_SALT.arrayBlock);
      const b = this.blocks[blk]!;
      b.writeUInt32LE(per, 4);
      b.writeUInt32LE(nr, 8);
      b.writeUInt32LE(valueSize, 12);
      b.writeBigUInt64LE(BigInt(blk), 16);
      for (let j = 0; j < nr; j++) put(first + j, b, ARRAY_HEADER + valueSize * j);
      locs.push(blk);
    }
    return this.btree(locs.length, 8, (i) => BigInt(i), (i, v) => void v.writeBigUInt64LE(BigInt(locs[i]!)));
  }

  bitset(nrBits: number, bits: Uint32Array): number {
    const words = Math.ceil(nrBits / 64);
    return this.array(words, 8, (i, b, at) => {
      b.writeUInt32LE(bits[2 * i] ?? 0, at);
      b.writeUInt32LE(bits[2 * i + 1] ?? 0, at + 4);
    });
  }

  content(c: EraContent, nrBlocks: number): { writesetTree: number; eraArray: number } {
    if (c.eraArray.length !== nrBlocks) throw new RangeError(`era array has ${c.eraArray.length} entries, expected ${nrBlocks}`);
    const sorted = [...c.writesets].sort((a, b) => a.era - b.era);
    const roots = sorted.map((w) => this.bitset(w.nrBits, w.bits));
    const writesetTree = this.btree(sorted.length, 12, (i) => BigInt(sorted[i]!.era), (i, v) => {
      v.writeUInt32LE(sorted[i]!.nrBits, 0);
      v.writeBigUInt64LE(BigInt(roots[i]!), 4);
    });
    const arr = c.eraArray;
    const eraArray = this.array(nrBlocks, 4, (i, b, at) => void b.writeUInt32LE(arr[i]!, at));
    return { writesetTree, eraArray };
  }
}

/** An era metadata image as specified. */
export function eraImage(spec: EraImageSpec): Buffer {
  const bld = new Builder();
  bld.alloc(CHECKSUM_SALT.eraSuperblock); // block 0
  const current = spec.current ?? { nrBits: spec.nrBlocks, bits: bitSet(spec.nrBlocks) };
  const currentRoot = bld.bitset(current.nrBits, current.bits);
  const live = bld.content(spec, spec.nrBlocks);
  let snapSb = 0;
  let snap: { writesetTree: number; eraArray: number } | undefined;
  if (spec.snapshot) {
    snap = bld.content(spec.snapshot, spec.nrBlocks);
    snapSb = bld.alloc(CHECKSUM_SALT.eraSuperblock);
  }
  // The metadata space map goes last: an empty ref-count tree, the index block and the bitmaps.
  const refCountRoot = bld.btree(0, 4, () => 0n, () => undefined);
  const index = bld.alloc(CHECKSUM_SALT.smIndex);
  const used = bld.blocks.length;
  let nrBitmaps = 1;
  while (nrBitmaps * ENTRIES_PER_BITMAP < used + nrBitmaps + (spec.spareBlocks ?? 64)) nrBitmaps++;
  if (nrBitmaps > MAX_INDEX_ENTRIES) throw new RangeError('era image too large for one metadata space map index block');
  const bitmaps = Array.from({ length: nrBitmaps }, () => bld.alloc(CHECKSUM_SALT.smBitmap));
  const total = bld.blocks.length + (spec.spareBlocks ?? 64);
  for (let i = bld.blocks.length; i < total; i++) bld.refs.push(0);
  const allocated = bld.blocks.length;

  const ib = bld.blocks[index]!;
  ib.writeBigUInt64LE(BigInt(index), 8);
  for (let m = 0; m < nrBitmaps; m++) {
    const bm = bld.blocks[bitmaps[m]!]!;
    bm.writeBigUInt64LE(BigInt(bitmaps[m]!), 8);
    const first = m * ENTRIES_PER_BITMAP;
    const span = Math.min(ENTRIES_PER_BITMAP, total - first);
    let free = 0;
    let firstFree = -1;
    for (let e = 0; e < span; e++) {
      const rc = Math.min(bld.refs[first + e]!, 2);
      if (rc === 0) {
        free++;
        if (firstFree < 0) firstFree = e;
        continue;
      }
      const word = 16 + 8 * (e >>> 5);
      const bit = 2 * (e & 31);
      const lo = bm.readBigUInt64LE(word);
      const v = rc === 1 ? 1n << BigInt(bit + 1) : 1n << BigInt(bit);
      bm.writeBigUInt64LE(lo | v, word);
    }
    const at = 16 + 16 * m;
    ib.writeBigUInt64LE(BigInt(bitmaps[m]!), at);
    ib.writeUInt32LE(free, at + 8);
    ib.writeUInt32LE(firstFree < 0 ? span : firstFree, at + 12);
  }

  const superblock = (blk: number, roots: { writesetTree: number; eraArray: number }, metadataSnap: number): void => {
    const sb = bld.blocks[blk]!;
    sb.writeBigUInt64LE(BigInt(blk), 8);
    (spec.uuid ?? Buffer.alloc(16)).copy(sb, 16, 0, 16);
    sb.writeBigUInt64LE(ERA_MAGIC, 32);
    sb.writeUInt32LE(1, 40);
    sb.writeBigUInt64LE(BigInt(total), 44);
    sb.writeBigUInt64LE(BigInt(allocated), 52);
    sb.writeBigUInt64LE(BigInt(index), 60);
    sb.writeBigUInt64LE(BigInt(refCountRoot), 68);
    sb.writeUInt32LE(spec.blockSizeSectors, 172);
    sb.writeUInt32LE(8, 176);
    sb.writeUInt32LE(spec.nrBlocks, 180);
    sb.writeUInt32LE(spec.currentEra, 184);
    sb.writeUInt32LE(current.nrBits, 188);
    sb.writeBigUInt64LE(BigInt(currentRoot), 192);
    sb.writeBigUInt64LE(BigInt(roots.writesetTree), 200);
    sb.writeBigUInt64LE(BigInt(roots.eraArray), 208);
    sb.writeBigUInt64LE(BigInt(metadataSnap), 216);
  };
  superblock(0, live, snapSb);
  if (snap) superblock(snapSb, snap, 0);

  const out = Buffer.alloc(total * B);
  for (let i = 0; i < bld.blocks.length; i++) {
    const b = bld.blocks[i]!;
    b.writeUInt32LE(blockChecksum(b.subarray(4), bld.salts[i]!), 0);
    b.copy(out, i * B);
  }
  return out;
}

export interface SyntheticEraOptions {
  readonly seed: number;
  readonly nrBlocks: number;
  readonly currentEra: number;
  /** The most recent eras (before the current one) kept as archived writesets; older ones are digested. */
  readonly archived: number;
  /** Write runs per era, and the longest run in blocks. */
  readonly runsPerEra: number;
  readonly maxRun: number;
  readonly blockSizeSectors?: number;
  /** Writesets' nr_bits relative to nrBlocks (a resized origin), default 0. */
  readonly bitsDelta?: number;
  /** Hold a snapshot whose content is this much older (its own trees); undefined: none. */
  readonly snapshotLag?: number;
}

/**
 * Seeded era history: each era writes `runsPerEra` random runs; eras up to currentEra - archived - 1
 * are digested into the era array, the next `archived` eras stay writesets. With `snapshotLag`, a
 * held snapshot describes the history as of `lag` eras earlier.
 */
export function syntheticEra(o: SyntheticEraOptions): EraImageSpec {
  const history = (upTo: number): EraContent => {
    const eraArray = new Uint32Array(o.nrBlocks);
    const writesets: EraWriteset[] = [];
    const firstArchived = Math.max(1, upTo - o.archived);
    const nrBits = Math.max(1, o.nrBlocks + (o.bitsDelta ?? 0));
    const rnd = prng(o.seed);
    for (let era = 1; era < upTo; era++) {
      const ws = era >= firstArchived ? { era, nrBits, bits: bitSet(nrBits) } : undefined;
      for (let r = 0; r < o.runsPerEra; r++) {
        const len = 1 + Math.floor(rnd() * o.maxRun);
        const start = Math.floor(rnd() * nrBits);
        for (let b = start; b < Math.min(start + len, nrBits); b++) {
          if (ws) setBit(ws.bits, b);
          else if (b < o.nrBlocks) eraArray[b] = era;
        }
      }
      if (ws) writesets.push(ws);
    }
    return { eraArray, writesets };
  };
  const live = history(o.currentEra);
  return {
    ...live,
    blockSizeSectors: o.blockSizeSectors ?? 128,
    nrBlocks: o.nrBlocks,
    currentEra: o.currentEra,
    ...(o.snapshotLag !== undefined ? { snapshot: history(o.currentEra - o.snapshotLag) } : {}),
  };
}
