/**
 * clone (and dmkit-clone): `<metadata dev> <destination dev> <source dev> <region size>
 * [<#features> [no_hydration] [no_discard_passdown] [<#core args> [hydration_threshold <n>]
 * [hydration_batch_size <n>]]]`. The kernel echoes everything after the devices verbatim.
 */
import type { Sectors, TargetBlocks } from '../units';
import {
  checkBlocks,
  checkBool,
  checkDevice,
  checkPowerOfTwo,
  defineCodec,
  readFailOrError,
  readMetadataUsage,
  U32_MAX,
  type ErrorStatus,
  type FailStatus,
  type MetadataUsage,
} from './codec';
import type { Tokens } from './tokens';

const TYPE = 'clone';
const FEATURES = ['no_hydration', 'no_discard_passdown'] as const;
const CORE_KEYS = ['hydration_threshold', 'hydration_batch_size'] as const;

export type CloneFeature = (typeof FEATURES)[number];

export interface CloneParams {
  readonly metadataDevice: string;
  readonly destinationDevice: string;
  readonly sourceDevice: string;
  /** A power of 2 in [8, 2097152] sectors (4 KiB .. 1 GiB). */
  readonly regionSize: Sectors;
  readonly noHydration: boolean;
  readonly noDiscardPassdown: boolean;
  /** Regions hydrating at once in the background; null leaves the kernel default (1). */
  readonly hydrationThreshold: TargetBlocks | null;
  /** Contiguous regions batched into one copy; null leaves the kernel default (1). */
  readonly hydrationBatchSize: TargetBlocks | null;
}

type Defaulted = 'noHydration' | 'noDiscardPassdown' | 'hydrationThreshold' | 'hydrationBatchSize';
export type CloneInput = Omit<CloneParams, Defaulted> & Partial<Pick<CloneParams, Defaulted>>;

export interface CloneCoreArgs {
  readonly hydrationThreshold: TargetBlocks;
  readonly hydrationBatchSize: TargetBlocks;
}

export interface CloneInfo extends MetadataUsage {
  readonly regionSize: Sectors;
  readonly hydrated: TargetBlocks;
  readonly totalRegions: TargetBlocks;
  /** Regions being hydrated right now. */
  readonly hydrating: TargetBlocks;
  readonly features: readonly CloneFeature[];
  readonly coreArgs: CloneCoreArgs;
  readonly mode: 'rw' | 'ro';
}

export type CloneStatus = CloneInfo | FailStatus | ErrorStatus;

const optionalRegions = (field: string, v: TargetBlocks | null | undefined): TargetBlocks | null =>
  v === undefined || v === null ? null : checkBlocks(TYPE, field, v, U32_MAX);

function normalize(p: CloneInput): CloneParams {
  return {
    metadataDevice: checkDevice(TYPE, 'metadataDevice', p.metadataDevice),
    destinationDevice: checkDevice(TYPE, 'destinationDevice', p.destinationDevice),
    sourceDevice: checkDevice(TYPE, 'sourceDevice', p.sourceDevice),
    regionSize: checkPowerOfTwo(TYPE, 'regionSize', p.regionSize, 8n, 2097152n),
    noHydration: checkBool(TYPE, 'noHydration', p.noHydration),
    noDiscardPassdown: checkBool(TYPE, 'noDiscardPassdown', p.noDiscardPassdown),
    hydrationThreshold: optionalRegions('hydrationThreshold', p.hydrationThreshold),
    hydrationBatchSize: optionalRegions('hydrationBatchSize', p.hydrationBatchSize),
  };
}

function emit(p: CloneParams): string {
  const words = [p.metadataDevice, p.destinationDevice, p.sourceDevice, `${p.regionSize}`];
  const features = [...(p.noHydration ? ['no_hydration'] : []), ...(p.noDiscardPassdown ? ['no_discard_passdown'] : [])];
  const core: string[] = [];
  if (p.hydrationThreshold !== null) core.push('hydration_threshold', `${p.hydrationThreshold}`);
  if (p.hydrationBatchSize !== null) core.push('hydration_batch_size', `${p.hydrationBatchSize}`);
  if (features.length > 0 || core.length > 0) words.push(`${features.length}`, ...features);
  if (core.length > 0) words.push(`${core.length}`, ...core);
  return words.join(' ');
}

