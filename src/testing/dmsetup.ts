/**
 * dmsetup as the oracle in VM tests (the product never shells out to it; tests compare against it).
 * No udev runs in the guest, and Debian's dmsetup trusts udev rules to make /dev/mapper nodes unless told
 * not to, and even then skips them when udev is absent: calls say --noudevrules --noudevsync and
 * createDevice() runs `dmsetup mknodes`, which makes (and on remove, drops) the node itself.
 */
import { spawnSync } from 'node:child_process';
import { Scope, sh } from '.';

const NO_UDEV = ['--noudevrules', '--noudevsync'];

export function dmsetup(...args: string[]): string {
  return sh('dmsetup', ...NO_UDEV, ...args);
}

/** dmsetup's exit status and stderr, for commands that are meant to fail. */
export function dmsetupStatus(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('dmsetup', [...NO_UDEV, ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

export interface TestDevice {
  name: string;
  path: string;
  /** Removes the device now (idempotent; the scope will not remove it again). */
  remove(): void;
}

/** Creates a device with a one-line table; the scope removes it unless the test did. */
export function createDevice(scope: Scope, name: string, table: string): TestDevice {
  dmsetup('create', name, '--table', table);
  dmsetup('mknodes', name);
  let present = true;
  const remove = (): void => {
    if (!present) return;
    present = false;
    dmsetup('remove', '--retry', name);
    dmsetup('mknodes');
  };
  scope.defer(`remove ${name}`, remove);
  return { name, path: `/dev/mapper/${name}`, remove };
}

/** Kernel log lines added since `mark` (a line count from kernelLogMark()). */
export function kernelLogMark(): number {
  return sh('dmesg').split('\n').length;
}

export function kernelLogSince(mark: number): string[] {
  return sh('dmesg').split('\n').slice(mark - 1).filter(Boolean);
}
