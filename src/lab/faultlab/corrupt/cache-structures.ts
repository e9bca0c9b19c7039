/**
 * Which cache metadata structure each used block of a cache image belongs to (kernel-facts.md §5): the
 * superblock, the mapping array (cblock -> oblock and flags), the hint array, the discard bitset and (format
 * 2) the dirty bitset, each a dm_array (a btree of array blocks), and the metadata space map. The corrupt
 * lab uses it to give every structure of dmkit-cache its own cases, so each is corrupted at CI scale, and
 * to report the checker's verdicts per structure.
 */
import type { Scale } from '../types';
import { BLOCK, blockAt, fieldNames, readSmRoot, type BlockKind, type ImageMap } from './format';
import { seedOf, VARIANTS, type CaseSpec, type CsumMode, type FieldSlot, type Variant } from './mutate';

export const CACHE_STRUCTURES = ['superblock', 'mapping', 'hint', 'discard', 'dirty', 'space-map'] as const;
export type CacheStructure = (typeof CACHE_STRUCTURES)[number];

/** Superblock offsets of the array roots (format.ts SUPERBLOCK_FIELDS.cache). */
const ROOTS: ReadonlyArray<{ at: number; structure: CacheStructure }> = [
  { at: 192, structure: 'mapping' },
  { at: 200, structure: 'hint' },
  { at: 208, structure: 'discard' },
  { at: 284, structure: 'dirty' },
];

/** Block number -> structure for every block reachable from the superblock of a cache image. */
export function cacheStructures(image: Buffer, map: ImageMap): Map<number, CacheStructure> {
  const out = new Map<number, CacheStructure>([[0, 'superblock']]);
  const valid = (nr: bigint): boolean => nr > 0n && nr < BigInt(map.nrBlocks);
  const mark = (nr: bigint, s: CacheStructure): boolean => {
    if (!valid(nr) || out.has(Number(nr))) return false;
    out.set(Number(nr), s);
    return true;
  };
  /** An array's btree: internal nodes point at nodes, leaves at array blocks (8-byte values). */
  const walk = (root: bigint, s: CacheStructure): void => {
    if (!mark(root, s)) return;
    const nr = Number(root);
    const kind = map.kinds[nr];
    if (kind !== 'btree-leaf' && kind !== 'btree-internal') return;
    const b = blockAt(image, nr);
    const max = b.readUInt32LE(20);
    const n = Math.min(b.readUInt32LE(16), max);
    const vs = b.readUInt32LE(24);
    if (vs !== 8 || 32 + 16 * max > BLOCK) return;
    for (let i = 0; i < n; i++) {
      const v = b.readBigUInt64LE(32 + 8 * max + 8 * i);
      if (kind === 'btree-internal') walk(v, s);
      else mark(v, s);
    }
  };
  const sb = blockAt(image, 0);
  const version = sb.readUInt32LE(40);
  for (const r of ROOTS) if (r.structure !== 'dirty' || version >= 2) walk(sb.readBigUInt64LE(r.at), r.structure);
  const sm = readSmRoot(sb, 'cache');
  if (mark(sm.bitmapRoot, 'space-map')) {
    const index = blockAt(image, Number(sm.bitmapRoot));
    for (let i = 0; i < 255; i++) mark(index.readBigUInt64LE(16 + 16 * i), 'space-map');
  }
  return out;
}

/** "mapping 3, hint 2, ..." */
export function describeStructures(s: Map<number, CacheStructure>): string {
  const n = new Map<CacheStructure, number>();
  for (const v of s.values()) n.set(v, (n.get(v) ?? 0) + 1);
  return CACHE_STRUCTURES.map((k) => `${k} ${n.get(k) ?? 0}`).join(', ');
}

/*----------------------------------------------------------------
 * Cases aimed at each structure
 *--------------------------------------------------------------*/

export type StructureCase = CaseSpec & { structure: CacheStructure };

type Pick = [field: string, variant: Variant, csum: CsumMode];

/** CI: the fields that steer a reader (counts, sizes, block numbers, entries), checksum recomputed, and one stale. */
const CI_PICKS: Partial<Record<BlockKind, readonly Pick[]>> = {
  array: [['value[random]', 'random', 'fixed'], ['nr_entries', 'inc', 'fixed'], ['value_size', 'dec', 'fixed'], ['csum', 'random', 'stale']],
  'btree-leaf': [['value[random]', 'other-block', 'fixed'], ['nr_entries', 'inc', 'fixed'], ['csum', 'zero', 'stale']],
  'btree-internal': [['value[random]', 'other-block', 'fixed'], ['nr_entries', 'inc', 'fixed'], ['key[last]', 'random', 'fixed'], ['csum', 'zero', 'stale']],
};

const STRUCTURE_SEED_BASE = 1_000_000;

/**
 * For each of mapping, hint, discard and dirty: field cases on its blocks (CI: the root and the first array
 * block, CI_PICKS; release: every block, every field, every variant, both checksum modes) and random flips.
 * Seeds live in their own index range of the target's namespace (seedOf), so `--case S` replays one.
 */
export function structureCases(map: ImageMap, structures: Map<number, CacheStructure>, base: number, target: string, scale: Scale): StructureCase[] {
  const out: StructureCase[] = [];
  let index = STRUCTURE_SEED_BASE;
  const push = (c: { structure: CacheStructure } & ({ mode: 'field'; slot: FieldSlot } | { mode: 'random'; block: number })): void => {
    out.push({ ...c, index, seed: seedOf(base, target, index) });
    index++;
  };
  for (const structure of ['mapping', 'hint', 'discard', 'dirty'] as const) {
    const blocks = [...structures].filter(([, s]) => s === structure).map(([b]) => b);
    // The root first (the walk marks it first), then the first array block.
    const chosen = scale === 'ci' ? [blocks[0], blocks.find((b) => map.kinds[b] === 'array')].filter((b): b is number => b !== undefined) : blocks;
    for (const block of [...new Set(chosen)]) {
      const kind = map.kinds[block]!;
      const picks: Pick[] =
        scale === 'ci'
          ? [...(CI_PICKS[kind] ?? [])]
          : fieldNames(kind, map.format).flatMap((field) => VARIANTS.flatMap((v) => (['fixed', 'stale'] as const).filter((c) => !(field === 'csum' && c === 'fixed')).map((c): Pick => [field, v, c])));
      for (const [field, variant, csum] of picks) push({ structure, mode: 'field', slot: { blockKind: kind, field, variant, csum, block } });
      for (let k = 0; k < (scale === 'ci' ? 1 : 20); k++) push({ structure, mode: 'random', block });
    }
  }
  return out;
}
