/**
 * The counting fault injector (dmkit-core's `fault` messages) as the ioerr component uses it: its status,
 * the messages that arm it, and the point encoding that lets one case seed name one injection point.
 *
 * dmkit-core INFO status: `<version> <release> <reverts|-> <selftest> <writes> <flushes> <off|armed|tripped> <failed>`
 * (the last four fields counted since the table was loaded; older modules print only the first four).
 */

export type FaultKind = 'writes' | 'flushes';
/** error: the bio fails with EIO; drop: it completes as if written but never reaches the device (power cut). */
export type FaultMode = 'error' | 'drop';
export type FaultState = 'off' | 'armed' | 'tripped';

export interface InjectorStatus {
  version: string;
  release: string;
  reverts: string;
  selftest: string;
  writes: number;
  flushes: number;
  fault: FaultState;
  failed: number;
}

/** Parses dmkit-core's INFO status; throws on anything else (a module without the injector included). */
export function parseInjectorStatus(line: string): InjectorStatus {
  const f = line.trim().split(/\s+/);
  if (f.length !== 8) throw new Error(`dmkit-core status has ${f.length} fields, want 8 (a module without the fault injector?): '${line}'`);
  const count = (i: number, what: string): number => {
    const v = f[i]!;
    if (!/^\d+$/.test(v)) throw new Error(`dmkit-core status: ${what} '${v}' is not a count`);
    return Number(v);
  };
  const fault = f[6]!;
  if (fault !== 'off' && fault !== 'armed' && fault !== 'tripped') throw new Error(`dmkit-core status: fault state '${fault}'`);
  return {
    version: f[0]!, release: f[1]!, reverts: f[2]!, selftest: f[3]!,
    writes: count(4, 'writes'), flushes: count(5, 'flushes'), fault, failed: count(7, 'failed'),
  };
}

/** The message that lets `passes` more bios of `kind` through and fails every later one. */
export function armMessage(kind: FaultKind, passes: number, mode: FaultMode): string {
  if (!Number.isInteger(passes) || passes < 0) throw new RangeError(`passes must be a whole number, not ${passes}`);
  return `fault ${kind} ${passes} ${mode}`;
}

export const DISARM = 'fault off';

/*----------------------------------------------------------------
 * Injection points and their seeds
 *--------------------------------------------------------------*/

export const IOERR_TARGETS = ['dmkit-era', 'era', 'dmkit-clone', 'dmkit-cache'] as const;
export type IoerrTarget = (typeof IOERR_TARGETS)[number];

/**
 * Where the injector sits: 'split' keeps the superblock (block 0) on linear and the body behind the
 * injector (the a9d45396 set-up: a commit can fail after its body while the superblock stays writable);
 * 'whole' puts the whole metadata device behind it (a power cut drops the superblock write too).
 */
export type Layout = 'split' | 'whole';

export interface Point {
  target: IoerrTarget;
  layout: Layout;
  kind: FaultKind;
  mode: FaultMode;
  /** 1-based: the n-th write (or flush) of the workload is the first to fail. */
  n: number;
}

const N_BITS = 24;
const N_MAX = (1 << N_BITS) - 1;

/**
 * A case seed that is the point itself, so `--case <seed>` replays exactly that point:
 * bits 31..28 = 1 + target, 27 = layout (whole), 26 = kind (flushes), 25 = mode (drop), 23..0 = n.
 */
export function pointSeed(p: Point): number {
  if (!Number.isInteger(p.n) || p.n < 1 || p.n > N_MAX) throw new RangeError(`point n ${p.n} out of range`);
  const t = IOERR_TARGETS.indexOf(p.target);
  if (t < 0) throw new RangeError(`unknown target ${p.target}`);
  return (((t + 1) << 28) | ((p.layout === 'whole' ? 1 : 0) << 27) | ((p.kind === 'flushes' ? 1 : 0) << 26) | ((p.mode === 'drop' ? 1 : 0) << 25) | p.n) >>> 0;
}

export function pointFromSeed(seed: number): Point | null {
  const t = (seed >>> 28) - 1;
  const target = IOERR_TARGETS[t];
  const n = seed & N_MAX;
  if (!target || n < 1 || (seed >>> 24) & 1) return null;
  return {
    target,
    layout: (seed >>> 27) & 1 ? 'whole' : 'split',
    kind: (seed >>> 26) & 1 ? 'flushes' : 'writes',
    mode: (seed >>> 25) & 1 ? 'drop' : 'error',
    n,
  };
}

export function describePoint(p: Point): string {
  return `${p.target} ${p.layout} ${p.mode} at ${p.kind === 'writes' ? 'write' : 'flush'} ${p.n}`;
}

/**
 * The (layout, kind, mode) families the component runs, and why only these:
 * - split/writes/error and split/flushes/error: the EIO model with the superblock still writable, the
 *   crucial case of fix (c) and the one a fail mode must handle.
 * - whole/writes/drop: the power-cut model. Drops must cover the superblock too (a cut that kept writing
 *   block 0 is no cut), hence 'whole'. A drop at the n-th flush is not a separate family: the backing brd
 *   has no volatile cache, so every write before that flush is already on it and the disk ends exactly as
 *   after a drop at the first write following the flush, which write-drops already cover.
 */
export const FAMILIES: ReadonlyArray<Pick<Point, 'layout' | 'kind' | 'mode'>> = [
  { layout: 'split', kind: 'writes', mode: 'error' },
  { layout: 'split', kind: 'flushes', mode: 'error' },
  { layout: 'whole', kind: 'writes', mode: 'drop' },
];
