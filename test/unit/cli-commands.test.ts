import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CliError, ExitCode, exitCodeFor } from '../../src/cli/errors';
import { formatTable, parseTable } from '../../src/cli/table-text';
import { DmArgumentError, DmError } from '../../src/dm';
import { sectors } from '../../src/units';
import { calls, FakeDm, line, run } from './cli-fake.test';

describe('table text', () => {
  test('one dmsetup line', () => {
    assert.deepEqual(parseTable('0 2048 linear /dev/ram0 0', '--table'), [line('0 2048 linear /dev/ram0 0')]);
  });

  test('multi-line, comments, blank lines, CRLF and extra spaces', () => {
    const text = '# a comment\n0 8   zero\r\n\n  8 16 linear  /dev/ram0 0  \n';
    const t = parseTable(text, 'stdin');
    assert.deepEqual(t, [line('0 8 zero'), { ...line('8 16 linear x'), params: '/dev/ram0 0' }]);
    assert.equal(formatTable(t), '0 8 zero\n8 16 linear /dev/ram0 0');
  });

  test('bad lines are usage errors naming the line', () => {
    const bad = ['0 8', 'x 8 zero', '0 -8 zero', '0 8.5 zero', '0 99999999999999999999999 zero', '', '# only a comment'];
    for (const text of bad) {
      assert.throws(
        () => parseTable(text, 'f'),
        (e: unknown) => e instanceof CliError && e.exit === ExitCode.USAGE,
        text,
      );
    }
    assert.throws(() => parseTable('0 8 zero\nnope', 'f'), /f line 2/);
  });
});

describe('exit codes', () => {
  const dmErr = (code: string): DmError => new DmError('x', { code, errno: 1, command: 'DM_X' });
  test('one mapping', () => {
    assert.equal(exitCodeFor(dmErr('EIO')), ExitCode.FAILED);
    assert.equal(exitCodeFor(dmErr('EINVAL')), ExitCode.FAILED);
    assert.equal(exitCodeFor(dmErr('ENXIO')), ExitCode.NOT_FOUND);
    assert.equal(exitCodeFor(dmErr('EBUSY')), ExitCode.BUSY);
    assert.equal(exitCodeFor(dmErr('EACCES')), ExitCode.NOT_PERMITTED);
    assert.equal(exitCodeFor(dmErr('EPERM')), ExitCode.NOT_PERMITTED);
    assert.equal(exitCodeFor(new DmArgumentError('ERR_DM_INVALID_NAME', 'x')), ExitCode.USAGE);
    assert.equal(exitCodeFor(new RangeError('x')), ExitCode.USAGE);
    assert.equal(exitCodeFor(new TypeError('bug')), ExitCode.FAILED);
    assert.deepEqual(Object.values(ExitCode), [0, 1, 2, 3, 4, 5, 6]);
  });
});

