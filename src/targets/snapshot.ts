/**
 * snapshot (and dmkit-snapshot): `<origin> <COW dev> <P|PO|N> <chunk size> [<#features>
 * discard_zeroes_cow [discard_passdown_origin]]`. INFO: `<allocated>/<total> <metadata>` in
 * sectors, or one of Invalid, Merge failed, Overflow, Unknown.
 */
import type { Sectors } from '../units';
import { checkBool, checkDevice, checkObject, checkOneOf, checkSectors, conflict, defineCodec, isPowerOfTwo, type TargetCodec } from './codec';
import { TargetParamError } from './errors';
import type { Tokens } from './tokens';

const STORES = ['P', 'PO', 'N'] as const;
const FEATURES = ['discard_zeroes_cow', 'discard_passdown_origin'] as const;
const PROBLEMS = ['Invalid', 'Merge failed', 'Overflow', 'Unknown'] as const;
/** The kernel caps chunk_size at INT_MAX >> SECTOR_SHIFT; the largest power of 2 below is 2^21. */
const MAX_CHUNK = 1n << 21n;

/** P: persistent; PO: persistent and userspace understands "Overflow"; N: transient. */
export type SnapshotStore = (typeof STORES)[number];

export interface SnapshotParams {
  readonly origin: string;
  readonly cow: string;
  readonly store: SnapshotStore;
  /**
   * A power of 2 up to 2097152 sectors. 0 is allowed for persistent stores: the chunk size in the
   * COW header is used (the kernel also echoes 0 while a handover is pending).
   */
  readonly chunkSize: Sectors;
  /** Discards to the snapshot zero the COW chunks instead of passing down. */
  readonly discardZeroesCow: boolean;
  /** Also pass discards down to the origin; requires discardZeroesCow. */
  readonly discardPassdownOrigin: boolean;
}

type Defaulted = 'discardZeroesCow' | 'discardPassdownOrigin';
export type SnapshotInput = Omit<SnapshotParams, Defaulted> & Partial<Pick<SnapshotParams, Defaulted>>;

export interface SnapshotUsage {
  readonly allocated: Sectors;
  readonly total: Sectors;
  readonly metadata: Sectors;
}

export type SnapshotProblem = (typeof PROBLEMS)[number];
export type SnapshotStatus = SnapshotUsage | { readonly problem: SnapshotProblem };

function checkChunk(type: string, store: SnapshotStore, value: Sectors): Sectors {
  const chunk = checkSectors(type, 'chunkSize', value, MAX_CHUNK);
  if (chunk === 0n && store === 'N') throw conflict(type, 'chunkSize', 'a transient store needs a chunk size');
  if (chunk !== 0n && !isPowerOfTwo(chunk)) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', type, 'chunkSize', `${chunk} sectors is not a power of 2`);
  }
  return chunk;
}

function normalizer(type: string, persistentOnly: boolean): (p: SnapshotInput) => SnapshotParams {
  const stores: readonly SnapshotStore[] = persistentOnly ? ['P', 'PO'] : STORES;
  return (p) => {
    const origin = checkDevice(type, 'origin', p.origin);
    const cow = checkDevice(type, 'cow', p.cow);
    if (origin === cow) throw conflict(type, 'cow', 'the COW device cannot be the origin');
    const store = checkOneOf(type, 'store', p.store, stores);
    const discardZeroesCow = checkBool(type, 'discardZeroesCow', p.discardZeroesCow);
    const discardPassdownOrigin = checkBool(type, 'discardPassdownOrigin', p.discardPassdownOrigin);
    if (discardPassdownOrigin && !discardZeroesCow) {
      throw conflict(type, 'discardPassdownOrigin', 'requires discardZeroesCow');
    }
    return { origin, cow, store, chunkSize: checkChunk(type, store, p.chunkSize), discardZeroesCow, discardPassdownOrigin };
  };
}

/** As snapshot_status(): the feature count appears only when a feature is on. */
function emit(p: SnapshotParams): string {
  const features = [...(p.discardZeroesCow ? [FEATURES[0]] : []), ...(p.discardPassdownOrigin ? [FEATURES[1]] : [])];
  const words = [p.origin, p.cow, p.store, `${p.chunkSize}`];
  if (features.length > 0) words.push(`${features.length}`, ...features);
  return words.join(' ');
}

function read(t: Tokens): SnapshotInput {
  const origin = t.device('origin');
  const cow = t.device('COW device');
  const store = t.keyword('store type', STORES);
  const chunkSize = t.uint('chunk size', 0xffff_ffffn) as Sectors;
  const n = t.remaining > 0 ? t.group('features', FEATURES.length) : 0;
  const features = Array.from({ length: n }, () => t.keyword('feature', FEATURES));
  return {
    origin,
    cow,
    store,
    chunkSize,
    discardZeroesCow: features.includes('discard_zeroes_cow'),
    discardPassdownOrigin: features.includes('discard_passdown_origin'),
  };
}

function readStatus(t: Tokens): SnapshotStatus {
  const problem = PROBLEMS.find((p) => t.takeExactly(...p.split(' ')));
  if (problem !== undefined) return { problem };
  const [allocated, total] = t.ratio('allocated/total sectors');
  const metadata = t.sectors('metadata sectors');
  return { allocated: allocated as Sectors, total: total as Sectors, metadata };
}

export type SnapshotCodec = TargetCodec<SnapshotParams, SnapshotStatus, SnapshotInput>;

/** snapshot and snapshot-merge share tables and statuses; merge needs a persistent store. */
export function snapshotCodec(type: string, names: readonly string[], persistentOnly: boolean): SnapshotCodec {
  return defineCodec({ type, names, normalize: normalizer(type, persistentOnly), emit, read, readStatus });
}

export const snapshot = snapshotCodec('snapshot', ['snapshot', 'dmkit-snapshot'], false);

/** A merge has finished once every allocated sector is metadata. */
export function snapshotMergeDone(status: SnapshotStatus): boolean {
  checkObject('snapshot-merge', 'status', status);
  return 'allocated' in status && status.allocated === status.metadata;
}
