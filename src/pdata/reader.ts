/**
 * A read-only walker for persistent-data metadata images (4 KiB blocks): validates every block it reaches
 * (salted crc32c, stored block number, header sanity) and reads btrees, arrays and bitsets. Used by the
 * crash lab as a fast user-space oracle: thousands of crash images per minute without a process per check.
 *
 * Layouts (see ../shared/reference/kernel-facts.md §2):
 *   btree node   {le32 csum, le32 flags, le64 blocknr, le32 nr_entries, le32 max_entries, le32 value_size, le32 pad}
 *                then le64 keys[max_entries], then values[max_entries]
 *   array block  {le32 csum, le32 max_entries, le32 nr_entries, le32 value_size, le64 blocknr} then packed values
 *   array        a btree keyed by array-block index whose le64 values are array-block locations
 *   bitset       an array of le64 words, bit i of the set = bit (i % 64) of word i / 64
 */
import { blockChecksum as checksum, CHECKSUM_SALT } from './checksum';

export const METADATA_BLOCK_BYTES = 4096;

const SALT = {
  btree: CHECKSUM_SALT.btreeNode,
  array: CHECKSUM_SALT.arrayBlock,
  eraSuperblock: CHECKSUM_SALT.eraSuperblock,
  cloneSuperblock: CHECKSUM_SALT.cloneSuperblock,
};

const NODE_INTERNAL = 1;
const NODE_LEAF = 2;
const NODE_HEADER = 32;
const ARRAY_HEADER = 24;
/** Deeper than any btree over a 16 GiB metadata device; stops cycles that evade the visited set. */
const MAX_DEPTH = 16;

/** The metadata is damaged: what was wrong and where. */
export class MetadataDamage extends Error {
  readonly code: string = 'ERR_METADATA_DAMAGE';
  constructor(readonly block: number, what: string) {
    super(`block ${block}: ${what}`);
    this.name = 'MetadataDamage';
  }
}

/** The salted checksum persistent-data stores in a block's first 4 bytes (it covers the rest). */
export function storedChecksum(block: Buffer, salt: number): number {
  return checksum(block.subarray(4), salt);
}

/** Where metadata blocks come from: an image in memory, or a file or device read block by block. */
export interface BlockReader {
  /** Whole 4 KiB blocks available. */
  readonly nrBlocks: number;
  /** Block n (0 <= n < nrBlocks), 4096 bytes, in a buffer of its own (walkers hold several at once). */
  read(n: number): Buffer;
}

/** Blocks of an image held in memory. */
export class BufferBlockReader implements BlockReader {
  readonly nrBlocks: number;
  constructor(readonly bytes: Buffer) {
    this.nrBlocks = Math.floor(bytes.length / METADATA_BLOCK_BYTES);
  }
  read(n: number): Buffer {
    return this.bytes.subarray(n * METADATA_BLOCK_BYTES, (n + 1) * METADATA_BLOCK_BYTES);
  }
}

export class MetadataImage {
  readonly nrBlocks: number;
  private readonly source: BlockReader;

  constructor(source: Buffer | BlockReader) {
    this.source = Buffer.isBuffer(source) ? new BufferBlockReader(source) : source;
    this.nrBlocks = this.source.nrBlocks;
  }

  raw(n: number): Buffer {
    if (!Number.isSafeInteger(n) || n < 0 || n >= this.nrBlocks) throw new MetadataDamage(n, `block number out of range (device has ${this.nrBlocks})`);
    const b = this.source.read(n);
    if (b.length !== METADATA_BLOCK_BYTES) throw new MetadataDamage(n, `short read (${b.length} bytes)`);
    return b;
  }

  /** Block n, after checking its checksum and the block number stored at `blocknrAt`. */
  checked(n: number, salt: number, blocknrAt: number, kind: string): Buffer {
    const b = this.raw(n);
    const want = storedChecksum(b, salt);
    if (b.readUInt32LE(0) !== want) throw new MetadataDamage(n, `${kind} checksum mismatch`);
    const stored = b.readBigUInt64LE(blocknrAt);
    if (stored !== BigInt(n)) throw new MetadataDamage(n, `${kind} claims to be block ${stored}`);
    return b;
  }

