/**
 * era (and dmkit-era): `<metadata dev> <origin dev> <block size>`.
 * INFO: `<metadata block size> <used>/<total> <current era> <held root|->`, or `Error`.
 */
import type { Sectors } from '../units';
import {
  checkBlockSize,
  checkDevice,
  defineCodec,
  ERROR,
  readMetadataUsage,
  type ErrorStatus,
  type MetadataUsage,
  U32_MAX,
} from './codec';
import type { Tokens } from './tokens';

const TYPE = 'era';

export interface EraParams {
  readonly metadataDevice: string;
  readonly originDevice: string;
  /** Tracking granularity: > 0 and a multiple of 8 sectors; need not be a power of 2. */
  readonly blockSize: Sectors;
}

export interface EraInfo extends MetadataUsage {
  readonly currentEra: bigint;
  /** Metadata block of the held metadata snapshot, or null when none is held. */
  readonly heldRoot: bigint | null;
}

export type EraStatus = EraInfo | ErrorStatus;

function normalize(p: EraParams): EraParams {
  return {
    metadataDevice: checkDevice(TYPE, 'metadataDevice', p.metadataDevice),
    originDevice: checkDevice(TYPE, 'originDevice', p.originDevice),
    blockSize: checkBlockSize(TYPE, 'blockSize', p.blockSize, 8n, U32_MAX, 8n),
  };
}

function read(t: Tokens): EraParams {
  return {
    metadataDevice: t.device('metadata device'),
    originDevice: t.device('origin device'),
    blockSize: t.sectors('block size'),
  };
}

function readStatus(t: Tokens): EraStatus {
  if (t.takeExactly('Error')) return ERROR;
  const usage = readMetadataUsage(t);
  const currentEra = t.uint('current era');
  const heldRoot = t.optionalUint('held metadata root');
  return { ...usage, currentEra, heldRoot };
}

export const era = defineCodec<EraParams, EraStatus, EraParams>({
  type: TYPE,
  names: [TYPE, 'dmkit-era'],
  normalize,
  emit: (p) => `${p.metadataDevice} ${p.originDevice} ${p.blockSize}`,
  read,
  readStatus,
});

/** era messages take no arguments. */
export const eraMessages = {
  /** Starts a new era. */
  checkpoint: (): string => 'checkpoint',
  /** Holds a metadata snapshot for userspace tools (era_invalidate --metadata-snapshot). */
  takeMetadataSnap: (): string => 'take_metadata_snap',
  dropMetadataSnap: (): string => 'drop_metadata_snap',
} as const;
