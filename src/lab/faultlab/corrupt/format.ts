/**
 * persistent-data metadata images as the corrupt lab sees them: 4 KiB blocks told apart by their salted
 * crc32c (and the block number each block stores), the fields of every on-disk structure, and which blocks
 * the committed transaction uses (refcount > 0 in the metadata space map).
 *
 * Layouts are the upstream ones (kernel-facts.md §2-§5): all little-endian, packed.
 */
import { blockChecksum, CHECKSUM_SALT } from '../../../pdata/checksum';

export const BLOCK = 4096;

/** Which metadata format an image holds (picks the superblock salt and layout). */
export type Format = 'era' | 'clone' | 'cache';

export type BlockKind = 'superblock' | 'btree-internal' | 'btree-leaf' | 'array' | 'sm-index' | 'sm-bitmap' | 'unknown' | 'zero';

/** Kinds with a checksum the lab can recompute. */
export const CHECKSUMMED: readonly BlockKind[] = ['superblock', 'btree-internal', 'btree-leaf', 'array', 'sm-index', 'sm-bitmap'];

export const SUPERBLOCK_SALT: Record<Format, number> = {
  era: CHECKSUM_SALT.eraSuperblock,
  clone: CHECKSUM_SALT.cloneSuperblock,
  cache: CHECKSUM_SALT.cacheSuperblock,
};

export const MAGIC: Record<Format, bigint> = { era: 2126579579n, clone: 0x8af27f64n, cache: 0o6142003n };

/** Offset of `metadata_space_map_root` (a disk_sm_root) in each superblock. */
export const SM_ROOT_OFFSET: Record<Format, number> = { era: 44, clone: 44, cache: 64 };

export function saltOf(kind: BlockKind, format: Format): number | undefined {
  switch (kind) {
    case 'superblock': return SUPERBLOCK_SALT[format];
    case 'btree-internal':
    case 'btree-leaf': return CHECKSUM_SALT.btreeNode;
    case 'array': return CHECKSUM_SALT.arrayBlock;
    case 'sm-index': return CHECKSUM_SALT.smIndex;
    case 'sm-bitmap': return CHECKSUM_SALT.smBitmap;
    default: return undefined;
  }
}

/** Where a block of `kind` stores its own block number (array blocks put it after their counts). */
export function blocknrOffset(kind: BlockKind): number {
  return kind === 'array' ? 16 : 8;
}

export function checksumOf(block: Buffer, salt: number): number {
  return blockChecksum(block.subarray(4, BLOCK), salt);
}

/** Recomputes the checksum of a block of `kind` in place (no-op for kinds without one). */
export function fixChecksum(block: Buffer, kind: BlockKind, format: Format): void {
  const salt = saltOf(kind, format);
  if (salt !== undefined) block.writeUInt32LE(checksumOf(block, salt), 0);
}

export function blockAt(image: Buffer, nr: number): Buffer {
  return image.subarray(nr * BLOCK, (nr + 1) * BLOCK);
}

/** The kind of block `nr`: the first salt whose checksum and stored block number both match. */
export function classifyBlock(block: Buffer, nr: number, format: Format): BlockKind {
  if (block.every((b) => b === 0)) return 'zero';
  const csum = block.readUInt32LE(0);
  const candidates: BlockKind[] = ['superblock', 'btree-leaf', 'array', 'sm-index', 'sm-bitmap'];
  for (const kind of candidates) {
    const salt = saltOf(kind, format)!;
    if (csum !== checksumOf(block, salt)) continue;
    if (block.readBigUInt64LE(blocknrOffset(kind)) !== BigInt(nr)) continue;
    if (kind === 'btree-leaf') return block.readUInt32LE(4) & 1 ? 'btree-internal' : 'btree-leaf';
    return kind;
  }
  return 'unknown';
}

/*----------------------------------------------------------------
 * Space map: which blocks the committed transaction uses
 *--------------------------------------------------------------*/

export const ENTRIES_PER_BITMAP = (BLOCK - 16) * 4;

