/**
 * udev synchronisation with libdm's cookie protocol, so a resume, remove or rename returns only after
 * udev has processed the uevent it caused (and so /dev/mapper/NAME is there, or gone):
 *
 *  1. cookie = 0x0D4D << 16 | random 16 bits; semget(cookie, 1, 0600|IPC_CREAT|IPC_EXCL), retried on
 *     EEXIST; SETVAL 1; then +1 for the one task.
 *  2. The ioctl carries event_nr = (udev flags << 16) | (cookie & 0xFFFF) with DM_UDEV_PRIMARY_SOURCE;
 *     the kernel passes it to udev as DM_COOKIE, and 95-dm-notify.rules runs `dmsetup udevcomplete`,
 *     which decrements the semaphore.
 *  3. If the reply lacks DM_UEVENT_GENERATED no uevent will come, so the caller decrements itself.
 *  4. Wait: decrement the initial 1, wait for zero (off the JS thread, with a timeout), IPC_RMID.
 *
 * Sync runs only when udev is active, i.e. /run/udev/control exists, and is not switched off. Only the
 * three commands above take part (libdm and devicemapper-rs agree).
 */
import { randomInt } from 'node:crypto';
import { DmArgumentError, DmError } from './errors';
import { describeValue } from './check';

import type { DmSysBinding } from './native';

export const DM_COOKIE_MAGIC = 0x0d4d;
export const DM_UDEV_FLAGS_SHIFT = 16;
export const DM_UDEV_FLAGS_MASK = 0xffff0000;
export const UDEV_CONTROL_PATH = '/run/udev/control';
/** How long to wait for udev before giving up on a cookie (udev's own event timeout is longer). */
export const DEFAULT_UDEV_TIMEOUT_MS = 30_000;
const COOKIE_ATTEMPTS = 16;

/** Bits of the upper event_nr half that 10-dm.rules reads (libdm-common.h). */
export const UdevFlag = {
  DISABLE_DM_RULES: 0x0001,
  DISABLE_SUBSYSTEM_RULES: 0x0002,
  DISABLE_DISK_RULES: 0x0004,
  DISABLE_OTHER_RULES: 0x0008,
  LOW_PRIORITY: 0x0010,
  DISABLE_LIBRARY_FALLBACK: 0x0020,
  PRIMARY_SOURCE: 0x0040,
  SUBSYSTEM_0: 0x0100,
  SUBSYSTEM_1: 0x0200,
  SUBSYSTEM_2: 0x0400,
  SUBSYSTEM_3: 0x0800,
  SUBSYSTEM_4: 0x1000,
  SUBSYSTEM_5: 0x2000,
  SUBSYSTEM_6: 0x4000,
  SUBSYSTEM_7: 0x8000,
} as const;

export function checkUdevFlags(flags: number): number {
  if (typeof flags !== 'number' || !Number.isInteger(flags) || flags < 0 || flags > 0xffff) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `udev flags must be an integer in 0..0xffff, got ${describeValue(flags)}`);
  }
  return flags;
}

/** A cookie from 16 random bits: the magic in the upper half; the lower half must not be 0. */
export function makeCookie(random16: number): number {
  if (!Number.isInteger(random16) || random16 < 1 || random16 > 0xffff) {
    throw new RangeError(`cookie bits must be in 1..0xffff, got ${random16}`);
  }
  return ((DM_COOKIE_MAGIC << DM_UDEV_FLAGS_SHIFT) | random16) >>> 0;
}

/** event_nr for the ioctl: flags in the upper half, the cookie's lower half below. */
export function cookieEventNr(cookie: number, flags: number): number {
  return ((checkUdevFlags(flags) << DM_UDEV_FLAGS_SHIFT) | (cookie & 0xffff)) >>> 0;
}

/** What `dmsetup udevflags` reads back out of DM_COOKIE, and the semaphore key udevcomplete rebuilds. */
export function decodeCookieEventNr(eventNr: number): { flags: number; cookie: number } {
  return { flags: eventNr >>> DM_UDEV_FLAGS_SHIFT, cookie: makeCookieKey(eventNr & 0xffff) };
}

const makeCookieKey = (low: number): number => ((DM_COOKIE_MAGIC << DM_UDEV_FLAGS_SHIFT) | low) >>> 0;

/** The SysV semaphore calls the protocol needs (the addon's, or a fake). */
export type SemaphoreOps = Pick<
  DmSysBinding,
  'semCreate' | 'semSetValue' | 'semGetValue' | 'semAdd' | 'semWaitZero' | 'semRemove'
>;

const codeOf = (e: unknown): unknown => (e as { code?: unknown }).code;

/** One cookie for one task, from creation to completion. */
export class UdevCookie {
  private constructor(
    readonly cookie: number,
    private readonly semId: number,
    private readonly sem: SemaphoreOps,
  ) {}

  /** Creates the semaphore (value 1) and counts the one task (value 2). */
  static create(sem: SemaphoreOps, random: () => number = () => randomInt(1, 0x10000)): UdevCookie {
    for (let attempt = 1; ; attempt++) {
      const cookie = makeCookie(random());
      let id: number;
      try {
        id = sem.semCreate(cookie);
      } catch (e) {
        if (codeOf(e) === 'EEXIST' && attempt < COOKIE_ATTEMPTS) continue;
        throw e;
      }
      return UdevCookie.init(cookie, id, sem);
    }
  }

  private static init(cookie: number, id: number, sem: SemaphoreOps): UdevCookie {
    try {
      sem.semSetValue(id, 1);
      sem.semAdd(id, 1);
    } catch (e) {
      sem.semRemove(id);
      throw e;
    }
    return new UdevCookie(cookie, id, sem);
  }

