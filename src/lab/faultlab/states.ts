/**
 * Crash states of a dm-log-writes log (pure TypeScript; the images are built by logwrites.replayImage).
 *
 * What a log says about durability: a WRITE is logged only once a later FLUSH covers it, a FUA write
 * as soon as it completes; so at each FLUSH or FUA entry (a durability point) every entry before it was
 * durable. Non-FUA writes logged between a durability point and the next FLUSH had completed (were
 * acknowledged, maybe only into the volatile cache) before that FLUSH was issued and were made durable
 * by it: a power cut just after the durability point may have kept any subset of them. The log does not
 * say whether they completed before or after earlier FUA entries of the same stretch, so they are
 * candidates only for the last durability point before them.
 *
 * A crash point is a durable prefix plus those pending candidates; its crash states are the prefix
 * alone, the prefix plus subsets of the pending writes, and torn variants (one 512-byte sector of a
 * pending write of 4 KiB or more left as it was).
 */
import { LOG_FLAG, isDataEntry, type TornWrite, type WriteLog } from './logwrites';

export interface CrashPoint {
  /** Entries [0, point] are durable and applied (-1: none, the device before logging). */
  readonly point: number;
  /** Non-FUA write/discard entries after `point`, in log order, that may or may not be on the disk. */
  readonly pending: readonly number[];
  /** 'start', 'flush@N', 'fua@N', 'mark@N:<text>' or 'end@N'. */
  readonly label: string;
}

export type CrashStateKind = 'prefix' | 'subset' | 'torn';

export interface CrashState {
  /** 0, 1, 2, ... in enumeration order. */
  readonly id: number;
  readonly point: number;
  readonly kind: CrashStateKind;
  /** Entry indices to apply: the durable prefix's data entries in log order, then the chosen pending ones. */
  readonly apply: Uint32Array;
  readonly torn?: TornWrite;
  /** E.g. 'flush@123', 'flush@123+{125,127}', 'torn@123:125/3+{127}'. */
  readonly label: string;
}

export interface EnumerateOptions {
  /** Every non-empty subset of the pending writes when there are at most this many (12 keeps it at 4095). */
  readonly exhaustiveUpTo: number;
  /** Otherwise this many distinct random subsets, the full set first. */
  readonly randomSubsets: number;
  /** Torn variants per crash point (none when no pending write has 8 sectors or more). */
  readonly tornPerPoint: number;
  /** Uniform in [0, 1); seeded (types.prng) so a run replays. */
  readonly rng: () => number;
}

/** Pending writes torn at most: 4 KiB and up, as a page-sized write is the smallest a disk may tear. */
export const TORN_MIN_SECTORS = 8;

const DURABLE = LOG_FLAG.FLUSH | LOG_FLAG.FUA;

/** The crash points of a log: at every durability point, or at marks whose text matches; plus the end. */
export function crashPoints(log: WriteLog, at: 'durability' | { marks: RegExp }): CrashPoint[] {
  const entries = log.entries;
  const points: CrashPoint[] = [];
  if (at === 'durability') {
    let current = { point: -1, label: 'start', pending: [] as number[] };
    for (const e of entries) {
      if (e.flags & DURABLE) {
        points.push(current);
        current = { point: e.index, label: `${e.flags & LOG_FLAG.FLUSH ? 'flush' : 'fua'}@${e.index}`, pending: [] };
      } else if (isDataEntry(e)) {
        current.pending.push(e.index);
      }
    }
    points.push(current);
  } else {
    const re = new RegExp(at.marks.source, at.marks.flags.replace(/[gy]/g, ''));
    for (const e of entries) {
      if (e.mark === undefined || !re.test(e.mark)) continue;
      const pending: number[] = [];
      for (let j = e.index + 1; j < entries.length && !(entries[j]!.flags & LOG_FLAG.FLUSH); j++) {
        const w = entries[j]!;
        if (isDataEntry(w) && !(w.flags & LOG_FLAG.FUA)) pending.push(j);
      }
      points.push({ point: e.index, pending, label: `mark@${e.index}:${e.mark}` });
    }
  }
  if (entries.length > 0) points.push({ point: entries.length - 1, pending: [], label: `end@${entries.length - 1}` });
  return points;
}

/** Exhaustive enumeration stops being practical long before masks stop fitting a number. */
export const EXHAUSTIVE_MAX = 24;

function checkOptions(opts: Omit<EnumerateOptions, 'rng'>): void {
  for (const k of ['exhaustiveUpTo', 'randomSubsets', 'tornPerPoint'] as const) {
    if (!Number.isSafeInteger(opts[k]) || opts[k] < 0) throw new RangeError(`${k} must be a non-negative integer`);
  }
  if (opts.exhaustiveUpTo > EXHAUSTIVE_MAX) throw new RangeError(`exhaustiveUpTo must be at most ${EXHAUSTIVE_MAX}`);
}

/** How many subsets of `n` pending writes a point gets (non-empty; exhaustive or random). */
function subsetCount(n: number, opts: Pick<EnumerateOptions, 'exhaustiveUpTo' | 'randomSubsets'>): number {
  if (n === 0) return 0;
  const all = n >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** n - 1;
  return n <= opts.exhaustiveUpTo ? all : Math.min(opts.randomSubsets, all);
}

