/**
 * `npm test`: host unit tests, then the VM suites on the Debian kernel, the crash and fault lab at CI
 * scale and, when ../shared/kernels holds it, the KASAN/lockdep debug kernel's suites; one closing summary
 * line `N passed, N failed, N skipped` (the lab counts as one test; its counters are printed above).
 *
 *   npm test -- [--unit-only] [--no-debug] [--debug-only] [--no-lab] [--suite PATTERN]
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { debugKernelAvailable, resolveKernel, type Kernel } from './kernels';
import { LAB_DIR, REPO_ROOT } from './paths';
import { run, tee } from './proc';
import { describeResult, runVm, VM_EXIT } from './vm';
import { runLabInVm } from './faultlab/cli';

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

interface StageResult extends Counts {
  stage: string;
  seconds: number;
  note?: string;
}

/** The last summary block of node's spec reporter (`ℹ pass 7` ...). */
export function parseNodeTestSummary(output: string): Counts | null {
  const last = (key: string): number | null => {
    const all = [...output.matchAll(new RegExp(`^ℹ ${key} (\\d+)$`, 'gm'))];
    return all.length ? Number(all.at(-1)![1]) : null;
  };
  const pass = last('pass');
  const fail = last('fail');
  if (pass === null || fail === null) return null;
  return { passed: pass, failed: fail + (last('cancelled') ?? 0), skipped: (last('skipped') ?? 0) + (last('todo') ?? 0) };
}


const NODE_TEST = ['--test', '--test-reporter=spec', '--test-concurrency=1'];

const VM_SUITES = 'dist/test/vm/';
/**
 * The debug kernel runs everything several times slower, so it gets the suites that exercise kernel code
 * paths most (module load, every ioctl, each dmkit target's IO, metadata and teardown paths, and the
 * torture component's control-plane races), not those whose extra work is in userspace (CLI process
 * start-up, /dev/mapper nodes, crash-image replay) or that the torture component covers there (the clone
 * races run on the Debian kernel). DMKIT_DEBUG_SUITES=all runs every suite there too. Every dmkit-cache suite runs there (cache-crash, a
 * crash with dirty blocks, recovery and detach, takes 52-59 s on the debug kernel; CI's whole run stays
 * near 35 of its 60 minutes).
 */
export const DEBUG_KERNEL_SUITES = ['core', 'dm-api', 'clone-data', 'clone-copyerr', 'snapshot-data', 'snapshot-merge', 'snapshot-smoke', 'cache-preload', 'cache-smoke', 'cache-attach', 'cache-crash', 'lab-torture'];

/** The Debian kernel's suites: every VM suite. */
function debianSuites(): string[] {
  return [VM_SUITES];
}

function debugSuites(): string[] {
  if (process.env['DMKIT_DEBUG_SUITES'] === 'all') return [VM_SUITES];
  const suites = process.env['DMKIT_DKMS_DEBUG'] === '1' ? [...DEBUG_KERNEL_SUITES, 'dkms'] : DEBUG_KERNEL_SUITES;
  return suites.map((s) => `${VM_SUITES}${s}.test.js`).filter((f) => fs.existsSync(path.join(REPO_ROOT, f)));
}

async function unitStage(): Promise<StageResult> {
  const started = Date.now();
  const out = tee(process.stdout);
  const status = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, [...NODE_TEST, 'dist/test/unit/'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.pipe(out.stream);
    child.on('exit', resolve);
  });
  const counts = parseNodeTestSummary(out.text()) ?? { passed: 0, failed: 1, skipped: 0 };
  if (status !== 0 && counts.failed === 0) counts.failed = 1;
  return { stage: 'host unit tests', seconds: (Date.now() - started) / 1000, ...counts };
}

