/**
 * cache (and dmkit-cache): `<metadata dev> <cache dev> <origin dev> <block size> <#features>
 * <feature>* <policy> <#policy args> (<key> <value>)*`. The kernel echoes everything after the
 * devices verbatim; migration_threshold travels among the policy args but belongs to the core.
 */
import type { Sectors, TargetBlocks } from '../units';
import {
  checkBlocks,
  checkBlockSize,
  checkBool,
  checkDevice,
  checkOneOf,
  checkSectors,
  checkWord,
  conflict,
  defineCodec,
  readFailOrError,
  readMetadataUsage,
  type ErrorStatus,
  type FailStatus,
  type MetadataUsage,
} from './codec';
import { TargetParamError } from './errors';
import type { Tokens } from './tokens';

const TYPE = 'cache';
const IO_MODES = ['writeback', 'writethrough', 'passthrough'] as const;
const FEATURES = ['metadata2', ...IO_MODES, 'no_discard_passdown'] as const;
const MIGRATION_THRESHOLD = 'migration_threshold';
const MAX_POLICY_WORDS = 1024;

export type CacheIoMode = (typeof IO_MODES)[number];
export type CacheFeature = (typeof FEATURES)[number];

export interface CachePolicyArg {
  readonly key: string;
  readonly value: string;
}

export interface CacheParams {
  readonly metadataDevice: string;
  readonly cacheDevice: string;
  readonly originDevice: string;
  /** A multiple of 64 in [64, 2097152] sectors (32 KiB .. 1 GiB). */
  readonly blockSize: Sectors;
  /** null: no mode feature given, so the kernel uses writeback. */
  readonly ioMode: CacheIoMode | null;
  readonly metadata2: boolean;
  readonly noDiscardPassdown: boolean;
  /** smq, mq, cleaner or default (an alias of smq). */
  readonly policy: string;
  /** Core tunable in sectors of I/O in flight for migrations; null keeps the default (2048). */
  readonly migrationThreshold: Sectors | null;
  /** Policy tunables other than migration_threshold, in order. */
  readonly policyArgs: readonly CachePolicyArg[];
}

type Defaulted = 'ioMode' | 'metadata2' | 'noDiscardPassdown' | 'policy' | 'migrationThreshold' | 'policyArgs';
export type CacheInput = Omit<CacheParams, Defaulted> & Partial<Pick<CacheParams, Defaulted>>;

export interface CacheInfo extends MetadataUsage {
  readonly blockSize: Sectors;
  readonly cacheUsed: TargetBlocks;
  readonly cacheTotal: TargetBlocks;
  readonly readHits: bigint;
  readonly readMisses: bigint;
  readonly writeHits: bigint;
  readonly writeMisses: bigint;
  readonly demotions: bigint;
  readonly promotions: bigint;
  readonly dirty: TargetBlocks;
  readonly features: readonly CacheFeature[];
  /** The mode among `features`. */
  readonly ioMode: CacheIoMode;
  readonly coreArgs: { readonly migrationThreshold: Sectors };
  readonly policy: string;
  readonly policyArgs: readonly CachePolicyArg[];
  readonly mode: 'rw' | 'ro';
  readonly needsCheck: boolean;
}

export type CacheStatus = CacheInfo | FailStatus | ErrorStatus;

const isIoMode = (f: string): f is CacheIoMode => (IO_MODES as readonly string[]).includes(f);
const isMigrationThreshold = (key: string): boolean => key.toLowerCase() === MIGRATION_THRESHOLD;

function normalizePolicyArgs(args: readonly CachePolicyArg[]): CachePolicyArg[] {
  if (!Array.isArray(args)) throw new TargetParamError('ERR_TARGET_BAD_VALUE', TYPE, 'policyArgs', 'must be an array of {key, value}');
  // Bounded before anything is walked: a huge array fails here, not after allocating its copy.
  if (args.length * 2 > MAX_POLICY_WORDS) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', TYPE, 'policyArgs', `more than ${MAX_POLICY_WORDS} policy words`);
  }
  return args.map((a: unknown, i) => {
    if (typeof a !== 'object' || a === null) throw new TargetParamError('ERR_TARGET_BAD_VALUE', TYPE, `policyArgs[${i}]`, 'must be {key, value}');
    const { key: rawKey, value } = a as { key?: unknown; value?: unknown };
    const key = checkWord(TYPE, `policyArgs[${i}].key`, rawKey);
    if (isMigrationThreshold(key)) throw conflict(TYPE, `policyArgs[${i}].key`, 'use migrationThreshold instead');
    return { key, value: checkWord(TYPE, `policyArgs[${i}].value`, value) };
  });
}

