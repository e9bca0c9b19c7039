/**
 * The valid table line of each fuzzed target as a list of typed tokens (devices, numbers, counts of the
 * argument group that follows, keywords), generated from a seeded random source. Pure: no kernel here.
 * The grammars follow the codecs in src/targets (and the 6.1 constructors they mirror).
 */

/** What a device argument is to its target; decides which substitutions must be refused. */
export type DevRole = 'meta' | 'data' | 'origin' | 'cow' | 'cache' | 'dest' | 'source' | 'log' | 'pool' | 'extorigin';

/** A block/region/chunk size rule: the constructor must refuse any value outside it. */
export interface SizeRule {
  readonly min: bigint;
  readonly max: bigint;
  readonly multiple?: bigint;
  readonly pow2?: boolean;
  /** 0 is allowed (snapshot: take the chunk size from the COW header). */
  readonly zeroOk?: boolean;
}

export type Tok =
  | { readonly kind: 'dev'; readonly role: DevRole; readonly text: string }
  | { readonly kind: 'num'; readonly field: string; readonly text: string; readonly size?: SizeRule }
  /** The count of a group: `covers` words follow that belong to it. */
  | { readonly kind: 'count'; readonly field: string; readonly text: string; readonly covers: number }
  | { readonly kind: 'word'; readonly field: string; readonly text: string };

/** The devices a line may name (paths or maj:min), set up by the rig. */
export interface DevEnv {
  /** Three scratch devices of `scratchSectors` each, used by nothing but the fuzzed lines. */
  readonly scratch: readonly [string, string, string];
  readonly scratchSectors: bigint;
  /** A scratch device of a few KiB and one of a few hundred KiB (smaller than the line's length). */
  readonly tiny: string;
  readonly small: string;
  /** The live thin-pool a `thin` line points at. */
  readonly pool: string;
}

export interface Grammar {
  /** Target type names this grammar covers. */
  readonly types: readonly string[];
  /** Length of the line in sectors (fits the scratch devices). */
  readonly length: bigint;
  /** True when the constructor reads or writes metadata on one of its devices (so scratch is zeroed first). */
  readonly formats: boolean;
  line(r: () => number, env: DevEnv): Tok[];
}

export const U32_MAX = 0xffff_ffffn;
export const LINE_SECTORS = 16384n;

export const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
export const int = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
const chance = (r: () => number, p: number): boolean => r() < p;

const dev = (role: DevRole, text: string): Tok => ({ kind: 'dev', role, text });
const num = (field: string, v: bigint | number, size?: SizeRule): Tok =>
  size ? { kind: 'num', field, text: `${v}`, size } : { kind: 'num', field, text: `${v}` };
const word = (field: string, text: string): Tok => ({ kind: 'word', field, text });
/** A group: its count then its words. */
const group = (field: string, words: readonly Tok[]): Tok[] => [{ kind: 'count', field, text: `${words.length}`, covers: words.length }, ...words];

/** A random subset of `xs` in random order. */
function subset<T>(r: () => number, xs: readonly T[], max = xs.length): T[] {
  const pool = [...xs];
  const out: T[] = [];
  const n = int(r, 0, Math.min(max, pool.length));
  while (out.length < n) out.push(pool.splice(Math.floor(r() * pool.length), 1)[0]!);
  return out;
}

export const ERA_BLOCK: SizeRule = { min: 8n, max: U32_MAX, multiple: 8n };
export const CLONE_REGION: SizeRule = { min: 8n, max: 2097152n, pow2: true };
export const CACHE_BLOCK: SizeRule = { min: 64n, max: 2097152n, multiple: 64n };
export const POOL_BLOCK: SizeRule = { min: 128n, max: 2097152n, multiple: 128n };
export const SNAP_CHUNK: SizeRule = { min: 1n, max: 1n << 21n, pow2: true, zeroOk: true };

/** True when `text` is a plain decimal number the rule allows. */
export function sizeAllowed(rule: SizeRule, text: string): boolean {
  if (!/^\d+$/.test(text)) return false;
  const v = BigInt(text);
  if (v === 0n) return rule.zeroOk === true;
  if (v < rule.min || v > rule.max) return false;
  if (rule.multiple !== undefined && v % rule.multiple !== 0n) return false;
  if (rule.pow2 && (v & (v - 1n)) !== 0n) return false;
  return true;
}