async function vmStage(kernel: 'debian' | 'debug', suites: readonly string[]): Promise<StageResult> {
  const started = Date.now();
  const out = tee(process.stdout);
  const r = await runVm({
    // A test stuck in async code fails after 15 minutes and the others still run.
    command: [process.execPath, ...NODE_TEST, '--test-timeout=900000', ...suites],
    cwd: REPO_ROOT,
    kernel,
    memoryMiB: kernel === 'debug' ? 3072 : 2048,
    // Hang guards, not budgets: a loaded host runs these stages two or three times slower than CI does.
    // The debug stage (about 15 minutes in CI) stops at 2000 s so that a hang there still leaves CI's
    // whole run inside its limit with a report: the guest's watchdog (vm.ts) logs the blocked tasks.
    timeoutSec: kernel === 'debug' ? 2000 : 2400,
    stdout: out.stream,
  });
  out.stream.end();
  console.error(describeResult(r));
  const counts = parseNodeTestSummary(out.text()) ?? { passed: 0, failed: 0, skipped: 0 };
  let note: string | undefined;
  // A run that fails outside the tests (splat, timeout, lab) counts as one more failure.
  if ([VM_EXIT.SPLAT, VM_EXIT.TIMEOUT, VM_EXIT.LAB_FAILURE].includes(r.exitCode as 124 | 125 | 126)) {
    counts.failed += 1;
    note = r.splats.length ? `kernel splat (${r.splats.length} line(s))` : r.labError ?? `exit ${r.exitCode}`;
  } else if (r.exitCode !== 0 && counts.failed === 0) {
    counts.failed = 1;
    note = `exit ${r.exitCode}`;
  }
  return { stage: `VM suites on the ${kernel} kernel ${r.kernel.release}`, seconds: (Date.now() - started) / 1000, ...counts, ...(note ? { note } : {}) };
}

/**
 * The DKMS suite's host half (test/vm/dkms.test.ts is the guest half). In the TCG guest, compiling takes
 * many minutes, a `depmod -a` 4 min 49 s and each dkms command (a large bash script) tens of seconds, so
 * DKMS runs here, on the lab's copy of the guest kernel's module tree: `dmkit modules install` with DKMS
 * trees in .lab/dkms/<release>/ (dkms add, build against that kernel's build tree, install into
 * lib/modules/<release>/updates/dkms), depmod -b for that tree (dkms's own depmod cannot take a base
 * folder), `dmkit modules status`; the installed tree is kept for the guest, which modprobes from it and
 * loads tables; then `dmkit modules remove` must leave no module behind and nothing in `dkms status`.
 */
