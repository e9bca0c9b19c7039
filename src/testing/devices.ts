/**
 * Guest-side block devices for kernel tests: brd ramdisks and loop devices of given sizes, buffer
 * flushing, and a cleanup scope that tears everything down in reverse order.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Bytes, bytesToSectors, Sectors } from '../units';

/** Runs a command, returns stdout; throws with stderr on failure. */
export function sh(cmd: string, ...args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; status?: number };
    throw new Error(`${cmd} ${args.join(' ')} failed (${err.status ?? '?'}): ${String(err.stderr ?? '').trim()}`);
  }
}

/** Undo actions run last-in first-out; errors in one do not stop the others. */
export class Scope {
  private readonly undo: Array<{ what: string; fn: () => void }> = [];

  defer(what: string, fn: () => void): void {
    this.undo.push({ what, fn });
  }

  close(): void {
    const errors: string[] = [];
    for (let u = this.undo.pop(); u; u = this.undo.pop()) {
      try {
        u.fn();
      } catch (e) {
        errors.push(`${u.what}: ${(e as Error).message}`);
      }
    }
    if (errors.length) throw new Error(`cleanup failed:\n${errors.join('\n')}`);
  }
}

export interface BlockDevice {
  path: string;
  size: Bytes;
  sectors: Sectors;
}

/** Size of a block device in bytes (BLKGETSIZE64 through blockdev). */
export function deviceSize(dev: string): Bytes {
  return BigInt(sh('blockdev', '--getsize64', dev).trim()) as Bytes;
}

/** Drops the page cache of a block device so the next read goes to the device. */
export function flushBuffers(dev: string): void {
  sh('blockdev', '--flushbufs', dev);
}

function moduleLoaded(name: string): boolean {
  return fs.existsSync(`/sys/module/${name}`);
}

/**
 * `count` brd ramdisks of `size` bytes each (brd gives all its disks one size). Reloads brd, so earlier
 * ramdisks must be gone. With `prefill`, writes every page once so brd has allocated it before timing.
 */
export function ramdisks(scope: Scope, count: number, size: Bytes, opts: { prefill?: boolean } = {}): BlockDevice[] {
  if (size % 1024n !== 0n) throw new RangeError('ramdisk size must be whole KiB');
  if (moduleLoaded('brd')) sh('modprobe', '-r', 'brd');
  sh('modprobe', 'brd', `rd_nr=${count}`, `rd_size=${size / 1024n}`, 'max_part=0');
  scope.defer('unload brd', () => sh('modprobe', '-r', 'brd'));
  const devs = Array.from({ length: count }, (_, i) => ({ path: `/dev/ram${i}`, size, sectors: bytesToSectors(size) }));
  const mib = size / (1n << 20n);
  if (opts.prefill) for (const d of devs) sh('dd', 'if=/dev/zero', `of=${d.path}`, 'bs=1M', `count=${mib}`, 'oflag=direct', 'status=none');
  return devs;
}

/** A loop device over a sparse file of `size` bytes in the guest's tmpfs. */
export function loopDevice(scope: Scope, size: Bytes): BlockDevice {
  if (!moduleLoaded('loop')) sh('modprobe', 'loop');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-loop-'));
  const file = path.join(dir, 'backing');
  fs.writeFileSync(file, '');
  fs.truncateSync(file, Number(size));
  scope.defer(`remove ${file}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  const dev = sh('losetup', '--find', '--show', file).trim();
  scope.defer(`detach ${dev}`, () => sh('losetup', '--detach', dev));
  return { path: dev, size, sectors: bytesToSectors(size) };
}