function tornCandidates(log: WriteLog, pending: readonly number[]): number[] {
  return pending.filter((i) => {
    const e = log.entries[i]!;
    return !(e.flags & LOG_FLAG.DISCARD) && e.sectors >= TORN_MIN_SECTORS;
  });
}

/** The number of states enumerateStates yields for these points and options (no rng needed). */
export function countStates(log: WriteLog, points: readonly CrashPoint[], opts: Omit<EnumerateOptions, 'rng'>): number {
  checkOptions(opts);
  let n = 0;
  for (const p of points) {
    n += 1 + subsetCount(p.pending.length, opts);
    if (opts.tornPerPoint > 0 && tornCandidates(log, p.pending).length > 0) n += opts.tornPerPoint;
  }
  return n;
}

/** Positions (into pending) of each subset a point gets, per subsetCount. */
function* subsets(n: number, opts: EnumerateOptions): Generator<number[]> {
  const want = subsetCount(n, opts);
  if (want === 0) return;
  const all = n >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** n - 1;
  const fromMask = (mask: number): number[] => {
    const pos: number[] = [];
    for (let i = 0; i < n; i++) if (Math.floor(mask / 2 ** i) % 2 === 1) pos.push(i);
    return pos;
  };
  if (want === all && n <= 30) {
    for (let mask = 1; mask <= all; mask++) yield fromMask(mask);
    return;
  }
  const full = Array.from({ length: n }, (_, i) => i);
  yield full;
  if (n <= 20 && want > all / 2) {
    // Most subsets wanted: a partial shuffle of the masks below the full set, never a rejection loop.
    const masks = Array.from({ length: all - 1 }, (_, i) => i + 1);
    for (let k = 0; k < want - 1; k++) {
      const j = k + Math.floor(opts.rng() * (masks.length - k));
      [masks[k], masks[j]] = [masks[j]!, masks[k]!];
      yield fromMask(masks[k]!);
    }
    return;
  }
  // Fewer than half of the subsets: each draw is new with probability > 1/2. The density varies per
  // subset so that small and large subsets both occur.
  const seen = new Set<string>([full.join(',')]);
  for (let made = 1, tries = 0; made < want && tries < want * 1000; tries++) {
    const density = opts.rng();
    const pos = full.filter(() => opts.rng() < density);
    const key = pos.join(',');
    if (pos.length === 0 || seen.has(key)) continue;
    seen.add(key);
    made++;
    yield pos;
  }
}

/** prefix ++ the chosen pending entries (already in log order). */
function applyList(prefix: Uint32Array, chosen: readonly number[]): Uint32Array {
  const apply = new Uint32Array(prefix.length + chosen.length);
  apply.set(prefix);
  apply.set(chosen, prefix.length);
  return apply;
}

/**
 * The crash states at each point, in order: the prefix alone, subsets of its pending writes, then torn
 * variants (a random pending write of 8+ sectors with one random sector torn, plus a random subset of
 * the other pending writes). Deterministic for a given rng sequence; countStates gives the total.
 * Torn variants may repeat one another; callers skip identical images by digest.
 */
export function* enumerateStates(log: WriteLog, points: readonly CrashPoint[], opts: EnumerateOptions): Generator<CrashState> {
  checkOptions(opts);
  const data = Uint32Array.from(log.entries.filter(isDataEntry).map((e) => e.index));
  let id = 0;
  for (const p of points) {
    // Data entries with index <= p.point: a binary search over the sorted data indices.
    let lo = 0;
    for (let hi = data.length; lo < hi; ) {
      const mid = (lo + hi) >>> 1;
      if (data[mid]! <= p.point) lo = mid + 1;
      else hi = mid;
    }
    const prefix = data.subarray(0, lo);
    const pending = p.pending;
    yield { id: id++, point: p.point, kind: 'prefix', apply: applyList(prefix, []), label: p.label };
    for (const pos of subsets(pending.length, opts)) {
      const chosen = pos.map((i) => pending[i]!);
      yield { id: id++, point: p.point, kind: 'subset', apply: applyList(prefix, chosen), label: `${p.label}+{${chosen.join(',')}}` };
    }
    const candidates = tornCandidates(log, pending);
    if (candidates.length === 0) continue;
    for (let t = 0; t < opts.tornPerPoint; t++) {
      const entry = candidates[Math.floor(opts.rng() * candidates.length)]!;
      const sector = Math.floor(opts.rng() * log.entries[entry]!.sectors);
      const chosen: number[] = [];
      const others: number[] = [];
      for (const i of pending) {
        if (i === entry) {
          chosen.push(i);
        } else if (opts.rng() < 0.5) {
          chosen.push(i);
          others.push(i);
        }
      }
      const label = `torn@${p.point}:${entry}/${sector}${others.length ? `+{${others.join(',')}}` : ''}`;
      yield { id: id++, point: p.point, kind: 'torn', apply: applyList(prefix, chosen), torn: { entry, sector }, label };
    }
  }
}
