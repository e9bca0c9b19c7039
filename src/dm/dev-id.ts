/** Device identifiers and the checks the kernel would otherwise fail with a bare EINVAL. */
import { DM_NAME_LEN, DM_UUID_LEN } from './abi';
import { describeValue } from './check';
import { DmArgumentError } from './errors';

/** A device by name or by uuid (never both: the kernel rejects a header carrying both). */
export type DevId =
  | { readonly name: string; readonly uuid?: undefined }
  | { readonly uuid: string; readonly name?: undefined };

/** A device by name: DEV_RENAME finds the device it renames by name only. */
export type NameId = Extract<DevId, { readonly name: string }>;

const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

/** Names become /dev/mapper/<name>: non-empty, under 128 bytes, no '/', not '.' or '..'. */
export function validateName(name: unknown): asserts name is string {
  const bad = (why: string): never => {
    throw new DmArgumentError('ERR_DM_INVALID_NAME', `invalid device name ${describeValue(name)}: ${why}`);
  };
  if (typeof name !== 'string') bad('not a string');
  const s = name as string;
  if (s.length === 0) bad('empty');
  if (s.length >= DM_NAME_LEN || byteLength(s) >= DM_NAME_LEN) bad(`must be under ${DM_NAME_LEN} bytes`);
  if (s.includes('/')) bad("contains '/'");
  if (s.includes('\0')) bad('contains NUL');
  if (s === '.' || s === '..') bad("'.' and '..' are reserved");
}

export function validateUuid(uuid: unknown): asserts uuid is string {
  const bad = (why: string): never => {
    throw new DmArgumentError('ERR_DM_INVALID_UUID', `invalid device uuid ${describeValue(uuid)}: ${why}`);
  };
  if (typeof uuid !== 'string') bad('not a string');
  const s = uuid as string;
  if (s.length === 0) bad('empty');
  if (s.length >= DM_UUID_LEN || byteLength(s) >= DM_UUID_LEN) bad(`must be under ${DM_UUID_LEN} bytes`);
  if (s.includes('\0')) bad('contains NUL');
}

export function validateDevId(id: unknown): asserts id is DevId {
  const d = (typeof id === 'object' && id !== null ? id : {}) as { name?: unknown; uuid?: unknown };
  const hasName = d.name !== undefined;
  const hasUuid = d.uuid !== undefined;
  if (hasName === hasUuid) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', 'a device id needs exactly one of name or uuid');
  }
  if (hasName) validateName(d.name);
  else validateUuid(d.uuid);
}

export function validateNameId(id: unknown): asserts id is NameId {
  validateDevId(id);
  if ((id as DevId).name === undefined) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', 'the kernel finds the device to rename by name, not uuid');
  }
}

/** The name or uuid, for error messages and DmError.device. */
export const describeDevId = (id: DevId): string => (id.name !== undefined ? id.name : `uuid:${id.uuid}`);