describe('usage', () => {
  test('--help works as non-root and lists exit codes', async () => {
    const r = await run(['--help'], { uid: 1000 });
    assert.equal(r.code, 0);
    assert.match(r.out, /dmkit create \[name\]/);
    assert.match(r.out, /Exit status:\n  0  success/);
    assert.match(r.out, /3  not permitted/);
    assert.equal(r.opened, 0);
    const sub = await run(['status', '--help'], { uid: 1000 });
    assert.equal(sub.code, 0);
    assert.match(sub.out, /--noflush/);
  });

  test('no command, unknown command, unknown flag, missing argument: exit 2, one line, no throw', async () => {
    for (const args of [[], ['bogus'], ['status', '--bogus'], ['create'], ['rename'], ['targets', 'extra']]) {
      const r = await run(args);
      assert.equal(r.code, ExitCode.USAGE, args.join(' '));
      assert.match(r.err, /^dmkit: .*\(ERR_USAGE\)\n/, args.join(' '));
      assert.equal(r.opened, 0);
    }
  });

  test('bad arguments never throw out of the CLI', async () => {
    const nasty = [
      ['create', 'v', '--table'],
      ['create', 'v', '--table', 'garbage'],
      ['create', 'v', '--minor', '-1', '--table', '0 8 zero'],
      ['create', 'a/b', '--table', '0 8 zero'],
      ['message', 'v', 'x', 'hi'],
      ['message', 'v', '0'],
      ['wait', 'v', 'soon'],
      ['wait'],
      ['setgeometry', 'v', '1', '2'],
      ['setgeometry', 'v', '1', '2', '3', '-4'],
      ['status', 'v', '-u', 'U'],
      ['remove'],
      ['rename', 'v', 'w', '--setuuid', 'U'],
      ['load', 'v', '--table', '0 8 zero', '--table-file', 'f'],
      ['--json'],
      ['status', '--target'],
      ['target-version'],
    ];
    const dm = new FakeDm();
    dm.add('v');
    for (const args of nasty) {
      const r = await run(args, { dm });
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.err, /^dmkit: /, args.join(' '));
      assert.doesNotMatch(r.err, /\n\s+at /, args.join(' '));
    }
  });

  test('error line format and exit codes for ENXIO and EBUSY', async () => {
    const dm = new FakeDm();
    dm.add('open', ['0 8 zero'], { openCount: 1 });
    const missing = await run(['remove', 'nope'], { dm });
    assert.equal(missing.code, ExitCode.NOT_FOUND);
    assert.equal(missing.err, 'dmkit: remove: DM_DEV_REMOVE (nope) failed: ENXIO: simulated (ENXIO)\n');
    const busy = await run(['remove', 'open'], { dm });
    assert.equal(busy.code, ExitCode.BUSY);
    assert.match(busy.err, /^dmkit: remove: .*\(EBUSY\)\n$/);
    const badName = await run(['info', 'a/b'], { dm });
    assert.equal(badName.code, ExitCode.USAGE);
    assert.match(badName.err, /\(ERR_DM_INVALID_NAME\)/);
  });
});

describe('not root', () => {
  test('device-mapper commands refuse before opening the control device', async () => {
    const r = await run(['status', 'my vol', '--json'], { uid: 1000 });
    assert.equal(r.code, ExitCode.NOT_PERMITTED);
    assert.equal(r.err, "dmkit: device-mapper needs root; try sudo dmkit status 'my vol' --json\n");
    assert.equal(r.opened, 0);
    assert.deepEqual(JSON.parse(r.out), {
      error: { code: 'ERR_NOT_ROOT', errno: null, message: "status: device-mapper needs root; try sudo dmkit status 'my vol' --json" },
    });
  });

  test('EACCES opening control (root without CAP_SYS_ADMIN) gets the same message', async () => {
    const openError = Object.assign(new Error("EACCES: permission denied, open '/dev/mapper/control'"), { code: 'EACCES', errno: 13 });
    const r = await run(['ls'], { openError });
    assert.equal(r.code, ExitCode.NOT_PERMITTED);
    assert.match(r.err, /^dmkit: device-mapper needs root; try sudo dmkit ls\n$/);
  });

  test('no dm_mod: a clear failure, not "not found"', async () => {
    const openError = Object.assign(new Error("ENOENT: no such file or directory, open '/sys/class/misc/device-mapper/dev'"), {
      code: 'ENOENT',
      errno: 2,
    });
    const r = await run(['targets'], { openError });
    assert.equal(r.code, ExitCode.NO_DM);
    assert.match(r.err, /dm_mod module loaded/);
  });

  test('a missing addon is reported, not thrown', async () => {
    const r = await run(['targets'], { openError: new Error('dmkit.node not found above /x') });
    assert.equal(r.code, ExitCode.FAILED);
    assert.match(r.err, /^dmkit: targets: cannot open the device-mapper control device: dmkit.node not found/);
  });
});

