/** log-writes: `<device> <log device>`; INFO `<#logged entries> <highest sector>[ logging_disabled]`. */
import type { Sectors } from '../units';
import { checkDevice, checkWord, defineCodec } from './codec';
import type { Tokens } from './tokens';

const TYPE = 'log-writes';

export interface LogWritesParams {
  readonly device: string;
  readonly logDevice: string;
}

export interface LogWritesStatus {
  readonly entries: bigint;
  /** The last sector written on the log device. */
  readonly highestSector: Sectors;
  /** Logging stopped (log device full or an I/O error on it). */
  readonly loggingDisabled: boolean;
}

function normalize(p: LogWritesParams): LogWritesParams {
  return { device: checkDevice(TYPE, 'device', p.device), logDevice: checkDevice(TYPE, 'logDevice', p.logDevice) };
}

function read(t: Tokens): LogWritesParams {
  return { device: t.device('device'), logDevice: t.device('log device') };
}

function readStatus(t: Tokens): LogWritesStatus {
  const entries = t.uint('logged entries');
  const highestSector = t.sectors('highest sector');
  const loggingDisabled = t.peek() !== undefined && t.keyword('flag', ['logging_disabled']) === 'logging_disabled';
  return { entries, highestSector, loggingDisabled };
}

export const logWrites = defineCodec<LogWritesParams, LogWritesStatus, LogWritesParams>({
  type: TYPE,
  names: [TYPE],
  normalize,
  emit: (p) => `${p.device} ${p.logDevice}`,
  read,
  readStatus,
});

export const logWritesMessages = {
  /** `mark <description>`: a named mark in the log, used by replay-log to find a point. */
  mark: (description: string): string => `mark ${checkWord(TYPE, 'description', description)}`,
} as const;