const era: Grammar = {
  types: ['era', 'dmkit-era'],
  length: LINE_SECTORS,
  formats: true,
  line: (r, e) => [dev('meta', e.scratch[0]), dev('origin', e.scratch[1]), num('block size', pick(r, [8, 16, 64, 128, 136, 1024]), ERA_BLOCK)],
};

const clone: Grammar = {
  types: ['clone', 'dmkit-clone'],
  length: LINE_SECTORS,
  formats: true,
  line(r, e) {
    const words = [dev('meta', e.scratch[0]), dev('dest', e.scratch[1]), dev('source', e.scratch[2]), num('region size', pick(r, [8, 64, 128, 1024]), CLONE_REGION)];
    const withCore = chance(r, 0.5);
    if (withCore || chance(r, 0.6)) words.push(...group('features', subset(r, ['no_hydration', 'no_discard_passdown']).map((f) => word('feature', f))));
    if (withCore) {
      const core = subset(r, ['hydration_threshold', 'hydration_batch_size']).flatMap((k) => [word('core key', k), num(k, int(r, 0, 64))]);
      words.push(...group('core args', core));
    }
    return words;
  },
};

const cache: Grammar = {
  types: ['cache'],
  length: LINE_SECTORS,
  formats: true,
  line(r, e) {
    const features = subset(r, ['metadata2', pick(r, ['writeback', 'writethrough', 'passthrough']), 'no_discard_passdown']).map((f) => word('feature', f));
    const policy = pick(r, ['smq', 'mq', 'cleaner', 'default']);
    const args: Tok[] = [];
    if (chance(r, 0.5)) args.push(word('policy key', 'migration_threshold'), num('migration_threshold', int(r, 0, 1 << 20)));
    // Only mq takes (and ignores) its old tunables; smq and default refuse any key but migration_threshold.
    if (policy === 'mq' && chance(r, 0.5)) args.push(word('policy key', pick(r, ['random_threshold', 'sequential_threshold'])), num('policy value', int(r, 0, 100)));
    return [
      dev('meta', e.scratch[0]),
      dev('cache', e.scratch[2]),
      dev('origin', e.scratch[1]),
      num('block size', pick(r, [64, 128, 192, 512]), CACHE_BLOCK),
      ...group('features', features),
      word('policy', policy),
      ...group('policy args', args),
    ];
  },
};

/**
 * dmkit-cache: the in-tree line, plus its own policy name (dmkit-lru; default, smq and mq are aliases of
 * it). Every policy but the cleaner takes the old mq tunables (and ignores them); migration_threshold goes
 * to the core under any policy.
 */
const DMKIT_CACHE_POLICIES = ['dmkit-lru', 'default', 'smq', 'mq', 'cleaner'];
const DMKIT_CACHE_TUNABLES = ['sequential_threshold', 'random_threshold', 'read_promote_adjustment', 'write_promote_adjustment', 'discard_promote_adjustment'];
const dmkitCache: Grammar = {
  types: ['dmkit-cache'],
  length: LINE_SECTORS,
  formats: true,
  line(r, e) {
    const features = subset(r, ['metadata2', pick(r, ['writeback', 'writethrough', 'passthrough']), 'no_discard_passdown']).map((f) => word('feature', f));
    const policy = pick(r, DMKIT_CACHE_POLICIES);
    const args: Tok[] = [];
    if (chance(r, 0.5)) args.push(word('policy key', 'migration_threshold'), num('migration_threshold', int(r, 0, 1 << 20)));
    if (policy !== 'cleaner' && chance(r, 0.5)) args.push(word('policy key', pick(r, DMKIT_CACHE_TUNABLES)), num('policy value', int(r, 0, 100)));
    return [
      dev('meta', e.scratch[0]),
      dev('cache', e.scratch[2]),
      dev('origin', e.scratch[1]),
      num('block size', pick(r, [64, 128, 192, 512]), CACHE_BLOCK),
      ...group('features', features),
      word('policy', policy),
      ...group('policy args', args),
    ];
  },
};

const POOL_FEATURES = ['skip_block_zeroing', 'ignore_discard', 'no_discard_passdown', 'error_if_no_space'];