function readFeatureList(t: Tokens): CloneFeature[] {
  const n = t.group('features', FEATURES.length);
  return Array.from({ length: n }, () => t.keyword('feature', FEATURES));
}

/** `<#args> (key value)*` with the two hydration keys; a repeated key takes the last value, as the kernel does. */
function readCoreArgs(t: Tokens): Map<(typeof CORE_KEYS)[number], TargetBlocks> {
  const before = t.peek() ?? '';
  const n = t.group('core args', 4);
  if (n % 2 !== 0) throw t.error('core args must be key/value pairs', before);
  const args = new Map<(typeof CORE_KEYS)[number], TargetBlocks>();
  for (let i = 0; i < n; i += 2) args.set(t.keyword('core arg', CORE_KEYS), t.uint('core arg value', U32_MAX) as TargetBlocks);
  return args;
}

function read(t: Tokens): CloneInput {
  const metadataDevice = t.device('metadata device');
  const destinationDevice = t.device('destination device');
  const sourceDevice = t.device('source device');
  const regionSize = t.sectors('region size');
  const features = t.remaining > 0 ? readFeatureList(t) : [];
  const core = t.remaining > 0 ? readCoreArgs(t) : new Map();
  return {
    metadataDevice,
    destinationDevice,
    sourceDevice,
    regionSize,
    noHydration: features.includes('no_hydration'),
    noDiscardPassdown: features.includes('no_discard_passdown'),
    hydrationThreshold: core.get('hydration_threshold') ?? null,
    hydrationBatchSize: core.get('hydration_batch_size') ?? null,
  };
}

function readStatusCore(t: Tokens): CloneCoreArgs {
  const core = readCoreArgs(t);
  const hydrationThreshold = core.get('hydration_threshold');
  const hydrationBatchSize = core.get('hydration_batch_size');
  if (hydrationThreshold === undefined || hydrationBatchSize === undefined) {
    throw t.error('status must report hydration_threshold and hydration_batch_size', '');
  }
  return { hydrationThreshold, hydrationBatchSize };
}

function readStatus(t: Tokens): CloneStatus {
  const failed = readFailOrError(t);
  if (failed) return failed;
  const usage = readMetadataUsage(t);
  const regionSize = t.sectors('region size');
  const [hydrated, totalRegions] = t.ratio('hydrated regions');
  const hydrating = t.blocks('hydrating regions');
  const features = readFeatureList(t);
  const coreArgs = readStatusCore(t);
  const mode = t.keyword('metadata mode', ['rw', 'ro'] as const);
  return {
    ...usage,
    regionSize,
    hydrated: hydrated as TargetBlocks,
    totalRegions: totalRegions as TargetBlocks,
    hydrating,
    features,
    coreArgs,
    mode,
  };
}

export const clone = defineCodec<CloneParams, CloneStatus, CloneInput>({
  type: TYPE,
  names: [TYPE, 'dmkit-clone'],
  normalize,
  emit,
  read,
  readStatus,
});

const regionCount = (field: string, n: TargetBlocks): TargetBlocks => checkBlocks(TYPE, field, n, U32_MAX);

export const cloneMessages = {
  enableHydration: (): string => 'enable_hydration',
  disableHydration: (): string => 'disable_hydration',
  /** 0 stops background hydration; raising it wakes the worker. */
  hydrationThreshold: (regions: TargetBlocks): string => `hydration_threshold ${regionCount('hydrationThreshold', regions)}`,
  hydrationBatchSize: (regions: TargetBlocks): string => `hydration_batch_size ${regionCount('hydrationBatchSize', regions)}`,
} as const;
