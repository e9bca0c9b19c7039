/**
 * The device-mapper ioctl ABI (interface major 4): constants, the 312-byte `struct dm_ioctl` header,
 * dev_t encoding and a bounds-checked reader for kernel replies. Payload structures are in payload.ts.
 * Integers are in host byte order, as the kernel reads them.
 */
import { endianness } from 'node:os';
import { DmArgumentError, DmMalformedReplyError } from './errors';

export const DM_IOCTL_SIZE = 312;
/** offsetof(struct dm_ioctl, data): header-only replies may report this as data_size. */
export const DM_IOCTL_DATA_OFFSET = 305;
export const DM_NAME_LEN = 128;
export const DM_UUID_LEN = 129;
export const DM_MAX_TYPE_NAME = 16;
export const DM_VERSION_MAJOR = 4;

export const HeaderOffset = {
  version: 0,
  dataSize: 12,
  dataStart: 16,
  targetCount: 20,
  openCount: 24,
  flags: 28,
  eventNr: 32,
  padding: 36,
  dev: 40,
  name: 48,
  uuid: 176,
  data: 305,
} as const;

export const DmCommand = {
  VERSION: 0,
  REMOVE_ALL: 1,
  LIST_DEVICES: 2,
  DEV_CREATE: 3,
  DEV_REMOVE: 4,
  DEV_RENAME: 5,
  DEV_SUSPEND: 6,
  DEV_STATUS: 7,
  DEV_WAIT: 8,
  TABLE_LOAD: 9,
  TABLE_CLEAR: 10,
  TABLE_DEPS: 11,
  TABLE_STATUS: 12,
  LIST_VERSIONS: 13,
  TARGET_MSG: 14,
  DEV_SET_GEOMETRY: 15,
  DEV_ARM_POLL: 16,
  GET_TARGET_VERSION: 17,
} as const;
export type DmCommand = (typeof DmCommand)[keyof typeof DmCommand];

const commandNames = new Map<number, string>(Object.entries(DmCommand).map(([k, v]) => [v, `DM_${k}`]));

/** 'DM_DEV_REMOVE' for DmCommand.DEV_REMOVE. */
export function commandName(command: DmCommand): string {
  return commandNames.get(command) ?? `DM_CMD_${command}`;
}

export const DmFlag = {
  READONLY: 1 << 0,
  SUSPEND: 1 << 1,
  PERSISTENT_DEV: 1 << 3,
  STATUS_TABLE: 1 << 4,
  ACTIVE_PRESENT: 1 << 5,
  INACTIVE_PRESENT: 1 << 6,
  BUFFER_FULL: 1 << 8,
  SKIP_BDGET: 1 << 9,
  SKIP_LOCKFS: 1 << 10,
  NOFLUSH: 1 << 11,
  QUERY_INACTIVE_TABLE: 1 << 12,
  UEVENT_GENERATED: 1 << 13,
  UUID: 1 << 14,
  SECURE_DATA: 1 << 15,
  DATA_OUT: 1 << 16,
  DEFERRED_REMOVE: 1 << 17,
  INTERNAL_SUSPEND: 1 << 18,
  IMA_MEASUREMENT: 1 << 19,
} as const;

export const DM_NAME_LIST_FLAG_HAS_UUID = 1;
export const DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID = 2;

export interface DmVersion {
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
}

const v = (major: number, minor: number, patch = 0): DmVersion => ({ major, minor, patch });

/** The oldest interface each command exists in (libdm's table); sent so older kernels accept it. */
export const MIN_INTERFACE_VERSION: Readonly<Record<DmCommand, DmVersion>> = {
  [DmCommand.VERSION]: v(4, 0),
  [DmCommand.REMOVE_ALL]: v(4, 0),
  [DmCommand.LIST_DEVICES]: v(4, 0),
  [DmCommand.DEV_CREATE]: v(4, 0),
  [DmCommand.DEV_REMOVE]: v(4, 0),
  [DmCommand.DEV_RENAME]: v(4, 0),
  [DmCommand.DEV_SUSPEND]: v(4, 0),
  [DmCommand.DEV_STATUS]: v(4, 0),
  [DmCommand.DEV_WAIT]: v(4, 0),
  [DmCommand.TABLE_LOAD]: v(4, 0),
  [DmCommand.TABLE_CLEAR]: v(4, 0),
  [DmCommand.TABLE_DEPS]: v(4, 0),
  [DmCommand.TABLE_STATUS]: v(4, 0),
  [DmCommand.LIST_VERSIONS]: v(4, 1),
  [DmCommand.TARGET_MSG]: v(4, 2),
  [DmCommand.DEV_SET_GEOMETRY]: v(4, 6),
  [DmCommand.DEV_ARM_POLL]: v(4, 36),
  [DmCommand.GET_TARGET_VERSION]: v(4, 41),
};