function normalize(p: CacheInput): CacheParams {
  const policyArgs = normalizePolicyArgs(p.policyArgs ?? []);
  const migrationThreshold = p.migrationThreshold == null ? null : checkSectors(TYPE, 'migrationThreshold', p.migrationThreshold);
  if ((policyArgs.length + (migrationThreshold === null ? 0 : 1)) * 2 > MAX_POLICY_WORDS) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', TYPE, 'policyArgs', `more than ${MAX_POLICY_WORDS} policy words`);
  }
  return {
    metadataDevice: checkDevice(TYPE, 'metadataDevice', p.metadataDevice),
    cacheDevice: checkDevice(TYPE, 'cacheDevice', p.cacheDevice),
    originDevice: checkDevice(TYPE, 'originDevice', p.originDevice),
    blockSize: checkBlockSize(TYPE, 'blockSize', p.blockSize, 64n, 2097152n, 64n),
    ioMode: p.ioMode == null ? null : checkOneOf(TYPE, 'ioMode', p.ioMode, IO_MODES),
    metadata2: checkBool(TYPE, 'metadata2', p.metadata2),
    noDiscardPassdown: checkBool(TYPE, 'noDiscardPassdown', p.noDiscardPassdown),
    policy: checkWord(TYPE, 'policy', p.policy ?? 'default'),
    migrationThreshold,
    policyArgs,
  };
}

function featureWords(p: CacheParams): string[] {
  return [
    ...(p.metadata2 ? ['metadata2'] : []),
    ...(p.ioMode === null ? [] : [p.ioMode]),
    ...(p.noDiscardPassdown ? ['no_discard_passdown'] : []),
  ];
}

function emit(p: CacheParams): string {
  const features = featureWords(p);
  const args = p.migrationThreshold === null ? [] : [MIGRATION_THRESHOLD, `${p.migrationThreshold}`];
  for (const a of p.policyArgs) args.push(a.key, a.value);
  const words = [p.metadataDevice, p.cacheDevice, p.originDevice, `${p.blockSize}`];
  return [...words, `${features.length}`, ...features, p.policy, `${args.length}`, ...args].join(' ');
}

function readFeatureList(t: Tokens): CacheFeature[] {
  const n = t.group('features', 3);
  const features = Array.from({ length: n }, () => t.keyword('feature', FEATURES));
  const modes = features.filter(isIoMode);
  if (modes.length > 1) throw t.error('more than one io mode feature', modes.join(' '));
  return features;
}

function readPairs(t: Tokens, what: string, max: number): CachePolicyArg[] {
  const before = t.peek() ?? '';
  const n = t.group(what, max);
  if (n % 2 !== 0) throw t.error(`${what} must be key/value pairs`, before);
  const pairs: CachePolicyArg[] = [];
  for (let i = 0; i < n; i += 2) pairs.push({ key: t.next(`${what} key`), value: t.next(`${what} value`) });
  return pairs;
}

function read(t: Tokens): CacheInput {
  const metadataDevice = t.device('metadata device');
  const cacheDevice = t.device('cache device');
  const originDevice = t.device('origin device');
  const blockSize = t.sectors('block size');
  const features = readFeatureList(t);
  const policy = t.next('policy');
  const pairs = readPairs(t, 'policy args', MAX_POLICY_WORDS);
  let migrationThreshold: Sectors | null = null;
  for (const a of pairs.filter((a) => isMigrationThreshold(a.key))) {
    migrationThreshold = t.decimal(a.value, MIGRATION_THRESHOLD) as Sectors;
  }
  return {
    metadataDevice,
    cacheDevice,
    originDevice,
    blockSize,
    ioMode: features.find(isIoMode) ?? null,
    metadata2: features.includes('metadata2'),
    noDiscardPassdown: features.includes('no_discard_passdown'),
    policy,
    migrationThreshold,
    policyArgs: pairs.filter((a) => !isMigrationThreshold(a.key)),
  };
}

