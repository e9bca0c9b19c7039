/**
 * Argument checks shared by the public entry points of src/dm. Each runs before anything is sized,
 * encoded or sent: the type first, then bounds, so `{length: 2 ** 32}` where a string belongs fails at
 * once instead of allocating. All throw DmArgumentError.
 */
import { DmArgumentError, type DmArgumentCode } from './errors';

/** A short, never-throwing description of any value for error messages (JSON.stringify and template
 *  literals throw on bigints, symbols and hostile objects). */
export function describeValue(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
    case 'bigint':
      return `${value.toString()}n`;
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    case 'object':
      return value === null ? 'null' : Array.isArray(value) ? 'an array' : 'an object';
    default:
      return String(value);
  }
}

const fail = (code: DmArgumentCode, message: string): never => {
  throw new DmArgumentError(code, message);
};

/** An options bag: undefined (no options) or a non-array object. */
export function checkOptions<T extends object>(value: T | undefined, what: string): T | Record<string, never> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be an object, got ${describeValue(value)}`);
  }
  return value;
}

/** An optional boolean option. */
export function checkFlag(value: unknown, what: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be a boolean, got ${describeValue(value)}`);
  }
  return value as boolean | undefined;
}

/** An integer in [min, max] (a JS number). */
export function checkInteger(value: unknown, min: number, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be an integer in ${min}..${max}, got ${describeValue(value)}`);
  }
  return value as number;
}

/** A string of at most maxBytes UTF-8 bytes (checked on the UTF-16 length first: bytes >= units). */
export function checkString(value: unknown, maxBytes: number, what: string, code: DmArgumentCode = 'ERR_DM_INVALID_ARGUMENT'): string {
  if (typeof value !== 'string') fail(code, `${what} must be a string, got ${describeValue(value)}`);
  const s = value as string;
  if (s.length > maxBytes || Buffer.byteLength(s, 'utf8') > maxBytes) {
    fail(code, `${what} must be at most ${maxBytes} bytes, got ${describeValue(s)}`);
  }
  return s;
}

/** An optional function option. */
export function checkFunction(value: unknown, what: string): void {
  if (value !== undefined && typeof value !== 'function') {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be a function, got ${describeValue(value)}`);
  }
}

/** An optional choice among fixed strings. */
export function checkChoice(value: unknown, allowed: readonly string[], what: string): void {
  if (value !== undefined && !allowed.includes(value as string)) {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be one of ${allowed.join(', ')}, got ${describeValue(value)}`);
  }
}

/** A u64 sector count or offset (Sectors: a bigint). */
export function checkSectorsArg(value: unknown, what: string): bigint {
  if (typeof value !== 'bigint' || value < 0n || value > 0xffff_ffff_ffff_ffffn) {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be Sectors (a bigint in 0..2^64-1), got ${describeValue(value)}`);
  }
  return value as bigint;
}

/** An AbortSignal, or undefined. */
export function checkSignal(value: unknown, what: string): AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) {
    fail('ERR_DM_INVALID_ARGUMENT', `${what} must be an AbortSignal, got ${describeValue(value)}`);
  }
  return value as AbortSignal | undefined;
}
