/**
 * The shape every target codec shares, the factory that builds one, and the checks builders use to
 * refuse what the kernel would refuse.
 */
import type { TargetLine } from '../dm/payload';
import type { Sectors, TargetBlocks } from '../units';
import { show, TargetParamError, TargetParseError } from './errors';
import { Tokens, U32_MAX, U64_MAX } from './tokens';

/** Where a line sits in the table, and which registered name (in-tree or dmkit) it uses. */
export interface LinePlacement {
  readonly start: Sectors;
  readonly length: Sectors;
  /** One of the codec's names; defaults to the in-tree name. */
  readonly type?: string;
}

/** The kernel's one-word INFO states shared by several targets. */
export interface FailStatus {
  readonly fail: true;
}
export interface ErrorStatus {
  readonly error: true;
}
/** INFO status of targets that report nothing (linear, flakey, snapshot-origin). */
export type EmptyStatus = Readonly<Record<string, never>>;

export const FAIL: FailStatus = Object.freeze({ fail: true });
export const ERROR: ErrorStatus = Object.freeze({ error: true });

/** "Fail" (metadata in fail mode) or "Error" (the status query itself failed), else null. */
export function readFailOrError(t: Tokens): FailStatus | ErrorStatus | null {
  if (t.takeExactly('Fail')) return FAIL;
  if (t.takeExactly('Error')) return ERROR;
  return null;
}

/** Metadata usage as era, clone and cache print it: `<block size> <used>/<total>`. */
export interface MetadataUsage {
  /** Size of one metadata block (8 sectors = 4 KiB in 6.1). */
  readonly metadataBlockSize: Sectors;
  /** Metadata blocks in use, counted in metadataBlockSize units. */
  readonly metadataUsed: bigint;
  /** Metadata blocks on the device, counted in metadataBlockSize units. */
  readonly metadataTotal: bigint;
}

export function readMetadataUsage(t: Tokens): MetadataUsage {
  const metadataBlockSize = t.sectors('metadata block size');
  const [metadataUsed, metadataTotal] = t.ratio('metadata usage');
  return { metadataBlockSize, metadataUsed, metadataTotal };
}

/** An INFO status that must be empty (linear, flakey, snapshot-origin). */
export function readEmptyStatus(_t: Tokens): EmptyStatus {
  return {};
}

/**
 * P is the fully specified parameter set that `parse` returns; I is what `format` accepts (P with
 * defaults left out). `parse(format(x))` deep-equals `normalize(x)`, and equals x for any valid P.
 */
export interface TargetCodec<P, S, I = P> {
  /** The in-tree target name. */
  readonly type: string;
  /** Every name this codec serves: the in-tree one first, then dmkit's. */
  readonly names: readonly string[];
  /** Validates and fills in defaults. Throws TargetParamError. */
  normalize(params: I): P;
  /** The params string exactly as the kernel echoes it for STATUSTYPE_TABLE. */
  format(params: I): string;
  /** Parses a table params string (the TABLE status or what was loaded). Throws TargetParseError. */
  parse(text: string): P;
  /** Parses a STATUSTYPE_INFO string. Throws TargetParseError. */
  parseStatus(text: string): S;
  line(params: I, at: LinePlacement): TargetLine;
}

export interface CodecSpec<P, S, I> {
  readonly type: string;
  readonly names: readonly string[];
  readonly normalize: (params: I) => P;
  readonly emit: (params: P) => string;
  readonly read: (t: Tokens) => I;
  readonly readStatus: (t: Tokens) => S;
}

export function defineCodec<P, S, I>(spec: CodecSpec<P, S, I>): TargetCodec<P, S, I> {
  // Every entry point checks the shape of its argument before a field is read: undefined, a number or an
  // array is a TargetParamError, never a TypeError from deep inside.
  const normalize = (params: I): P => {
    checkObject(spec.type, 'params', params);
    return spec.normalize(params);
  };
  const format = (params: I): string => spec.emit(normalize(params));
  return Object.freeze({
    type: spec.type,
    names: Object.freeze([...spec.names]),
    normalize,
    format,
    parse: (text: string) => parseWith(spec, text),
    parseStatus: (text: string) => {
      const t = new Tokens(spec.type, text);
      const status = spec.readStatus(t);
      t.end();
      return status;
    },
    line: (params: I, at: LinePlacement): TargetLine => {
      checkObject(spec.type, 'placement', at);
      return {
        start: checkSectors(spec.type, 'start', at.start),
        length: checkLength(spec.type, at.length),
        type: checkTypeName(spec.type, spec.names, at.type),
        params: format(params),
      };
    },
  });
}

/** A plain object argument (params, placement): not null, not an array, not a primitive. */
export function checkObject(target: string, field: string, value: unknown): void {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
    throw new TargetParamError('ERR_TARGET_BAD_VALUE', target, field, `must be an object, got ${got}`);
  }
}

