/**
 * thin-pool: `<metadata dev> <data dev> <block size> <low water mark> [<#features> <feature>*]`.
 * INFO: `<transaction id> <used>/<total metadata blocks> <used>/<total data blocks> <held root|->
 * <out_of_data_space|ro|rw> <discard mode> <no space mode> <needs_check|-> <metadata low watermark>`.
 */
import type { Sectors, TargetBlocks } from '../units';
import {
  checkBlocks,
  checkBlockSize,
  checkBool,
  checkDevice,
  checkInt,
  checkUint,
  conflict,
  defineCodec,
  readFailOrError,
  type ErrorStatus,
  type FailStatus,
} from './codec';
import type { Tokens } from './tokens';

const TYPE = 'thin-pool';
/** Thin device ids are 24 bits (MAX_DEV_ID). */
export const MAX_THIN_DEV_ID = (1 << 24) - 1;

/** Feature keywords in the order the kernel prints them, with the param each one sets. */
const FEATURES = [
  ['skip_block_zeroing', 'skipBlockZeroing'],
  ['ignore_discard', 'ignoreDiscard'],
  ['no_discard_passdown', 'noDiscardPassdown'],
  ['read_only', 'readOnly'],
  ['error_if_no_space', 'errorIfNoSpace'],
] as const;
const FEATURE_WORDS = FEATURES.map(([word]) => word);
/** The ctr accepts at most 4 feature words. */
const MAX_FEATURES = 4;

type FeatureWord = (typeof FEATURES)[number][0];
type FeatureFlag = (typeof FEATURES)[number][1];
export type ThinPoolFeatures = { readonly [K in FeatureFlag]: boolean };

export interface ThinPoolParams extends ThinPoolFeatures {
  readonly metadataDevice: string;
  readonly dataDevice: string;
  /** A multiple of 128 in [128, 2097152] sectors (64 KiB .. 1 GiB). */
  readonly blockSize: Sectors;
  /** Free data blocks at which the pool raises a dm event. */
  readonly lowWaterMark: TargetBlocks;
}

export type ThinPoolInput = Omit<ThinPoolParams, FeatureFlag> & Partial<ThinPoolFeatures>;

export interface ThinPoolInfo {
  readonly transactionId: bigint;
  /** Metadata blocks (4 KiB) in use and in total. */
  readonly metadataUsed: bigint;
  readonly metadataTotal: bigint;
  readonly dataUsed: TargetBlocks;
  readonly dataTotal: TargetBlocks;
  /** Metadata block of the reserved metadata snapshot, or null. */
  readonly heldRoot: bigint | null;
  readonly mode: 'rw' | 'ro' | 'out_of_data_space';
  readonly discards: 'discard_passdown' | 'no_discard_passdown' | 'ignore_discard';
  readonly noSpace: 'queue_if_no_space' | 'error_if_no_space';
  readonly needsCheck: boolean;
  /** Free metadata blocks at which the pool raises a dm event. */
  readonly metadataLowWatermark: bigint;
}

export type ThinPoolStatus = ThinPoolInfo | FailStatus | ErrorStatus;

function normalizeFeatures(p: ThinPoolInput): ThinPoolFeatures {
  const f = Object.fromEntries(FEATURES.map(([, flag]) => [flag, checkBool(TYPE, flag, p[flag])])) as ThinPoolFeatures;
  if (Object.values(f).filter(Boolean).length > MAX_FEATURES) {
    throw conflict(TYPE, 'features', `the kernel accepts at most ${MAX_FEATURES} features`);
  }
  return f;
}

function normalize(p: ThinPoolInput): ThinPoolParams {
  return {
    metadataDevice: checkDevice(TYPE, 'metadataDevice', p.metadataDevice),
    dataDevice: checkDevice(TYPE, 'dataDevice', p.dataDevice),
    blockSize: checkBlockSize(TYPE, 'blockSize', p.blockSize, 128n, 2097152n, 128n),
    lowWaterMark: checkBlocks(TYPE, 'lowWaterMark', p.lowWaterMark),
    ...normalizeFeatures(p),
  };
}

/** Exactly pool_status() TABLE: the feature count is always printed and every word ends with a space. */
function emit(p: ThinPoolParams): string {
  const features: string[] = FEATURES.filter(([, flag]) => p[flag]).map(([word]) => word);
  const words = [p.metadataDevice, p.dataDevice, `${p.blockSize}`, `${p.lowWaterMark}`, `${features.length}`, ...features];
  return words.map((w) => `${w} `).join('');
}

function readFeatures(t: Tokens): Set<FeatureWord> {
  const words = new Set<FeatureWord>();
  if (t.remaining === 0) return words;
  const n = t.group('features', FEATURES.length);
  for (let i = 0; i < n; i++) words.add(t.keyword('feature', FEATURE_WORDS));
  return words;
}

function read(t: Tokens): ThinPoolInput {
  const metadataDevice = t.device('metadata device');
  const dataDevice = t.device('data device');
  const blockSize = t.sectors('block size');
  const lowWaterMark = t.blocks('low water mark');
  const words = readFeatures(t);
  const features = Object.fromEntries(FEATURES.map(([word, flag]) => [flag, words.has(word)])) as ThinPoolFeatures;
  return { metadataDevice, dataDevice, blockSize, lowWaterMark, ...features };
}

function readStatus(t: Tokens): ThinPoolStatus {
  const failed = readFailOrError(t);
  if (failed) return failed;
  const transactionId = t.uint('transaction id');
  const [metadataUsed, metadataTotal] = t.ratio('metadata usage');
  const [dataUsed, dataTotal] = t.ratio('data usage');
  return {
    transactionId,
    metadataUsed,
    metadataTotal,
    dataUsed: dataUsed as TargetBlocks,
    dataTotal: dataTotal as TargetBlocks,
    heldRoot: t.optionalUint('held metadata root'),
    mode: t.keyword('pool mode', ['rw', 'ro', 'out_of_data_space'] as const),
    discards: t.keyword('discard mode', ['discard_passdown', 'no_discard_passdown', 'ignore_discard'] as const),
    noSpace: t.keyword('no space mode', ['queue_if_no_space', 'error_if_no_space'] as const),
    needsCheck: t.keyword('needs_check flag', ['needs_check', '-'] as const) === 'needs_check',
    metadataLowWatermark: t.uint('metadata low watermark'),
  };
}

export const thinPool = defineCodec<ThinPoolParams, ThinPoolStatus, ThinPoolInput>({
  type: TYPE,
  names: [TYPE],
  normalize,
  emit,
  read,
  readStatus,
});

const devId = (field: string, id: number): number => checkInt(TYPE, field, id, MAX_THIN_DEV_ID);
const txId = (field: string, id: bigint): bigint => checkUint(TYPE, field, id);

export const thinPoolMessages = {
  createThin: (id: number): string => `create_thin ${devId('id', id)}`,
  /** Suspend the origin thin device first; the kernel does not enforce it. */
  createSnap: (id: number, originId: number): string => `create_snap ${devId('id', id)} ${devId('originId', originId)}`,
  delete: (id: number): string => `delete ${devId('id', id)}`,
  /** Compare-and-swap: fails in the kernel unless the current id is `current`. */
  setTransactionId: (current: bigint, next: bigint): string =>
    `set_transaction_id ${txId('current', current)} ${txId('next', next)}`,
  reserveMetadataSnap: (): string => 'reserve_metadata_snap',
  releaseMetadataSnap: (): string => 'release_metadata_snap',
} as const;
