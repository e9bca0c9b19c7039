/**
 * The dmkit modules through DKMS, on the booted lab kernel (Debian's and the debug kernel): `dmkit modules
 * install` puts them into the guest's writable module tree, modprobe loads each from there, a table of each
 * target loads and carries data, `dkms status` lists them, `dmkit modules remove` cleans up.
 *
 * The host half (prepareDkmsLab in src/lab/test-cli.ts, run by `npm test`) registered kmod/ and ran
 * `dkms build` against this kernel's build tree (compiling in the TCG guest takes many minutes), and
 * computed with depmod -b the module index this tree has once DKMS installed there (a guest `depmod -a`
 * takes about 5 minutes). Afterwards the lab's own copies of the modules are put back and loaded, so
 * suites after this one see the state they expect.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LAB_DIR, REPO_ROOT } from '../../src/lab/paths';
import { assertClean, flushBuffers, ramdisks, Scope, stamp, verify, zero } from '../../src/testing';
import { createDevice, dmsetup } from '../../src/testing/dmsetup';
import { bytes, sectors } from '../../src/units';

const MiB = 1n << 20n;
const RELEASE = os.release();
const ROOT = path.join(LAB_DIR, 'dkms', RELEASE);
const MODDIR = `/lib/modules/${RELEASE}`;
const SAVED = '/tmp/dkms-test-saved';
const DMKIT = path.join(REPO_ROOT, 'bin', 'dmkit');
/** The host-computed module tree: updates/dkms/*.ko as DKMS built them, and depmod's index files. */
const INDEX = path.join(ROOT, 'index', 'lib', 'modules', RELEASE);

interface Ready {
  version: string;
  release: string;
  buildDir: string;
  modules: string[];
}

const ready: Ready | undefined = fs.existsSync(path.join(ROOT, 'ready.json')) ? (JSON.parse(fs.readFileSync(path.join(ROOT, 'ready.json'), 'utf8')) as Ready) : undefined;
const skip = ready ? false : `no DKMS build for ${RELEASE} in ${ROOT} (npm test's DKMS build stage prepares it)`;
const MODULES = ready?.modules ?? [];
const trees = ['--dkms-tree', path.join(ROOT, 'dkms'), '--source-tree', path.join(ROOT, 'src')];

function run(cmd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message ?? '') };
}