export interface SmRoot {
  nrBlocks: bigint;
  nrAllocated: bigint;
  /** The metadata sm's index block. */
  bitmapRoot: bigint;
  refCountRoot: bigint;
}

export function readSmRoot(superblock: Buffer, format: Format): SmRoot {
  const at = SM_ROOT_OFFSET[format];
  return {
    nrBlocks: superblock.readBigUInt64LE(at),
    nrAllocated: superblock.readBigUInt64LE(at + 8),
    bitmapRoot: superblock.readBigUInt64LE(at + 16),
    refCountRoot: superblock.readBigUInt64LE(at + 24),
  };
}

/** The 2-bit count of entry `i` of a bitmap block: bit 2i is the high bit, 2i+1 the low one (test_bit_le). */
export function bitmapEntry(bitmap: Buffer, i: number): number {
  const bit = 2 * i;
  const byteAt = (b: number): number => (bitmap[16 + (b >> 3)]! >> (b & 7)) & 1;
  return (byteAt(bit) << 1) | byteAt(bit + 1);
}

/**
 * Blocks with a non-zero reference count in the metadata space map the superblock names (3 = "see the
 * ref-count tree", counted as used). Empty when the space map cannot be read.
 */
export function usedBlocks(image: Buffer, format: Format): number[] {
  const nrImageBlocks = Math.floor(image.length / BLOCK);
  const sm = readSmRoot(blockAt(image, 0), format);
  const nrBlocks = Number(sm.nrBlocks < BigInt(nrImageBlocks) ? sm.nrBlocks : BigInt(nrImageBlocks));
  if (sm.bitmapRoot <= 0n || sm.bitmapRoot >= BigInt(nrImageBlocks)) return [];
  const index = blockAt(image, Number(sm.bitmapRoot));
  const used: number[] = [];
  for (let b = 0; b * ENTRIES_PER_BITMAP < nrBlocks && b < 255; b++) {
    const bitmapNr = index.readBigUInt64LE(16 + 16 * b);
    if (bitmapNr <= 0n || bitmapNr >= BigInt(nrImageBlocks)) continue;
    const bitmap = blockAt(image, Number(bitmapNr));
    const first = b * ENTRIES_PER_BITMAP;
    for (let i = 0; i < ENTRIES_PER_BITMAP && first + i < nrBlocks; i++) if (bitmapEntry(bitmap, i) !== 0) used.push(first + i);
  }
  return used;
}

export interface ImageMap {
  format: Format;
  nrBlocks: number;
  /** Kind of every block. */
  kinds: BlockKind[];
  /** Blocks in use by the committed transaction (space map), sorted. */
  used: number[];
  /** Used blocks by kind. */
  byKind: Map<BlockKind, number[]>;
}

export function mapImage(image: Buffer, format: Format): ImageMap {
  const nrBlocks = Math.floor(image.length / BLOCK);
  const kinds = Array.from({ length: nrBlocks }, (_, i) => classifyBlock(blockAt(image, i), i, format));
  const used = usedBlocks(image, format);
  if (!used.includes(0)) used.unshift(0);
  const byKind = new Map<BlockKind, number[]>();
  for (const b of used) {
    const k = kinds[b]!;
    byKind.set(k, [...(byKind.get(k) ?? []), b]);
  }
  return { format, nrBlocks, kinds, used, byKind };
}

/** "superblock 1, btree-leaf 4, ..." over the used blocks (and by role when given). */
export function describeMap(m: ImageMap, roles?: Map<number, Role>): string {
  const kinds = [...m.byKind].map(([k, v]) => `${k} ${v.length}`).join(', ') + ` (${m.used.length} used of ${m.nrBlocks})`;
  if (!roles) return kinds;
  const byRole = new Map<Role, number>();
  for (const r of roles.values()) byRole.set(r, (byRole.get(r) ?? 0) + 1);
  return `${kinds}; ${[...byRole].map(([r, n]) => `${r} ${n}`).join(', ')}`;
}

/*----------------------------------------------------------------
 * Fields
 *--------------------------------------------------------------*/