/**
 * Parsed params also go through normalize, so parse never hands back something format would
 * refuse; a refusal becomes a parse error carrying the param error as cause.
 */
function parseWith<P, S, I>(spec: CodecSpec<P, S, I>, text: string): P {
  const t = new Tokens(spec.type, text);
  const raw = spec.read(t);
  t.end();
  try {
    return spec.normalize(raw);
  } catch (e) {
    if (!(e instanceof TargetParamError)) throw e;
    throw new TargetParseError(`${e.field}: ${e.reason}`, { target: spec.type, input: text, token: '', cause: e });
  }
}

function checkTypeName(type: string, names: readonly string[], wanted: string | undefined): string {
  if (wanted === undefined) return type;
  if (typeof wanted !== 'string' || !names.includes(wanted)) {
    throw new TargetParamError('ERR_TARGET_BAD_TYPE', type, 'type', `${show(wanted)} is not one of ${names.join(', ')}`);
  }
  return wanted;
}

function checkLength(target: string, length: Sectors): Sectors {
  const v = checkSectors(target, 'length', length);
  if (v === 0n) throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', target, 'length', 'must be positive');
  return v;
}

// ---- value checks used by normalize() ----

const isWord = (value: unknown): value is string => typeof value === 'string' && value !== '' && !/[\s\0]/.test(value);

/** A device path or "maj:min": one non-empty word. */
export function checkDevice(target: string, field: string, value: unknown): string {
  if (!isWord(value)) throw new TargetParamError('ERR_TARGET_BAD_DEVICE', target, field, `${show(value)} is not a device path or maj:min`);
  return value;
}

/** One non-empty word without whitespace (policy names, policy keys and values, mark text). */
export function checkWord(target: string, field: string, value: unknown): string {
  if (!isWord(value)) throw new TargetParamError('ERR_TARGET_BAD_VALUE', target, field, `${show(value)} is not a single word`);
  return value;
}

export function checkUint(target: string, field: string, value: unknown, max: bigint = U64_MAX, min = 0n): bigint {
  if (typeof value !== 'bigint') {
    throw new TargetParamError('ERR_TARGET_BAD_VALUE', target, field, `must be a bigint, got ${typeof value}`);
  }
  if (value < min || value > max) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', target, field, `${value} is outside [${min}, ${max}]`);
  }
  return value;
}

export function checkSectors(target: string, field: string, value: unknown, max: bigint = U64_MAX): Sectors {
  return checkUint(target, field, value, max) as Sectors;
}

export function checkBlocks(target: string, field: string, value: unknown, max: bigint = U64_MAX): TargetBlocks {
  return checkUint(target, field, value, max) as TargetBlocks;
}

/** A JS integer field (seconds, byte values, ids). */
export function checkInt(target: string, field: string, value: unknown, max: number, min = 0): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new TargetParamError('ERR_TARGET_BAD_VALUE', target, field, `must be an integer, got ${String(value)}`);
  }
  if (value < min || value > max) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', target, field, `${value} is outside [${min}, ${max}]`);
  }
  return value;
}

export function checkBool(target: string, field: string, value: unknown, fallback = false): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    throw new TargetParamError('ERR_TARGET_BAD_VALUE', target, field, `must be a boolean, got ${typeof value}`);
  }
  return value;
}

export function checkOneOf<T extends string>(target: string, field: string, value: unknown, allowed: readonly T[]): T {
  const found = allowed.find((a) => a === value);
  if (found === undefined) {
    throw new TargetParamError('ERR_TARGET_BAD_VALUE', target, field, `${show(value)} is not one of ${allowed.join('|')}`);
  }
  return found;
}

/** A block size in sectors: a multiple of `step` within [min, max]. */
export function checkBlockSize(target: string, field: string, value: unknown, min: bigint, max: bigint, step: bigint): Sectors {
  const v = checkSectors(target, field, value, max);
  if (v < min || v % step !== 0n) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', target, field, `${v} sectors must be a multiple of ${step} in [${min}, ${max}]`);
  }
  return v;
}

export function isPowerOfTwo(v: bigint): boolean {
  return v > 0n && (v & (v - 1n)) === 0n;
}

export function checkPowerOfTwo(target: string, field: string, value: unknown, min: bigint, max: bigint): Sectors {
  const v = checkSectors(target, field, value, max);
  if (v < min || !isPowerOfTwo(v)) {
    throw new TargetParamError('ERR_TARGET_OUT_OF_RANGE', target, field, `${v} sectors must be a power of 2 in [${min}, ${max}]`);
  }
  return v;
}

export function conflict(target: string, field: string, message: string): TargetParamError {
  return new TargetParamError('ERR_TARGET_CONFLICT', target, field, message);
}

export { U32_MAX, U64_MAX };
