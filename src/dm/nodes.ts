/**
 * /dev/mapper nodes without udev, as libdm's fallback and `dmsetup mknodes` make them: NAME is a block
 * node (0660, root:disk, as Debian's libdm) with the device's major:minor. The filesystem is reached through `NodeFs`, so the
 * logic runs against a fake in tests; `nativeNodeFs` is the real one (mknod comes from the addon).
 *
 * Only block nodes are ever deleted, and only under the mapper directory: `control`, directories,
 * regular files and symlinks (udev's `/dev/mapper/NAME -> ../dm-N`) are left alone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeDev, type DevNum } from './abi';
import { DmError } from './errors';
import type { DmSysBinding } from './native';

export type NodeKind = 'block' | 'char' | 'dir' | 'symlink' | 'other';

export interface NodeStat {
  readonly kind: NodeKind;
  /** The device number of a block or char node. */
  readonly dev?: DevNum;
  /** For a symlink: what it resolves to (undefined when dangling). */
  readonly target?: NodeStat;
}

/** The filesystem operations the node manager needs. Paths are absolute. */
export interface NodeFs {
  /** lstat(); undefined when nothing is there. */
  stat(path: string): NodeStat | undefined;
  /** Entry names in a directory; [] when it does not exist. */
  readdir(path: string): string[];
  /** mkdir -p, mode 0755. */
  mkdir(path: string): void;
  /** A block node, mode 0660, owned by root:disk. Throws errno-shaped errors (EEXIST, EPERM, ...). */
  mknodBlock(path: string, dev: DevNum): void;
  unlink(path: string): void;
  rename(from: string, to: string): void;
  /** The block major device-mapper registered (from /proc/devices); undefined when not registered. */
  dmMajor(): number | undefined;
}

export interface ReconcileReport {
  readonly created: string[];
  readonly replaced: string[];
  readonly removed: string[];
}

export type EnsureResult = 'created' | 'replaced' | 'unchanged';

/** A device as the node manager needs it. */
export interface NamedDevice {
  readonly name: string;
  readonly dev: DevNum;
}

export const CONTROL_NODE = 'control';
export const DEFAULT_DEV_DIR = '/dev';

const sameDev = (a: DevNum | undefined, b: DevNum): boolean => a?.major === b.major && a.minor === b.minor;

/** A block node with this dev, or a symlink that resolves to one (udev's layout). */
export function isNodeFor(st: NodeStat | undefined, dev: DevNum): boolean {
  if (st?.kind === 'block') return sameDev(st.dev, dev);
  return st?.kind === 'symlink' && st.target?.kind === 'block' && sameDev(st.target.dev, dev);
}

/** The device-mapper block major in /proc/devices text ("Block devices:" then "253 device-mapper"). */
export function parseProcDevices(text: string): number | undefined {
  const block = text.split(/^Block devices:$/m)[1];
  const m = block?.match(/^\s*(\d+)\s+device-mapper$/m);
  return m ? Number(m[1]) : undefined;
}

/** The /dev root: an explicit option, else $DM_DEV_DIR (as dmsetup), else /dev. */
export function resolveDevDir(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const dir = option ?? (env['DM_DEV_DIR'] || DEFAULT_DEV_DIR);
  if (!path.isAbsolute(dir)) {
    throw new DmError(`device directory ${JSON.stringify(dir)} must be an absolute path`, {
      code: 'ERR_DM_INVALID_ARGUMENT',
    });
  }
  return path.resolve(dir);
}

const errnoCode = (e: unknown): string | undefined => (e as { code?: unknown }).code as string | undefined;

export class DeviceNodes {
  readonly mapperDir: string;

  constructor(
    private readonly fs: NodeFs,
    devDir: string = DEFAULT_DEV_DIR,
  ) {
    this.mapperDir = path.join(devDir, 'mapper');
  }

  path(name: string): string {
    return path.join(this.mapperDir, name);
  }

  /** Makes mapper/NAME a block node for dev; a correct node (or a symlink to one) is left alone. */
  ensure(name: string, dev: DevNum): EnsureResult {
    if (name === CONTROL_NODE) return 'unchanged';
    const where = this.path(name);
    const st = this.fs.stat(where);
    if (isNodeFor(st, dev)) return 'unchanged';
    if (st) {
      this.checkReplaceable(where, st);
      this.fs.unlink(where);
    } else {
      this.fs.mkdir(this.mapperDir);
    }
    this.mknod(where, dev);
    return st ? 'replaced' : 'created';
  }

