/**
 * dmsetup parity (issue 12): the same command lines through `dmsetup` and through dmkit's CLI, text
 * output compared line for line (info in both forms and as columns with -o/-O/-S/--noheadings/
 * --separator/--nameprefixes, ls with --tree and -o, deps, table, table --concise, status, splitname,
 * udevcookies). Verbs that change devices (suspend/resume of several devices, resume --noflush
 * --nolockfs, wipe_table, remove of several devices, remove -j/-m, create --concise, --readahead) run on
 * each tool's own twin devices and the resulting state is compared.
 *
 * dmkit runs in this process through runCli with the real runtime (the control node, sysfs), which is
 * what bin/dmkit runs, without paying a Node start under TCG (~10 s) per command line (test/vm/cli.test.ts
 * runs the installed binary). dmsetup gets
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
  return dmsetupBatch([args])[0]!;
}

const quote = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;

/**
 * Runs several dmsetup command lines from one shell: under TCG, forking this Node process costs more
 * than the dmsetup runs themselves. Each line's stdout and exit status come back separately.
 */
function dmsetupBatch(lines: readonly (readonly string[])[]): Output[] {
  const mark = '@@dmkit-parity@@';
  const script = lines.map((args) => `dmsetup ${[...NO_UDEV, ...args].map(quote).join(' ')} </dev/null 2>/dev/null; echo "${mark}$?"`).join('\n');
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', maxBuffer: 16 << 20 });
  const out: Output[] = [];
  let rest = r.stdout;
  for (let i = 0; i < lines.length; i++) {
    const at = rest.indexOf(mark);
    if (at < 0) throw new Error(`dmsetup batch: no result for ${lines[i]!.join(' ')}`);
    const end = rest.indexOf('\n', at);
    out.push({ stdout: rest.slice(0, at), status: Number(rest.slice(at + mark.length, end)) });
    rest = rest.slice(end + 1);
  }
  return out;
}

async function dmkit(args: readonly string[]): Promise<Output> {
  let stdout = '';
  const runtime = { ...nodeRuntime(), stdout: (t: string) => void (stdout += t), stderr: () => undefined, readStdin: async () => '' };
  const status = await runCli([...NO_UDEV, ...args], runtime);
  return { status, stdout };
}

/** Compares dmkit on one command line with dmsetup's output (given, or run now): exit status and every line. */
async function same(args: readonly string[], want: Output = dmsetup(args), normalize: (s: string) => string = (s) => s): Promise<void> {
  const got = await dmkit(args);
  const label = args.join(' ');
  assert.equal(got.status === 0, want.status === 0, `${label}: dmsetup exited ${want.status}, dmkit ${got.status}`);
  assert.deepEqual(normalize(got.stdout).split('\n'), normalize(want.stdout).split('\n'), label);
}

describe('dmsetup parity: queries on the same devices', () => {
  const scope = new Scope();
  const oracle = new Map<string, Output>();
  let byNumber: string[] = [];
  before(() => {
    const [r0, r1] = ramdisks(scope, 2, bytes(4n << 20n));
    const [a, b, ls] = dmsetupBatch([
      ['create', 'pa', '-u', 'UUID-PA', '--table', `0 8192 linear ${r0!.path} 0`],
      ['create', 'pb', '--table', `0 4096 linear ${r1!.path} 0\n4096 4096 zero`],
      ['ls'],
    ]);
    scope.defer('remove pa, pb, pc', () => void dmsetupBatch([['remove', '--retry', 'pc'], ['remove', '--retry', 'pb'], ['remove', '--retry', 'pa']]));
    assert.deepEqual([a!.status, b!.status], [0, 0], 'create pa, pb');
    const [, major, minor] = /^pa\t\((\d+):(\d+)\)$/m.exec(ls!.stdout)!;
    assert.equal(dmsetup(['create', 'pc', '--table', `0 4096 linear ${major}:${minor} 0`]).status, 0, 'create pc');
    byNumber = ['info', '-j', major!, '-m', minor!];
    // Every dmsetup answer at once, in one shell; dmkit then runs each line in a test of its own.
    const all = [...lines, byNumber];
    dmsetupBatch(all).forEach((o, i) => oracle.set(all[i]!.join('\0'), o));
  });
  after(() => scope.close());

  // Every verb and option of the issue at least once (the suite has 90 s on the Debian kernel under TCG,
  // where each dmsetup start costs about a second); DMKIT_PARITY_FULL=1 adds the variants.
  const core: string[][] = [
    ['info', 'pa'],
    ['info', '-c'],
    ['info', '-C', '--noheadings', '--separator', ','],
    ['info', '-c', '-o', 'name,attr,tables_loaded,readonly,suspended,devno,blkdevname,devnos_used,blkdevs_used,devs_used,device_count,read_ahead'],
    ['info', '-c', '-O', '-name', '-S', 'open<1 && segments>1 || name=pa'],
    ['info', '-c', '--nameprefixes', '-o', 'name,uuid'],
    ['-v', '-y', '--udevcookie', '123', 'info', 'pb'],
    ['ls', '--tree'],
    ['ls', '-o', 'devname'],
    ['deps'],
    ['table', '--concise'],
    ['splitname', 'vg--x-lv-y', 'LVM'],
    ['udevcookies'],
  ];
  const variants: string[][] = [
    ['info'],
    ['info', '-c', 'pa'],
    ['info', '-c', '--noheadings'],
    ['info', '-c', '-o', 'name,uuid,major,minor,open,segments,events'],
    ['info', '-c', '-O', 'open,name'],
    ['info', '-c', '-S', 'open>0'],
    ['ls'],
    ['ls', '--tree', '-o', 'ascii'],
    ['ls', '-o', 'blkdevname'],
    ['ls', '--target', 'zero'],
    ['deps', 'pc'],
    ['table'],
    ['table', 'pb'],
    ['table', '--concise', 'pb'],
    ['status'],
    ['status', 'pb'],
    ['splitname', 'vg-lv'],
    ['splitname', '--noheadings', 'vg-lv'],
    ['splitname', '-c', '-o', 'subsystem,vg_name', 'a-b-c'],
    ['splitname', 'x-y', 'OTHER'],
    ['udevcomplete_all'],
    ['info', 'nosuch'],
  ];
  const lines = [...core, ...(process.env.DMKIT_PARITY_FULL ? variants : [])];
  for (const args of lines) test(args.join(' '), () => same(args, oracle.get(args.join('\0'))));

  test('info -j/-m addresses the device by number', () => same(byNumber, oracle.get(byNumber.join('\0'))));
});

