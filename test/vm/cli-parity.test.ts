/**
 * dmsetup parity (issue 12): the same command lines through `dmsetup` and through dmkit's CLI, text
 * output compared line for line (info in both forms and as columns with -o/-O/-S/--noheadings/
 * --separator/--nameprefixes, ls with --tree and -o, deps, table, table --concise, status, splitname,
 * udevcookies). Verbs that change devices (suspend/resume of several devices, resume --noflush
 * --nolockfs, wipe_table, remove of several devices, remove -j/-m, create --concise, --readahead) run on
 * each tool's own twin devices and the resulting state is compared.
 *
 * dmkit runs in this process through runCli with the real runtime (the control node, sysfs), which is
 * what bin/dmkit runs, without paying a Node start under TCG for each of the ~50 command lines; one
 * line goes through the installed `dmkit` binary as a check that the two agree. dmsetup gets
 * --noudevrules --noudevsync (no udev in the guest), and so does dmkit, as a switching user would type it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { runCli } from '../../src/cli/cli';
import { nodeRuntime } from '../../src/cli/runtime';
import { ramdisks, Scope } from '../../src/testing';
import { bytes } from '../../src/units';

const NO_UDEV = ['--noudevrules', '--noudevsync'];

interface Output {
  status: number | null;
  stdout: string;
}

function dmsetup(args: readonly string[]): Output {
  const r = spawnSync('dmsetup', [...NO_UDEV, ...args], { encoding: 'utf8', input: '' });
  return { status: r.status, stdout: r.stdout };
}

async function dmkit(args: readonly string[]): Promise<Output> {
  let stdout = '';
  const runtime = { ...nodeRuntime(), stdout: (t: string) => void (stdout += t), stderr: () => undefined, readStdin: async () => '' };
  const status = await runCli([...NO_UDEV, ...args], runtime);
  return { status, stdout };
}

/** Runs one command line through both and compares exit status and every output line. */
async function same(args: readonly string[], normalize: (s: string) => string = (s) => s): Promise<void> {
  const want = dmsetup(args);
  const got = await dmkit(args);
  const label = args.join(' ');
  assert.equal(got.status === 0, want.status === 0, `${label}: dmsetup exited ${want.status}, dmkit ${got.status}`);
  assert.deepEqual(normalize(got.stdout).split('\n'), normalize(want.stdout).split('\n'), label);
}

