/** Errors raised by the target table builders and the table/status parsers. */

/** Quotes strings and prints anything else (bigints included, which JSON.stringify refuses). */
export function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

export type TargetParamCode =
  | 'ERR_TARGET_BAD_TYPE'
  | 'ERR_TARGET_BAD_DEVICE'
  | 'ERR_TARGET_BAD_VALUE'
  | 'ERR_TARGET_OUT_OF_RANGE'
  | 'ERR_TARGET_CONFLICT';

/** A builder or message helper was given a value the kernel would reject. Raised before any ioctl. */
export class TargetParamError extends RangeError {
  readonly code: TargetParamCode;
  /** Target type name ('era', 'thin-pool', ...). */
  readonly target: string;
  /** The parameter at fault, e.g. 'blockSize'. */
  readonly field: string;
  /** What is wrong with it, without the target and field prefix. */
  readonly reason: string;

  constructor(code: TargetParamCode, target: string, field: string, reason: string) {
    super(`${target}: ${field}: ${reason}`);
    this.name = 'TargetParamError';
    this.code = code;
    this.target = target;
    this.field = field;
    this.reason = reason;
  }
}

export interface TargetParseErrorDetails {
  readonly target: string;
  /** The whole text that was being parsed. */
  readonly input: string;
  /** The offending token, or '' when input ended early. */
  readonly token: string;
  readonly cause?: unknown;
}

/** A table or status line did not have the shape the kernel emits for this target. */
export class TargetParseError extends Error {
  readonly code = 'ERR_TARGET_PARSE' as const;
  readonly target: string;
  readonly input: string;
  readonly token: string;

  constructor(reason: string, details: TargetParseErrorDetails) {
    const at = details.token === '' ? '' : ` at ${show(details.token)}`;
    super(
      `${details.target}: ${reason}${at} in ${show(details.input)}`,
      details.cause === undefined ? undefined : { cause: details.cause },
    );
    this.name = 'TargetParseError';
    this.target = details.target;
    this.input = details.input;
    this.token = details.token;
  }
}
