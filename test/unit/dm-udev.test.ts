import { semaphoreIdByKey } from '../../src/dm/system';
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { endianness } from 'node:os';
import { describe, test } from 'node:test';
import {
  cookieEventNr,
  decodeCookieEventNr,
  DeviceMapper,
  DmCommand,
  DmFlag,
  loadNative,
  makeCookie,
  UdevCookie,
  UdevFlag,
  UdevSync,
} from '../../src/dm';
import { sectors } from '../../src/units';
import { errnoError, fakeSystem, FakeKernel, FakeSemaphores, reply, type Call } from './dm-fakes';

describe('cookie and event_nr encoding', () => {
  test('udev flag values match libdm-common.h', () => {
    assert.deepEqual(UdevFlag, {
      DISABLE_DM_RULES: 0x01,
      DISABLE_SUBSYSTEM_RULES: 0x02,
      DISABLE_DISK_RULES: 0x04,
      DISABLE_OTHER_RULES: 0x08,
      LOW_PRIORITY: 0x10,
      DISABLE_LIBRARY_FALLBACK: 0x20,
      PRIMARY_SOURCE: 0x40,
      SUBSYSTEM_0: 0x100,
      SUBSYSTEM_1: 0x200,
      SUBSYSTEM_2: 0x400,
      SUBSYSTEM_3: 0x800,
      SUBSYSTEM_4: 0x1000,
      SUBSYSTEM_5: 0x2000,
      SUBSYSTEM_6: 0x4000,
      SUBSYSTEM_7: 0x8000,
    });
  });

  test('cookies carry 0x0D4D above 16 non-zero random bits', () => {
    assert.equal(makeCookie(0x1234), 0x0d4d1234);
    assert.equal(makeCookie(0xffff), 0x0d4dffff);
    for (const bad of [0, 0x10000, -1, 1.5]) assert.throws(() => makeCookie(bad), RangeError);
  });

  test('event_nr = flags << 16 | cookie & 0xFFFF, and udevflags/udevcomplete read it back', () => {
    assert.equal(cookieEventNr(0x0d4d1234, UdevFlag.PRIMARY_SOURCE), 0x00401234);
    const flags = UdevFlag.PRIMARY_SOURCE | UdevFlag.DISABLE_DISK_RULES | UdevFlag.SUBSYSTEM_7;
    const eventNr = cookieEventNr(0x0d4dbeef, flags);
    assert.equal(eventNr, 0x8044beef);
    assert.deepEqual(decodeCookieEventNr(eventNr), { flags, cookie: 0x0d4dbeef });
    assert.throws(() => cookieEventNr(0x0d4d0001, 0x10000), { code: 'ERR_DM_INVALID_ARGUMENT' });
  });
});

describe('UdevCookie', () => {
  test('create: semget with the cookie key, SETVAL 1, +1; EEXIST picks another cookie', () => {
    const sem = new FakeSemaphores();
    sem.taken.add(0x0d4d0001);
    const bits = [1, 2];
    const cookie = UdevCookie.create(sem, () => bits.shift()!);
    assert.equal(cookie.cookie, 0x0d4d0002);
    assert.deepEqual(sem.log, ['create 0xd4d0002', 'set 1', 'add 1']);
    assert.equal(sem.semGetValue(1), 2);
    assert.equal(cookie.eventNr(UdevFlag.DISABLE_DM_RULES), 0x00410002);
  });

  test('create gives up after 16 taken keys', () => {
    const sem = new FakeSemaphores();
    let n = 0;
    for (let i = 1; i <= 16; i++) sem.taken.add(makeCookie(i));
    assert.throws(() => UdevCookie.create(sem, () => ++n), { code: 'EEXIST' });
    assert.equal(n, 16);
  });

  test('a semaphore that cannot be initialised is removed again', () => {
    const sem = new FakeSemaphores();
    sem.semSetValue = () => {
      throw errnoError('EPERM', 1, 'semctl');
    };
    assert.throws(() => UdevCookie.create(sem, () => 7), { code: 'EPERM' });
    assert.equal(sem.values.size, 0);
  });

  test('uevent generated: one decrement of our own, udev does the other, then IPC_RMID', async () => {
    const sem = new FakeSemaphores();
    const cookie = UdevCookie.create(sem, () => 9);
    assert.equal(await cookie.complete(true, 1000), true);
    assert.deepEqual(sem.log.slice(3), ['add -1', 'wait 1000', 'add -1', 'remove']);
  });

  test('no uevent: we decrement for udev too, so the wait ends at once', async () => {
    const sem = new FakeSemaphores();
    sem.udev = () => assert.fail('udev must not be needed');
    const cookie = UdevCookie.create(sem, () => 9);
    assert.equal(await cookie.complete(false, 1000), true);
    assert.deepEqual(sem.log.slice(3), ['add -1', 'add -1', 'wait 1000', 'remove']);
  });

  test('udev never answering: the wait times out (false) and the semaphore is still removed', async () => {
    const sem = new FakeSemaphores();
    sem.udev = () => undefined;
    const cookie = UdevCookie.create(sem, () => 9);
    assert.equal(await cookie.complete(true, 5), false);
    assert.equal(sem.values.size, 0);
  });
});