  /** Deletes mapper/NAME when it is a block node; true when something was deleted. */
  remove(name: string): boolean {
    if (name === CONTROL_NODE) return false;
    const where = this.path(name);
    if (this.fs.stat(where)?.kind !== 'block') return false;
    this.fs.unlink(where);
    return true;
  }

  /** Moves the node of a renamed device, or makes a fresh one when the old node is missing or wrong. */
  rename(oldName: string, newName: string, dev: DevNum): void {
    const from = oldName === CONTROL_NODE ? undefined : this.fs.stat(this.path(oldName));
    const movable = from?.kind === 'block' && sameDev(from.dev, dev);
    if (movable && newName !== CONTROL_NODE && !this.fs.stat(this.path(newName))) {
      this.fs.rename(this.path(oldName), this.path(newName));
      return;
    }
    this.remove(oldName);
    this.ensure(newName, dev);
  }

  /**
   * `dmsetup mknodes`: every listed device gets its node, and block nodes of the DM major that no
   * device owns are deleted. With `only`, just that name is looked at.
   */
  reconcile(devices: readonly NamedDevice[], only?: string): ReconcileReport {
    const report: ReconcileReport = { created: [], replaced: [], removed: [] };
    const wanted = new Map(devices.filter((d) => only === undefined || d.name === only).map((d) => [d.name, d.dev]));
    for (const [name, dev] of wanted) {
      const result = this.ensure(name, dev);
      if (result !== 'unchanged') report[result].push(name);
    }
    const major = this.fs.dmMajor();
    if (major === undefined) return report;
    const present = only === undefined ? this.fs.readdir(this.mapperDir) : [only];
    for (const name of present) {
      if (name === CONTROL_NODE || wanted.has(name)) continue;
      const st = this.fs.stat(this.path(name));
      if (st?.kind === 'block' && st.dev?.major === major) {
        this.fs.unlink(this.path(name));
        report.removed.push(name);
      }
    }
    return report;
  }

  private checkReplaceable(where: string, st: NodeStat): void {
    if (st.kind === 'block' || st.kind === 'symlink') return;
    throw new DmError(`${where} exists and is not a block device node (${st.kind}); not replacing it`, {
      code: 'ERR_DM_NODE_CONFLICT',
      device: path.basename(where),
    });
  }

  private mknod(where: string, dev: DevNum): void {
    try {
      this.fs.mknodBlock(where, dev);
    } catch (e) {
      // Someone else (another dmkit, dmsetup) made the same node meanwhile: fine if it is right.
      if (errnoCode(e) !== 'EEXIST' || !isNodeFor(this.fs.stat(where), dev)) throw e;
    }
  }
}

// ---- the real filesystem ----

function statOf(s: fs.BigIntStats): NodeStat {
  if (s.isBlockDevice()) return { kind: 'block', dev: decodeDev(s.rdev) };
  if (s.isCharacterDevice()) return { kind: 'char', dev: decodeDev(s.rdev) };
  if (s.isDirectory()) return { kind: 'dir' };
  return { kind: 'other' };
}

function lstatNode(where: string): NodeStat | undefined {
  const l = fs.lstatSync(where, { bigint: true, throwIfNoEntry: false });
  if (!l?.isSymbolicLink()) return l && statOf(l);
  const target = fs.statSync(where, { bigint: true, throwIfNoEntry: false });
  return { kind: 'symlink', target: target && statOf(target) };
}

function readdirOrEmpty(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return [];
    throw e;
  }
}

/** NodeFs over node:fs plus the addon's mknod; `procDevices` is read for the DM major. */
export function nativeNodeFs(sys: Pick<DmSysBinding, 'sysMknod'>, procDevices = '/proc/devices'): NodeFs {
  return {
    stat: lstatNode,
    readdir: readdirOrEmpty,
    mkdir: (dir) => void fs.mkdirSync(dir, { recursive: true, mode: 0o755 }),
    mknodBlock: (where, dev) => {
      sys.sysMknod(where, fs.constants.S_IFBLK | 0o660, dev.major, dev.minor);
      // Debian's libdm defaults (built --with-device-gid=6 --with-device-mode=0660): root:disk 0660,
      // whatever the umask or the directory's setgid bit.
      fs.chownSync(where, 0, 6);
      fs.chmodSync(where, 0o660);
    },
    unlink: (where) => fs.unlinkSync(where),
    rename: (from, to) => fs.renameSync(from, to),
    dmMajor: () => parseProcDevices(fs.readFileSync(procDevices, 'utf8')),
  };
}
