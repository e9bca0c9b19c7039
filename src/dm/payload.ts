/**
 * Payload structures that follow the header at data_start: target specs, name lists, target
 * versions, deps and target messages. Decoders never read past the reply's data_size.
 */
import { sectors, type Sectors } from '../units';
import {
  align8,
  DM_MAX_TYPE_NAME,
  DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID,
  DM_NAME_LIST_FLAG_HAS_UUID,
  decodeDev,
  type DevNum,
  type DmHeader,
  type DmVersion,
  payloadReader,
  type ReplyReader,
  writeU32,
  writeU64,
} from './abi';
import { describeValue } from './check';
import { DmArgumentError, DmMalformedReplyError } from './errors';

const U64_MAX = 0xffff_ffff_ffff_ffffn;

export const DM_TARGET_SPEC_SIZE = 40;
const SPEC_TYPE_OFFSET = 24;
const NAME_LIST_NAME_OFFSET = 12;
const VERSIONS_NAME_OFFSET = 16;
const DEPS_HEADER_SIZE = 8;
const TARGET_MSG_HEADER_SIZE = 8;

/** One line of a table: `start length type params`. */
export interface TargetLine {
  readonly start: Sectors;
  readonly length: Sectors;
  readonly type: string;
  readonly params: string;
}

function invalidTarget(index: number, why: string): DmArgumentError {
  return new DmArgumentError('ERR_DM_INVALID_TARGET', `target ${index}: ${why}`);
}

/** A NUL-free string as bytes plus its terminating NUL. */
export function encodeCString(text: string, what: string): Buffer {
  if (typeof text !== 'string') throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `${what} must be a string, got ${describeValue(text)}`);
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.includes(0)) throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `${what} contains a NUL byte`);
  return Buffer.concat([bytes, Buffer.alloc(1)]);
}

/** Checks a target type name: 1..15 bytes, so it fits dm_target_spec.target_type with its NUL. */
export function checkTargetType(type: string, what: string): Buffer {
  // Type and length before Buffer.from: it would take {length: 2 ** 32} as an array-like and allocate.
  if (typeof type !== 'string' || type.length >= DM_MAX_TYPE_NAME) {
    throw new DmArgumentError('ERR_DM_INVALID_TARGET', `${what}: type ${describeValue(type)} must be 1..15 bytes of text`);
  }
  const bytes = Buffer.from(type, 'utf8');
  if (bytes.length === 0 || bytes.length >= DM_MAX_TYPE_NAME || bytes.includes(0) || /\s/.test(type)) {
    throw new DmArgumentError('ERR_DM_INVALID_TARGET', `${what}: type ${JSON.stringify(type)} must be 1..15 bytes`);
  }
  return bytes;
}

function encodeTarget(t: TargetLine, index: number): Buffer {
  if (typeof t !== 'object' || t === null) throw invalidTarget(index, `must be a target line object, got ${describeValue(t)}`);
  if (typeof t.start !== 'bigint' || typeof t.length !== 'bigint') {
    throw invalidTarget(index, 'start/length must be Sectors');
  }
  if (t.length <= 0n) throw invalidTarget(index, 'length must be positive');
  if (t.start < 0n || t.start > U64_MAX || t.length > U64_MAX) throw invalidTarget(index, 'start/length must fit a u64');
  if (typeof t.params !== 'string') throw invalidTarget(index, 'params must be a string');
  const type = checkTargetType(t.type, `target ${index}`);
  const params = Buffer.from(t.params, 'utf8');
  if (params.includes(0)) throw invalidTarget(index, 'params contain a NUL byte');
  const size = align8(DM_TARGET_SPEC_SIZE + params.length + 1);
  const b = Buffer.alloc(size);
  writeU64(b, 0, t.start);
  writeU64(b, 8, t.length);
  // On LOAD, next is relative to this spec: the kernel walks spec -> spec + next.
  writeU32(b, 20, size);
  type.copy(b, SPEC_TYPE_OFFSET);
  params.copy(b, DM_TARGET_SPEC_SIZE);
  return b;
}

/** The TABLE_LOAD payload: one 40-byte spec per target, each followed by its params padded to 8. */
export function encodeTargets(targets: readonly TargetLine[]): Buffer {
  if (!Array.isArray(targets) || targets.length === 0) {
    throw new DmArgumentError('ERR_DM_INVALID_TARGET', 'a table needs at least one target');
  }
  return Buffer.concat(targets.map(encodeTarget));
}

/** TABLE_STATUS / DEV_WAIT reply: target_count specs; `next` counts from the first spec. */
export function decodeTargets(b: Buffer, h: DmHeader): TargetLine[] {
  const r = payloadReader(b, h, 'target specs');
  const out: TargetLine[] = [];
  let off = h.dataStart;
  for (let i = 0; i < h.targetCount; i++) {
    const field = `spec ${i}`;
    r.need(off, DM_TARGET_SPEC_SIZE, field);
    const type = r.cstring(off + SPEC_TYPE_OFFSET, `${field} target_type`, off + DM_TARGET_SPEC_SIZE);
    const params = r.cstring(off + DM_TARGET_SPEC_SIZE, `${field} params`);
    out.push({
      start: sectors(r.u64(off, `${field} sector_start`)),
      length: sectors(r.u64(off + 8, `${field} length`)),
      type: type.value,
      params: params.value,
    });
    const next = h.dataStart + r.u32(off + 20, `${field} next`);
    if (i + 1 < h.targetCount && next < params.next) {
      throw new DmMalformedReplyError(`target specs: spec ${i} next offset ${next} overlaps its own params`);
    }
    off = next;
  }
  return out;
}