function readCoreArgs(t: Tokens): { migrationThreshold: Sectors } {
  const pairs = readPairs(t, 'core args', 2);
  const [pair] = pairs;
  if (pair === undefined || !isMigrationThreshold(pair.key)) throw t.error('core args must be migration_threshold', pair?.key ?? '');
  return { migrationThreshold: t.decimal(pair.value, MIGRATION_THRESHOLD) as Sectors };
}

type Counters = Pick<CacheInfo, 'readHits' | 'readMisses' | 'writeHits' | 'writeMisses' | 'demotions' | 'promotions' | 'dirty'>;

function readCounters(t: Tokens): Counters {
  return {
    readHits: t.uint('read hits'),
    readMisses: t.uint('read misses'),
    writeHits: t.uint('write hits'),
    writeMisses: t.uint('write misses'),
    demotions: t.uint('demotions'),
    promotions: t.uint('promotions'),
    dirty: t.blocks('dirty blocks'),
  };
}

function readStatus(t: Tokens): CacheStatus {
  const failed = readFailOrError(t);
  if (failed) return failed;
  const usage = readMetadataUsage(t);
  const blockSize = t.sectors('cache block size');
  const [cacheUsed, cacheTotal] = t.ratio('cache block usage');
  const counters = readCounters(t);
  const features = readFeatureList(t);
  const ioMode = features.find(isIoMode);
  if (ioMode === undefined) throw t.error('status names no io mode', features.join(' '));
  const coreArgs = readCoreArgs(t);
  const policy = t.next('policy');
  const policyArgs = readPairs(t, 'policy args', MAX_POLICY_WORDS);
  const mode = t.keyword('metadata mode', ['rw', 'ro'] as const);
  const needsCheck = t.keyword('needs_check flag', ['needs_check', '-'] as const) === 'needs_check';
  return {
    ...usage,
    blockSize,
    cacheUsed: cacheUsed as TargetBlocks,
    cacheTotal: cacheTotal as TargetBlocks,
    ...counters,
    features,
    ioMode,
    coreArgs,
    policy,
    policyArgs,
    mode,
    needsCheck,
  };
}

export const cache = defineCodec<CacheParams, CacheStatus, CacheInput>({
  type: TYPE,
  names: [TYPE, 'dmkit-cache'],
  normalize,
  emit,
  read,
  readStatus,
});

/** One cache block, or the half-open range [begin, end). */
export type CblockRange = TargetBlocks | { readonly begin: TargetBlocks; readonly end: TargetBlocks };

function cblockRange(r: CblockRange, i: number): string {
  if (typeof r === 'bigint') return `${checkBlocks(TYPE, `ranges[${i}]`, r)}`;
  const begin = checkBlocks(TYPE, `ranges[${i}].begin`, r.begin);
  const end = checkBlocks(TYPE, `ranges[${i}].end`, r.end);
  if (begin >= end) throw conflict(TYPE, `ranges[${i}]`, `begin ${begin} must be below end ${end}`);
  return `${begin}-${end}`;
}

export const cacheMessages = {
  migrationThreshold: (threshold: Sectors): string =>
    `${MIGRATION_THRESHOLD} ${checkSectors(TYPE, 'migrationThreshold', threshold)}`,
  /** A policy tunable (`<key> <value>`); mq accepts and ignores its old keys. */
  policyTunable: (key: string, value: string): string => `${checkWord(TYPE, 'key', key)} ${checkWord(TYPE, 'value', value)}`,
  /** Drops cached blocks without writeback; the kernel accepts it only in passthrough mode. */
  invalidateCblocks(ranges: readonly CblockRange[]): string {
    if (!Array.isArray(ranges) || ranges.length === 0) {
      throw new TargetParamError('ERR_TARGET_BAD_VALUE', TYPE, 'ranges', 'needs at least one cblock or range');
    }
    return ['invalidate_cblocks', ...ranges.map(cblockRange)].join(' ');
  },
} as const;
