/**
 * The crash and fault lab's shared vocabulary. The lab is a set of components (crash states, IO errors,
 * table/message fuzzing, metadata corruption, reload races); each runs inside the VM, reports counters,
 * and reports every failure with a seed and a command line that replays it alone.
 */

export type Scale = 'ci' | 'release';

/** The counters `npm run lab` prints as its last line (summed over components). */
export interface Counters {
  crash_states: number;
  /** Crash states recovered by loading the target in the kernel (a subset of crash_states). */
  crash_states_kernel: number;
  io_error_points: number;
  malformed_inputs: number;
  corrupted_images: number;
  reload_races: number;
  /** Crash states or inputs where an in-tree target shows a documented upstream weakness (not failures). */
  known_upstream: number;
  failures: number;
  /** Crash states (era) where an incremental backup of the recovered device was checked against the image. */
  backup_checks: number;
  /** Suspend/resume cycles under IO (torture). */
  suspend_cycles: number;
  /** The torture component's cycles and races, per target type. */
  per_target: Record<string, { suspend_cycles: number; reload_races: number }>;
}

type NumericCounter = Exclude<keyof Counters, 'per_target'>;

export function zeroCounters(): Counters {
  return {
    crash_states: 0, crash_states_kernel: 0, io_error_points: 0, malformed_inputs: 0, corrupted_images: 0, reload_races: 0, known_upstream: 0, failures: 0,
    backup_checks: 0, suspend_cycles: 0, per_target: {},
  };
}

export function addCounters(a: Counters, b: Partial<Counters>): Counters {
  const out = { ...a, per_target: { ...a.per_target } };
  for (const k of Object.keys(out) as (keyof Counters)[]) {
    if (k === 'per_target') continue;
    out[k as NumericCounter] += b[k as NumericCounter] ?? 0;
  }
  for (const [t, v] of Object.entries(b.per_target ?? {})) {
    const cur = out.per_target[t] ?? { suspend_cycles: 0, reload_races: 0 };
    out.per_target[t] = { suspend_cycles: cur.suspend_cycles + v.suspend_cycles, reload_races: cur.reload_races + v.reload_races };
  }
  return out;
}

export interface Failure {
  component: string;
  /** The dm target type the failure concerns (e.g. 'era', 'dmkit-clone'). */
  target: string;
  seed: number;
  /** What was expected and what happened, in one or a few lines. */
  detail: string;
  /** Extra lines (log excerpt, hex dump, the input) written to the failure's log file. */
  log?: string;
  /** Binary artifacts saved beside the log (e.g. the recorded write log), by file suffix. */
  artifacts?: Record<string, Buffer>;
}

export interface LabContext {
  scale: Scale;
  /** The base seed; components derive their own sub-seeds from it. */
  seed: number;
  /** Only targets whose type contains this string, when set. */
  target?: string;
  /** The kernel's `uname -r` and the revert switches the dmkit modules were built with. */
  release: string;
  reverts: readonly string[];
  /** A progress line (goes to stderr, not part of the counters). */
  log(line: string): void;
  /**
   * Records a failure: counted in `failures`, printed with the command that replays it alone
   * (`npm run lab -- --only <component> --target <target> --seed <seed>`), its log saved under the run dir.
   */
  fail(f: Failure): void;
  /** True when `targetType` passes the --target filter. */
  wants(targetType: string): boolean;
}

export interface Component {
  /** Short name used by --only and in replay commands: 'crash', 'ioerr', 'fuzz', 'corrupt', 'reload', 'torture'. */
  readonly name: string;
  /**
   * Runs the component at ctx.scale. With `only` set (a replay), runs just the case of that seed.
   * Returns the counters it advanced (failures are counted by ctx.fail, not here).
   */
  run(ctx: LabContext, only?: { seed: number }): Promise<Partial<Counters>>;
}

export { prng } from '../../testing/random';

/** A sub-seed for case `i` of a component, stable across runs. */
export function caseSeed(base: number, component: string, i: number): number {
  let h = (base ^ 0x9e3779b9) >>> 0;
  for (const c of `${component}:${i}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}
