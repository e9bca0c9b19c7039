/**
 * flakey: `<device> <offset> <up secs> <down secs> <#features> [drop_writes|error_writes]
 * [corrupt_bio_byte <Nth byte> <r|w> <value> <flags>]`. Linux 6.1 has only these three features
 * (error_reads and random_{read,write}_corrupt came later). INFO status is empty.
 */
import type { Sectors } from '../units';
import {
  checkDevice,
  checkInt,
  checkOneOf,
  checkSectors,
  conflict,
  defineCodec,
  readEmptyStatus,
  type EmptyStatus,
} from './codec';
import type { Tokens } from './tokens';

const TYPE = 'flakey';
const U32 = 0xffff_ffff;

/** What happens to writes while the device is down. */
export type FlakeyWriteMode = 'drop_writes' | 'error_writes';
export type FlakeyDirection = 'r' | 'w';

export interface FlakeyCorruption {
  /** 1-based index of the byte to overwrite in each matching bio. */
  readonly byte: number;
  readonly direction: FlakeyDirection;
  /** Replacement byte value 0..255. */
  readonly value: number;
  /** Only bios whose bi_opf contains all these flags are corrupted (0 = all). */
  readonly flags: number;
}

export interface FlakeyParams {
  readonly device: string;
  readonly offset: Sectors;
  /** Seconds the device behaves, then seconds it misbehaves, repeating. */
  readonly upInterval: number;
  readonly downInterval: number;
  /** null: writes fail with EIO while down, like reads (the default). */
  readonly writes: FlakeyWriteMode | null;
  readonly corrupt: FlakeyCorruption | null;
}

export type FlakeyInput = Omit<FlakeyParams, 'writes' | 'corrupt'> & {
  readonly writes?: FlakeyWriteMode | null;
  readonly corrupt?: FlakeyCorruption | null;
};

function normalizeCorrupt(c: FlakeyCorruption): FlakeyCorruption {
  return {
    byte: checkInt(TYPE, 'corrupt.byte', c.byte, U32, 1),
    direction: checkOneOf(TYPE, 'corrupt.direction', c.direction, ['r', 'w'] as const),
    value: checkInt(TYPE, 'corrupt.value', c.value, 255),
    flags: checkInt(TYPE, 'corrupt.flags', c.flags, U32),
  };
}

function normalize(p: FlakeyInput): FlakeyParams {
  const upInterval = checkInt(TYPE, 'upInterval', p.upInterval, U32);
  const downInterval = checkInt(TYPE, 'downInterval', p.downInterval, U32);
  if (upInterval + downInterval === 0) throw conflict(TYPE, 'downInterval', 'up + down interval is zero');
  if (upInterval + downInterval > U32) throw conflict(TYPE, 'downInterval', 'up + down interval overflows 32 bits');
  const writes = p.writes == null ? null : checkOneOf(TYPE, 'writes', p.writes, ['drop_writes', 'error_writes'] as const);
  const corrupt = p.corrupt == null ? null : normalizeCorrupt(p.corrupt);
  if (writes !== null && corrupt?.direction === 'w') {
    throw conflict(TYPE, 'corrupt.direction', `${writes} is incompatible with corrupting writes`);
  }
  const device = checkDevice(TYPE, 'device', p.device);
  return { device, offset: checkSectors(TYPE, 'offset', p.offset), upInterval, downInterval, writes, corrupt };
}

/** Exactly flakey_status(): the feature count is always printed and every word ends with a space. */
function emit(p: FlakeyParams): string {
  const features: string[] = [];
  if (p.writes !== null) features.push(p.writes);
  const c = p.corrupt;
  if (c !== null) features.push('corrupt_bio_byte', `${c.byte}`, c.direction, `${c.value}`, `${c.flags}`);
  return [p.device, `${p.offset}`, `${p.upInterval}`, `${p.downInterval}`, `${features.length}`, ...features].map((w) => `${w} `).join('');
}

interface Features {
  writes: FlakeyWriteMode | null;
  corrupt: FlakeyCorruption | null;
}

function readCorrupt(t: Tokens): FlakeyCorruption {
  return {
    byte: t.small('corrupt byte'),
    direction: t.keyword('corrupt direction', ['r', 'w'] as const),
    value: t.small('corrupt value'),
    flags: t.small('corrupt flags'),
  };
}

function readFeatures(t: Tokens): Features {
  const f: Features = { writes: null, corrupt: null };
  if (t.remaining === 0) return f;
  const count = t.group('features', 6);
  const end = t.remaining - count;
  while (t.remaining > end) {
    const word = t.keyword('feature', ['drop_writes', 'error_writes', 'corrupt_bio_byte'] as const);
    if (word === 'corrupt_bio_byte') {
      if (t.remaining - 4 < end) throw t.error('corrupt_bio_byte needs 4 arguments within the feature count', word);
      f.corrupt = readCorrupt(t);
    } else {
      if (f.writes !== null) throw t.error('drop_writes/error_writes given twice', word);
      f.writes = word;
    }
  }
  return f;
}

function read(t: Tokens): FlakeyInput {
  const device = t.device('device');
  const offset = t.sectors('offset');
  const upInterval = t.small('up interval');
  const downInterval = t.small('down interval');
  return { device, offset, upInterval, downInterval, ...readFeatures(t) };
}

export const flakey = defineCodec<FlakeyParams, EmptyStatus, FlakeyInput>({
  type: TYPE,
  names: [TYPE],
  normalize,
  emit,
  read,
  readStatus: readEmptyStatus,
});
