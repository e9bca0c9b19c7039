/**
 * `npm run prove -- <fix> [--kernel debian|debug] [--lab]`: shows that a named test catches a known bug. The fix's
 * tests (those whose names start with `<fix>:`) run twice in the VM lab, once on modules built as they are
 * and once on modules built with the fix's revert switch (make -C kmod REVERT=<fix>). Both outputs stream
 * through; the last line is exactly
 *
 *   {"fix":"<fix>","with_fix":"pass|fail","with_revert":"pass|fail"}
 *
 * and the exit status is 0 only when the tests pass with the fix and fail with it reverted. A run passes
 * when its command exits 0, no kernel splat was seen, and at least one test ran with none failing. A run
 * fails only when a named test failed on an assertion (observed data) with no splat and no timeout;
 * anything else (a splat, a hang, a test that threw, no test run, the lab or the build failing) is
 * "error", and the line adds "why". Unknown fix: usage, exit 2.
 *
 * With --lab the crash and fault lab stands in for the named tests: the fix's lab components run at CI
 * scale on its target (src/lab/faultlab); a run passes with no failure reported, fails with any, and the
 * last line adds "lab":true.
 */
import { REPO_ROOT } from './paths';
import { tee } from './proc';
import { parseNodeTestSummary } from './test-cli';
import { describeResult, runVm, VM_EXIT, VmResult } from './vm';
import { runLabInVm } from './faultlab/cli';

export interface FixProof {
  /** Compiled test files, relative to the checkout. */
  files: readonly string[];
  /** What the fix is, for the usage text. */
  summary: string;
  /** Kernel to prove on unless --kernel says otherwise. */
  kernel?: 'debian' | 'debug';
  timeoutSec?: number;
  /** The crash and fault lab's components that find the bug, and on which target (for --lab). */
  lab: { only: string; target: string };
}

/** Fix name -> its proof. Every test that proves a fix is named `<fix>: ...`. */
export const FIXES: Readonly<Record<string, FixProof>> = {
  'era-postsuspend': {
    files: ['dist/test/vm/era-postsuspend.test.js'],
    summary: 'dm-era fix (a): postsuspend stops the worker (drain_workqueue) before it commits',
    lab: { only: 'torture', target: 'dmkit-era' },
  },
  'tm-commit-order': {
    files: ['dist/test/vm/era-tm-commit.test.js', 'dist/test/vm/clone-metaerr.test.js'],
    summary: 'fix (c): the superblock is written only after the rest of the transaction was flushed',
    lab: { only: 'crash,ioerr', target: 'dmkit-era' },
  },
  'clone-flush': {
    files: ['dist/test/vm/clone-flush.test.js'],
    summary: 'dm-clone fix (b): the destination is flushed before metadata marking regions hydrated commits',
    lab: { only: 'crash', target: 'dmkit-clone' },
  },
  'cache-shared-metadata': {
    files: ['dist/test/vm/cache-preload.test.js'],
    summary: 'dm-cache fix (e): one refcounted metadata object per metadata device, shared by the inactive and active tables',
    lab: { only: 'reload', target: 'dmkit-cache' },
  },
  'snapshot-header': {
    files: ['dist/test/vm/snapshot-header.test.js'],
    summary: 'dm-snapshot fix (d): an invalidated snapshot\'s header is built and written from its own buffer, not the exception area',
    lab: { only: 'corrupt', target: 'dmkit-snapshot' },
  },
};

export class UsageError extends Error {}

export interface ProveArgs {
  fix: string;
  kernel: 'debian' | 'debug' | undefined;
  /** Prove with the crash and fault lab instead of the named tests. */
  lab: boolean;
}

export function usage(fixes: Readonly<Record<string, FixProof>> = FIXES): string {
  const names = Object.keys(fixes).sort();
  const width = Math.max(...names.map((n) => n.length));
  return [
    'usage: npm run prove -- <fix> [--kernel debian|debug] [--lab]',
    'Runs the tests named "<fix>: ..." in the VM lab with the fix and with its revert switch; exit 0 only when',
    'they pass with the fix and fail without it. The last line is {"fix":..,"with_fix":..,"with_revert":..}.',
    '--lab: the crash and fault lab\'s components for the fix stand in for the named tests.',
    'Known fixes:',
    ...names.map((n) => `  ${n.padEnd(width)}  ${fixes[n]!.summary}`),
  ].join('\n');
}