  /** Visits every (key, value) of the btree at `root` in key order. */
  walkBtree(root: number, valueSize: number, visit: (key: bigint, value: Buffer) => void): void {
    const seen = new Set<number>();
    const walk = (n: number, depth: number, low: bigint): bigint => {
      if (depth > MAX_DEPTH) throw new MetadataDamage(n, 'btree deeper than any valid one');
      if (seen.has(n)) throw new MetadataDamage(n, 'btree node reached twice');
      seen.add(n);
      const b = this.checked(n, SALT.btree, 8, 'btree node');
      const flags = b.readUInt32LE(4);
      const nr = b.readUInt32LE(16);
      const max = b.readUInt32LE(20);
      const vsize = b.readUInt32LE(24);
      const internal = flags === NODE_INTERNAL;
      if (!internal && flags !== NODE_LEAF) throw new MetadataDamage(n, `btree node flags ${flags}`);
      const wantSize = internal ? 8 : valueSize;
      if (vsize !== wantSize) throw new MetadataDamage(n, `btree value size ${vsize}, expected ${wantSize}`);
      if (max === 0 || NODE_HEADER + max * (8 + vsize) > METADATA_BLOCK_BYTES) throw new MetadataDamage(n, `btree max_entries ${max} does not fit`);
      if (nr > max) throw new MetadataDamage(n, `btree nr_entries ${nr} > max_entries ${max}`);
      let last = low;
      for (let i = 0; i < nr; i++) {
        const key = b.readBigUInt64LE(NODE_HEADER + 8 * i);
        if (i > 0 && key <= last) throw new MetadataDamage(n, 'btree keys out of order');
        if (key < low) throw new MetadataDamage(n, 'btree key below its parent\'s');
        const at = NODE_HEADER + 8 * max + vsize * i;
        const value = b.subarray(at, at + vsize);
        if (internal) walk(Number(value.readBigUInt64LE(0)), depth + 1, key);
        else visit(key, value);
        last = key;
      }
      return last;
    };
    walk(root, 0, 0n);
  }

  /**
   * Visits the array blocks of the dm_array at `root` (`count` entries of `valueSize` bytes) in order:
   * `values` holds the block's packed values, the first of which is entry `first`. Checks that the array
   * blocks are numbered densely from 0 and hold exactly `count` entries between them.
   */
  walkArray(root: number, valueSize: number, count: number, visit: (first: number, values: Buffer, nr: number) => void): void {
    let filled = 0;
    let expectIndex = 0n;
    this.walkBtree(root, 8, (key, value) => {
      if (key !== expectIndex) throw new MetadataDamage(root, `array block index ${key} where ${expectIndex} was due`);
      expectIndex += 1n;
      const loc = Number(value.readBigUInt64LE(0));
      const b = this.checked(loc, SALT.array, 16, 'array block');
      const max = b.readUInt32LE(4);
      const nr = b.readUInt32LE(8);
      const vsize = b.readUInt32LE(12);
      if (vsize !== valueSize) throw new MetadataDamage(loc, `array value size ${vsize}, expected ${valueSize}`);
      if (ARRAY_HEADER + max * vsize > METADATA_BLOCK_BYTES || nr > max) throw new MetadataDamage(loc, `array block holds ${nr} of ${max}`);
      if (nr > count - filled) throw new MetadataDamage(loc, `array longer than its ${count} entries`);
      visit(filled, b.subarray(ARRAY_HEADER, ARRAY_HEADER + nr * valueSize), nr);
      filled += nr;
    });
    if (filled !== count) throw new MetadataDamage(root, `array holds ${filled} entries, expected ${count}`);
  }

  /** The values of the dm_array at `root`, `count` entries of `valueSize` bytes. */
  readArray(root: number, valueSize: number, count: number): Buffer {
    const out = Buffer.alloc(count * valueSize);
    this.walkArray(root, valueSize, count, (first, values) => void values.copy(out, first * valueSize));
    return out;
  }

  /** The bitset at `root` with `nrBits` bits, as a bit vector. */
  readBitset(root: number, nrBits: number): BitVector {
    const words = this.readArray(root, 8, Math.ceil(nrBits / 64));
    return new BitVector(words, nrBits);
  }
}

export class BitVector {
  constructor(private readonly words: Buffer, readonly size: number) {}

  has(i: number): boolean {
    if (i < 0 || i >= this.size) return false;
    return ((this.words[i >> 3]! >> (i & 7)) & 1) === 1;
  }

  *members(): Generator<number> {
    for (let i = 0; i < this.size; i++) if (this.has(i)) yield i;
  }

