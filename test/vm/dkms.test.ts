/**
 * The dmkit modules as DKMS installs them, on the booted lab kernel (Debian's and the debug kernel): the
 * module tree DKMS wrote becomes the guest's, modprobe loads each module from updates/dkms, and a table of
 * each target loads and carries data.
 *
 * The host half (prepareDkmsLab in src/lab/test-cli.ts, run by `npm test`) ran `dmkit modules install`
 * (dkms add, build against this kernel's build tree, install) into a copy of this kernel's module tree,
 * depmod -b on it, `dmkit modules status`, and `dmkit modules remove` (which must leave nothing): in the
 * TCG guest, compiling takes many minutes, `depmod -a` about 5 and each dkms command tens of seconds.
 * Afterwards the lab's own copies of the modules are put back and loaded, for the suites after this one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LAB_DIR } from '../../src/lab/paths';
import { assertClean, flushBuffers, ramdisks, Scope, stamp, verify, zero } from '../../src/testing';
import { createDevice, dmsetup } from '../../src/testing/dmsetup';
import { bytes, sectors } from '../../src/units';

const MiB = 1n << 20n;
const RELEASE = os.release();
const ROOT = path.join(LAB_DIR, 'dkms', RELEASE);
const MODDIR = `/lib/modules/${RELEASE}`;
const SAVED = '/tmp/dkms-test-saved';
/** The module tree as DKMS installed into it on the host (updates/dkms/*.ko, depmod's index files). */
const INDEX = path.join(ROOT, 'guest', 'lib', 'modules', RELEASE);

interface Ready {
  version: string;
  release: string;
  modules: string[];
  status: Array<{ kernel: string | null; state: string }>;
}

const ready: Ready | undefined = fs.existsSync(path.join(ROOT, 'ready.json')) ? (JSON.parse(fs.readFileSync(path.join(ROOT, 'ready.json'), 'utf8')) as Ready) : undefined;
const skip = ready ? false : `no DKMS build for ${RELEASE} in ${ROOT} (npm test's DKMS build stage prepares it)`;
const MODULES = ready?.modules ?? [];

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

  test('the tree DKMS installed: every module in updates/dkms, modprobe loads each from there', () => {
    for (const m of MODULES) assert.equal(loaded(m), false, `${m} unloaded before`);
    assert.ok(ready!.status.some((e) => e.kernel === RELEASE && e.state === 'installed'), `dkms status on the host: ${JSON.stringify(ready!.status)}`);
    fs.mkdirSync(path.join(MODDIR, 'updates', 'dkms'), { recursive: true });
    for (const m of MODULES) fs.copyFileSync(path.join(INDEX, 'updates', 'dkms', `${m}.ko`), path.join(MODDIR, 'updates', 'dkms', `${m}.ko`));
    for (const f of fs.readdirSync(INDEX).filter((f) => f.startsWith('modules.'))) fs.copyFileSync(path.join(INDEX, f), path.join(MODDIR, f));
    for (const m of MODULES) {
      assert.equal(must('modinfo', '-n', m).trim(), path.join(MODDIR, 'updates', 'dkms', `${m}.ko`), `modprobe resolves ${m} to the DKMS copy`);
      assert.equal(must('modinfo', '-F', 'vermagic', m).split(' ')[0], RELEASE, `${m} built for ${RELEASE}`);
      must('modprobe', m);
      assert.ok(loaded(m), `${m} loaded`);
      assert.equal(fs.readFileSync(`/sys/module/${m.replace(/-/g, '_')}/version`, 'utf8').trim(), '0.1.0');
    }
    const targets = dmsetup('targets');
    for (const t of ['dmkit-core', 'dmkit-era', 'dmkit-clone']) assert.match(targets, new RegExp(`^${t}\\s+v\\d+\\.\\d+\\.\\d+$`, 'm'));
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

});
