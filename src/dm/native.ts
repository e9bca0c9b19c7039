/** Loads the dmkit addon (build/Release/dmkit.node) from the package root, wherever dist/ sits. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** What one poll slice saw: the watched fd is readable, the cancel eventfd fired, or the slice ended. */
export type PollOutcome = 'readable' | 'cancelled' | 'timeout';

/** Waiting for DM events on the control fd (DEV_ARM_POLL) with an eventfd to cancel the wait. */
export interface DmPollBinding {
  /** A non-blocking, close-on-exec eventfd; close it with fs.closeSync once no poll uses it. */
  eventfdOpen(): number;
  /** Adds 1 to the eventfd, waking a poll on it. */
  eventfdSignal(fd: number): void;
  /** poll() for POLLIN on fd and cancelFd, off the JS thread, for at most timeoutMs. */
  pollReadable(fd: number, cancelFd: number, timeoutMs: number): Promise<PollOutcome>;
}

/** System calls Node lacks: mknod for /dev/mapper nodes and SysV semaphores for udev cookies. */
export interface DmSysBinding extends DmPollBinding {
  /** mknod(2); mode is S_IFBLK or S_IFCHR plus permission bits. Throws errno-shaped errors. */
  sysMknod(path: string, mode: number, major: number, minor: number): void;
  /** semget(key, 1, 0600 | IPC_CREAT | IPC_EXCL) -> semaphore id; EEXIST when the key is taken. */
  semCreate(key: number): number;
  semSetValue(id: number, value: number): void;
  semGetValue(id: number): number;
  /** semop by delta; a decrement below zero fails with EAGAIN instead of blocking. */
  semAdd(id: number, delta: number): void;
  /** Waits off the JS thread until the value is 0 (true) or timeoutMs passes (false). */
  semWaitZero(id: number, timeoutMs: number): Promise<boolean>;
  /** semctl(IPC_RMID). */
  semRemove(id: number): void;
}

/** The control device; fakes may leave out the poll functions (events() then reports ERR_DM_UNSUPPORTED). */
export interface DmNativeBinding extends Partial<DmPollBinding> {
  /** Opens /dev/mapper/control (creating the node from sysfs if missing); returns the fd. */
  dmControlOpen(): number;
  dmControlClose(fd: number): void;
  /** Runs _IOWR(0xfd, command, struct dm_ioctl) off the JS thread; resolves with the reply bytes. */
  dmIoctl(fd: number, command: number, buffer: Buffer): Promise<Buffer>;
}

const ADDON_PATHS = [join('build', 'Release', 'dmkit.node'), join('build', 'Debug', 'dmkit.node')];

/** Walks up from this file to the first directory holding a built addon. */
export function findAddon(start: string = __dirname): string {
  for (let dir = start; ; dir = dirname(dir)) {
    for (const rel of ADDON_PATHS) {
      const candidate = join(dir, rel);
      if (existsSync(candidate)) return candidate;
    }
    if (dirname(dir) === dir) throw new Error(`dmkit.node not found above ${start}; run node scripts/build-native.js`);
  }
}

function isBinding(m: unknown): m is DmNativeBinding {
  const b = m as Partial<Record<keyof DmNativeBinding, unknown>> | null;
  return (
    typeof b === 'object' &&
    b !== null &&
    typeof b.dmControlOpen === 'function' &&
    typeof b.dmControlClose === 'function' &&
    typeof b.dmIoctl === 'function'
  );
}

const SYS_FUNCTIONS: ReadonlyArray<keyof DmSysBinding> = [
  'sysMknod',
  'semCreate',
  'semSetValue',
  'semGetValue',
  'semAdd',
  'semWaitZero',
  'semRemove',
  'eventfdOpen',
  'eventfdSignal',
  'pollReadable',
];

function isSysBinding(m: unknown): m is DmSysBinding {
  const b = m as Partial<Record<keyof DmSysBinding, unknown>> | null;
  return typeof b === 'object' && b !== null && SYS_FUNCTIONS.every((f) => typeof b[f] === 'function');
}

let cached: unknown;
let cachedPath = '';

function loadAddon(): unknown {
  if (cached === undefined) {
    cachedPath = findAddon();
    cached = require(cachedPath) as unknown;
  }
  return cached;
}

export function loadNative(): DmNativeBinding & DmSysBinding {
  const m = loadAddon();
  if (!isBinding(m) || !isSysBinding(m)) {
    throw new Error(`${cachedPath} does not export the device-mapper functions; rebuild the addon`);
  }
  return m;
}
