/**
 * Issue 12: the CLI's exit codes are the README's table, errors are one line, names/uuids/types are
 * refused (exit 2) before root is checked or the control node opened, and --json errors are a JSON
 * document on stdout with the same exit code.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, EXIT_CODE_HELP, ExitCode, exitCodeFor, usageError } from '../../src/cli/errors';
import { DmArgumentError, DmError } from '../../src/dm';
import { FakeDm, run } from './cli-fake.test';

const oneLine = (text: string): void => assert.match(text, /^dmkit: [^\n]*\n$/, JSON.stringify(text));

describe('CLI exit codes (issue 12)', () => {
  test('an option without its value: exit 2, one line, nothing opened', async () => {
    for (const args of [['info', '--uuid'], ['info', '-u'], ['create', 'x', '--table'], ['create', 'x', '--uuid'], ['status', '--target']]) {
      const r = await run(args, { uid: 1000 });
      assert.equal(r.code, ExitCode.USAGE, args.join(' '));
      oneLine(r.err);
      assert.match(r.err, /\(ERR_USAGE\)/);
      assert.equal(r.opened, 0);
    }
  });

  test('bad name, uuid or type: exit 2 before root is checked or control opened', async () => {
    for (const args of [
      ['info', 'a/b'],
      ['remove', '..'],
      ['suspend', 'x'.repeat(200)],
      ['info', '-u', 'u'.repeat(200)],
      ['create', 'a/b', '--table', '0 8 zero'],
      ['create', 'ok', '--uuid', 'u'.repeat(200), '--table', '0 8 zero'],
      ['create', 'ok', '--table', '0 8 a-type-name-too-long'],
      ['load', 'ok', '--table', '0 8 a-type-name-too-long'],
      ['rename', 'ok', 'a/b'],
      ['rename', 'ok', '--setuuid', 'u'.repeat(200)],
      ['target-version', 'a-type-name-too-long'],
      ['mknodes', 'a/b'],
      ['message', 'a/b', '0', 'hello'],
      ['wait', 'a/b'],
    ]) {
      const r = await run(args, { uid: 1000 });
      assert.equal(r.code, ExitCode.USAGE, `${args.join(' ')}: ${r.err}`);
      oneLine(r.err);
      assert.match(r.err, /\(ERR_DM_INVALID_(NAME|UUID|TARGET)\)/, args.join(' '));
      assert.equal(r.opened, 0, args.join(' '));
    }
  });

  test('no control node: exit 6, its own code and message', async () => {
    for (const openError of [
      Object.assign(new Error('cannot open /dev/mapper/control: device-mapper is not available'), { code: 'ERR_DM_NO_CONTROL', errno: 2 }),
      Object.assign(new Error("ENOENT: no such file or directory, open '/sys/class/misc/device-mapper/dev'"), { code: 'ENOENT', errno: 2 }),
      Object.assign(new Error('ENODEV: no such device'), { code: 'ENODEV', errno: 19 }),
    ]) {
      const r = await run(['ls'], { openError });
      assert.equal(r.code, ExitCode.NO_DM);
      oneLine(r.err);
      assert.match(r.err, /dm_mod.*\(ERR_DM_NO_CONTROL\)\n$/);
    }
  });

  test('--json errors: {"error":{code, errno, message}} on stdout, same exit code', async () => {
    const dm = new FakeDm();
    const missing = await run(['info', 'nope', '--json'], { dm });
    assert.equal(missing.code, ExitCode.NOT_FOUND);
    assert.deepEqual(Object.keys(JSON.parse(missing.out).error), ['code', 'errno', 'message']);
    assert.deepEqual(JSON.parse(missing.out).error.code, 'ENXIO');
    assert.equal(JSON.parse(missing.out).error.errno, 6);
    const usage = await run(['info', 'a/b', '--json'], { dm });
    assert.equal(usage.code, ExitCode.USAGE);
    assert.deepEqual(JSON.parse(usage.out), { error: { code: 'ERR_DM_INVALID_NAME', errno: null, message: JSON.parse(usage.out).error.message } });
    const parse = await run(['info', '--json', '-u'], { dm });
    assert.equal(parse.code, ExitCode.USAGE);
    assert.equal(JSON.parse(parse.out).error.code, 'ERR_USAGE');
    const noDm = await run(['ls', '--json'], { openError: Object.assign(new Error('x'), { code: 'ENOENT', errno: 2 }) });
    assert.equal(noDm.code, ExitCode.NO_DM);
    assert.equal(JSON.parse(noDm.out).error.code, 'ERR_DM_NO_CONTROL');
    // Without --json nothing goes to stdout on failure.
    assert.equal((await run(['info', 'nope'], { dm })).out, '');
  });

  test('a multi-line message still prints one line', async () => {
    const dm = new FakeDm();
    const r = await run(['create', 'x', '--table', '0 8 zero\nbroken line'], { dm });
    assert.equal(r.code, ExitCode.USAGE);
    oneLine(r.err);
  });

  test('--json before the verb is the same as after it (issue 12)', async () => {
    const dm = new FakeDm();
    assert.equal((await run(['create', 'a', '--table', '0 8 zero'], { dm })).code, ExitCode.OK);
    for (const [before, after] of [
      [['--json', 'info', 'a'], ['info', 'a', '--json']],
      [['--json', 'ls'], ['ls', '--json']],
      [['--json', 'table'], ['table', '--json']],
      [['--json', '--noudevsync', 'status', 'a'], ['--noudevsync', 'status', 'a', '--json']],
      [['--udevcookie', '5', '--json', 'deps', 'a'], ['--udevcookie', '5', 'deps', 'a', '--json']],
      [['--json', 'version'], ['version', '--json']],
      [['--json=false', 'info', 'a'], ['info', 'a']],
      [['--json', 'message', 'a', '0', '--', 'x'], ['message', 'a', '0', '--json', '--', 'x']],
    ]) {
      const b = await run(before!, { dm });
      const a = await run(after!, { dm });
      assert.deepEqual({ code: b.code, out: b.out, err: b.err }, { code: a.code, out: a.out, err: a.err }, before!.join(' '));
    }
    const doc = JSON.parse((await run(['--json', 'info', 'a'], { dm })).out) as { name: string };
    assert.equal(doc.name, 'a');
  });

  test('--json before the verb: errors are the JSON error object with the exit code', async () => {
    const dm = new FakeDm();
    for (const [args, code, errCode, message] of [
      // the verb's own failure
      [['--json', 'info', 'nope'], ExitCode.NOT_FOUND, 'ENXIO', /^info: /],
      // a verb without --json refuses it, naming the option (not "give a command")
      [['--json', 'create', 'x', '--table', '0 8 zero'], ExitCode.USAGE, 'ERR_USAGE', /^create: Unknown argument: json;/],
      // an unknown verb is the error, not --json
      [['--json', 'nosuchverb'], ExitCode.USAGE, 'ERR_USAGE', /^nosuchverb: Unknown argument: nosuchverb;/],
      [['--json'], ExitCode.USAGE, 'ERR_USAGE', /^give a command/],
      [['--json', 'info', '-u'], ExitCode.USAGE, 'ERR_USAGE', /^info: /],
    ] as const) {
      const r = await run([...args], { dm });
      assert.equal(r.code, code, `${args.join(' ')}: ${r.err}`);
      oneLine(r.err);
      const doc = JSON.parse(r.out) as { error: { code: string; errno: number | null; message: string } };
      assert.deepEqual(Object.keys(doc.error), ['code', 'errno', 'message'], args.join(' '));
      assert.equal(doc.error.code, errCode, args.join(' '));
      assert.match(doc.error.message, message, args.join(' '));
    }
    assert.equal(dm.devices.size, 0, 'nothing was created');
  });

  test("the README's exit-status table is the CLI's", () => {
    const readme = readFileSync(join(__dirname, '..', '..', '..', 'README.md'), 'utf8');
    const rows = [...readme.matchAll(/^\| `(\d)` \| `(\w+)` \|/gm)].map((m) => [Number(m[1]), m[2]]);
    assert.deepEqual(rows, Object.entries(ExitCode).map(([k, v]) => [v, k]));
    // `dmkit --help` prints the same codes, each once.
    const helpCodes = [...EXIT_CODE_HELP.matchAll(/^ {2}(\d) {2}\S/gm)].map((m) => Number(m[1]));
    assert.deepEqual(helpCodes, rows.map(([code]) => code));
    // And the CLI gives each one, for the case the table names.
    const sys = (code: string, errno: number): Error => Object.assign(new Error(code), { code, errno });
    const cases: Array<[unknown, number]> = [
      [new DmError('x', { code: 'EIO', errno: 5 }), 1],
      [usageError('x'), 2],
      [new DmArgumentError('ERR_DM_INVALID_NAME', 'x'), 2],
      [sys('EACCES', 13), 3],
      [sys('EPERM', 1), 3],
      [new DmError('x', { code: 'ENXIO', errno: 6 }), 4],
      [sys('ENOENT', 2), 4],
      [sys('ENODEV', 19), 4],
      [new DmError('x', { code: 'EBUSY', errno: 16 }), 5],
      [new CliError('x', 'ERR_DM_NO_CONTROL', ExitCode.NO_DM), 6],
    ];
    for (const [e, code] of cases) assert.equal(exitCodeFor(e), code, String((e as Error).message ?? e));
    assert.deepEqual([0, ...new Set(cases.map(([, c]) => c))], rows.map(([code]) => code), 'every documented failure code is reachable');
  });
});
