/**
 * The dmsetup habits of issue 12 on the host: the report engine (formats checked against dmsetup's own
 * output, see test/vm/cli-parity.test.ts for the live comparison), splitname, the concise format,
 * ls --tree, the udev cookie verbs, and several devices per command through the fake device-mapper.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  conciseDevice,
  cookieSemaphores,
  lsTree,
  parseConcise,
  parseReadAhead,
  parseAgeMinutes,
  parseCookie,
  udevComplete,
  udevCompleteAll,
  udevCompleteAllDone,
  udevCompleteAllWarning,
  udevcookiesText,
  udevSyncActive,
  yesNoAnswer,
  type CookieOps,
} from '../../src/cli/compat';
import { ExitCode } from '../../src/cli/errors';
import { renderReport, splitName, SPLITNAME_DEFAULT, SPLITNAME_FIELDS } from '../../src/cli/report';
import { calls, FakeDm, run } from './cli-fake.test';

describe('splitname and the report format (dmsetup 1.02.185 output)', () => {
  const report = (name: string, o = {}, subsystem?: string): string => renderReport([splitName(name, subsystem)], SPLITNAME_FIELDS, SPLITNAME_DEFAULT, o);

  test('aligned columns: field widths, every column padded', () => {
    assert.equal(report('vg-lv'), 'VG   LV   LVLayer\nvg   lv          \n');
    assert.equal(report('vg--x-lv-y'), 'VG   LV   LVLayer\nvg-x lv   y      \n');
    assert.equal(report('averyveryverylongvgname-lv'), 'VG                      LV   LVLayer\naveryveryverylongvgname lv          \n');
    assert.equal(report('a---b'), 'VG   LV   LVLayer\na-   b           \n');
    assert.equal(report('a-'), 'VG   LV   LVLayer\na-               \n');
    assert.equal(report('a-b', {}, 'XYZ'), 'VG   LV   LVLayer\n                 \n');
  });

  test('--noheadings (":" and no alignment), --separator, -o, --nameprefixes, -S', () => {
    assert.equal(report('vg-lv', { headings: false }), 'vg:lv:\n');
    assert.equal(report('vg-lv', { separator: ',' }), 'VG,LV,LVLayer\nvg,lv,\n');
    assert.equal(report('vg-lv', { headings: false, separator: ',' }), 'vg,lv,\n');
    assert.equal(report('vg-lv', { fields: 'lv_name,vg_name' }), 'LV   VG  \nlv   vg  \n');
    assert.equal(report('vg-lv-x', { fields: 'subsystem,vg_name' }), 'Subsys VG  \nLVM    vg  \n');
    assert.equal(report('a-b', { namePrefixes: true }), "VG LV LVLayer\nDM_VG_NAME='a' DM_LV_NAME='b' DM_LV_LAYER=''\n");
    assert.equal(report('a-b', { select: 'vg_name=a' }), 'VG   LV   LVLayer\na    b           \n');
    assert.equal(report('a-b', { select: 'vg_name=b' }), '', 'no row, no headings');
  });

  test('numbers right-aligned under left-aligned headings; -O sorts, - descending; -S with && || ! ()', () => {
    const rows = [
      { n: 'pb', v: 2 },
      { n: 'pa', v: 10 },
    ];
    const fields = [
      { id: 'name', heading: 'Name', width: 4, get: (r: { n: string }) => r.n },
      { id: 'events', heading: 'Event', width: 6, numeric: true, get: (r: { v: number }) => r.v },
    ];
    assert.equal(renderReport(rows, fields, ['name', 'events'], { sort: 'name' }), 'Name Event \npa       10\npb        2\n');
    assert.equal(renderReport(rows, fields, ['name', 'events'], { sort: '-events' }), 'Name Event \npa       10\npb        2\n');
    assert.equal(renderReport(rows, fields, ['name', 'events'], { sort: 'events' }), 'Name Event \npb        2\npa       10\n');
    assert.equal(renderReport(rows, fields, ['name'], { select: '!(events>5) || name=~^x' }), 'Name\npb  \n');
    assert.throws(() => renderReport(rows, fields, ['name'], { fields: 'nope' }), /unrecognised field/);
    assert.throws(() => renderReport(rows, fields, ['name'], { select: 'events>x' }), /needs a number/);
    assert.throws(() => renderReport(rows, fields, ['name'], { select: 'name=' }), /ends early/);
  });

  test('dmkit splitname runs without root or device-mapper', async () => {
    const r = await run(['splitname', 'vg--x-lv-y'], { uid: 1000 });
    assert.equal(r.code, 0);
    assert.equal(r.out, 'VG   LV   LVLayer\nvg-x lv   y      \n');
    assert.equal(r.opened, 0);
  });
});

describe('the concise format', () => {
  test('round trip with escapes, ro/rw, empty uuid and minor', () => {
    const specs = parseConcise('cx,,,rw,0 2048 zero;cy,UU-Y,7,ro,0 1024 zero,1024 1024 error;a\\,b,u\\;v,,rw,0 8 zero');
    assert.deepEqual(
      specs.map((s) => [s.name, s.uuid, s.minor, s.readOnly, s.targets.map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`)]),
      [
        ['cx', undefined, undefined, false, ['0 2048 zero ']],
        ['cy', 'UU-Y', 7, true, ['0 1024 zero ', '1024 1024 error ']],
        ['a,b', 'u;v', undefined, false, ['0 8 zero ']],
      ],
    );
    assert.equal(conciseDevice('a,b', '', 3, false, ['0 8 zero ']), 'a\\,b,,3,rw,0 8 zero ');
    for (const bad of ['', 'x,,,rw', 'x,,,xx,0 8 zero', 'x,,q,rw,0 8 zero', 'x,,,rw,nonsense']) assert.throws(() => parseConcise(bad), bad);
  });

  test('create --concise makes every device; table --concise prints them', async () => {
    const dm = new FakeDm();
    const r = await run(['create', '--concise', 'cx,,,rw,0 2048 zero;cy,UU-Y,,ro,0 1024 zero,1024 1024 error'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(calls(dm, 'create').map((c) => c.args[0]), ['cx', 'cy']);
    const t = await run(['table', '--concise'], { dm });
    assert.equal(t.code, 0, t.err);
    assert.match(t.out, /^cx,,\d+,rw,0 2048 zero ;cy,UU-Y,\d+,ro,0 1024 zero ,1024 1024 error \n$/);
  });
});

describe('ls --tree', () => {
  test('devices used by others nest under them; leaves are maj:min', () => {
    const devs = [
      { name: 'pa', dev: { major: 254, minor: 0 }, deps: [{ major: 1, minor: 0 }] },
      { name: 'pb', dev: { major: 254, minor: 1 }, deps: [{ major: 1, minor: 1 }, { major: 1, minor: 2 }] },
      { name: 'pc', dev: { major: 254, minor: 2 }, deps: [{ major: 254, minor: 0 }] },
    ];
    // The nesting as dmsetup 1.02.185 prints it (test/vm/cli-parity.test.ts compares it live).
    assert.deepEqual(lsTree(devs, true), ['pb (254:1)', ' |- (1:1)', ' `- (1:2)', 'pc (254:2)', ' `-pa (254:0)', '    `- (1:0)']);
    assert.equal(lsTree(devs, false)[2], ' └─ (1:2)');
  });
});

describe('several devices per command, -j/-m, and the other options', () => {
  const three = (): FakeDm => {
    const dm = new FakeDm();
    for (const n of ['a', 'b', 'c']) dm.add(n);
    return dm;
  };

  test("-v: create, load, suspend, resume and clear print each device's info block, as dmsetup -v does", async () => {
    const dm = three();
    const noEvents = (text: string): string => text.replace(/^Event number: .*\n/gm, '');
    const info = noEvents((await run(['info', 'a', 'b'], { dm })).out);
    assert.equal(noEvents((await run(['-v', 'suspend', 'a', 'b'], { dm })).out), info.replace(/ACTIVE/g, 'SUSPENDED'));
    assert.equal(noEvents((await run(['-v', 'resume', 'a', 'b'], { dm })).out), info);
    assert.equal((await run(['suspend', 'a'], { dm })).out, '', 'nothing without -v');
    await run(['resume', 'a'], { dm });
    const made = await run(['-v', 'create', 'n', '--table', '0 8 zero'], { dm });
    assert.equal(made.out, (await run(['info', 'n'], { dm })).out);
    assert.match((await run(['-v', 'load', 'n', '--table', '0 8 error'], { dm })).out, /^Name: {14}n\n[^]*Tables present:    LIVE & INACTIVE\n[^]*\n\n$/);
    assert.match((await run(['-v', 'clear', 'n'], { dm })).out, /Tables present:    LIVE\n/);
  });

  test('suspend/resume/remove A B C, in order, stopping at the first failure', async () => {
    const dm = three();
    assert.equal((await run(['suspend', 'a', 'b'], { dm })).code, 0);
    assert.deepEqual(calls(dm, 'suspend').map((c) => (c.args[0] as { name: string }).name), ['a', 'b']);
    assert.equal((await run(['resume', '--noflush', '--nolockfs', 'a', 'b'], { dm })).code, 0);
    assert.deepEqual(calls(dm, 'resume').map((c) => (c.args[0] as { name: string }).name), ['a', 'b']);
    const rm = await run(['remove', 'a', 'nosuch', 'c'], { dm });
    assert.equal(rm.code, ExitCode.NOT_FOUND);
    assert.deepEqual([...dm.devices.keys()], ['b', 'c']);
  });

  test('-j/-m finds the device by number; -m alone is a usage error', async () => {
    const dm = three();
    const b = dm.devices.get('b')!;
    const r = await run(['info', '-j', '253', '-m', String(b.minor)], { dm });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^Name: {14}b\n/);
    assert.equal((await run(['info', '-m', '1'], { dm })).code, ExitCode.USAGE);
    assert.equal((await run(['remove', '-j', '253', '-m', '99'], { dm })).code, ExitCode.NOT_FOUND);
  });

  test('wipe_table loads an error table of the same size and resumes', async () => {
    const dm = three();
    assert.equal((await run(['wipe_table', 'a'], { dm })).code, 0);
    const load = calls(dm, 'load')[0]!;
    assert.deepEqual((load.args[1] as Array<{ type: string; length: bigint }>).map((t) => [t.type, t.length]), [['error', 8n]]);
    assert.equal(calls(dm, 'resume').length, 1);
  });

  test('info -c and its options through the fake', async () => {
    const dm = three();
    const r = await run(['info', '-c', '-o', 'name,attr,open', '-O', '-name', '--noheadings'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'c:L--w:0\nb:L--w:0\na:L--w:0\n');
    assert.equal((await run(['info', '-c', '-S', 'name=b', '-o', 'name'], { dm })).out, 'Name            \nb               \n');
  });

  test('--readahead, -U/-G/-M and --udevcookie are checked before anything is opened', async () => {
    for (const args of [
      ['create', 'x', '--readahead', 'lots', '--table', '0 8 zero'],
      ['create', 'x', '-M', '999', '--table', '0 8 zero'],
      ['create', 'x', '-U', 'root', '--table', '0 8 zero'],
      ['--udevcookie', 'abc', 'info', 'x'],
    ]) {
      const r = await run(args, { uid: 1000 });
      assert.equal(r.code, ExitCode.USAGE, args.join(' '));
      assert.equal(r.opened, 0);
    }
    assert.deepEqual(parseReadAhead('+256'), { kind: 'atLeast', sectors: 256 });
    assert.deepEqual(parseReadAhead('none'), { kind: 'set', sectors: 0 });
  });

  test('--udevcookie and --noudevrules reach resume/remove as udev options', async () => {
    const dm = three();
    await run(['--udevcookie', '0x0d4d1234', 'resume', 'a'], { dm });
    assert.deepEqual(calls(dm, 'resume')[0]!.args[1], { noflush: false, nolockfs: false, udevCookie: 0x0d4d1234 });
    await run(['--noudevrules', 'remove', 'b'], { dm });
    assert.equal((calls(dm, 'remove')[0]!.args[1] as { udevFlags?: number }).udevFlags, 3);
  });
});

describe('udev cookie verbs', () => {
  const proc = [
    '       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime',
    ' 223154740      32768   600          1     0     0     0     0          0 1700000000',
    ' 223154741      32769   600          1     0     0     0     0 1700000100 1700000000',
    '  12345678      32770   600          1     0     0     0     0          0 1700000000',
  ].join('\n');

  test('only semaphores with the 0x0d4d prefix are cookies', () => {
    const sems = cookieSemaphores(proc);
    assert.deepEqual(sems.map((s) => [s.key.toString(16), s.id]), [['d4d1234', 32768], ['d4d1235', 32769]]);
  });

  test('udevcomplete decrements the cookie (flags in the upper half ignored); udevcomplete_all honours the age', () => {
    const done: string[] = [];
    const ops: CookieOps = { semGetValue: () => 1, semAdd: (id, d) => void done.push(`add ${id} ${d}`), semRemove: (id) => void done.push(`rm ${id}`) };
    const sems = cookieSemaphores(proc);
    udevComplete('0x00201235', sems, ops);
    assert.throws(() => udevComplete('0x0d4d9999', sems, ops), /no semaphore/);
    assert.throws(() => udevComplete('zz', sems, ops), /bad cookie/);
    assert.deepEqual(udevCompleteAll('10', sems, ops, 1700000000 + 10 * 60), { removed: 1, skipped: 1 }); // only 32768 is 10 minutes old
    assert.deepEqual(done, ['add 32769 -1', 'rm 32768']);
  });

  test("udevcomplete does what dmsetup's does: nothing without udev sync, nothing for a flags-only cookie, EAGAIN at 0", () => {
    const done: string[] = [];
    let value = 1;
    const ops: CookieOps = {
      semGetValue: () => value,
      semAdd: (id, d) => {
        if (value + d < 0) throw Object.assign(new Error('semop: EAGAIN'), { code: 'EAGAIN', errno: 11 });
        value += d;
        done.push(`add ${id} ${d}`);
      },
      semRemove: (id) => void done.push(`rm ${id}`),
    };
    const sems = cookieSemaphores(proc);
    // --noudevsync, $DM_DISABLE_UDEV or no udev: libdm has no sync support, and dm_udev_complete returns at once.
    assert.equal(udevComplete('0x0d4d1234', sems, ops, false), false);
    assert.equal(udevComplete('0x0d4d9999', sems, ops, false), false, 'not even looked up');
    // A cookie whose lower half is 0 carries udev flags only.
    assert.equal(udevComplete('0x00200000', sems, ops, true), false);
    assert.deepEqual(done, []);
    assert.equal(udevComplete('223154740', sems, ops, true), true);
    assert.throws(() => udevComplete('0x0d4d1234', sems, ops, true), (e: Error & { code?: string; exit?: number }) => e.code === 'EAGAIN' && e.exit === 1 && /already at 0/.test(e.message));
    assert.throws(() => udevComplete('0x0d4d9999', sems, ops, true), (e: Error & { exit?: number }) => e.exit === 1 && /no semaphore for cookie 0xd4d9999/.test(e.message));
    assert.deepEqual(done, ['add 32768 -1']);
    assert.deepEqual(
      [udevSyncActive(true, {}, () => true), udevSyncActive(false, { DM_DISABLE_UDEV: '' }, () => true), udevSyncActive(false, {}, () => false), udevSyncActive(false, {}, () => true)],
      [false, false, false, true],
    );
  });

  test("cookies are read as dmsetup's strtoul(base 0) reads them", () => {
    assert.deepEqual(
      ['0x0d4d1234', '0X0D4D1234', '223154740', '01544432064', ' +5', '0', '-1', '0x', '12abc', '0x100000000', '4294967295', ''].map(parseCookie),
      [0x0d4d1234, 0x0d4d1234, 223154740, 0o1544432064, 5, undefined, undefined, undefined, undefined, undefined, 4294967295, undefined],
    );
  });

  test('udevcookies prints ctime(3) for both times, the epoch too; udevcomplete_all counts what it skipped', () => {
    const old = process.env.TZ;
    process.env.TZ = 'UTC';
    try {
      const lines = udevcookiesText(cookieSemaphores(proc), () => 1);
      assert.deepEqual(lines, [
        'Cookie       Semid      Value      Last semop time           Last change time',
        '0xd4d1234    32768      1          Thu Jan  1 00:00:00 1970  Tue Nov 14 22:13:20 2023',
        '0xd4d1235    32769      1          Tue Nov 14 22:15:00 2023  Tue Nov 14 22:13:20 2023',
      ]);
    } finally {
      if (old === undefined) delete process.env.TZ;
      else process.env.TZ = old;
    }
    assert.equal(udevCompleteAllDone({ removed: 2, skipped: 1 }), '2 semaphores with keys prefixed by 3405 (0xd4d) destroyed. 1 skipped.');
    assert.equal(udevCompleteAllWarning(0), 'WARNING: This operation will destroy all semaphores with keys that have a prefix 3405 (0xd4d).');
    assert.equal(udevCompleteAllWarning(5), 'WARNING: This operation will destroy all semaphores older than 5 minutes with keys that have a prefix 3405 (0xd4d).');
    assert.deepEqual(['5', ' 7x', '+3'].map(parseAgeMinutes), [5, 7, 3]);
    assert.throws(() => parseAgeMinutes('abc'), /bad age/);
  });

  test("udevcomplete_all's prompt reads stdin as dmsetup's does", () => {
    assert.deepEqual(yesNoAnswer('y\n'), { yes: true, newline: false });
    assert.deepEqual(yesNoAnswer('n\n'), { yes: false, newline: false });
    assert.deepEqual(yesNoAnswer('\nyes\n'), { yes: true, newline: false });
    assert.deepEqual(yesNoAnswer('y'), { yes: false, newline: true }, 'input that ends before the line does is a no');
    assert.deepEqual(yesNoAnswer(''), { yes: false, newline: true });
  });
});