export interface Field {
  name: string;
  offset: number;
  /** Bytes: 1, 2, 4 or 8 are little-endian integers; anything else a byte string. */
  size: number;
  /** Holds a metadata block number (extra variants: past the end, another used block). */
  pointer?: boolean;
}

const f = (name: string, offset: number, size: number, pointer = false): Field => ({ name, offset, size, ...(pointer ? { pointer } : {}) });

function smRootFields(at: number): Field[] {
  return [f('sm.nr_blocks', at, 8), f('sm.nr_allocated', at + 8, 8), f('sm.bitmap_root', at + 16, 8, true), f('sm.ref_count_root', at + 24, 8, true)];
}

const HEAD = [f('csum', 0, 4), f('flags', 4, 4), f('blocknr', 8, 8, true), f('uuid', 16, 16), f('magic', 32, 8), f('version', 40, 4)];

export const SUPERBLOCK_FIELDS: Record<Format, readonly Field[]> = {
  era: [
    ...HEAD,
    ...smRootFields(44),
    f('data_block_size', 172, 4),
    f('metadata_block_size', 176, 4),
    f('nr_blocks', 180, 4),
    f('current_era', 184, 4),
    f('current_writeset.nr_bits', 188, 4),
    f('current_writeset.root', 192, 8, true),
    f('writeset_tree_root', 200, 8, true),
    f('era_array_root', 208, 8, true),
    f('metadata_snap', 216, 8, true),
  ],
  clone: [...HEAD, ...smRootFields(44), f('region_size', 172, 8), f('target_size', 180, 8), f('bitset_root', 188, 8, true)],
  cache: [
    ...HEAD,
    f('policy_name', 44, 16),
    f('policy_hint_size', 60, 4),
    ...smRootFields(64),
    f('mapping_root', 192, 8, true),
    f('hint_root', 200, 8, true),
    f('discard_root', 208, 8, true),
    f('discard_block_size', 216, 8),
    f('discard_nr_blocks', 224, 8),
    f('data_block_size', 232, 4),
    f('metadata_block_size', 236, 4),
    f('cache_blocks', 240, 4),
    f('compat_flags', 244, 4),
    f('compat_ro_flags', 248, 4),
    f('incompat_flags', 252, 4),
    f('read_hits', 256, 4),
    f('policy_version[0]', 272, 4),
    f('policy_version[1]', 276, 4),
    f('dirty_root', 284, 8, true),
  ],
};

/**
 * Field names per kind; names with `[first]`, `[last]`, `[random]` pick an entry of the block they are
 * applied to (resolveField). Values of a btree node are pointers when the node is internal or the values are
 * 8 bytes (array and bitset trees); the era writeset tree's 12-byte value is {nr_bits, root}.
 */
export const KIND_FIELDS: Record<Exclude<BlockKind, 'superblock' | 'unknown' | 'zero'>, readonly string[]> = {
  'btree-internal': ['csum', 'flags', 'blocknr', 'nr_entries', 'max_entries', 'value_size', 'padding', 'key[first]', 'key[last]', 'value[first]', 'value[last]', 'value[random]'],
  'btree-leaf': ['csum', 'flags', 'blocknr', 'nr_entries', 'max_entries', 'value_size', 'padding', 'key[first]', 'key[last]', 'key[random]', 'value[first]', 'value[last]', 'value[random]', 'value2[random]'],
  array: ['csum', 'max_entries', 'nr_entries', 'value_size', 'blocknr', 'value[first]', 'value[last]', 'value[random]'],
  'sm-index': ['csum', 'padding', 'blocknr', 'index[first].blocknr', 'index[first].nr_free', 'index[first].none_free_before', 'index[last].blocknr'],
  'sm-bitmap': ['csum', 'not_used', 'blocknr', 'word[first]', 'word[last]', 'word[random]'],
};

export function fieldNames(kind: BlockKind, format: Format): readonly string[] {
  if (kind === 'superblock') return SUPERBLOCK_FIELDS[format].map((x) => x.name);
  if (kind === 'unknown' || kind === 'zero') return [];
  return KIND_FIELDS[kind];
}