export function versionAtLeast(have: DmVersion, want: DmVersion): boolean {
  if (have.major !== want.major) return have.major > want.major;
  if (have.minor !== want.minor) return have.minor > want.minor;
  return have.patch >= want.patch;
}

export const formatVersion = (ver: DmVersion): string => `${ver.major}.${ver.minor}.${ver.patch}`;

// ---- integers in host byte order ----

const LITTLE = endianness() === 'LE';
const U64_MAX = (1n << 64n) - 1n;

export const readU32 = (b: Buffer, off: number): number => (LITTLE ? b.readUInt32LE(off) : b.readUInt32BE(off));
export const readI32 = (b: Buffer, off: number): number => (LITTLE ? b.readInt32LE(off) : b.readInt32BE(off));
export const readU64 = (b: Buffer, off: number): bigint =>
  LITTLE ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off);

export function writeU32(b: Buffer, off: number, value: number): void {
  if (LITTLE) b.writeUInt32LE(value, off);
  else b.writeUInt32BE(value, off);
}

export function writeU64(b: Buffer, off: number, value: bigint): void {
  if (value < 0n || value > U64_MAX) throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `${value} is not a u64`);
  if (LITTLE) b.writeBigUInt64LE(value, off);
  else b.writeBigUInt64BE(value, off);
}

export const align8 = (n: number): number => (n + 7) & ~7;

// ---- dev_t ----

export interface DevNum {
  readonly major: number;
  readonly minor: number;
}

const U32_LIMIT = 2 ** 32;

/**
 * Encodes like the kernel's huge_encode_dev (and glibc's 64-bit makedev above it):
 * minor bits 0-7, major bits 8-19, minor bits 8-19 at 20-31; wider majors/minors spill into bits 32+.
 */
export function encodeDev(dev: DevNum): bigint {
  for (const [what, n] of [['major', dev.major], ['minor', dev.minor]] as const) {
    if (!Number.isInteger(n) || n < 0 || n >= U32_LIMIT) {
      throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `device ${what} ${n} is not a u32`);
    }
  }
  const major = BigInt(dev.major);
  const minor = BigInt(dev.minor);
  return (minor & 0xffn) | ((major & 0xfffn) << 8n) | ((minor & ~0xffn) << 12n) | ((major & ~0xfffn) << 32n);
}

export function decodeDev(dev: bigint): DevNum {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xffffff00n);
  return { major: Number(major & 0xffffffffn), minor: Number(minor) };
}

// ---- bounded reader for replies ----

/** Reads a reply strictly inside [0, end): end is the reply's data_size, never the buffer length. */
export class ReplyReader {
  constructor(
    readonly buf: Buffer,
    readonly end: number,
    private readonly what: string,
  ) {}

  need(off: number, len: number, field: string): void {
    if (!Number.isSafeInteger(off) || off < 0 || off + len > this.end) {
      throw new DmMalformedReplyError(
        `${this.what}: ${field} at offset ${off} (+${len}) lies outside the ${this.end}-byte reply`,
      );
    }
  }

  u32(off: number, field: string): number {
    this.need(off, 4, field);
    return readU32(this.buf, off);
  }

  i32(off: number, field: string): number {
    this.need(off, 4, field);
    return readI32(this.buf, off);
  }

  u64(off: number, field: string): bigint {
    this.need(off, 8, field);
    return readU64(this.buf, off);
  }

  /** A NUL-terminated string starting at off, which must end before `limit` (default: the reply end). */
  cstring(off: number, field: string, limit = this.end): { value: string; next: number } {
    this.need(off, 1, field);
    const stop = Math.min(limit, this.end);
    const nul = this.buf.indexOf(0, off);
    if (nul < 0 || nul >= stop) {
      throw new DmMalformedReplyError(`${this.what}: ${field} at offset ${off} is not NUL-terminated`);
    }
    return { value: this.buf.toString('utf8', off, nul), next: nul + 1 };
  }
}

// ---- header ----

export interface DmHeader {
  readonly version: DmVersion;
  readonly dataSize: number;
  readonly dataStart: number;
  readonly targetCount: number;
  readonly openCount: number;
  readonly flags: number;
  readonly eventNr: number;
  readonly dev: bigint;
  readonly name: string;
  readonly uuid: string;
}

export interface HeaderFields {
  readonly version: DmVersion;
  readonly dataSize: number;
  readonly dataStart?: number;
  readonly targetCount?: number;
  readonly flags?: number;
  readonly eventNr?: number;
  readonly dev?: bigint;
  readonly name?: string;
  readonly uuid?: string;
}

