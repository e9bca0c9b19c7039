/**
 * `npm run lab -- --scale ci|release [--target T] [--only C[,C]] [--seed N] [--case N] [--kernel K] [--revert FIX]`:
 * boots the VM lab, runs the crash and fault lab's components in it (runner.ts) and prints, as the last
 * line, the counters as one JSON object:
 *   {"crash_states":n,"crash_states_kernel":n,"io_error_points":n,"malformed_inputs":n,"corrupted_images":n,"reload_races":n,"known_upstream":n,"failures":n,
 *    "backup_checks":n,"suspend_cycles":n,"per_target":{"<type>":{"suspend_cycles":n,"reload_races":n},...}}
 * Exit status 0 when there were no failures, 1 otherwise (2: bad arguments; a VM failure counts as a failure).
 */
import { PassThrough } from 'node:stream';
import { REPO_ROOT } from '../paths';
import { describeResult, runVm } from '../vm';
import { parseRunnerArgs } from './runner';
import { Counters, zeroCounters } from './types';

export interface LabRun {
  counters: Counters;
  exitCode: number;
  seconds: number;
  note?: string;
  /** The kernel splatted or the run timed out: whatever the counters say, nothing was observed cleanly. */
  splat?: boolean;
}

/** Runs the lab in the VM; `args` are runner arguments plus --kernel/--revert for the VM. */
export async function runLabInVm(args: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<LabRun> {
  const runnerArgs: string[] = [];
  let kernel: string | undefined;
  let reverts: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--kernel') kernel = args[++i];
    else if (args[i] === '--revert') reverts = (args[++i] ?? '').split(',').filter(Boolean);
    else runnerArgs.push(args[i]!);
  }
  const opts = parseRunnerArgs(runnerArgs); // bad arguments fail here, before a VM boots
  const started = Date.now();
  let text = '';
  const sink = new PassThrough();
  sink.on('data', (chunk: Buffer) => {
    text += chunk.toString();
    out.write(chunk);
  });
  const r = await runVm({
    command: [process.execPath, 'dist/src/lab/faultlab/runner.js', ...runnerArgs],
    cwd: REPO_ROOT,
    ...(kernel ? { kernel } : {}),
    reverts,
    env: { DMKIT_REVERTS: reverts.join(',') },
    memoryMiB: 3072,
    timeoutSec: opts.scale === 'release' ? 6 * 3600 : 3600, // a hang guard: a loaded host runs it 2-3x slower than CI
    stdout: sink,
  });
  sink.end();
  console.error(describeResult(r));
  const last = text.trim().split('\n').reverse().find((l) => l.startsWith('{"crash_states"'));
  const counters = last ? (JSON.parse(last) as Counters) : zeroCounters();
  let note: string | undefined;
  if (!last || (r.exitCode !== 0 && r.exitCode !== 1)) {
    counters.failures += 1;
    note = r.splats.length ? `kernel splat: ${r.splats[0]!.text}` : r.labError ?? `VM exit ${r.exitCode}`;
  }
  const splat = r.splats.length > 0 || r.exitCode === 124 || r.exitCode === 125;
  return { counters, exitCode: counters.failures ? 1 : 0, seconds: (Date.now() - started) / 1000, ...(note ? { note } : {}), ...(splat ? { splat } : {}) };
}

async function main(): Promise<void> {
  let run: LabRun;
  try {
    run = await runLabInVm(process.argv.slice(2));
  } catch (e) {
    console.error(`lab: ${(e as Error).message}`);
    process.exit(2);
  }
  if (run.note) console.error(`lab: ${run.note}`);
  console.error(`lab: ${run.seconds.toFixed(0)} s`);
  console.log(JSON.stringify(run.counters));
  process.exit(run.exitCode);
}

if (require.main === module) void main();