describe('UdevSync activation', () => {
  const sync = (mode: 'auto' | 'off', running: boolean, semaphores = true): UdevSync =>
    new UdevSync({
      mode,
      semaphores: semaphores ? new FakeSemaphores() : undefined,
      exists: (p) => running && p === '/run/udev/control',
      warn: () => undefined,
    });

  test('active only with /run/udev/control, semaphores and mode auto', () => {
    assert.equal(sync('auto', true).active(), true);
    assert.equal(sync('auto', false).active(), false);
    assert.equal(sync('off', true).active(), false);
    assert.equal(sync('auto', true, false).active(), false);
  });
});

const leOnly = { skip: endianness() !== 'LE' && 'big-endian host' };

describe('DeviceMapper with udev running', leOnly, () => {
  const generated = (c: Call): Buffer =>
    reply(c, { name: 'vol', dev: 0xfd03n, flags: c.header.flags | DmFlag.UEVENT_GENERATED });

  const setup = (handler: (c: Call) => Buffer | Error = generated, opts: { udev?: 'auto' | 'off' } = {}) => {
    const system = fakeSystem();
    system.udevRunning = true;
    const warnings: string[] = [];
    const k = new FakeKernel(handler);
    const dm = new DeviceMapper(k, { system, warn: (m) => warnings.push(m), udevTimeoutMs: 250, ...opts });
    return { system, sem: system.semaphores, k, dm, warnings };
  };

  test('resume, remove, rename and setUuid carry a cookie with PRIMARY_SOURCE and wait for udev', async () => {
    const { sem, k, dm } = setup();
    await dm.resume({ name: 'vol' }, { udevFlags: UdevFlag.DISABLE_OTHER_RULES });
    await dm.remove({ name: 'vol' });
    await dm.rename({ name: 'vol' }, 'vol2');
    await dm.setUuid({ name: 'vol2' }, 'U-1');
    assert.deepEqual(k.calls.map((c) => c.command), [
      DmCommand.DEV_SUSPEND,
      DmCommand.DEV_REMOVE,
      DmCommand.DEV_RENAME,
      DmCommand.DEV_RENAME,
    ]);
    const [resume, ...rest] = k.calls.map((c) => decodeCookieEventNr(c.header.eventNr));
    assert.equal(resume!.flags, UdevFlag.PRIMARY_SOURCE | UdevFlag.DISABLE_OTHER_RULES);
    for (const r of rest) assert.equal(r.flags, UdevFlag.PRIMARY_SOURCE);
    const keys = [...sem.keys.values()];
    assert.deepEqual(k.calls.map((c) => decodeCookieEventNr(c.header.eventNr).cookie), keys);
    assert.equal(sem.values.size, 0, 'every semaphore removed');
    assert.equal(sem.log.filter((l) => l.startsWith('wait')).length, 4);
  });

  test('udev makes the nodes, so dmkit does not', async () => {
    const { system, dm } = setup();
    await dm.create('vol', { targets: [{ start: sectors(0), length: sectors(8), type: 'error', params: '' }] });
    assert.deepEqual(system.nodeFs.log, []);
    assert.equal(dm.udevSyncActive, true);
  });

  test('suspend, create and load take no cookie', async () => {
    const { sem, k, dm } = setup();
    await dm.suspend({ name: 'vol' });
    await dm.create('vol');
    await dm.load({ name: 'vol' }, [{ start: sectors(0), length: sectors(8), type: 'error', params: '' }]);
    assert.deepEqual(k.calls.map((c) => c.header.eventNr), [0, 0, 0]);
    assert.deepEqual(sem.log, []);
  });

  test('no uevent in the reply: dmkit decrements for udev and does not hang', async () => {
    const { sem, dm } = setup((c) => reply(c, { name: 'vol', dev: 0xfd03n }));
    sem.udev = () => assert.fail('no uevent, so udev never runs');
    const info = await dm.resume({ name: 'vol' });
    assert.equal(info.flags.ueventGenerated, false);
    assert.equal(sem.values.size, 0);
  });

  test('a failed ioctl drops the semaphore and reports the kernel error', async () => {
    const { sem, dm } = setup(() => errnoError('ENXIO', 6));
    await assert.rejects(dm.remove({ name: 'gone' }), { code: 'ENXIO' });
    assert.deepEqual(sem.log.at(-1), 'remove');
    assert.equal(sem.values.size, 0);
  });

  test('udev timing out is a warning; the command result stands', async () => {
    const { sem, dm, warnings } = setup();
    sem.udev = () => undefined;
    assert.deepEqual(await dm.remove({ name: 'vol' }), { deferred: false, ueventGenerated: true });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^remove: udev did not complete cookie 0x0d4d[0-9a-f]{4} within 250 ms$/);
    assert.equal(sem.values.size, 0);
  });

  test('no SysV semaphores: a warning, and the command runs without a cookie', async () => {
    const { sem, k, dm, warnings } = setup();
    sem.createError = errnoError('ENOSYS', 38, 'semget');
    await dm.resume({ name: 'vol' });
    assert.equal(k.calls[0]!.header.eventNr, 0);
    assert.match(warnings[0]!, /^resume: no udev cookie \(ENOSYS/);
  });

  test("udev: 'off' and a caller's own cookie skip dmkit's sync", async () => {
    const off = setup(generated, { udev: 'off' });
    await off.dm.resume({ name: 'vol' });
    assert.equal(off.k.calls[0]!.header.eventNr, 0);
    assert.deepEqual(off.sem.log, []);
    assert.deepEqual(off.system.nodeFs.log, ['mkdir /dev/mapper', 'mknod /dev/mapper/vol 253:3'], 'off: dmkit makes nodes');
  });

  test("a caller's cookie (dmsetup --udevcookie) is counted on as libdm does, and nobody waits", async () => {
    const own = setup();
    const id = own.sem.semCreate(0x0d4d4242);
    own.sem.semSetValue(id, 1);
    await own.dm.rename({ name: 'vol' }, 'b', { udevCookie: 0x0d4d4242, udevFlags: UdevFlag.DISABLE_DM_RULES });
    assert.equal(own.k.calls[0]!.header.eventNr, ((UdevFlag.PRIMARY_SOURCE | UdevFlag.DISABLE_DM_RULES) << 16 | 0x4242) >>> 0);
    assert.equal(own.sem.values.get(id), 2, 'counted; udev (not dmkit) completes it');
    assert.equal(own.sem.log.filter((l) => l.startsWith('wait')).length, 0);
    // No uevent in the reply (resume of a device that was not suspended): dmkit completes it at once.
    const quiet = setup((c) => reply(c, { name: 'vol', dev: 0xfd03n }));
    const qid = quiet.sem.semCreate(0x0d4d4243);
    quiet.sem.semSetValue(qid, 1);
    await quiet.dm.resume({ name: 'vol' }, { udevCookie: 0x0d4d4243 });
    assert.equal(quiet.sem.values.get(qid), 1);
    // A failed ioctl completes it too.
    const failed = setup(() => errnoError('ENXIO', 6));
    const fid = failed.sem.semCreate(0x0d4d4244);
    failed.sem.semSetValue(fid, 1);
    await assert.rejects(failed.dm.remove({ name: 'gone' }, { udevCookie: 0x0d4d4244 }), { code: 'ENXIO' });
    assert.equal(failed.sem.values.get(fid), 1);
    // No semaphore, or no 0x0d4d prefix: refused before any ioctl (libdm fails the same way).
    const none = setup();
    await assert.rejects(none.dm.resume({ name: 'vol' }, { udevCookie: 0x0d4d9999 }), { code: 'ENOENT' });
    await assert.rejects(none.dm.resume({ name: 'vol' }, { udevCookie: 123 }), { code: 'ERR_DM_INVALID_ARGUMENT' });
    assert.equal(none.k.calls.length, 0);
    // Sync off: the cookie means nothing; only the flags (and PRIMARY_SOURCE) reach the kernel.
    const off = setup(generated, { udev: 'off' });
    await off.dm.resume({ name: 'vol' }, { udevCookie: 0x0d4d4242, udevFlags: UdevFlag.DISABLE_DM_RULES });
    assert.equal(off.k.calls[0]!.header.eventNr, ((UdevFlag.PRIMARY_SOURCE | UdevFlag.DISABLE_DM_RULES) << 16) >>> 0);
    assert.deepEqual(off.sem.log, []);
  });

  test('udev flags are checked before any ioctl', async () => {
    const { k, dm } = setup();
    await assert.rejects(dm.resume({ name: 'vol' }, { udevFlags: 0x10000 }), { code: 'ERR_DM_INVALID_ARGUMENT' });
    await assert.rejects(dm.remove({ name: 'vol' }, { udevFlags: -1 }), { code: 'ERR_DM_INVALID_ARGUMENT' });
    assert.equal(k.calls.length, 0);
  });
});