function writeFixedString(b: Buffer, off: number, size: number, value: string, field: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length >= size || bytes.includes(0)) {
    const code = field === 'uuid' ? 'ERR_DM_INVALID_UUID' : 'ERR_DM_INVALID_NAME';
    throw new DmArgumentError(code, `${field} must be under ${size} bytes without NUL, got ${bytes.length} bytes`);
  }
  b.fill(0, off, off + size);
  bytes.copy(b, off);
}

/** Writes the header into the first 312 bytes of b (padding and data[7] are zeroed). */
export function encodeHeader(b: Buffer, h: HeaderFields): void {
  if (b.length < DM_IOCTL_SIZE) throw new RangeError(`buffer of ${b.length} bytes cannot hold struct dm_ioctl`);
  b.fill(0, 0, DM_IOCTL_SIZE);
  writeU32(b, HeaderOffset.version, h.version.major);
  writeU32(b, HeaderOffset.version + 4, h.version.minor);
  writeU32(b, HeaderOffset.version + 8, h.version.patch);
  writeU32(b, HeaderOffset.dataSize, h.dataSize);
  writeU32(b, HeaderOffset.dataStart, h.dataStart ?? DM_IOCTL_SIZE);
  writeU32(b, HeaderOffset.targetCount, h.targetCount ?? 0);
  writeU32(b, HeaderOffset.flags, h.flags ?? 0);
  writeU32(b, HeaderOffset.eventNr, h.eventNr ?? 0);
  writeU64(b, HeaderOffset.dev, h.dev ?? 0n);
  writeFixedString(b, HeaderOffset.name, DM_NAME_LEN, h.name ?? '', 'name');
  writeFixedString(b, HeaderOffset.uuid, DM_UUID_LEN, h.uuid ?? '', 'uuid');
}

/** A request buffer of `size` bytes (at least header + payload): header, then payload at offset 312. */
export type RequestFields = Omit<HeaderFields, 'dataSize' | 'dataStart'>;

export function buildRequest(fields: RequestFields, payload: Buffer, size: number): Buffer {
  const total = Math.max(size, DM_IOCTL_SIZE + align8(payload.length));
  const b = Buffer.alloc(total);
  encodeHeader(b, { ...fields, dataSize: total, dataStart: DM_IOCTL_SIZE });
  payload.copy(b, DM_IOCTL_SIZE);
  return b;
}

export function decodeHeader(b: Buffer): DmHeader {
  if (b.length < DM_IOCTL_SIZE) {
    throw new DmMalformedReplyError(`reply of ${b.length} bytes is shorter than struct dm_ioctl (${DM_IOCTL_SIZE})`);
  }
  const r = new ReplyReader(b, DM_IOCTL_SIZE, 'dm_ioctl header');
  const dataSize = r.u32(HeaderOffset.dataSize, 'data_size');
  if (dataSize < DM_IOCTL_DATA_OFFSET || dataSize > b.length) {
    throw new DmMalformedReplyError(`reply data_size ${dataSize} is outside ${DM_IOCTL_DATA_OFFSET}..${b.length}`);
  }
  return {
    version: v(r.u32(0, 'version[0]'), r.u32(4, 'version[1]'), r.u32(8, 'version[2]')),
    dataSize,
    dataStart: r.u32(HeaderOffset.dataStart, 'data_start'),
    targetCount: r.u32(HeaderOffset.targetCount, 'target_count'),
    openCount: r.i32(HeaderOffset.openCount, 'open_count'),
    flags: r.u32(HeaderOffset.flags, 'flags'),
    eventNr: r.u32(HeaderOffset.eventNr, 'event_nr'),
    dev: r.u64(HeaderOffset.dev, 'dev'),
    name: r.cstring(HeaderOffset.name, 'name', HeaderOffset.name + DM_NAME_LEN).value,
    uuid: r.cstring(HeaderOffset.uuid, 'uuid', HeaderOffset.uuid + DM_UUID_LEN).value,
  };
}

/** A reader over the reply payload: from data_start up to data_size. */
export function payloadReader(b: Buffer, h: DmHeader, what: string): ReplyReader {
  if (h.dataStart < DM_IOCTL_SIZE || h.dataStart > h.dataSize || h.dataSize > b.length) {
    throw new DmMalformedReplyError(
      `${what}: data_start ${h.dataStart} / data_size ${h.dataSize} do not fit a ${b.length}-byte reply`,
    );
  }
  return new ReplyReader(b, h.dataSize, what);
}