describe('create and load', () => {
  test('create --table, -u, --readonly, --minor', async () => {
    const r = await run(['create', 'vol', '--table', '0 2048 linear /dev/ram0 0', '-u', 'DMKIT-1', '-r', '-m', '7']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '');
    const [c] = calls(r.dm, 'create');
    assert.deepEqual(c!.args, ['vol', { uuid: 'DMKIT-1', readOnly: true, minor: 7, targets: [line('0 2048 linear /dev/ram0 0')] }]);
    assert.ok(r.dm.closed);
  });

  test('multi-line table: repeated --table, embedded newlines, file, positional file, stdin', async () => {
    const want = [line('0 8 zero'), line('8 8 error')];
    const sources: Array<[string[], object]> = [
      [['--table', '0 8 zero', '--table', '8 8 error'], {}],
      [['--table', '0 8 zero\n8 8 error'], {}],
      [['--table-file', 't.txt'], { files: { 't.txt': '0 8 zero\n8 8 error\n' } }],
      [['t.txt'], { files: { 't.txt': '# x\n0 8 zero\n8 8 error' } }],
      [[], { stdin: '0 8 zero\n8 8 error\n' }],
      [['-'], { stdin: '0 8 zero\n8 8 error\n' }],
    ];
    for (const [extra, opts] of sources) {
      const r = await run(['create', 'vol', ...extra], opts);
      assert.equal(r.code, 0, `${extra.join(' ')}: ${r.err}`);
      const [c] = calls(r.dm, 'create');
      assert.deepEqual((c!.args[1] as { targets: unknown }).targets, want, extra.join(' '));
    }
  });

  test('no table on a terminal, a missing file, two sources, --notable with a table', async () => {
    const tty = await run(['create', 'vol']);
    assert.equal(tty.code, ExitCode.USAGE);
    assert.match(tty.err, /no table/);
    assert.equal(tty.opened, 0);
    const missing = await run(['create', 'vol', '--table-file', 'nope']);
    assert.equal(missing.code, ExitCode.NOT_FOUND);
    assert.match(missing.err, /\(ENOENT\)/);
    const two = await run(['create', 'vol', 'f', '--table', '0 8 zero']);
    assert.equal(two.code, ExitCode.USAGE);
    const both = await run(['create', 'vol', '--notable', '--table', '0 8 zero']);
    assert.equal(both.code, ExitCode.USAGE);
  });

  test('create --notable', async () => {
    const r = await run(['create', 'vol', '--notable']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(calls(r.dm, 'create')[0]!.args, ['vol', { uuid: undefined, readOnly: false, minor: undefined }]);
  });

  test('load/reload by name or -u (where the positional is the file)', async () => {
    const dm = new FakeDm();
    dm.add('vol', ['0 8 zero'], { uuid: 'U1' });
    const a = await run(['load', 'vol', '--table', '0 16 zero'], { dm });
    assert.equal(a.code, 0, a.err);
    const b = await run(['reload', '-u', 'U1', 'tbl'], { dm, files: { tbl: '0 32 zero' } });
    assert.equal(b.code, 0, b.err);
    const c = await run(['load', 'vol', '-r'], { dm, stdin: '0 64 error' });
    assert.equal(c.code, 0, c.err);
    assert.deepEqual(
      calls(dm, 'load').map((x) => x.args),
      [
        [{ name: 'vol' }, [line('0 16 zero')], { readOnly: false }],
        [{ uuid: 'U1' }, [line('0 32 zero')], { readOnly: false }],
        [{ name: 'vol' }, [line('0 64 error')], { readOnly: true }],
      ],
    );
  });
});

describe('lifecycle verbs', () => {
  test('suspend/resume/clear with flags and -u', async () => {
    const dm = new FakeDm();
    dm.add('vol', ['0 8 zero'], { uuid: 'U1' });
    assert.equal((await run(['suspend', 'vol', '--noflush', '--nolockfs'], { dm })).code, 0);
    assert.equal((await run(['resume', '-u', 'U1'], { dm })).code, 0);
    assert.equal((await run(['clear', 'vol'], { dm })).code, 0);
    assert.deepEqual(
      calls(dm, 'suspend', 'resume', 'clear').map((c) => [c.method, ...c.args]),
      [
        ['suspend', { name: 'vol' }, { noflush: true, nolockfs: true }],
        ['resume', { uuid: 'U1' }, { noflush: false, nolockfs: false }],
        ['clear', { name: 'vol' }],
      ],
    );
    const both = await run(['resume', 'vol', '-u', 'U1'], { dm });
    assert.equal(both.code, ExitCode.USAGE);
    assert.match(both.err, /NAME or as -u UUID, not both/);
  });

  test('remove --retry --deferred passes options; --deferred on an open device warns', async () => {
    const dm = new FakeDm();
    dm.add('vol');
    dm.add('busy', ['0 8 zero'], { openCount: 1 });
    assert.equal((await run(['remove', 'vol', '--retry'], { dm })).code, 0);
    const d = await run(['remove', 'busy', '--deferred'], { dm });
    assert.equal(d.code, 0);
    assert.match(d.err, /removed on last close/);
    assert.deepEqual(
      calls(dm, 'remove').map((c) => c.args[1]),
      [
        { retry: true, deferred: false },
        { retry: false, deferred: true },
      ],
    );
  });

  test('remove --force: error table of the same size, resume, then remove (as dmsetup)', async () => {
    const dm = new FakeDm();
    dm.add('vol', ['0 8 zero', '8 24 zero']);
    const r = await run(['remove', '-f', 'vol'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(
      dm.calls.filter((c) => c.method !== 'table').map((c) => c.method),
      ['load', 'resume', 'remove'],
    );
    assert.deepEqual(calls(dm, 'load')[0]!.args[1], [{ start: sectors(0), length: sectors(32), type: 'error', params: '' }]);
  });

  test('remove_all, and --force for what is left', async () => {
    const dm = new FakeDm();
    dm.add('a');
    dm.add('b', ['0 8 zero'], { openCount: 1 });
    const r = await run(['remove_all', '--force'], { dm });
    assert.equal(r.code, ExitCode.BUSY);
    assert.match(r.err, /unable to remove 1 device\(s\): b/);
    assert.deepEqual(calls(dm, 'load')[0]!.args[1], [line('0 8 error')]);
    const plain = await run(['remove_all'], { dm: new FakeDm() });
    assert.equal(plain.code, 0);
  });

  test('rename and --setuuid', async () => {
    const dm = new FakeDm();
    dm.add('old');
    assert.equal((await run(['rename', 'old', 'new'], { dm })).code, 0);
    assert.equal((await run(['rename', 'new', '--setuuid', 'U9'], { dm })).code, 0);
    assert.equal(dm.devices.get('new')!.uuid, 'U9');
    const again = await run(['rename', 'new', '--setuuid', 'U10'], { dm });
    assert.equal(again.code, ExitCode.FAILED);
    assert.match(again.err, /\(EINVAL\)/);
    assert.equal((await run(['rename', 'new'], { dm })).code, ExitCode.USAGE);
  });

  test('setgeometry by name and by uuid', async () => {
    const dm = new FakeDm();
    dm.add('vol', ['0 8 zero'], { uuid: 'U' });
    assert.equal((await run(['setgeometry', 'vol', '1024', '255', '63', '0'], { dm })).code, 0);
    assert.equal((await run(['setgeometry', '-u', 'U', '1', '2', '3', '4'], { dm })).code, 0);
    assert.deepEqual(
      calls(dm, 'setGeometry').map((c) => c.args),
      [
        [{ name: 'vol' }, { cylinders: 1024, heads: 255, sectors: 63, start: sectors(0) }],
        [{ uuid: 'U' }, { cylinders: 1, heads: 2, sectors: 3, start: sectors(4) }],
      ],
    );
    assert.equal((await run(['setgeometry', 'vol', '70000', '1', '1', '0'], { dm })).code, ExitCode.USAGE);
  });

  test('mknodes: all devices or one, silent unless --json', async () => {
    const dm = new FakeDm();
    dm.add('vol');
    const r = await run(['mknodes'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '');
    const j = await run(['mknodes', 'vol', '--json'], { dm });
    assert.deepEqual(JSON.parse(j.out), { created: ['vol'], replaced: [], removed: [] });
    assert.deepEqual(calls(dm, 'mknodes').map((c) => c.args[0]), [undefined, 'vol']);
  });
});

describe('queries: text like dmsetup', () => {
  const twoDevices = (): FakeDm => {
    const dm = new FakeDm();
    dm.add('b', ['0 8 zero', '8 8 error']);
    dm.add('a', ['0 2048 linear 7:0 0'], { uuid: 'UA', deps: [{ major: 7, minor: 0 }] });
    dm.statusText = { linear: '', zero: '' };
    return dm;
  };

  test('status and table: one device plain, all devices prefixed by name, --target filters', async () => {
    const dm = twoDevices();
    assert.equal((await run(['table', 'b'], { dm })).out, '0 8 zero \n8 8 error \n');
    assert.equal((await run(['table'], { dm })).out, 'a: 0 2048 linear 7:0 0\nb: 0 8 zero \nb: 8 8 error \n');
    assert.equal((await run(['status', '--target', 'error'], { dm })).out, 'b: 8 8 error \n');
    assert.equal((await run(['status', 'b', '--target', 'zero'], { dm })).out, '0 8 zero \n');
    assert.equal((await run(['status'], { dm: new FakeDm() })).out, 'No devices found\n');
    const flags = await run(['status', 'b', '--inactive', '--noflush'], { dm });
    assert.equal(flags.code, 0);
    assert.deepEqual(calls(dm, 'status').at(-1)!.args[1], { inactive: true, noflush: true });
  });

  test('table hides crypt keys unless --showkeys', async () => {
    const dm = new FakeDm();
    dm.add('c', ['0 8 crypt aes-xts-plain64 abcdef0123 0 7:0 0']);
    assert.equal((await run(['table', 'c'], { dm })).out, '0 8 crypt aes-xts-plain64 0000000000 0 7:0 0\n');
    assert.equal((await run(['table', 'c', '--showkeys'], { dm })).out, '0 8 crypt aes-xts-plain64 abcdef0123 0 7:0 0\n');
  });

  test('info, ls, deps, targets, target-version, version', async () => {
    const dm = twoDevices();
    const info = await run(['info', 'a'], { dm });
    assert.equal(
      info.out,
      [
        'Name:              a',
        'State:             ACTIVE',
        'Tables present:    LIVE',
        'Open count:        0',
        'Event number:      0',
        'Major, minor:      253, 1',
        'Number of targets: 1',
        'UUID: UA',
        '', // dmsetup ends each device's block with an empty line
        '',
      ].join('\n'),
    );
    assert.match((await run(['info'], { dm })).out, /Name: {14}a\n[^]*\n\nName: {14}b\n/);
    assert.equal((await run(['ls'], { dm })).out, 'a\t(253:1)\nb\t(253:0)\n');
    assert.equal((await run(['ls', '--target', 'error'], { dm })).out, 'b\t(253, 0)\n'); // dmsetup's --target form
    assert.equal((await run(['deps', 'a'], { dm })).out, '1 dependencies\t: (7, 0)\n');
    assert.equal((await run(['deps'], { dm })).out, 'a: 1 dependencies\t: (7, 0)\nb: 0 dependencies\t:\n');
    assert.equal((await run(['targets'], { dm })).out, 'linear           v1.4.0\nera              v1.2.0\ndmkit-era        v1.0.0\n');
    assert.equal((await run(['target-version', 'era'], { dm })).out, 'era              v1.2.0\n');
    assert.match((await run(['version'], { dm })).out, /^dmkit version: {5}\d+\.\d+\.\d+\nDriver version: {4}4\.48\.0\n$/);
  });

  test('message prints the reply (adding a newline), or nothing', async () => {
    const dm = new FakeDm();
    dm.add('vol');
    dm.replies = { 'stats list': 'id 1' };
    const r = await run(['message', 'vol', '0', 'stats', 'list'], { dm });
    assert.equal(r.out, 'id 1\n');
    assert.deepEqual(calls(dm, 'message')[0]!.args, [{ name: 'vol' }, sectors(0), 'stats list']);
    const quiet = await run(['message', 'vol', '8', 'checkpoint'], { dm });
    assert.equal(quiet.code, 0);
    assert.equal(quiet.out, '');
  });

  test('wait: default event 0, explicit event number, -u', async () => {
    const dm = new FakeDm();
    dm.add('vol', ['0 8 zero'], { uuid: 'U' });
    assert.equal((await run(['wait', 'vol'], { dm })).code, 0);
    assert.equal((await run(['wait', '-u', 'U', '5'], { dm })).code, 0);
    assert.deepEqual(
      calls(dm, 'waitEvent').map((c) => c.args.slice(0, 2)),
      [
        [{ name: 'vol' }, 0],
        [{ uuid: 'U' }, 5],
      ],
    );
  });

  test('a device removed between listing and query is skipped', async () => {
    const dm = twoDevices();
    const original = dm.table.bind(dm);
    dm.table = async (id, opts) => {
      if (id.name === 'a') dm.devices.delete('a');
      return original(id, opts);
    };
    const r = await run(['table'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'b: 0 8 zero \nb: 8 8 error \n');
  });
});

describe('queries: --json', () => {
  const dm = (): FakeDm => {
    const f = new FakeDm();
    f.add('vol', ['0 8 zero', '8 8 error'], { uuid: 'U1', eventNr: 3, deps: [{ major: 1, minor: 2 }] });
    f.statusText = { zero: '', error: '' };
    return f;
  };
  const json = async (args: string[], f = dm()): Promise<unknown> => {
    const r = await run([...args, '--json'], { dm: f });
    assert.equal(r.code, 0, r.err);
    assert.ok(r.out.endsWith('\n'));
    return JSON.parse(r.out);
  };

  test('status and table: sectors as decimal strings, parsed null for unknown types', async () => {
    assert.deepEqual(await json(['status', 'vol']), {
      name: 'vol',
      uuid: 'U1',
      targets: [
        { start: '0', length: '8', type: 'zero', status: '', parsed: null },
        { start: '8', length: '8', type: 'error', status: '', parsed: null },
      ],
    });
    const all = (await json(['table'])) as { devices: Array<{ targets: Array<{ params: string }> }> };
    assert.equal(all.devices.length, 1);
    assert.deepEqual(all.devices[0]!.targets[0], { start: '0', length: '8', type: 'zero', params: '', parsed: null });
    assert.deepEqual(await json(['table'], new FakeDm()), { devices: [] });
  });

  test('info, ls, deps', async () => {
    assert.deepEqual(await json(['info', '-u', 'U1']), {
      name: 'vol',
      uuid: 'U1',
      dev: { major: 253, minor: 0 },
      state: 'ACTIVE',
      suspended: false,
      readOnly: false,
      tables: { live: true, inactive: false },
      openCount: 0,
      eventNr: 3,
      targetCount: 2,
      deferredRemove: false,
      internalSuspend: false,
    });
    assert.deepEqual(await json(['ls']), { devices: [{ name: 'vol', uuid: 'U1', dev: { major: 253, minor: 0 }, eventNr: 3 }] });
    assert.deepEqual(await json(['deps', 'vol']), { name: 'vol', uuid: 'U1', deps: [{ major: 1, minor: 2 }] });
    const all = (await json(['info'])) as { devices: unknown[] };
    assert.equal(all.devices.length, 1);
  });

  test('targets, target-version, version', async () => {
    const t = (await json(['targets'])) as { targets: unknown[] };
    assert.deepEqual(t.targets[1], { name: 'era', version: { major: 1, minor: 2, patch: 0 } });
    assert.deepEqual(await json(['target-version', 'era']), { name: 'era', version: { major: 1, minor: 2, patch: 0 } });
    assert.deepEqual(await json(['target-version', 'era', 'linear']), {
      targets: [
        { name: 'era', version: { major: 1, minor: 2, patch: 0 } },
        { name: 'linear', version: { major: 1, minor: 4, patch: 0 } },
      ],
    });
    const v = (await json(['version'])) as { dmkit: string; driver: unknown };
    assert.deepEqual(v.driver, { major: 4, minor: 48, patch: 0 });
    assert.match(v.dmkit, /^\d+\.\d+\.\d+/);
  });

  test('message reply and wait', async () => {
    const f = dm();
    f.replies = { hello: 'world' };
    assert.deepEqual(await json(['message', 'vol', '0', 'hello'], f), {
      name: 'vol',
      uuid: 'U1',
      sector: '0',
      message: 'hello',
      reply: 'world',
    });
    assert.deepEqual(((await json(['message', 'vol', '0', 'other'], f)) as { reply: unknown }).reply, null);
    const w = (await json(['wait', 'vol', '3'], f)) as { eventNr: number; targets: unknown[] };
    assert.equal(w.eventNr, 4);
    assert.equal(w.targets.length, 2);
  });

  test('unknown target type in target-version is a kernel error, exit 1', async () => {
    const r = await run(['target-version', 'nope', '--json']);
    assert.equal(r.code, ExitCode.FAILED);
    assert.equal(JSON.parse(r.out).error.code, 'EINVAL');
    assert.match(r.err, /\(EINVAL\)/);
  });
});