describe('native semaphores, mknod and poll (argument checks and real calls)', () => {
  const native = loadNative();
  const call = (f: unknown, ...args: unknown[]): unknown => (f as (...a: unknown[]) => unknown)(...args);

  test('a semaphore through its whole life', async (t) => {
    let id: number | undefined;
    let key = 0;
    for (let i = 0; i < 32 && id === undefined; i++) {
      key = makeCookie(0xf000 + Math.floor(Math.random() * 0x0fff));
      try {
        id = native.semCreate(key);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'ENOSYS') return t.skip('no SysV IPC here');
        if (code !== 'EEXIST') throw e;
      }
    }
    assert.ok(id !== undefined);
    try {
      assert.throws(() => native.semCreate(key), { code: 'EEXIST', syscall: 'semget' });
      native.semSetValue(id, 1);
      native.semAdd(id, 1);
      assert.equal(native.semGetValue(id), 2);
      assert.equal(await native.semWaitZero(id, 20), false, 'times out while non-zero');
      native.semAdd(id, -2);
      assert.throws(() => native.semAdd(id!, -1), { code: 'EAGAIN', errno: 11 });
      assert.equal(await native.semWaitZero(id, 1000), true);
    } finally {
      native.semRemove(id);
    }
    assert.throws(() => native.semGetValue(id), (e: unknown) => ['EINVAL', 'EIDRM'].includes((e as { code: string }).code));
  });

  test('semaphore arguments are checked', () => {
    assert.throws(() => call(native.semCreate, 0), RangeError, 'IPC_PRIVATE is refused');
    assert.throws(() => call(native.semCreate, 2 ** 32), RangeError);
    assert.throws(() => call(native.semCreate, '1'), TypeError);
    assert.throws(() => call(native.semSetValue, 0, 40000), RangeError);
    assert.throws(() => call(native.semAdd, 0, 0), RangeError);
    assert.throws(() => call(native.semWaitZero, -1, 10), RangeError);
    assert.throws(() => call(native.semWaitZero, 0, -5), RangeError);
    assert.throws(() => call(native.semRemove), TypeError);
  });

  test('mknod checks its arguments and reports errno with syscall and path', () => {
    const blk = 0o060600;
    assert.throws(() => call(native.sysMknod, '/tmp/x', 0o100600, 1, 1), RangeError, 'regular files are refused');
    assert.throws(() => call(native.sysMknod, '/tmp/x', blk | 0o170000000, 1, 1), RangeError);
    assert.throws(() => call(native.sysMknod, 'a\0b', blk, 1, 1), RangeError);
    assert.throws(() => call(native.sysMknod, '', blk, 1, 1), RangeError);
    assert.throws(() => call(native.sysMknod, '/tmp/x', blk, -1, 1), RangeError);
    assert.throws(() => call(native.sysMknod, 7, blk, 1, 1), TypeError);
    assert.throws(() => native.sysMknod('/nonexistent-dmkit/dir/node', blk, 7, 0), {
      code: 'ENOENT',
      errno: 2,
      syscall: 'mknod',
      path: '/nonexistent-dmkit/dir/node',
    });
  });

  test('pollReadable: timeout, readable, and the cancel fd winning', async () => {
    const watched = native.eventfdOpen();
    const cancel = native.eventfdOpen();
    try {
      assert.equal(await native.pollReadable(watched, cancel, 10), 'timeout');
      native.eventfdSignal(watched);
      assert.equal(await native.pollReadable(watched, cancel, 1000), 'readable');
      native.eventfdSignal(cancel);
      assert.equal(await native.pollReadable(watched, cancel, 1000), 'cancelled');
      assert.throws(() => call(native.pollReadable, watched, cancel, -1), RangeError);
      assert.throws(() => call(native.eventfdSignal, 'x'), TypeError);
    } finally {
      closeSync(watched);
      closeSync(cancel);
    }
  });
});

describe('semaphoreIdByKey', () => {
  test('finds a key in /proc/sysvipc/sem by the named columns', () => {
    const proc = [
      '       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime',
      ' 223154740      32768   600          1     0     0     0     0          0 1700000000',
      '        -1      32769   600          1     0     0     0     0          0 1700000000',
    ].join('\n');
    assert.equal(semaphoreIdByKey(0x0d4d1234, proc), 32768);
    assert.equal(semaphoreIdByKey(0xffffffff, proc), 32769, 'keys print signed');
    assert.equal(semaphoreIdByKey(0x0d4d1235, proc), undefined);
    assert.equal(semaphoreIdByKey(1, ''), undefined);
  });
});