  /** event_nr for the ioctl: the caller's flags plus PRIMARY_SOURCE. */
  eventNr(flags: number): number {
    return cookieEventNr(this.cookie, checkUdevFlags(flags) | UdevFlag.PRIMARY_SOURCE);
  }

  /**
   * After a successful ioctl: stands in for udev when no uevent was generated, then waits for udev.
   * Resolves false when udev did not finish within timeoutMs. The semaphore is removed either way.
   */
  async complete(ueventGenerated: boolean, timeoutMs: number): Promise<boolean> {
    try {
      if (!ueventGenerated) this.sem.semAdd(this.semId, -1);
      this.sem.semAdd(this.semId, -1);
      return await this.sem.semWaitZero(this.semId, timeoutMs);
    } finally {
      this.discard();
    }
  }

  /** The ioctl failed, so no uevent will come: drop the semaphore. */
  discard(): void {
    try {
      this.sem.semRemove(this.semId);
    } catch (e) {
      if (codeOf(e) !== 'EINVAL' && codeOf(e) !== 'EIDRM') throw e; // already gone (udevcomplete_all)
    }
  }
}

export type UdevMode = 'auto' | 'off';

export interface UdevSyncOptions {
  readonly mode: UdevMode;
  /** Absent: no semaphores available, so never sync. */
  readonly semaphores: SemaphoreOps | undefined;
  readonly exists: (path: string) => boolean;
  readonly controlPath?: string;
  readonly timeoutMs?: number;
  readonly warn: (message: string) => void;
  readonly random?: () => number;
  /** The id of the semaphore with this key, undefined when there is none (a caller's cookie). */
  readonly findSemaphore?: (key: number) => number | undefined;
}

/** A command that takes part in the protocol: run with an event_nr, report whether a uevent came. */
export interface UdevTask<T> {
  readonly what: string;
  readonly flags: number;
  run(eventNr: number): Promise<T>;
  ueventGenerated(result: T): boolean;
}

export class UdevSync {
  constructor(private readonly opts: UdevSyncOptions) {}

  /** udev is running (its control socket exists) and sync is not switched off. */
  active(): boolean {
    return this.opts.mode !== 'off' && this.opts.semaphores !== undefined && this.udevRunning();
  }

  udevRunning(): boolean {
    return this.opts.exists(this.opts.controlPath ?? UDEV_CONTROL_PATH);
  }

  /** Runs the task with a cookie when active; a failed cookie or wait only warns: the command itself succeeded. */
  async run<T>(task: UdevTask<T>): Promise<T> {
    const cookie = this.active() ? this.newCookie(task.what) : undefined;
    if (!cookie) return task.run(0);
    let result: T;
    try {
      result = await task.run(cookie.eventNr(task.flags));
    } catch (e) {
      cookie.discard();
      throw e;
    }
    await this.wait(cookie, task.ueventGenerated(result), task.what);
    return result;
  }

  /**
   * A caller's cookie (dmsetup --udevcookie, $DM_UDEV_COOKIE), used as libdm uses one. With sync active
   * the task is counted on the cookie's semaphore, which must exist and carry the 0x0d4d prefix; udev's
   * notify rule completes it, or dmkit does when the reply says no uevent was generated (or the ioctl
   * failed). Nobody waits here: the caller waits once for the whole transaction (dmsetup
   * udevreleasecookie). With sync off the cookie means nothing: only the flags reach the kernel.
   */
  async runWithCookie<T>(task: UdevTask<T>, cookie: number): Promise<T> {
    const flags = checkUdevFlags(task.flags) | UdevFlag.PRIMARY_SOURCE;
    if (!this.active()) return task.run((flags << DM_UDEV_FLAGS_SHIFT) >>> 0);
    const hex = `0x${(cookie >>> 0).toString(16).padStart(8, '0')}`;
    if (cookie >>> DM_UDEV_FLAGS_SHIFT !== DM_COOKIE_MAGIC) {
      throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `${task.what}: udev cookie ${hex} lacks the 0x0d4d prefix of a cookie semaphore`);
    }
    const sem = this.semaphores();
    const id = this.opts.findSemaphore?.(cookie >>> 0);
    if (id === undefined) {
      throw new DmError(`${task.what}: no semaphore for udev cookie ${hex}`, { code: 'ENOENT', errno: 2, command: task.what });
    }
    sem.semAdd(id, 1);
    const done = (): void => {
      try {
        sem.semAdd(id, -1);
      } catch (e) {
        this.opts.warn(`${task.what}: completing udev cookie ${hex} failed: ${(e as Error).message}`);
      }
    };
    let result: T;
    try {
      result = await task.run(cookieEventNr(cookie, flags));
    } catch (e) {
      done();
      throw e;
    }
    if (!task.ueventGenerated(result)) done();
    return result;
  }

  private newCookie(what: string): UdevCookie | undefined {
    try {
      return UdevCookie.create(this.semaphores(), this.opts.random);
    } catch (e) {
      this.opts.warn(`${what}: no udev cookie (${(e as Error).message}); not waiting for udev`);
      return undefined;
    }
  }

  private async wait(cookie: UdevCookie, generated: boolean, what: string): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? DEFAULT_UDEV_TIMEOUT_MS;
    const hex = `0x${cookie.cookie.toString(16).padStart(8, '0')}`;
    try {
      if (!(await cookie.complete(generated, timeoutMs))) {
        this.opts.warn(`${what}: udev did not complete cookie ${hex} within ${timeoutMs} ms`);
      }
    } catch (e) {
      this.opts.warn(`${what}: waiting for udev cookie ${hex} failed: ${(e as Error).message}`);
    }
  }

  private semaphores(): SemaphoreOps {
    const sem = this.opts.semaphores;
    if (!sem) throw new Error('no semaphores');
    return sem;
  }
}