const thinPool: Grammar = {
  types: ['thin-pool'],
  length: LINE_SECTORS,
  formats: true,
  line(r, e) {
    const words = [dev('meta', e.scratch[0]), dev('data', e.scratch[1]), num('block size', pick(r, [128, 256, 384, 1024]), POOL_BLOCK), num('low water mark', int(r, 0, 64))];
    if (chance(r, 0.7)) words.push(...group('features', subset(r, POOL_FEATURES).map((f) => word('feature', f))));
    return words;
  },
};

const thin: Grammar = {
  types: ['thin'],
  length: LINE_SECTORS,
  formats: false,
  line(r, e) {
    // Only thin 0 exists when the tables are fuzzed (the message fuzzer runs later).
    const words = [dev('pool', e.pool), num('device id', 0)];
    if (chance(r, 0.4)) words.push(dev('extorigin', e.scratch[1]));
    return words;
  },
};

/** snapshot and dmkit-snapshot; the merge targets take the same line with a persistent store only. */
const snapshotLike = (types: readonly string[], stores: readonly string[]): Grammar => ({
  types,
  length: LINE_SECTORS,
  formats: true,
  line(r, e) {
    const words = [dev('origin', e.scratch[1]), dev('cow', e.scratch[0]), word('store', pick(r, stores)), num('chunk size', pick(r, [8, 16, 64, 128]), SNAP_CHUNK)];
    if (chance(r, 0.5)) {
      const zero = chance(r, 0.8);
      const features = zero ? ['discard_zeroes_cow', ...(chance(r, 0.5) ? ['discard_passdown_origin'] : [])] : [];
      words.push(...group('features', features.map((f) => word('feature', f))));
    }
    return words;
  },
});
const snapshot = snapshotLike(['snapshot', 'dmkit-snapshot'], ['P', 'PO', 'N']);
const snapshotMerge = snapshotLike(['snapshot-merge', 'dmkit-merge'], ['P', 'PO']);

const snapshotOrigin: Grammar = {
  types: ['snapshot-origin', 'dmkit-origin'],
  length: LINE_SECTORS,
  formats: false,
  line: (_r, e) => [dev('origin', e.scratch[1])],
};

function linearLike(types: readonly string[]): Grammar {
  return {
    types,
    length: LINE_SECTORS,
    formats: false,
    line: (r, e) => [dev('data', e.scratch[1]), num('offset', int(r, 0, Number(e.scratchSectors - LINE_SECTORS)))],
  };
}

const flakey: Grammar = {
  types: ['flakey'],
  length: LINE_SECTORS,
  formats: false,
  line(r, e) {
    const words = [dev('data', e.scratch[1]), num('offset', int(r, 0, 1024)), num('up interval', int(r, 0, 60)), num('down interval', int(r, 1, 60))];
    if (chance(r, 0.7)) {
      const f: Tok[] = [];
      const writes = chance(r, 0.5) ? pick(r, ['drop_writes', 'error_writes']) : null;
      if (writes) f.push(word('feature', writes));
      if (chance(r, 0.5)) {
        const dir = writes ? 'r' : pick(r, ['r', 'w']);
        f.push(word('feature', 'corrupt_bio_byte'), num('corrupt byte', int(r, 1, 512)), word('corrupt direction', dir), num('corrupt value', int(r, 0, 255)), num('corrupt flags', int(r, 0, 3)));
      }
      words.push(...group('features', f));
    }
    return words;
  },
};

const logWrites: Grammar = {
  types: ['log-writes'],
  length: LINE_SECTORS,
  formats: false,
  line: (_r, e) => [dev('data', e.scratch[1]), dev('log', e.scratch[0])],
};

export const GRAMMARS: readonly Grammar[] = [era, clone, cache, dmkitCache, thinPool, thin, snapshot, snapshotMerge, snapshotOrigin, linearLike(['linear']), linearLike(['dmkit-core']), flakey, logWrites];

export function grammarFor(type: string): Grammar | undefined {
  return GRAMMARS.find((g) => g.types.includes(type));
}

/** Every target type the table fuzzer knows, in run order. */
export const FUZZ_TYPES: readonly string[] = GRAMMARS.flatMap((g) => g.types);

export const render = (toks: readonly Tok[]): string => toks.map((t) => t.text).join(' ');
