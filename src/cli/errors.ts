/**
 * How the CLI fails: one error type for its own refusals, and one function that turns any error into
 * an exit status.
 *
 * Exit status (also printed by `dmkit --help`):
 *   0  success
 *   1  the operation failed: a device-mapper/kernel error (errno) or anything else unexpected
 *   2  usage: bad command line, bad table text or an argument dmkit rejects before any ioctl
 *   3  not permitted: not root (checked before opening /dev/mapper/control), or EACCES/EPERM
 *   4  not found: no such device (ENXIO), or a file or device path that does not exist (ENOENT/ENODEV)
 *   5  busy: the device is in use (EBUSY), e.g. remove of an open device without --retry/--deferred
 *   6  no device-mapper: /dev/mapper/control cannot be opened or made (dm_mod not loaded)
 *
 * Every failure prints one line on stderr; with --json the same error is also a JSON document on
 * stdout, {"error":{"code","errno","message"}} (errno null when there is none).
 */
import { DmArgumentError, DmError, isSystemError } from '../dm';

export const ExitCode = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  NOT_PERMITTED: 3,
  NOT_FOUND: 4,
  BUSY: 5,
  NO_DM: 6,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export const EXIT_CODE_HELP = `Exit status:
  0  success
  1  the operation failed (device-mapper/kernel error, errno shown in parentheses)
  2  usage error or invalid argument (nothing was sent to the kernel)
  3  not permitted (device-mapper needs root)
  4  not found (no such device: ENXIO, ENOENT)
  5  busy (EBUSY: the device is open or in use)
  6  no device-mapper (no /dev/mapper/control: is dm_mod loaded?)`;

/** dmkit's own refusal: the message is for the user, `code` names the case, `exit` says how to leave. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly exit: ExitCode,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const usageError = (message: string): CliError => new CliError(message, 'ERR_USAGE', ExitCode.USAGE);

/** The code shown in parentheses after the message: errno name or ERR_* code. */
export function errorCode(e: unknown): string {
  if (e instanceof CliError || e instanceof DmError || e instanceof DmArgumentError) return e.code;
  if (isSystemError(e)) return e.code;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') return code;
  return e instanceof RangeError ? 'ERR_INVALID_ARGUMENT' : 'ERR_INTERNAL';
}

const ERRNO_EXIT: Readonly<Record<string, ExitCode>> = {
  EACCES: ExitCode.NOT_PERMITTED,
  EPERM: ExitCode.NOT_PERMITTED,
  ENXIO: ExitCode.NOT_FOUND,
  ENOENT: ExitCode.NOT_FOUND,
  ENODEV: ExitCode.NOT_FOUND,
  EBUSY: ExitCode.BUSY,
};

/** The single mapping from an error to dmkit's exit status. */
export function exitCodeFor(e: unknown): ExitCode {
  if (e instanceof CliError) return e.exit;
  // Rejected before any ioctl: DmArgumentError, the units' RangeErrors, target builders' RangeErrors.
  if (e instanceof RangeError) return ExitCode.USAGE;
  const code = errorCode(e);
  if (code in ERRNO_EXIT) return ERRNO_EXIT[code]!;
  if (/^ERR_.*INVALID/.test(code)) return ExitCode.USAGE;
  return ExitCode.FAILED;
}

/** True for errors the user can cause; anything else is a dmkit bug and may show a stack with DMKIT_DEBUG. */
export function isExpectedError(e: unknown): boolean {
  return (
    e instanceof CliError ||
    e instanceof DmError ||
    e instanceof RangeError ||
    isSystemError(e) ||
    typeof (e as { code?: unknown } | null)?.code === 'string'
  );
}

/** `dmkit: <command>: <message> (<code>)`, the one line every failure prints. */
export function formatError(command: string, e: unknown): string {
  const where = command ? `${command}: ` : '';
  return `dmkit: ${where}${oneLine(errorMessage(e))} (${errorCode(e)})`;
}

const errorMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e));
/** Messages can quote kernel text or file contents: an error stays on one line whatever it quotes. */
const oneLine = (text: string): string => text.replace(/\s*[\r\n]+\s*/g, ' ').trim();

/** The --json form of a failure: {"error":{"code","errno","message"}}, errno null when there is none. */
export function errorJson(command: string, e: unknown): string {
  const errno = (e as { errno?: unknown } | null)?.errno;
  const where = command ? `${command}: ` : '';
  return `${JSON.stringify({
    error: { code: errorCode(e), errno: typeof errno === 'number' ? errno : null, message: `${where}${oneLine(errorMessage(e))}` },
  })}\n`;
}
