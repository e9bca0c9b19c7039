/**
 * Everything the CLI needs from the outside world, injectable so unit tests can run commands against a
 * fake DeviceMapper with captured output.
 */
import { readFile, stat } from 'node:fs/promises';
import { DeviceMapper } from '../dm';
import { sectors, type Sectors } from '../units';
import { CliError, ExitCode } from './errors';

export interface Runtime {
  /**
   * Opens the control device. Called at most once per run, and only by commands that need it.
   * `udev: 'off'` is dmsetup --noudevsync: no cookie sync, dmkit makes the /dev/mapper nodes.
   */
  openDm(options?: { udev?: 'auto' | 'off' }): DeviceMapper | Promise<DeviceMapper>;
  stdout(text: string): void;
  stderr(text: string): void;
  /** Effective uid: device-mapper commands refuse to start unless it is 0. */
  readonly uid: number;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Reads a table file; '-' is not special here (the CLI maps it to stdin). */
  readFile(path: string): Promise<string>;
  /** Reads all of stdin, or resolves undefined when stdin is a terminal (nothing was piped in). */
  readStdin(): Promise<string | undefined>;
  /** The size of a block device in 512-byte sectors. */
  blockDeviceSectors(path: string): Promise<Sectors>;
}

/** The sysfs size of a block device, found through its device number so any node or symlink works. */
export async function sysfsBlockDeviceSectors(path: string): Promise<Sectors> {
  const st = await stat(path, { bigint: true });
  if (!st.isBlockDevice()) {
    throw new CliError(`${path} is not a block device`, 'ERR_NOT_BLOCK_DEVICE', ExitCode.USAGE);
  }
  const rdev = st.rdev;
  // glibc's gnu_dev_major/minor on the 64-bit dev_t.
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn & 0xffffffffn);
  const text = await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  if (!/^\d+\s*$/.test(text)) throw new CliError(`cannot read the size of ${path}`, 'ERR_DEVICE_SIZE', ExitCode.FAILED);
  return sectors(BigInt(text.trim()));
}

async function readAllStdin(): Promise<string | undefined> {
  if (process.stdin.isTTY) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The real process: native control device, process streams, real uid. */
export function nodeRuntime(): Runtime {
  return {
    openDm: (options = {}) =>
      DeviceMapper.open({ ...options, warn: (message) => void process.stderr.write(`dmkit: warning: ${message}\n`) }),
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    uid: typeof process.geteuid === 'function' ? process.geteuid() : 0,
    env: process.env,
    readFile: (path) => readFile(path, 'utf8'),
    readStdin: readAllStdin,
    blockDeviceSectors: sysfsBlockDeviceSectors,
  };
}