export function parseProveArgs(argv: readonly string[], fixes: Readonly<Record<string, FixProof>> = FIXES): ProveArgs {
  let fix: string | undefined;
  let kernel: ProveArgs['kernel'];
  let lab = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') throw new UsageError(usage(fixes));
    if (a === '--kernel' || a.startsWith('--kernel=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v !== 'debian' && v !== 'debug') throw new UsageError(`--kernel must be debian or debug, got ${v ?? 'nothing'}\n${usage(fixes)}`);
      kernel = v;
      continue;
    }
    if (a === '--lab') {
      lab = true;
      continue;
    }
    if (a.startsWith('-')) throw new UsageError(`unknown option ${a}\n${usage(fixes)}`);
    if (fix !== undefined) throw new UsageError(`one fix at a time (got ${fix} and ${a})\n${usage(fixes)}`);
    fix = a;
  }
  if (fix === undefined) throw new UsageError(usage(fixes));
  if (!Object.hasOwn(fixes, fix)) throw new UsageError(`unknown fix '${fix}'\n${usage(fixes)}`);
  return { fix, kernel, lab };
}

/** The name pattern for node --test: the fix name and a colon at the start of a test's name. */
export function testNamePattern(fix: string): string {
  return `^${fix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:`;
}

export function testCommand(nodePath: string, fix: string, proof: FixProof): string[] {
  return [nodePath, '--test', '--test-reporter=spec', '--test-concurrency=1', `--test-name-pattern=${testNamePattern(fix)}`, ...proof.files];
}

/** What one lab run came to. */
export interface RunOutcome {
  /** The lab's exit code (the command's, or 124 timeout / 125 splat / 126 lab failure); null if the lab threw. */
  exitCode: number | null;
  splats: number;
  /** The spec reporter's closing counts, if it printed them. */
  counts: { passed: number; failed: number; skipped: number } | null;
  /** A failed test failed on an assertion (node's ERR_ASSERTION), not on an exception of its own. */
  assertionFailed?: boolean;
}

/**
 * pass: exit 0, no splat, at least one test ran and none failed. fail: a named test failed on an
 * assertion, i.e. on observed data, and the kernel neither splatted nor hung. error (with why): anything
 * else that is not a pass: a splat, a timeout, a test that threw instead of asserting, no test run, or the
 * lab or the module build failing before any test could say anything.
 */
export interface RunVerdict {
  verdict: 'pass' | 'fail' | 'error';
  why?: string;
}

export function runVerdict(o: RunOutcome): RunVerdict {
  if (o.splats > 0 || o.exitCode === VM_EXIT.SPLAT) return { verdict: 'error', why: `kernel splat (${o.splats} line(s))` };
  if (o.exitCode === VM_EXIT.TIMEOUT) return { verdict: 'error', why: 'the run timed out' };
  if (o.exitCode === null || o.exitCode === VM_EXIT.LAB_FAILURE) return { verdict: 'error', why: 'the lab or the module build failed before any test ran' };
  if (!o.counts) return { verdict: 'error', why: `no test summary (exit ${o.exitCode})` };
  if (o.counts.failed > 0) {
    return o.assertionFailed ? { verdict: 'fail' } : { verdict: 'error', why: 'a test failed without an assertion (it threw)' };
  }
  if (o.counts.passed === 0) return { verdict: 'error', why: 'no test ran' };
  if (o.exitCode !== 0) return { verdict: 'error', why: `exit ${o.exitCode} with every test passing` };
  return { verdict: 'pass' };
}

/** node's spec reporter prints `code: 'ERR_ASSERTION'` in the details of a test that failed an assert. */
export function sawAssertionFailure(output: string): boolean {
  return /code: 'ERR_ASSERTION'/.test(output);
}

export interface ProofResult {
  line: string;
  exitCode: 0 | 1;
}