function must(cmd: string, ...args: string[]): string {
  const r = run(cmd, ...args);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const loaded = (m: string): boolean => fs.existsSync(`/sys/module/${m.replace(/-/g, '_')}`);
const unloadAll = (): void => {
  for (const m of [...MODULES].reverse()) if (loaded(m)) must('rmmod', m);
};

describe(`dmkit modules through DKMS on ${RELEASE}`, { skip }, () => {
  before(() => {
    // dkms reads through <(...), which needs /dev/fd; udev or systemd make that link on a real system,
    // the lab's minimal init does not.
    if (!fs.existsSync('/dev/fd')) fs.symlinkSync('/proc/self/fd', '/dev/fd');
    // Keep the lab's module copies and index to put back afterwards.
    fs.rmSync(SAVED, { recursive: true, force: true });
    fs.mkdirSync(SAVED);
    must('cp', '-a', path.join(MODDIR, 'updates'), SAVED);
    for (const f of fs.readdirSync(MODDIR).filter((f) => f.startsWith('modules.'))) fs.copyFileSync(path.join(MODDIR, f), path.join(SAVED, f));
    unloadAll();
    fs.rmSync(path.join(MODDIR, 'updates', 'dmkit'), { recursive: true, force: true });
  });

  after(() => {
    unloadAll();
    fs.rmSync(path.join(MODDIR, 'updates'), { recursive: true, force: true });
    must('cp', '-a', path.join(SAVED, 'updates'), MODDIR);
    for (const f of fs.readdirSync(SAVED).filter((f) => f.startsWith('modules.'))) fs.copyFileSync(path.join(SAVED, f), path.join(MODDIR, f));
    for (const m of MODULES) must('modprobe', m);
  });

  test('dmkit modules install puts every module into the module tree; modprobe loads each from there', () => {
    for (const m of MODULES) assert.equal(loaded(m), false, `${m} unloaded before the install`);
    const out = must(DMKIT, 'modules', 'install', '--kernel', RELEASE, '--kernel-build-dir', ready!.buildDir, ...trees, '--no-depmod', '--json');
    const report = JSON.parse(out) as { steps: string[]; kernel: string; linuxSource: string; dkms: Array<{ kernel: string | null; state: string }> };
    assert.deepEqual(report.steps, ['installed'], 'built on the host, installed here');
    assert.equal(report.kernel, RELEASE);
    assert.match(report.linuxSource, /\/usr\/src\/linux-source-\d+\.\d+\.tar\.(xz|bz2)$/);
    assert.deepEqual(report.dkms.map((e) => [e.kernel, e.state]), [[RELEASE, 'installed']]);

    const built = path.join(INDEX, 'updates', 'dkms');
    for (const m of MODULES) {
      const ko = path.join(MODDIR, 'updates', 'dkms', `${m}.ko`);
      assert.ok(fs.existsSync(ko), `${ko} installed`);
      assert.ok(fs.readFileSync(ko).equals(fs.readFileSync(path.join(built, `${m}.ko`))), `${m}.ko is the one DKMS built`);
    }
    // The module index depmod computes for this tree (on the host; see the header).
    for (const f of fs.readdirSync(INDEX).filter((f) => f.startsWith('modules.'))) fs.copyFileSync(path.join(INDEX, f), path.join(MODDIR, f));
    for (const m of MODULES) {
      assert.equal(must('modinfo', '-n', m).trim(), path.join(MODDIR, 'updates', 'dkms', `${m}.ko`), `modprobe resolves ${m} to the DKMS copy`);
      must('modprobe', m);
      assert.ok(loaded(m), `${m} loaded`);
      assert.equal(fs.readFileSync(`/sys/module/${m.replace(/-/g, '_')}/version`, 'utf8').trim(), '0.1.0');
    }
    const targets = dmsetup('targets');
    for (const t of ['dmkit-core', 'dmkit-era', 'dmkit-clone']) assert.match(targets, new RegExp(`^${t}\\s+v\\d+\\.\\d+\\.\\d+$`, 'm'));
  });

  test('dkms status lists them, as does dmkit modules status', () => {
    const raw = must('dkms', 'status', '-m', 'dmkit', '--dkmstree', path.join(ROOT, 'dkms'), '--sourcetree', path.join(ROOT, 'src'));
    assert.match(raw, new RegExp(`^dmkit/${ready!.version.replace(/\./g, '\\.')}, ${RELEASE}, x86_64: installed$`, 'm'));
    const st = JSON.parse(must(DMKIT, 'modules', 'status', ...trees, '--json')) as { modules: string[]; dkms: Array<{ kernel: string; state: string }> };
    assert.deepEqual(st.modules, MODULES);
    assert.deepEqual(st.dkms.map((e) => `${e.kernel} ${e.state}`), [`${RELEASE} installed`]);
  });

  test('a table of each target loads on the DKMS modules and carries data', () => {
    const scope = new Scope();
    try {
      const [meta, a, b] = ramdisks(scope, 3, bytes(16n * MiB));
      const len = a!.sectors;
      // dmkit-core over a.
      const core = createDevice(scope, 'dkms-core', `0 ${len} dmkit-core ${a!.path} 0`);
      stamp(core.path, { start: sectors(0), length: sectors(4096n) }, 71);
      assert.match(must('dmsetup', 'message', 'dkms-core', '0', 'ping').trim(), /pong/);
      core.remove();
      flushBuffers(a!.path);
      assert.deepEqual(verify(a!.path, { start: sectors(0), length: sectors(4096n) }, 71), []);
      // dmkit-era over meta + a: a write, a checkpoint, era_check.
      zero(meta!.path, bytes(4096));
      const era = createDevice(scope, 'dkms-era', `0 ${len} dmkit-era ${meta!.path} ${a!.path} 128`);
      stamp(era.path, { start: sectors(128n), length: sectors(128n) }, 72);
      dmsetup('message', 'dkms-era', '0', 'checkpoint');
      assert.match(dmsetup('status', 'dkms-era'), / 2 -\s*$/, 'era 2 after one checkpoint');
      era.remove();
      assert.deepEqual(verify(a!.path, { start: sectors(128n), length: sectors(128n) }, 72), []);
      assertClean('era_check', meta!.path);
      // dmkit-clone: b (destination) cloned from a (source); reads through it are the source's.
      zero(meta!.path, bytes(4096));
      const cl = createDevice(scope, 'dkms-clone', `0 ${len} dmkit-clone ${meta!.path} ${b!.path} ${a!.path} 64 1 no_hydration`);
      assert.deepEqual(verify(cl.path, { start: sectors(128n), length: sectors(128n) }, 72), [], 'source data through the clone');
      cl.remove();
    } finally {
      scope.close();
    }
  });

  test('dmkit modules remove deletes the modules from the tree and DKMS forgets them', () => {
    unloadAll();
    const out = JSON.parse(must(DMKIT, 'modules', 'remove', '--kernel', RELEASE, ...trees, '--no-depmod', '--json')) as { removed: Array<{ kernel: string }>; dkms: Array<{ kernel: string | null; state: string }> };
    assert.deepEqual(out.removed.map((e) => e.kernel), [RELEASE]);
    assert.deepEqual(out.dkms.filter((e) => e.kernel === RELEASE), [], 'nothing left for this kernel');
    for (const m of MODULES) {
      assert.equal(fs.existsSync(path.join(MODDIR, 'updates', 'dkms', `${m}.ko`)), false, `${m}.ko removed`);
      assert.notEqual(run('modprobe', m).status, 0, `modprobe ${m} fails once removed`);
      assert.equal(loaded(m), false);
    }
    const raw = must('dkms', 'status', '-m', 'dmkit', '--dkmstree', path.join(ROOT, 'dkms'), '--sourcetree', path.join(ROOT, 'src'));
    assert.doesNotMatch(raw, new RegExp(RELEASE));
  });
});