export function prepareDkmsLab(kernel: Kernel): string {
  const root = path.join(LAB_DIR, 'dkms', kernel.release);
  fs.rmSync(root, { recursive: true, force: true });
  const tree = (base: string): string => path.join(base, 'lib', 'modules', kernel.release);
  const work = tree(path.join(root, 'work'));
  fs.mkdirSync(path.join(root, 'dkms'), { recursive: true });
  fs.mkdirSync(path.join(root, 'src'), { recursive: true });
  fs.mkdirSync(work, { recursive: true });
  fs.symlinkSync(path.join(kernel.moduleDir, 'kernel'), path.join(work, 'kernel'));
  for (const f of ['modules.builtin', 'modules.builtin.modinfo', 'modules.order']) {
    if (fs.existsSync(path.join(kernel.moduleDir, f))) fs.copyFileSync(path.join(kernel.moduleDir, f), path.join(work, f));
  }
  const dmkit = (...args: string[]): Record<string, unknown> =>
    JSON.parse(run(process.execPath, [path.join(REPO_ROOT, 'bin', 'dmkit'), 'modules', ...args, '--json',
      '--dkms-tree', path.join(root, 'dkms'), '--source-tree', path.join(root, 'src'), '--install-tree', path.join(root, 'work', 'lib', 'modules')])) as Record<string, unknown>;
  const check = (ok: boolean, what: string): void => {
    if (!ok) throw new Error(`dkms: ${what}`);
  };
  const installed = dmkit('install', '--kernel', kernel.release, '--kernel-build-dir', kernel.buildDir, '--no-depmod') as { version: string; steps: string[]; modules: string[] };
  check(installed.steps.join() === 'added,built,installed', `install did ${installed.steps.join(',')}`);
  for (const m of installed.modules) check(fs.existsSync(path.join(work, 'updates', 'dkms', `${m}.ko`)), `${m}.ko not installed in ${work}`);
  run('depmod', ['-b', path.join(root, 'work'), kernel.release]);
  const status = dmkit('status') as { dkms: Array<{ kernel: string | null; state: string }> };
  check(status.dkms.some((e) => e.kernel === kernel.release && e.state === 'installed'), `status after install: ${JSON.stringify(status.dkms)}`);
  // The tree as DKMS left it goes to the guest.
  run('cp', ['-a', path.join(root, 'work'), path.join(root, 'guest')]);
  const removed = dmkit('remove', '--kernel', kernel.release, '--no-depmod') as { removed: unknown[]; dkms: Array<{ kernel: string | null }> };
  check(removed.removed.length === 1 && !removed.dkms.some((e) => e.kernel === kernel.release), `remove left ${JSON.stringify(removed.dkms)}`);
  const left = fs.existsSync(path.join(work, 'updates')) ? fs.readdirSync(path.join(work, 'updates'), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ko')) : [];
  check(left.length === 0, `modules left after remove: ${left.join(', ')}`);
  fs.writeFileSync(path.join(root, 'ready.json'), JSON.stringify({ version: installed.version, release: kernel.release, modules: installed.modules, status: status.dkms, removed: removed.removed }));
  return root;
}

async function dkmsBuildStage(kernels: string[]): Promise<StageResult> {
  const started = Date.now();
  let failed = 0;
  const notes: string[] = [];
  for (const k of kernels) {
    const t = Date.now();
    try {
      const kernel = resolveKernel(k);
      prepareDkmsLab(kernel);
      notes.push(`${kernel.release} ${((Date.now() - t) / 1000).toFixed(0)} s`);
    } catch (e) {
      failed++;
      notes.push(`${k}: ${(e as Error).message}`);
      console.error(`dkms build for the ${k} kernel failed: ${(e as Error).message}`);
    }
  }
  return { stage: 'DKMS install/status/remove for the lab kernels (host half of the dkms suite)', seconds: (Date.now() - started) / 1000, passed: kernels.length - failed, failed, skipped: 0, note: notes.join(', ') };
}

async function labStage(): Promise<StageResult> {
  const started = Date.now();
  const run = await runLabInVm(['--scale', 'ci']);
  console.log(`lab counters: ${JSON.stringify(run.counters)}`);
  const failed = run.counters.failures > 0 ? 1 : 0;
  return {
    stage: 'crash and fault lab (ci scale)',
    seconds: (Date.now() - started) / 1000,
    passed: 1 - failed,
    failed,
    skipped: 0,
    note: run.note ?? `${run.counters.crash_states} crash states, ${run.counters.io_error_points} IO-error points, ${run.counters.malformed_inputs} malformed inputs, ${run.counters.corrupted_images} corrupted images, ${run.counters.reload_races} reload races, ${run.counters.suspend_cycles ?? 0} suspend cycles, ${run.counters.failures} failures`,
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (f: string): boolean => args.includes(f);
  const suiteIdx = args.indexOf('--suite');
  const chosen = suiteIdx >= 0 && args[suiteIdx + 1] ? [args[suiteIdx + 1]!] : undefined;
  const stages: StageResult[] = [];

  if (!flag('--debug-only')) stages.push(await unitStage());
  if (!flag('--unit-only')) {
    if (!chosen || /dkms/.test(chosen[0]!)) {
      // The debug kernel's DKMS run (about as long again) only on request: CI's 60-minute budget.
      const dkmsDebug = process.env['DMKIT_DKMS_DEBUG'] === '1';
      const kernels = [...(flag('--debug-only') ? [] : ['debian']), ...(!flag('--no-debug') && dkmsDebug && debugKernelAvailable() ? ['debug'] : [])];
      if (kernels.length) stages.push(await dkmsBuildStage(kernels));
    }
    if (!flag('--debug-only')) stages.push(await vmStage('debian', chosen ?? debianSuites()));
    if (!flag('--debug-only') && !flag('--no-lab') && !chosen) stages.push(await labStage());
    if (!flag('--no-debug')) {
      if (debugKernelAvailable()) stages.push(await vmStage('debug', chosen ?? debugSuites()));
      else console.log('note: no debug kernel in ../shared/kernels/6.1-dmdebug; its VM run is skipped');
    }
  }

  const total = stages.reduce((a, s) => ({ passed: a.passed + s.passed, failed: a.failed + s.failed, skipped: a.skipped + s.skipped }), { passed: 0, failed: 0, skipped: 0 });
  console.log('\ndmkit test summary');
  for (const s of stages) {
    console.log(`  ${s.failed ? 'FAIL' : 'ok  '} ${s.stage}: ${s.passed} passed, ${s.failed} failed, ${s.skipped} skipped (${s.seconds.toFixed(0)} s)${s.note ? ` — ${s.note}` : ''}`);
  }
  console.log(`${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
  process.exit(total.failed || !stages.length ? 1 : 0);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`dmkit test: ${(e as Error).stack ?? String(e)}`);
    console.log('0 passed, 1 failed, 0 skipped');
    process.exit(1);
  });
}