/** The closing line and exit status from the two runs; an error verdict says why. */
export function proofResult(fix: string, withFix: RunVerdict, withRevert: RunVerdict, lab = false): ProofResult {
  const why = [
    ...(withFix.why ? [`with_fix: ${withFix.why}`] : []),
    ...(withRevert.why ? [`with_revert: ${withRevert.why}`] : []),
  ].join('; ');
  const line = JSON.stringify({ fix, ...(lab ? { lab: true } : {}), with_fix: withFix.verdict, with_revert: withRevert.verdict, ...(why ? { why } : {}) });
  return { line, exitCode: withFix.verdict === 'pass' && withRevert.verdict === 'fail' ? 0 : 1 };
}

async function proveRun(args: ProveArgs, proof: FixProof, reverts: readonly string[]): Promise<RunVerdict> {
  const label = reverts.length ? `with ${args.fix} reverted` : 'with the fix';
  const kernel = args.kernel ?? proof.kernel ?? 'debian';
  console.error(`prove ${args.fix}: running its tests ${label} (${kernel} kernel)`);
  const out = tee(process.stdout);
  let r: VmResult | null = null;
  try {
    r = await runVm({
      command: testCommand(process.execPath, args.fix, proof),
      cwd: REPO_ROOT,
      kernel,
      reverts,
      memoryMiB: kernel === 'debug' ? 3072 : 2048,
      timeoutSec: proof.timeoutSec ?? (kernel === 'debug' ? 2400 : 1200),
      stdout: out.stream,
    });
  } catch (e) {
    console.error(`prove ${args.fix}: the lab failed ${label}: ${(e as Error).message}`);
  }
  out.stream.end();
  if (r) console.error(describeResult(r));
  const verdict = runVerdict({
    exitCode: r ? r.exitCode : null, splats: r ? r.splats.length : 0, counts: parseNodeTestSummary(out.text()), assertionFailed: sawAssertionFailure(out.text()),
  });
  console.error(`prove ${args.fix}: ${label}: ${verdict.verdict}${verdict.why ? ` (${verdict.why})` : ''}`);
  return verdict;
}

/** The fix's lab components at CI scale: pass with no failure reported, fail with any. */
async function labRun(args: ProveArgs, proof: FixProof, reverts: readonly string[]): Promise<RunVerdict> {
  const label = reverts.length ? `with ${args.fix} reverted` : 'with the fix';
  console.error(`prove ${args.fix}: running the lab's ${proof.lab.only} on ${proof.lab.target} ${label}`);
  try {
    const run = await runLabInVm([
      '--scale', 'ci', '--only', proof.lab.only, '--target', proof.lab.target,
      ...(args.kernel ? ['--kernel', args.kernel] : []), ...(reverts.length ? ['--revert', reverts.join(',')] : []),
    ]);
    console.error(`prove ${args.fix}: ${label}: ${JSON.stringify(run.counters)}${run.note ? ` (${run.note})` : ''}`);
    if (run.splat) return { verdict: 'error', why: `kernel splat: ${run.note ?? ''}`.trim() };
    return run.counters.failures ? { verdict: 'fail' } : { verdict: 'pass' };
  } catch (e) {
    console.error(`prove ${args.fix}: the lab failed ${label}: ${(e as Error).message}`);
    return { verdict: 'error', why: `the lab failed: ${(e as Error).message}` };
  }
}

async function main(): Promise<void> {
  let args: ProveArgs;
  try {
    args = parseProveArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(e.message);
    process.exit(2);
  }
  const proof = FIXES[args.fix]!;
  const run = args.lab ? labRun : proveRun;
  const withFix = await run(args, proof, []);
  const withRevert = await run(args, proof, [args.fix]);
  const result = proofResult(args.fix, withFix, withRevert, args.lab);
  if (withRevert.verdict === 'error') console.error(`prove ${args.fix}: the run with the revert did not fail on observed data (${withRevert.why}); nothing is proven`);
  console.log(result.line);
  process.exit(result.exitCode);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`dmkit prove: ${(e as Error).stack ?? String(e)}`);
    process.exit(1);
  });
}
