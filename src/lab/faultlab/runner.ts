/**
 * The lab's guest side: runs the components inside the VM and prints, as its last line, the counters
 * as one JSON object. Failures are printed as they happen with the command that replays them alone,
 * and their logs are saved in the run folder (the host keeps it under .lab/runs/).
 *
 *   node dist/src/lab/faultlab/runner.js --scale ci|release [--seed N] [--target T] [--only C[,C]]
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { COMPONENTS } from './components';
import { addCounters, Counters, Failure, LabContext, Scale, zeroCounters } from './types';

export interface RunnerOptions {
  scale: Scale;
  seed: number;
  target?: string;
  only?: readonly string[];
  /** Replay one case: the component's case seed (needs --only with one component). */
  caseSeed?: number;
}

export function parseRunnerArgs(argv: readonly string[]): RunnerOptions {
  const opts: RunnerOptions = { scale: 'ci', seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--scale': {
        const s = value();
        if (s !== 'ci' && s !== 'release') throw new Error(`--scale is ci or release, not ${s}`);
        opts.scale = s;
        break;
      }
      case '--seed': opts.seed = wholeNumber(flag, value()); break;
      case '--case': opts.caseSeed = wholeNumber(flag, value()); break;
      case '--target': opts.target = value(); break;
      case '--only': opts.only = value().split(',').filter(Boolean); break;
      default: throw new Error(`unknown option ${flag}`);
    }
  }
  const known = COMPONENTS.map((c) => c.name);
  for (const o of opts.only ?? []) if (!known.includes(o)) throw new Error(`--only: no component '${o}' (have ${known.join(', ')})`);
  if (opts.caseSeed !== undefined && opts.only?.length !== 1) throw new Error('--case needs --only with one component');
  return opts;
}

function wholeNumber(flag: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`${flag} needs a whole number below 2^32`);
  return n;
}

/** The revert switches the modules were built with (the host passes them in DMKIT_REVERTS). */
function reverts(): string[] {
  return (process.env['DMKIT_REVERTS'] ?? '').split(',').filter(Boolean);
}

export async function runLab(opts: RunnerOptions): Promise<Counters> {
  const runDir = process.env['DMKIT_RUN_DIR'] ?? (fs.existsSync('/run/dmkit') ? '/run/dmkit' : os.tmpdir());
  const failDir = path.join(runDir, 'lab-failures');
  let counters = zeroCounters();
  const ctxFor = (component: string): LabContext => ({
    scale: opts.scale,
    seed: opts.seed,
    ...(opts.target ? { target: opts.target } : {}),
    release: os.release(),
    reverts: reverts(),
    log: (line) => process.stderr.write(`[${component}] ${line}\n`),
    fail: (f: Failure) => {
      counters.failures += 1;
      fs.mkdirSync(failDir, { recursive: true });
      const file = path.join(failDir, `${f.component}-${f.target}-${f.seed}.log`);
      fs.writeFileSync(file, `${f.detail}\n${f.log ?? ''}\n`);
      for (const [suffix, data] of Object.entries(f.artifacts ?? {})) fs.writeFileSync(file.replace(/\.log$/, `.${suffix}`), data);
      const replay = `npm run lab -- --only ${f.component} --target ${f.target} --seed ${opts.seed} --case ${f.seed}`;
      console.log(`FAIL ${f.component} ${f.target} case ${f.seed}: ${f.detail}\n  replay: ${replay}\n  log: ${file}`);
    },
    wants: (t) => !opts.target || t.includes(opts.target),
  });
  for (const c of COMPONENTS) {
    if (opts.only && !opts.only.includes(c.name)) continue;
    const started = Date.now();
    const ctx = ctxFor(c.name);
    try {
      const got = await c.run(ctx, opts.caseSeed !== undefined ? { seed: opts.caseSeed } : undefined);
      counters = addCounters(counters, got);
      console.log(`lab ${c.name}: ${JSON.stringify(got)} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    } catch (e) {
      ctx.fail({ component: c.name, target: opts.target ?? 'all', seed: opts.caseSeed ?? opts.seed, detail: `component crashed: ${(e as Error).message}`, log: (e as Error).stack ?? '' });
    }
  }
  return counters;
}

async function main(): Promise<void> {
  let opts: RunnerOptions;
  try {
    opts = parseRunnerArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`lab: ${(e as Error).message}`);
    process.exit(2);
  }
  const counters = await runLab(opts);
  console.log(JSON.stringify(counters));
  process.exit(counters.failures ? 1 : 0);
}

if (require.main === module) void main();
