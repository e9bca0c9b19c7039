/**
 * Corruptions of a metadata image and the seeded plan of cases. A case is either field-aware (one field of
 * one structure set to 0, max, +1, -1, a random value, a block number past the end or another used block)
 * or random (byte or bit flips anywhere in a used block); either way the block's checksum is left stale
 * (the checksum must reject it) or recomputed (deeper validation must).
 *
 * Everything here is a pure function of (image, seed), so a case replays from its seed alone.
 */
import { caseSeed, prng, type Scale } from '../types';
import { BLOCK, blockAt, CHECKSUMMED, fieldNames, fixChecksum, resolveField, type BlockKind, type Field, type Format, type ImageMap } from './format';

export const VARIANTS = ['zero', 'max', 'inc', 'dec', 'random', 'past-end', 'other-block'] as const;
export type Variant = (typeof VARIANTS)[number];
export type CsumMode = 'stale' | 'fixed';

export interface Edit {
  /** Byte offset in the image. */
  at: number;
  old: Buffer;
  new: Buffer;
}

export interface Corruption {
  mode: 'field' | 'random';
  block: number;
  blockKind: BlockKind;
  /** Field cases: the concrete field (e.g. `key[3]`) and the variant. */
  field?: string;
  variant?: Variant;
  /** Random cases: 'byte' or 'bit' flips. */
  flips?: 'byte' | 'bit';
  csum: CsumMode;
  /** Every byte range that changed, the checksum included. */
  edits: Edit[];
  /** Field cases: the whole field before and after (edits hold only the bytes that differ). */
  fieldEdit?: Edit;
  /** A used, checksummed block now fails its checksum: every checker must flag the image. */
  breaksChecksum: boolean;
}

const hex = (b: Buffer): string => (b.length <= 8 ? `0x${Buffer.from(b).reverse().toString('hex')}` : b.toString('hex'));

/** One line: where, what, old -> new. */
export function describe(c: Corruption): string {
  const what = c.mode === 'field' ? `${c.field} := ${c.variant}` : `${c.edits.length} ${c.flips} flip(s)`;
  const show = (e: Edit): string => `@${Math.floor(e.at / BLOCK)}+${e.at % BLOCK} ${hex(e.old)}->${hex(e.new)}`;
  const csum = c.edits.find((e) => e.at % BLOCK < 4);
  const edits = c.fieldEdit ? [c.fieldEdit, ...(csum && c.fieldEdit.at % BLOCK >= 4 ? [csum] : [])].map(show).join(' ') : c.edits.map(show).join(' ');
  return `${c.mode} block ${c.block} (${c.blockKind}) ${what}, csum ${c.csum}${c.breaksChecksum ? ' (checksum broken)' : ''}: ${edits}`;
}

function randomBig(rand: () => number, bits: number): bigint {
  let v = 0n;
  for (let got = 0; got < bits; got += 32) v = (v << 32n) | BigInt(Math.floor(rand() * 0x100000000));
  return v & ((1n << BigInt(bits)) - 1n);
}

function otherUsedBlock(map: ImageMap, not: bigint, rand: () => number): bigint {
  const others = map.used.filter((b) => BigInt(b) !== not);
  return others.length ? BigInt(others[Math.floor(rand() * others.length)]!) : BigInt(map.nrBlocks - 1);
}