function pick(which: string, count: number, rand: () => number): number {
  if (count <= 0) return 0;
  if (which === 'first') return 0;
  if (which === 'last') return count - 1;
  return Math.floor(rand() * count);
}

/** The concrete field `name` names in `block` (a block of `kind`); entry picks use `rand`. */
export function resolveField(block: Buffer, kind: BlockKind, format: Format, name: string, rand: () => number): Field {
  if (kind === 'superblock') {
    const fd = SUPERBLOCK_FIELDS[format].find((x) => x.name === name);
    if (!fd) throw new Error(`no superblock field ${name} in ${format}`);
    return fd;
  }
  const m = /^(\w+)(?:\[(first|last|random)\])?(?:\.(\w+))?$/.exec(name);
  if (!m) throw new Error(`bad field name ${name}`);
  const [, base, which, sub] = m as unknown as [string, string, string | undefined, string | undefined];
  switch (kind) {
    case 'btree-internal':
    case 'btree-leaf': {
      const nr = block.readUInt32LE(16);
      const max = Math.min(block.readUInt32LE(20), 1024);
      const vs = block.readUInt32LE(24);
      const fixed: Record<string, Field> = {
        csum: f('csum', 0, 4), flags: f('flags', 4, 4), blocknr: f('blocknr', 8, 8, true), nr_entries: f('nr_entries', 16, 4),
        max_entries: f('max_entries', 20, 4), value_size: f('value_size', 24, 4), padding: f('padding', 28, 4),
      };
      if (fixed[base]) return fixed[base]!;
      const i = pick(which ?? 'first', Math.min(nr, max), rand);
      if (base === 'key') return f(`key[${i}]`, 32 + 8 * i, 8);
      const valueAt = 32 + 8 * max + vs * i;
      const internal = kind === 'btree-internal';
      if (vs === 12 && !internal) {
        // era writeset: {__le32 nr_bits; __le64 root}
        return base === 'value2' ? f(`value[${i}].root`, valueAt + 4, 8, true) : f(`value[${i}].nr_bits`, valueAt, 4);
      }
      const size = internal ? 8 : vs === 4 || vs === 8 ? vs : Math.min(Math.max(vs, 1), 16);
      return f(`value[${i}]`, valueAt, size, internal || vs === 8);
    }
    case 'array': {
      const nr = block.readUInt32LE(8);
      const vs = Math.max(1, Math.min(block.readUInt32LE(12), 16));
      const fixed: Record<string, Field> = {
        csum: f('csum', 0, 4), max_entries: f('max_entries', 4, 4), nr_entries: f('nr_entries', 8, 4), value_size: f('value_size', 12, 4), blocknr: f('blocknr', 16, 8, true),
      };
      if (fixed[base]) return fixed[base]!;
      const max = Math.floor((BLOCK - 24) / vs);
      const i = pick(which ?? 'first', Math.min(nr, max), rand);
      return f(`value[${i}]`, 24 + vs * i, vs);
    }
    case 'sm-index': {
      const fixed: Record<string, Field> = { csum: f('csum', 0, 4), padding: f('padding', 4, 4), blocknr: f('blocknr', 8, 8, true) };
      if (fixed[base]) return fixed[base]!;
      let n = 0;
      while (n < 255 && block.readBigUInt64LE(16 + 16 * n) !== 0n) n++;
      const i = pick(which ?? 'first', Math.max(n, 1), rand);
      const at = 16 + 16 * i;
      if (sub === 'nr_free') return f(`index[${i}].nr_free`, at + 8, 4);
      if (sub === 'none_free_before') return f(`index[${i}].none_free_before`, at + 12, 4);
      return f(`index[${i}].blocknr`, at, 8, true);
    }
    case 'sm-bitmap': {
      const fixed: Record<string, Field> = { csum: f('csum', 0, 4), not_used: f('not_used', 4, 4), blocknr: f('blocknr', 8, 8, true) };
      if (fixed[base]) return fixed[base]!;
      let last = 0;
      for (let w = 0; w < (BLOCK - 16) / 8; w++) if (block.readBigUInt64LE(16 + 8 * w) !== 0n) last = w;
      const i = pick(which ?? 'first', last + 1, rand);
      return f(`word[${i}]`, 16 + 8 * i, 8);
    }
    default:
      throw new Error(`no fields for ${kind} blocks`);
  }
}