describe('dmsetup parity: queries on the same devices', () => {
  const scope = new Scope();
  let paMinor = 0;
  before(() => {
    const [r0, r1] = ramdisks(scope, 2, bytes(4n << 20n));
    const mk = (name: string, table: string, ...extra: string[]): void => {
      const r = dmsetup(['create', name, ...extra, '--table', table]);
      assert.equal(r.status, 0, `create ${name}`);
      scope.defer(`remove ${name}`, () => void dmsetup(['remove', '--retry', name]));
    };
    mk('pa', `0 8192 linear ${r0!.path} 0`, '-u', 'UUID-PA');
    mk('pb', `0 4096 linear ${r1!.path} 0\n4096 4096 zero`);
    const [, major, minor] = /^pa\t\((\d+):(\d+)\)$/m.exec(dmsetup(['ls']).stdout)!;
    paMinor = Number(minor);
    mk('pc', `0 4096 linear ${major}:${paMinor} 0`);
  });
  after(() => scope.close());

  const lines: string[][] = [
    ['info', 'pa'],
    ['info'],
    ['info', '-c'],
    ['info', '-C'],
    ['info', '-c', 'pa'],
    ['info', '-c', '--noheadings'],
    ['info', '-c', '--noheadings', '--separator', ','],
    ['info', '-c', '-o', 'name,uuid,major,minor,open,segments,events'],
    ['info', '-c', '-o', 'name,attr,tables_loaded,readonly,suspended,devno'],
    ['info', '-c', '-O', '-name'],
    ['info', '-c', '-O', 'open,name'],
    ['info', '-c', '-S', 'name=pa'],
    ['info', '-c', '-S', 'open>0'],
    ['info', '-c', '-S', 'open<1 && segments>1'],
    ['info', '-c', '--nameprefixes', '-o', 'name,uuid'],
    ['info', '-c', '-o', 'name,blkdevname,devnos_used,blkdevs_used,devs_used,device_count'],
    ['info', '-c', '-o', 'name,read_ahead'],
    ['-v', 'info', 'pa'],
    ['-y', 'info', 'pb'],
    ['--udevcookie', '123', 'info', 'pa'],
    ['ls'],
    ['ls', '--tree'],
    ['ls', '--tree', '-o', 'ascii'],
    ['ls', '-o', 'devname'],
    ['ls', '-o', 'blkdevname'],
    ['ls', '--target', 'zero'],
    ['deps'],
    ['deps', 'pc'],
    ['table'],
    ['table', 'pb'],
    ['table', '--concise'],
    ['table', '--concise', 'pb'],
    ['status'],
    ['status', 'pb'],
    ['splitname', 'vg-lv'],
    ['splitname', 'vg--x-lv-y', 'LVM'],
    ['splitname', '--noheadings', 'vg-lv'],
    ['splitname', '-c', '-o', 'subsystem,vg_name', 'a-b-c'],
    ['splitname', 'x-y', 'OTHER'],
    ['udevcookies'],
    ['udevcomplete_all'],
    ['info', 'nosuch'],
  ];
  for (const args of lines) test(args.join(' '), () => same(args));

  test('info -j/-m addresses the device by number', async () => {
    const major = /\((\d+):/.exec(dmsetup(['ls']).stdout)![1]!;
    await same(['info', '-j', major, '-m', String(paMinor)]);
    await same(['table', '-j', major, '-m', String(paMinor)]);
  });

  test('the installed dmkit binary prints what runCli printed', async () => {
    const r = spawnSync('dmkit', [...NO_UDEV, 'info', '-c'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, (await dmkit(['info', '-c'])).stdout);
  });
});

describe('dmsetup parity: verbs that change devices, each tool on its own twins', () => {
  const scope = new Scope();
  after(() => scope.close());

  /** Runs `verb` with dmsetup on devices s1/s2 and with dmkit on k1/k2, then compares what a query shows. */
  async function twin(make: (prefix: string) => void, run: (prefix: string) => string[], query: (prefix: string) => string[]): Promise<void> {
    for (const p of ['s', 'k']) make(p);
    const ds = dmsetup(run('s'));
    const dk = await dmkit(run('k'));
    assert.equal(dk.status === 0, ds.status === 0, `${run('k').join(' ')}: dmsetup exited ${ds.status}, dmkit ${dk.status}`);
    assert.equal(dk.stdout.replace(/\bk(\d)/g, 'X$1'), ds.stdout.replace(/\bs(\d)/g, 'X$1'));
    const qs = dmsetup(query('s')).stdout.replace(/\bs(\d)/g, 'X$1').replace(/UU-s/g, 'UU-X');
    const qk = dmsetup(query('k')).stdout.replace(/\bk(\d)/g, 'X$1').replace(/UU-k/g, 'UU-X');
    assert.deepEqual(qk.split('\n'), qs.split('\n'), query('k').join(' '));
  }
  const zeros = (p: string): void => {
    for (const n of [1, 2]) {
      assert.equal(dmsetup(['create', `${p}${n}`, '--table', `0 ${2048 * n} zero`]).status, 0);
      scope.defer(`remove ${p}${n}`, () => void dmsetup(['remove', `${p}${n}`]));
    }
  };
  const select = (p: string): string[] => ['info', '-c', '-o', 'name,attr,segments', '-S', `name=~^${p}[0-9]`];

  test('suspend A B, then resume --noflush --nolockfs A B', async () => {
    await twin(zeros, (p) => ['suspend', `${p}1`, `${p}2`], select);
    await twin(() => undefined, (p) => ['resume', '--noflush', '--nolockfs', `${p}1`, `${p}2`], select);
  });

  test('wipe_table', async () => {
    await twin(() => undefined, (p) => ['wipe_table', `${p}2`], (p) => ['table', `${p}2`]);
  });

  test('remove A B stops at the first failure, as dmsetup does', async () => {
    await twin(() => undefined, (p) => ['remove', `${p}1`, `${p}-nosuch`, `${p}2`], (p) => ['info', '-c', '-o', 'name', '-S', `name=~^${p}[0-9]`]);
    await twin(() => undefined, (p) => ['remove', `${p}2`], (p) => ['info', '-c', '-o', 'name', '-S', `name=~^${p}[0-9]`]);
  });

  test('create --concise, then table and info of what it made', async () => {
    await twin(
      () => undefined,
      (p) => ['create', '--concise', `${p}7,UU-${p}7,,rw,0 2048 zero;${p}8,,,ro,0 1024 zero,1024 1024 error`],
      (p) => ['info', '-c', '-o', 'name,uuid,readonly,segments', '-S', `name=~^${p}[78]`],
    );
    for (const p of ['s', 'k']) for (const n of [7, 8]) scope.defer(`remove ${p}${n}`, () => void dmsetup(['remove', `${p}${n}`]));
    await twin(() => undefined, () => ['table', '--concise', 's8'], () => ['table', 's8']);
  });

  test('create with -j/-m and --readahead, remove with -j/-m', async () => {
    const major = /\((\d+):/.exec(dmsetup(['ls']).stdout)?.[1] ?? '254';
    const minor = (p: string): string => (p === 's' ? '201' : '202');
    await twin(
      () => undefined,
      (p) => ['create', `${p}5`, '-j', major, '-m', minor(p), '--readahead', '1024', '--table', '0 8 zero'],
      (p) => ['info', '-c', '-o', 'name,read_ahead', '-S', `name=${p}5`],
    );
    await twin(() => undefined, (p) => ['remove', '-j', major, '-m', minor(p)], (p) => ['info', '-c', '-o', 'name', '-S', `name=${p}5`]);
  });
});