/** The new bytes of `field` in `block` under `variant`. */
export function mutatedValue(block: Buffer, field: Field, variant: Variant, map: ImageMap, rand: () => number): Buffer {
  const old = block.subarray(field.offset, field.offset + field.size);
  const out = Buffer.from(old);
  if (![1, 2, 4, 8].includes(field.size)) {
    switch (variant) {
      case 'zero': out.fill(0); break;
      case 'max': out.fill(0xff); break;
      case 'inc': out[0] = (out[0]! + 1) & 0xff; break;
      case 'dec': out[0] = (out[0]! + 255) & 0xff; break;
      default: for (let i = 0; i < out.length; i++) out[i] = Math.floor(rand() * 256);
    }
    return out;
  }
  const bits = field.size * 8;
  const mask = (1n << BigInt(bits)) - 1n;
  let v = 0n;
  for (let i = field.size - 1; i >= 0; i--) v = (v << 8n) | BigInt(old[i]!);
  let nv: bigint;
  switch (variant) {
    case 'zero': nv = 0n; break;
    case 'max': nv = mask; break;
    case 'inc': nv = (v + 1n) & mask; break;
    case 'dec': nv = (v - 1n) & mask; break;
    case 'random': nv = randomBig(rand, bits); if (nv === v) nv ^= 1n; break;
    case 'past-end': nv = (BigInt(map.nrBlocks) + (rand() < 0.5 ? 0n : BigInt(Math.floor(rand() * 1_000_000)))) & mask; break;
    case 'other-block': nv = otherUsedBlock(map, v, rand) & mask; break;
  }
  for (let i = 0; i < field.size; i++) out[i] = Number((nv >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** Applies `edit` functions to block `nr` of a copy of `image`, fixes or keeps the checksum, and records what changed. */
function corruptBlock(image: Buffer, map: ImageMap, nr: number, csum: CsumMode, change: (block: Buffer) => void): { out: Buffer; edits: Edit[]; breaksChecksum: boolean } {
  const out = Buffer.from(image);
  const block = blockAt(out, nr);
  const before = Buffer.from(block);
  change(block);
  const kind = map.kinds[nr]!;
  const checksummed = CHECKSUMMED.includes(kind);
  if (csum === 'fixed') fixChecksum(block, kind, map.format);
  const edits: Edit[] = [];
  for (let i = 0; i < BLOCK; ) {
    if (block[i] === before[i]) {
      i++;
      continue;
    }
    let j = i;
    while (j < BLOCK && block[j] !== before[j]) j++;
    edits.push({ at: nr * BLOCK + i, old: before.subarray(i, j), new: Buffer.from(block.subarray(i, j)) });
    i = j;
  }
  return { out, edits, breaksChecksum: csum === 'stale' && checksummed && edits.length > 0 };
}

export function corruptField(image: Buffer, map: ImageMap, nr: number, fieldName: string, variant: Variant, csum: CsumMode, rand: () => number): { image: Buffer; corruption: Corruption } {
  const kind = map.kinds[nr]!;
  const field = resolveField(blockAt(image, nr), kind, map.format, fieldName, rand);
  const at = nr * BLOCK + field.offset;
  const fieldEdit: Edit = { at, old: Buffer.from(image.subarray(at, at + field.size)), new: Buffer.alloc(0) };
  const r = corruptBlock(image, map, nr, csum, (block) => {
    mutatedValue(block, field, variant, map, rand).copy(block, field.offset);
  });
  fieldEdit.new = Buffer.from(r.out.subarray(at, at + field.size));
  return { image: r.out, corruption: { mode: 'field', block: nr, blockKind: kind, field: field.name, variant, csum, edits: r.edits, fieldEdit, breaksChecksum: r.breaksChecksum } };
}

/** Random flips in block `block` when given, else in a random used block. */
export function corruptRandom(image: Buffer, map: ImageMap, rand: () => number, block?: number): { image: Buffer; corruption: Corruption } {
  const nr = block ?? map.used[Math.floor(rand() * map.used.length)]!;
  const kind = map.kinds[nr]!;
  const flips = rand() < 0.5 ? 'byte' : 'bit';
  const count = 1 + Math.floor(rand() * 3);
  const csum: CsumMode = CHECKSUMMED.includes(kind) && rand() < 0.5 ? 'fixed' : 'stale';
  const r = corruptBlock(image, map, nr, csum, (block) => {
    for (let k = 0; k < count; k++) {
      // Half the flips land in the first 64 bytes, where every structure keeps its header.
      const at = rand() < 0.5 ? Math.floor(rand() * 64) : Math.floor(rand() * BLOCK);
      if (flips === 'bit') block[at] = block[at]! ^ (1 << Math.floor(rand() * 8));
      else block[at] = (block[at]! + 1 + Math.floor(rand() * 255)) & 0xff;
    }
  });
  return { image: r.out, corruption: { mode: 'random', block: nr, blockKind: kind, flips, csum, edits: r.edits, breaksChecksum: r.breaksChecksum } };
}

/*----------------------------------------------------------------
 * The plan
 *--------------------------------------------------------------*/

export interface FieldSlot {
  blockKind: BlockKind;
  field: string;
  variant: Variant;
  csum: CsumMode;
  /** This block rather than one of blockKind picked by the case's seed (structure cases). */
  block?: number;
}

/** `block` (random cases): flips in that block rather than in a random used block. */
export type CaseSpec = { index: number; seed: number } & ({ mode: 'field'; slot: FieldSlot } | { mode: 'random'; block?: number });

/**
 * (variant round, checksum mode) in the order they are spent: ci takes the first CI_ROUNDS, release all.
 * Each field meets every variant once per checksum mode; round j gives field i variant (i + j) mod 7.
 */
const ROUNDS: ReadonlyArray<[number, CsumMode]> = [
  [0, 'fixed'], [1, 'stale'], [2, 'fixed'], [3, 'fixed'], [4, 'fixed'], [5, 'fixed'], [6, 'fixed'],
  [1, 'fixed'], [0, 'stale'], [2, 'stale'], [3, 'stale'], [4, 'stale'], [5, 'stale'], [6, 'stale'],
];
export const CI_ROUNDS = 2;
export const RANDOM_CASES: Record<Scale, number> = { ci: 80, release: 100_000 };

const KIND_ORDER: readonly BlockKind[] = ['superblock', 'btree-internal', 'btree-leaf', 'array', 'sm-index', 'sm-bitmap'];

/** Every (kind, field, variant, csum) slot for the kinds present among the used blocks, round by round. */
export function fieldSlots(map: ImageMap, rounds = ROUNDS.length): FieldSlot[] {
  const fields: Array<[BlockKind, string]> = [];
  for (const k of KIND_ORDER) if (map.byKind.get(k)?.length) for (const name of fieldNames(k, map.format)) fields.push([k, name]);
  const slots: FieldSlot[] = [];
  for (const [j, csum] of ROUNDS.slice(0, rounds)) {
    fields.forEach(([blockKind, field], i) => {
      if (field === 'csum' && csum === 'fixed') return; // a recomputed checksum would undo the change
      slots.push({ blockKind, field, variant: VARIANTS[(i + j) % VARIANTS.length]!, csum });
    });
  }
  return slots;
}

/** Seeds live in one namespace per target type, so `--target X --case S` names one case. */
export function seedOf(base: number, target: string, index: number): number {
  return caseSeed(base, `corrupt/${target}`, index);
}

/**
 * The cases of one target at `scale`. Field slots take indexes [0, allSlots) and random cases follow, so a
 * ci plan is a subset of the release plan with the same index -> case mapping.
 */
export function plan(map: ImageMap, base: number, target: string, scale: Scale): CaseSpec[] {
  const all = fieldSlots(map);
  const nField = scale === 'ci' ? fieldSlots(map, CI_ROUNDS).length : all.length;
  const out: CaseSpec[] = [];
  for (let i = 0; i < nField; i++) out.push({ index: i, seed: seedOf(base, target, i), mode: 'field', slot: all[i]! });
  for (let k = 0; k < RANDOM_CASES[scale]; k++) out.push({ index: all.length + k, seed: seedOf(base, target, all.length + k), mode: 'random' });
  return out;
}

/** The case with `seed` in the release plan (a superset of ci's), if any. */
export function findCase(map: ImageMap, base: number, target: string, seed: number): CaseSpec | undefined {
  const all = fieldSlots(map);
  for (let i = 0; i < all.length + RANDOM_CASES.release; i++) {
    if (seedOf(base, target, i) !== seed) continue;
    return i < all.length ? { index: i, seed, mode: 'field', slot: all[i]! } : { index: i, seed, mode: 'random' };
  }
  return undefined;
}

/** The corrupted image of one case. */
export function buildCase(image: Buffer, map: ImageMap, spec: CaseSpec): { image: Buffer; corruption: Corruption } {
  const rand = prng(spec.seed);
  if (spec.mode === 'random') return corruptRandom(image, map, rand, spec.block);
  if (spec.slot.block !== undefined) return corruptField(image, map, spec.slot.block, spec.slot.field, spec.slot.variant, spec.slot.csum, rand);
  const blocks = map.byKind.get(spec.slot.blockKind) ?? [];
  if (!blocks.length) throw new Error(`no used ${spec.slot.blockKind} block`);
  // The live superblock (block 0) most of the time; a held metadata snapshot's copy otherwise.
  const nr = spec.slot.blockKind === 'superblock' && (blocks.length === 1 || rand() < 0.8) ? 0 : blocks[Math.floor(rand() * blocks.length)]!;
  return corruptField(image, map, nr, spec.slot.field, spec.slot.variant, spec.slot.csum, rand);
}

export type { Format };