  /** How many bits are set. */
  count(): number {
    let n = 0;
    for (let i = 0; i < this.size; i++) if (this.has(i)) n++;
    return n;
  }
}

/*----------------------------------------------------------------
 * era
 *--------------------------------------------------------------*/

export const ERA_MAGIC = 2126579579n;
/** Block 0 holds the superblock; it doubles as "no root" for writesets. */
const ERA_NONE = 0;

export interface EraMetadata {
  dataBlockSectors: number;
  nrBlocks: number;
  currentEra: number;
  /** The current era's writeset, when it has an on-disk bitset. */
  current: BitVector | null;
  /** Archived writesets not yet folded into the era array, by era. */
  archived: Map<number, BitVector>;
  /** Last era each block was written in, folded from digested writesets (0 = never). */
  eraArray: Uint32Array;
  metadataSnap: number;
}

function superblock(img: MetadataImage, salt: number, magic: bigint, kind: string): Buffer {
  const sb = img.checked(0, salt, 8, `${kind} superblock`);
  if (sb.readBigUInt64LE(32) !== magic) throw new MetadataDamage(0, `${kind} superblock magic`);
  if (sb.readUInt32LE(40) !== 1) throw new MetadataDamage(0, `${kind} superblock version ${sb.readUInt32LE(40)}`);
  return sb;
}

/** An all-zero block 0: never formatted (the target formats it on first activation). */
export function unformatted(img: MetadataImage): boolean {
  return img.nrBlocks > 0 && img.raw(0).every((x) => x === 0);
}

export function readEraMetadata(bytes: Buffer): EraMetadata {
  const img = new MetadataImage(bytes);
  const sb = superblock(img, SALT.eraSuperblock, ERA_MAGIC, 'era');
  const dataBlockSectors = sb.readUInt32LE(172);
  const nrBlocks = sb.readUInt32LE(180);
  const currentEra = sb.readUInt32LE(184);
  const curBits = sb.readUInt32LE(188);
  const curRoot = Number(sb.readBigUInt64LE(192));
  const wsTree = Number(sb.readBigUInt64LE(200));
  const arrayRoot = Number(sb.readBigUInt64LE(208));
  const current = curRoot === ERA_NONE ? null : img.readBitset(curRoot, curBits);
  const archived = new Map<number, BitVector>();
  img.walkBtree(wsTree, 12, (key, value) => {
    archived.set(Number(key), img.readBitset(Number(value.readBigUInt64LE(4)), value.readUInt32LE(0)));
  });
  const arr = img.readArray(arrayRoot, 4, nrBlocks);
  const eraArray = new Uint32Array(nrBlocks);
  for (let b = 0; b < nrBlocks; b++) eraArray[b] = arr.readUInt32LE(4 * b);
  return { dataBlockSectors, nrBlocks, currentEra, current, archived, eraArray, metadataSnap: Number(sb.readBigUInt64LE(216)) };
}

/** Blocks era would report as written since era 0: in any writeset or with a non-zero era. */
export function eraWrittenBlocks(md: EraMetadata): Set<number> {
  const out = new Set<number>();
  for (let b = 0; b < md.nrBlocks; b++) if (md.eraArray[b]! > 0) out.add(b);
  for (const ws of [md.current, ...md.archived.values()]) if (ws) for (const b of ws.members()) out.add(b);
  return out;
}

/*----------------------------------------------------------------
 * clone
 *--------------------------------------------------------------*/

export const CLONE_MAGIC = 0x8af27f64n;

export interface CloneMetadata {
  regionSectors: number;
  targetSectors: number;
  nrRegions: number;
  hydrated: BitVector;
}

export function readCloneMetadata(bytes: Buffer): CloneMetadata {
  const img = new MetadataImage(bytes);
  const sb = superblock(img, SALT.cloneSuperblock, CLONE_MAGIC, 'clone');
  const regionSectors = Number(sb.readBigUInt64LE(172));
  const targetSectors = Number(sb.readBigUInt64LE(180));
  if (regionSectors <= 0) throw new MetadataDamage(0, `clone region size ${regionSectors}`);
  const nrRegions = Math.ceil(targetSectors / regionSectors);
  const hydrated = img.readBitset(Number(sb.readBigUInt64LE(188)), nrRegions);
  return { regionSectors, targetSectors, nrRegions, hydrated };
}
