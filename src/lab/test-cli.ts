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
import { debugKernelAvailable } from './kernels';
import { REPO_ROOT } from './paths';
import { tee } from './proc';
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
 * paths most (module load, every ioctl, each dmkit target's IO, metadata and teardown paths, the clone
 * races and the torture component), not those whose extra work is in userspace (CLI process start-up,
 * /dev/mapper nodes, crash-image replay). DMKIT_DEBUG_SUITES=all
 * runs every suite there too.
 */
export const DEBUG_KERNEL_SUITES = ['core', 'dm-api', 'era-functional', 'clone-data', 'clone-compat', 'clone-copyerr', 'clone-races', 'lab-torture'];

function debugSuites(): string[] {
  if (process.env['DMKIT_DEBUG_SUITES'] === 'all') return [VM_SUITES];
  return DEBUG_KERNEL_SUITES.map((s) => `${VM_SUITES}${s}.test.js`).filter((f) => fs.existsSync(path.join(REPO_ROOT, f)));
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
    command: [process.execPath, ...NODE_TEST, ...suites],
    cwd: REPO_ROOT,
    kernel,
    memoryMiB: kernel === 'debug' ? 3072 : 2048,
    timeoutSec: kernel === 'debug' ? 2400 : 1200,
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
    if (!flag('--debug-only')) stages.push(await vmStage('debian', chosen ?? [VM_SUITES]));
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