/*----------------------------------------------------------------
 * Roles: what references a used block
 *--------------------------------------------------------------*/

/**
 * live: reachable from the superblock's own trees (what the target and the checker read); snapshot: only
 * from a held metadata snapshot; space-map: the metadata space map's index, bitmaps and ref-count tree.
 */
export type Role = 'live' | 'snapshot' | 'space-map' | 'unreferenced';

/** Root pointer fields of each superblock, by what they lead to. */
const LIVE_ROOTS: Record<Format, ReadonlyArray<{ at: number; tree: 'array' | 'era-writesets' }>> = {
  era: [{ at: 200, tree: 'era-writesets' }, { at: 208, tree: 'array' }, { at: 192, tree: 'array' }],
  clone: [{ at: 188, tree: 'array' }],
  cache: [{ at: 192, tree: 'array' }, { at: 200, tree: 'array' }, { at: 208, tree: 'array' }, { at: 284, tree: 'array' }],
};

export function blockRoles(image: Buffer, map: ImageMap): Map<number, Role> {
  const roles = new Map<number, Role>();
  const valid = (nr: bigint): boolean => nr > 0n && nr < BigInt(map.nrBlocks);
  const mark = (nr: number, role: Role): boolean => {
    if (roles.has(nr)) return false;
    roles.set(nr, role);
    return true;
  };
  /** Walks a btree; `leafValue` sees each leaf value's offset in the block. */
  const walk = (root: bigint, role: Role, leafValue?: (block: Buffer, at: number) => void): void => {
    if (!valid(root) || !mark(Number(root), role)) return;
    const nr = Number(root);
    const kind = map.kinds[nr];
    if (kind !== 'btree-leaf' && kind !== 'btree-internal') return;
    const b = blockAt(image, nr);
    const n = Math.min(b.readUInt32LE(16), b.readUInt32LE(20));
    const max = b.readUInt32LE(20);
    const vs = b.readUInt32LE(24);
    if (32 + (8 + vs) * max > BLOCK) return;
    for (let i = 0; i < n; i++) {
      const at = 32 + 8 * max + vs * i;
      if (kind === 'btree-internal') walk(b.readBigUInt64LE(at), role, leafValue);
      else leafValue?.(b, at);
    }
  };
  const arrayTree = (root: bigint, role: Role): void =>
    walk(root, role, (b, at) => {
      const blk = b.readBigUInt64LE(at);
      if (valid(blk)) mark(Number(blk), role);
    });
  const fromSuperblock = (sbNr: number, role: Role, roots: ReadonlyArray<{ at: number; tree: 'array' | 'era-writesets' }>): void => {
    const sb = blockAt(image, sbNr);
    for (const r of roots) {
      const root = sb.readBigUInt64LE(r.at);
      if (r.tree === 'array') arrayTree(root, role);
      else walk(root, role, (b, at) => arrayTree(b.readBigUInt64LE(at + 4), role));
    }
  };
  mark(0, 'live');
  fromSuperblock(0, 'live', LIVE_ROOTS[map.format]);
  if (map.format === 'era') {
    const snap = blockAt(image, 0).readBigUInt64LE(216);
    if (valid(snap) && mark(Number(snap), 'snapshot')) fromSuperblock(Number(snap), 'snapshot', LIVE_ROOTS.era.slice(0, 2));
  }
  const sm = readSmRoot(blockAt(image, 0), map.format);
  if (valid(sm.bitmapRoot)) {
    mark(Number(sm.bitmapRoot), 'space-map');
    const index = blockAt(image, Number(sm.bitmapRoot));
    for (let i = 0; i < 255; i++) {
      const nr = index.readBigUInt64LE(16 + 16 * i);
      if (valid(nr)) mark(Number(nr), 'space-map');
    }
  }
  walk(sm.refCountRoot, 'space-map');
  for (const b of map.used) if (!roles.has(b)) roles.set(b, 'unreferenced');
  return roles;
}