describe('dmsetup parity: verbs that change devices, each tool on its own twins', () => {
  // dmsetup works on s1, s2, ...; dmkit on k1, k2, ... made alike. After each step one dmsetup query
  // shows both sets, and the s rows must read like the k rows.
  const scope = new Scope();
  after(() => scope.close());
  const made = new Set<string>();
  const track = (...names: string[]): void => {
    for (const n of names) {
      if (made.has(n)) continue;
      made.add(n);
      scope.defer(`remove ${n}`, () => void dmsetup(['remove', n]));
    }
  };
  const rows = (out: string, p: string): string[] =>
    out
      .split('\n')
      .filter((l) => new RegExp(`^${p}\\d`).test(l))
      .map((l) => l.replace(new RegExp(`^${p}(\\d)`), 'X$1').replace(/UU-[sk]/g, 'UU-X'));

  // dmsetup runs each step's query in the same shell as the next step's command (or in flush()), by when
  // both sides have taken the step: one shell per step, and no query through dmkit.
  let pending: { query: string[]; label: string } | undefined;
  const check = (q: Output, p: { query: string[]; label: string }): void =>
    assert.deepEqual(rows(q.stdout, 'k'), rows(q.stdout, 's'), `${p.label}, then ${p.query.join(' ')}`);

  async function step(argsFor: (p: string) => string[], query: string[]): Promise<void> {
    const before = pending;
    const outs = dmsetupBatch([...(before ? [before.query] : []), argsFor('s')]);
    if (before) check(outs[0]!, before);
    const ds = outs[outs.length - 1]!;
    const dk = await dmkit(argsFor('k'));
    const label = argsFor('k').join(' ');
    assert.equal(dk.status === 0, ds.status === 0, `${label}: dmsetup exited ${ds.status}, dmkit ${dk.status}`);
    assert.equal(dk.stdout, ds.stdout, label);
    pending = { query, label };
  }

  function flush(): void {
    const p = pending;
    pending = undefined;
    if (p) check(dmsetup(p.query), p);
  }

  const states = ['info', '-c', '--noheadings', '-o', 'name,attr,segments,readonly,uuid', '-S', 'name=~^[sk][0-9]'];

  test('suspend/resume --noflush --nolockfs of two devices, wipe_table, remove of several', async () => {
    assert.equal(dmsetup(['create', '--concise', 's1,,,rw,0 2048 zero;s2,,,rw,0 4096 zero;k1,,,rw,0 2048 zero;k2,,,rw,0 4096 zero']).status, 0);
    track('s1', 's2', 'k1', 'k2');
    await step((p) => ['suspend', `${p}1`, `${p}2`], states);
    await step((p) => ['resume', '--noflush', '--nolockfs', `${p}1`, `${p}2`], states);
    await step((p) => ['wipe_table', `${p}2`], ['table']);
    // dmsetup stops at the first device that fails: p2 stays.
    await step((p) => ['remove', `${p}1`, `${p}-nosuch`, `${p}2`], states);
    flush();
  });

  test('create --concise', async () => {
    track('s7', 's8', 'k7', 'k8');
    await step((p) => ['create', '--concise', `${p}7,UU-${p}7,,rw,0 2048 zero;${p}8,,,ro,0 1024 zero,1024 1024 error`], states);
    flush();
    await same(['table', '--concise', 's8']);
  });

  test('create -j/-m --readahead, remove -j/-m', async () => {
    const major = /\((\d+):/.exec(dmsetup(['ls']).stdout)?.[1] ?? '254';
    const minor = (p: string): string => (p === 's' ? '201' : '202');
    track('s5', 'k5');
    await step((p) => ['create', `${p}5`, '-j', major, '-m', minor(p), '--readahead', '1024', '--table', '0 8 zero'], ['info', '-c', '--noheadings', '-o', 'name,read_ahead', '-S', 'name=~^[sk]5']);
    await step((p) => ['remove', '-j', major, '-m', minor(p)], states);
    flush();
  });
});