export interface NameListEntry {
  readonly name: string;
  readonly dev: DevNum;
  /** Absent when the kernel is older than interface 4.37. */
  readonly eventNr?: number;
  /** '' for a device without uuid; absent when the kernel does not say (before 4.46). */
  readonly uuid?: string;
}

type NameTail = Pick<NameListEntry, 'eventNr' | 'uuid'>;

function decodeNameTail(r: ReplyReader, at: number, field: string): NameTail {
  const eventNr = r.u32(at, `${field} event_nr`);
  const flags = r.u32(at + 4, `${field} flags`);
  if (flags & DM_NAME_LIST_FLAG_HAS_UUID) return { eventNr, uuid: r.cstring(at + 8, `${field} uuid`).value };
  if (flags & DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID) return { eventNr, uuid: '' };
  return { eventNr };
}

/** LIST_DEVICES reply. `withEventNr`: the kernel speaks interface >= 4.37 and appends event_nr/flags/uuid. */
export function decodeNameList(b: Buffer, h: DmHeader, withEventNr: boolean): NameListEntry[] {
  const r = payloadReader(b, h, 'name list');
  const out: NameListEntry[] = [];
  let off = h.dataStart;
  // An empty list is either no payload at all or a first record with dev 0.
  if (off === r.end || r.u64(off, 'record 0 dev') === 0n) return out;
  for (let i = 0; ; i++) {
    const field = `record ${i}`;
    const dev = decodeDev(r.u64(off, `${field} dev`));
    const next = r.u32(off + 8, `${field} next`);
    const name = r.cstring(off + NAME_LIST_NAME_OFFSET, `${field} name`);
    const tail = withEventNr ? decodeNameTail(r, align8(name.next), field) : {};
    out.push({ name: name.value, dev, ...tail });
    if (next === 0) return out;
    if (next <= NAME_LIST_NAME_OFFSET) {
      throw new DmMalformedReplyError(`name list: ${field} next ${next} is too small`);
    }
    off += next;
  }
}

export interface TargetVersion {
  readonly name: string;
  readonly version: DmVersion;
}

/** LIST_VERSIONS / GET_TARGET_VERSION reply: records linked by `next` relative to each record. */
export function decodeVersions(b: Buffer, h: DmHeader): TargetVersion[] {
  const r = payloadReader(b, h, 'target versions');
  const out: TargetVersion[] = [];
  let off = h.dataStart;
  if (off === r.end) return out;
  for (let i = 0; ; i++) {
    const field = `record ${i}`;
    const next = r.u32(off, `${field} next`);
    const version = {
      major: r.u32(off + 4, `${field} version[0]`),
      minor: r.u32(off + 8, `${field} version[1]`),
      patch: r.u32(off + 12, `${field} version[2]`),
    };
    out.push({ name: r.cstring(off + VERSIONS_NAME_OFFSET, `${field} name`).value, version });
    if (next === 0) return out;
    if (next <= VERSIONS_NAME_OFFSET) {
      throw new DmMalformedReplyError(`target versions: ${field} next ${next} is too small`);
    }
    off += next;
  }
}

/** TABLE_DEPS reply: count, padding, then count encoded dev_t values. */
export function decodeDeps(b: Buffer, h: DmHeader): DevNum[] {
  const r = payloadReader(b, h, 'deps');
  const count = r.u32(h.dataStart, 'count');
  r.need(h.dataStart + DEPS_HEADER_SIZE, count * 8, `dev[${count}]`);
  const out: DevNum[] = [];
  for (let i = 0; i < count; i++) out.push(decodeDev(r.u64(h.dataStart + DEPS_HEADER_SIZE + i * 8, `dev[${i}]`)));
  return out;
}

/** TARGET_MSG payload: sector u64, then the NUL-terminated message. */
export function encodeTargetMsg(sector: Sectors, message: string): Buffer {
  if (typeof sector !== 'bigint' || sector < 0n || sector > U64_MAX) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `a target message's sector must be Sectors (a u64 bigint), got ${describeValue(sector)}`);
  }
  if (typeof message !== 'string' || message.length === 0) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', 'a target message must be a non-empty string');
  }
  const head = Buffer.alloc(TARGET_MSG_HEADER_SIZE);
  writeU64(head, 0, sector);
  return Buffer.concat([head, encodeCString(message, 'target message')]);
}

/** The NUL-terminated string a command returns at data_start (TARGET_MSG reply). */
export function decodeDataString(b: Buffer, h: DmHeader, what: string): string {
  return payloadReader(b, h, what).cstring(h.dataStart, 'string').value;
}
