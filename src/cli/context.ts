/** What a running command can use: output, input, and the control device opened on first use. */
import type { DevId, DeviceMapper } from '../dm';
import { isSystemError, validateName, validateUuid } from '../dm';
import { CliError, ExitCode, usageError } from './errors';
import { renderJson } from './output';
import type { Runtime } from './runtime';

export const NOT_ROOT = 'ERR_NOT_ROOT';

/** Quotes an argument for the "try sudo" hint only when the shell would need it. */
export const shellQuote = (arg: string): string =>
  /^[\w./:=@%+,-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;

/** dmsetup's global options, as every command sees them. */
export interface GlobalOptions {
  /** --noudevsync: no udev cookie sync (dmkit makes the nodes). */
  readonly noudevsync: boolean;
  /** --noudevrules: tell the udev rules to leave the device alone (DM_UDEV_DISABLE_{DM,SUBSYSTEM}_RULES). */
  readonly noudevrules: boolean;
  /** --udevcookie C (or $DM_UDEV_COOKIE): the caller's cookie, counted on as libdm does (no wait). */
  readonly udevcookie: number | undefined;
  /** -v: how many times it was given. */
  readonly verbose: number;
  /** -j/-m: the device by major and minor number. */
  readonly major: number | undefined;
  readonly minor: number | undefined;
}

export const NO_GLOBALS: GlobalOptions = { noudevsync: false, noudevrules: false, udevcookie: undefined, verbose: 0, major: undefined, minor: undefined };

/** DM_UDEV_DISABLE_DM_RULES_FLAG | DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG, as dmsetup --noudevrules sets them. */
const NO_UDEV_RULES = 0x01 | 0x02;

export class CommandContext {
  private handle: DeviceMapper | undefined;

  constructor(
    readonly runtime: Runtime,
    /** The command line as given, for the "try sudo" hint. */
    readonly args: readonly string[],
    readonly globals: GlobalOptions = NO_GLOBALS,
  ) {}

  /** The udev options of resume, remove and rename, from --udevcookie and --noudevrules. */
  udevOptions(): { udevCookie?: number; udevFlags?: number } {
    const flags = this.globals.noudevrules ? { udevFlags: NO_UDEV_RULES } : {};
    return this.globals.udevcookie === undefined ? flags : { udevCookie: this.globals.udevcookie, ...flags };
  }

  /** -v: a line on stderr, as dmsetup's verbose output goes there. */
  verbose(message: string): void {
    if (this.globals.verbose > 0) this.runtime.stderr(`${message}\n`);
  }

  /** The control device; refuses non-root callers before touching it. */
  async dm(): Promise<DeviceMapper> {
    if (this.handle) return this.handle;
    if (this.runtime.uid !== 0) throw this.notRoot();
    try {
      this.handle = await this.runtime.openDm(this.globals.noudevsync ? { udev: 'off' } : {});
    } catch (e) {
      throw this.openFailure(e);
    }
    return this.handle;
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }

  /** Prints lines of text (a newline is added to each). */
  print(...lines: string[]): void {
    if (lines.length) this.runtime.stdout(`${lines.join('\n')}\n`);
  }

  /** Prints text exactly as given. */
  write(text: string): void {
    if (text) this.runtime.stdout(text);
  }

  printJson(value: unknown): void {
    this.runtime.stdout(renderJson(value));
  }

  warn(message: string): void {
    this.runtime.stderr(`dmkit: ${message}\n`);
  }

  /** Reads table text from stdin; a terminal on stdin counts as nothing given. */
  async stdinText(): Promise<string> {
    const text = await this.runtime.readStdin();
    if (text === undefined) {
      throw usageError(`no table: give --table LINE, --table-file FILE, a file argument, or pipe one on stdin`);
    }
    return text;
  }

  private notRoot(): CliError {
    const hint = ['sudo', 'dmkit', ...this.args.map(shellQuote)].join(' ');
    return new CliError(`device-mapper needs root; try ${hint}`, NOT_ROOT, ExitCode.NOT_PERMITTED);
  }

  private openFailure(e: unknown): unknown {
    const code = (e as { code?: unknown } | null)?.code;
    if (code === 'ERR_DM_NO_CONTROL' || code === 'ENOENT' || code === 'ENODEV' || code === 'ENXIO') {
      const errno = (e as { errno?: unknown }).errno;
      const error = new CliError(
        'no device-mapper: /dev/mapper/control cannot be opened or made (is the dm_mod module loaded? try: modprobe dm_mod)',
        'ERR_DM_NO_CONTROL',
        ExitCode.NO_DM,
      );
      return typeof errno === 'number' ? Object.assign(error, { errno }) : error;
    }
    if (!isSystemError(e)) {
      const why = e instanceof Error ? e.message : String(e);
      return new CliError(`cannot open the device-mapper control device: ${why}`, 'ERR_DM_OPEN', ExitCode.FAILED);
    }
    if (e.code === 'EACCES' || e.code === 'EPERM') return this.notRoot();
    return new CliError(`cannot open /dev/mapper/control: ${e.message}`, e.code, ExitCode.FAILED);
  }
}

/** `NAME` or `-u UUID`, exactly one, as dmsetup takes a device. */
export function deviceId(name: string | undefined, uuid: string | undefined): DevId {
  if (name !== undefined && uuid !== undefined) {
    throw usageError(`give the device as NAME or as -u UUID, not both`);
  }
  if (name !== undefined) {
    validateName(name);
    return { name };
  }
  if (uuid !== undefined) {
    validateUuid(uuid);
    return { uuid };
  }
  throw usageError(`which device? give NAME or -u UUID`);
}

/** The optional device of listing commands: undefined means every device. */
export function optionalDeviceId(name: string | undefined, uuid: string | undefined): DevId | undefined {
  return name === undefined && uuid === undefined ? undefined : deviceId(name, uuid);
}
