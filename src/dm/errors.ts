/** Errors raised by the device-mapper control plane. */

export interface DmErrorDetails {
  /** errno name ('EBUSY', 'ENXIO', ...) for kernel failures, or an ERR_DM_* code for dmkit's own. */
  readonly code: string;
  /** Positive errno number when the kernel or a syscall failed; undefined otherwise. */
  readonly errno?: number | undefined;
  /** DM command name, e.g. 'DM_DEV_REMOVE' ('' when raised outside a command). */
  readonly command?: string;
  /** The device name or uuid the command addressed, when it addressed one. */
  readonly device?: string | undefined;
  readonly cause?: unknown;
}

/** A device-mapper command failed. `code`/`errno` follow Node's fs errors. */
export class DmError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  readonly command: string;
  readonly device: string | undefined;

  constructor(message: string, details: DmErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'DmError';
    this.code = details.code;
    this.errno = details.errno;
    this.command = details.command ?? '';
    this.device = details.device;
  }
}

/** The kernel (or a fake transport) returned a reply that does not decode within its bounds. */
export class DmMalformedReplyError extends DmError {
  constructor(message: string, context: { command?: string; device?: string | undefined; cause?: unknown } = {}) {
    super(message, { ...context, code: 'ERR_DM_MALFORMED_REPLY' });
    this.name = 'DmMalformedReplyError';
  }
}

export type DmArgumentCode =
  | 'ERR_DM_INVALID_NAME'
  | 'ERR_DM_INVALID_UUID'
  | 'ERR_DM_INVALID_TARGET'
  | 'ERR_DM_INVALID_ARGUMENT';

/** An argument was rejected before any ioctl was issued. */
export class DmArgumentError extends RangeError {
  readonly code: DmArgumentCode;

  constructor(code: DmArgumentCode, message: string) {
    super(message);
    this.name = 'DmArgumentError';
    this.code = code;
  }
}

/** True for errno-shaped errors such as the native addon's ioctl rejections. */
export function isSystemError(e: unknown): e is Error & { code: string; errno: number } {
  return (
    e instanceof Error &&
    typeof (e as { code?: unknown }).code === 'string' &&
    typeof (e as { errno?: unknown }).errno === 'number'
  );
}
