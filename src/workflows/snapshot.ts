/**
 * COW snapshots of a live dm volume, the way LVM lays them out, on the in-tree targets (snapshot-origin,
 * snapshot, snapshot-merge) or dmkit's (dmkit-origin, dmkit-snapshot, dmkit-merge):
 *
 *   ORIGIN        the volume users open; its table becomes `<origin> <real>` once it has snapshots
 *   ORIGIN-real   a new device with the volume's former table: the data itself
 *   SNAP          `<snapshot> <real> <cow> <P|PO|N> <chunk>`: the volume as it was when SNAP was taken
 *
 * - createSnapshot: the first snapshot moves the volume's table to ORIGIN-real and puts the origin target
 *   on ORIGIN; every snapshot is created while ORIGIN is suspended (the kernel requires it), so no write
 *   slips between "taken" and "tracked". The same dev_t and open file descriptors stay valid throughout.
 * - mergeSnapshot: ORIGIN is suspended, SNAP removed (its exceptions are already committed to the COW),
 *   and ORIGIN switched to the merge target on the same COW; the merge runs in the kernel, followed through
 *   the status until allocated == metadata; then ORIGIN gets the plain origin table back (or, with no
 *   snapshot left, its former table, and ORIGIN-real goes).
 * - removeSnapshot: SNAP removed while ORIGIN is suspended; the last one restores the former table.
 *
 * Devices are named in tables by major:minor, which is also how the kernel reports them, so the origin
 * and snapshots that belong together are found by comparing table parameters.
 */
import type { DevId, DeviceMapper, TargetLine } from '../dm';
import { snapshot, snapshotMerge, snapshotOrigin, targetKind, type SnapshotParams, type SnapshotStatus, type SnapshotStore } from '../targets';
import { sectors, type Sectors } from '../units';
import { sleep } from './wait';

/** Which family of targets: the kernel's own or dmkit's modules. */
export type SnapshotFamily = 'in-tree' | 'dmkit';

export interface SnapshotTypeNames {
  readonly origin: string;
  readonly snapshot: string;
  readonly merge: string;
}

export const SNAPSHOT_TYPES: Readonly<Record<SnapshotFamily, SnapshotTypeNames>> = {
  'in-tree': { origin: 'snapshot-origin', snapshot: 'snapshot', merge: 'snapshot-merge' },
  dmkit: { origin: 'dmkit-origin', snapshot: 'dmkit-snapshot', merge: 'dmkit-merge' },
};

export function familyOf(type: string): SnapshotFamily | undefined {
  for (const f of ['in-tree', 'dmkit'] as const) {
    const t = SNAPSHOT_TYPES[f];
    if (type === t.origin || type === t.snapshot || type === t.merge) return f;
  }
  return undefined;
}

export type SnapshotErrorCode =
  | 'ERR_SNAPSHOT_NO_TARGET'
  | 'ERR_SNAPSHOT_NO_ORIGIN'
  | 'ERR_SNAPSHOT_INVALID_FAMILY'
  | 'ERR_SNAPSHOT_INVALID_STORE'
  | 'ERR_SNAPSHOT_INVALID_ORIGIN'
  | 'ERR_SNAPSHOT_MERGING'
  | 'ERR_SNAPSHOT_UNUSABLE'
  | 'ERR_SNAPSHOT_MERGE_FAILED';

export class SnapshotError extends Error {
  constructor(
    message: string,
    readonly code: SnapshotErrorCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'SnapshotError';
  }
}

/** The parts of DeviceMapper the workflows use (tests drive them with a fake). */
export type SnapshotDm = Pick<DeviceMapper, 'create' | 'load' | 'clear' | 'suspend' | 'resume' | 'remove' | 'status' | 'table' | 'info' | 'list'>;

const devText = (d: { major: number; minor: number }): string => `${d.major}:${d.minor}`;
const lengthOf = (table: readonly TargetLine[]): Sectors => sectors(table.reduce((end, t) => (t.start + t.length > end ? t.start + t.length : end), 0n));
const realName = (origin: string): string => `${origin}-real`;

type Role = 'origin' | 'snapshot' | 'merge';

function roleOf(type: string): Role | undefined {
  const kind = targetKind(type);
  if (kind === 'snapshot-origin') return 'origin';
  if (kind === 'snapshot') return 'snapshot';
  if (kind === 'snapshot-merge') return 'merge';
  return undefined;
}

/** A device whose whole table is one snapshot-family target. */
interface Member {
  readonly name: string;
  readonly role: Role;
  readonly line: TargetLine;
  /** The real origin device, major:minor. */
  readonly real: string;
}

function memberOf(name: string, table: readonly TargetLine[]): Member | undefined {
  if (table.length !== 1) return undefined;
  const line = table[0]!;
  const role = roleOf(line.type);
  if (role === undefined) return undefined;
  const real = role === 'origin' ? snapshotOrigin.parse(line.params).origin : snapshot.parse(line.params).origin;
  return { name, role, line, real };
}

/** Every snapshot-family device, found by reading each device's table (devices that vanish are skipped). */
async function members(dm: SnapshotDm): Promise<Member[]> {
  const out: Member[] = [];
  for (const d of await dm.list()) {
    let table: TargetLine[];
    try {
      table = await dm.table({ name: d.name });
    } catch {
      continue;
    }
    const m = memberOf(d.name, table);
    if (m) out.push(m);
  }
  return out;
}

async function snapshotMember(dm: SnapshotDm, name: string): Promise<Member & { params: SnapshotParams }> {
  const table = await dm.table({ name });
  const m = memberOf(name, table);
  if (!m || m.role !== 'snapshot') {
    throw new SnapshotError(`${name} is not a snapshot (table: ${table.map((t) => t.type).join(', ') || 'none'})`, 'ERR_SNAPSHOT_NO_TARGET');
  }
  return { ...m, params: snapshot.parse(m.line.params) };
}

/** The origin device of a real device: the one whose origin or merge table names it. */
function originOf(all: readonly Member[], real: string): Member | undefined {
  return all.find((m) => m.real === real && (m.role === 'origin' || m.role === 'merge'));
}

/** Runs `body` with `id` suspended; resumes it whatever happens (a failed body clears its inactive table first). */
async function whileSuspended<T>(dm: SnapshotDm, id: DevId, body: () => Promise<T>): Promise<T> {
  await dm.suspend(id);
  try {
    return await body();
  } catch (e) {
    await dm.clear(id).catch(() => undefined);
    throw e;
  } finally {
    await dm.resume(id);
  }
}

export interface CreateSnapshotOptions {
  /** The dm device to snapshot (a plain volume, or one that already has snapshots). */
  readonly origin: string;
  /** The new snapshot device; default `<origin>-snap<N>` with the first free N. */
  readonly name?: string;
  /** The exception store device. */
  readonly cow: string;
  readonly chunkSize: Sectors;
  /** P (default), PO or N. */
  readonly store?: SnapshotStore;
  readonly family: SnapshotFamily;
  readonly discardZeroesCow?: boolean;
  readonly discardPassdownOrigin?: boolean;
  readonly uuid?: string;
}

export interface CreatedSnapshot {
  readonly name: string;
  readonly origin: string;
  /** The real origin device's name and major:minor. */
  readonly realName: string;
  readonly real: string;
  readonly table: TargetLine;
  /** Whether this call put the origin target on the volume (its first snapshot). */
  readonly formedOrigin: boolean;
}

async function freeName(dm: SnapshotDm, origin: string): Promise<string> {
  const taken = new Set((await dm.list()).map((d) => d.name));
  for (let n = 0; ; n++) if (!taken.has(`${origin}-snap${n}`)) return `${origin}-snap${n}`;
}

export async function createSnapshot(dm: SnapshotDm, o: CreateSnapshotOptions): Promise<CreatedSnapshot> {
  const types = SNAPSHOT_TYPES[o.family];
  if (types === undefined) throw new SnapshotError(`unknown snapshot family ${String(o.family)}`, 'ERR_SNAPSHOT_INVALID_FAMILY');
  const table = await dm.table({ name: o.origin });
  if (table.length === 0) throw new SnapshotError(`${o.origin} has no live table`, 'ERR_SNAPSHOT_INVALID_ORIGIN');
  const length = lengthOf(table);
  const member = memberOf(o.origin, table);
  if (member && member.role === 'merge') throw new SnapshotError(`${o.origin} is merging a snapshot; wait for the merge to finish`, 'ERR_SNAPSHOT_MERGING');
  if (member && member.role === 'snapshot') throw new SnapshotError(`${o.origin} is itself a snapshot; snapshots of snapshots are not supported`, 'ERR_SNAPSHOT_INVALID_ORIGIN');
  if (table.some((t) => roleOf(t.type) !== undefined) && !member) {
    throw new SnapshotError(`${o.origin}: a snapshot target inside a longer table is not supported`, 'ERR_SNAPSHOT_INVALID_ORIGIN');
  }
  if (member && member.line.type !== types.origin) {
    throw new SnapshotError(`${o.origin} is a ${member.line.type} volume; its snapshots must be ${familyOf(member.line.type)} ones (${member.line.type === 'dmkit-origin' ? '--dmkit' : '--in-tree'})`, 'ERR_SNAPSHOT_INVALID_FAMILY');
  }
  const name = o.name ?? (await freeName(dm, o.origin));
  // The snapshot line is built (and checked) before anything changes; the real device's number goes in below.
  const lineFor = (real: string): TargetLine =>
    snapshot.line(
      { origin: real, cow: o.cow, store: o.store ?? 'P', chunkSize: o.chunkSize, discardZeroesCow: o.discardZeroesCow ?? false, discardPassdownOrigin: o.discardPassdownOrigin ?? false },
      { start: sectors(0), length, type: types.snapshot },
    );
  lineFor('0:0');
  const id = { name: o.origin };
  if (member) {
    const line = lineFor(member.real);
    const realDev = await nameOfDev(dm, member.real);
    await whileSuspended(dm, id, async () => {
      await dm.create(name, { uuid: o.uuid, targets: [line] });
    });
    return { name, origin: o.origin, realName: realDev, real: member.real, table: line, formedOrigin: false };
  }
  // First snapshot: the volume's table moves to ORIGIN-real, the volume becomes an origin over it.
  const rName = realName(o.origin);
  const realInfo = await dm.create(rName, { targets: table });
  const real = devText(realInfo.dev);
  const line = lineFor(real);
  let created = false;
  try {
    await whileSuspended(dm, id, async () => {
      await dm.create(name, { uuid: o.uuid, targets: [line] });
      created = true;
      await dm.load(id, [snapshotOrigin.line({ origin: real }, { start: sectors(0), length, type: types.origin })]);
    });
  } catch (e) {
    if (created) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    await dm.remove({ name: rName }, { retry: true }).catch(() => undefined);
    throw e;
  }
  return { name, origin: o.origin, realName: rName, real, table: line, formedOrigin: true };
}

async function nameOfDev(dm: SnapshotDm, dev: string): Promise<string> {
  const found = (await dm.list()).find((d) => devText(d.dev) === dev);
  return found?.name ?? dev;
}

/**
 * Puts the volume's former table back when no snapshot of `real` is left and the real device is the
 * `<origin>-real` this module made; otherwise loads the plain origin table. Called with the origin suspended.
 */
async function restoreOrigin(dm: SnapshotDm, origin: Member, family: SnapshotFamily, length: Sectors): Promise<{ table: readonly TargetLine[]; collapse?: string }> {
  const others = (await members(dm)).filter((m) => m.role === 'snapshot' && m.real === origin.real);
  const rName = realName(origin.name);
  const realEntry = (await dm.list()).find((d) => devText(d.dev) === origin.real);
  if (others.length === 0 && realEntry?.name === rName) {
    const former = await dm.table({ name: rName });
    await dm.load({ name: origin.name }, former);
    return { table: former, collapse: rName };
  }
  const line = snapshotOrigin.line({ origin: origin.real }, { start: sectors(0), length, type: SNAPSHOT_TYPES[family].origin });
  await dm.load({ name: origin.name }, [line]);
  return { table: [line] };
}

export interface RemovedSnapshot {
  readonly name: string;
  readonly origin: string | undefined;
  /** The origin's table now (its former table once the last snapshot went). */
  readonly originTable: readonly TargetLine[];
}

export async function removeSnapshot(dm: SnapshotDm, name: string): Promise<RemovedSnapshot> {
  const snap = await snapshotMember(dm, name);
  const origin = originOf(await members(dm), snap.real);
  if (!origin) {
    await dm.remove({ name }, { retry: true });
    return { name, origin: undefined, originTable: [] };
  }
  if (origin.role === 'merge') throw new SnapshotError(`${origin.name} is merging; remove ${name} after the merge`, 'ERR_SNAPSHOT_MERGING');
  const family = familyOf(origin.line.type)!;
  const id = { name: origin.name };
  let restored: { table: readonly TargetLine[]; collapse?: string } = { table: [origin.line] };
  await whileSuspended(dm, id, async () => {
    await dm.remove({ name }, { retry: true });
    restored = await restoreOrigin(dm, origin, family, origin.line.length);
  });
  if (restored.collapse) await dm.remove({ name: restored.collapse }, { retry: true });
  return { name, origin: origin.name, originTable: restored.table };
}

export interface MergeProgress {
  /** Sectors of COW data still to merge (allocated - metadata). */
  readonly remaining: Sectors;
  /** What was to merge when the merge started. */
  readonly total: Sectors;
  readonly elapsedSeconds: number;
}

export interface MergeOptions {
  /** The snapshot to merge into its origin. */
  readonly name: string;
  readonly pollIntervalMs?: number;
  readonly onProgress?: (p: MergeProgress) => void;
  readonly signal?: AbortSignal;
  /** Give up waiting after this long (the merge goes on in the kernel); default: no limit. */
  readonly timeoutMs?: number;
}

export interface MergeResult {
  readonly name: string;
  readonly origin: string;
  /** Sectors of COW data merged back. */
  readonly merged: Sectors;
  readonly seconds: number;
  /** The origin's table at the end. */
  readonly originTable: readonly TargetLine[];
}

function usage(name: string, text: string): Extract<SnapshotStatus, { allocated: Sectors }> {
  const st = snapshot.parseStatus(text);
  if ('problem' in st) throw new SnapshotError(`${name}: the snapshot reports ${st.problem}`, st.problem === 'Merge failed' ? 'ERR_SNAPSHOT_MERGE_FAILED' : 'ERR_SNAPSHOT_UNUSABLE');
  return st;
}

export async function mergeSnapshot(dm: SnapshotDm, o: MergeOptions): Promise<MergeResult> {
  const snap = await snapshotMember(dm, o.name);
  if (snap.params.store === 'N') throw new SnapshotError(`${o.name} is transient (N): only persistent snapshots can merge`, 'ERR_SNAPSHOT_INVALID_STORE');
  const [st] = await dm.status({ name: o.name });
  let before = usage(o.name, st?.status ?? '');
  const origin = originOf(await members(dm), snap.real);
  if (!origin) throw new SnapshotError(`no origin device over ${snap.real} (the snapshot's origin)`, 'ERR_SNAPSHOT_NO_ORIGIN');
  if (origin.role === 'merge') throw new SnapshotError(`${origin.name} is already merging a snapshot`, 'ERR_SNAPSHOT_MERGING');
  const family = familyOf(origin.line.type)!;
  if (familyOf(snap.line.type) !== family) {
    throw new SnapshotError(`${o.name} is a ${snap.line.type} but ${origin.name} is a ${origin.line.type}`, 'ERR_SNAPSHOT_INVALID_FAMILY');
  }
  const id = { name: origin.name };
  const length = origin.line.length;
  const mergeLine = snapshotMerge.line(snap.params, { start: sectors(0), length, type: SNAPSHOT_TYPES[family].merge });
  // Origin writes stop, the snapshot goes (every exception is already committed), the merge takes its COW.
  await whileSuspended(dm, id, async () => {
    const [now] = await dm.status({ name: o.name });
    before = usage(o.name, now?.status ?? '');
    await dm.remove({ name: o.name }, { retry: true });
    try {
      await dm.load(id, [mergeLine]);
    } catch (e) {
      await dm.create(o.name, { targets: [snap.line] }).catch(() => undefined);
      throw e;
    }
  });
  const started = Date.now();
  // What there is to merge, as the snapshot reported it just before (the merge may be under way by the first poll).
  const total = sectors(before.allocated - before.metadata);
  for (;;) {
    if (o.signal?.aborted) throw o.signal.reason;
    const [line] = await dm.status(id);
    const u = usage(origin.name, line?.status ?? '');
    const remaining = sectors(u.allocated - u.metadata);
    o.onProgress?.({ remaining, total, elapsedSeconds: (Date.now() - started) / 1000 });
    if (remaining === 0n) break;
    if (o.timeoutMs !== undefined && Date.now() - started > o.timeoutMs) {
      throw new SnapshotError(`${origin.name}: merge not finished after ${o.timeoutMs} ms (${remaining} sectors left; it goes on in the kernel)`, 'ERR_SNAPSHOT_MERGE_FAILED');
    }
    await sleep(o.pollIntervalMs ?? 200, o.signal);
  }
  const mergedOrigin: Member = { ...origin, role: 'merge', line: mergeLine };
  let restored: { table: readonly TargetLine[]; collapse?: string } = { table: [mergeLine] };
  await whileSuspended(dm, id, async () => {
    restored = await restoreOrigin(dm, mergedOrigin, family, length);
  });
  if (restored.collapse) await dm.remove({ name: restored.collapse }, { retry: true });
  return { name: o.name, origin: origin.name, merged: total, seconds: (Date.now() - started) / 1000, originTable: restored.table };
}

/** One line of `dmkit snapshot status`: what a snapshot-family device is doing. */
export interface SnapshotReport {
  readonly name: string;
  readonly type: string;
  /** active | merging | merged | origin | Invalid | Overflow | Merge failed | Unknown */
  readonly state: string;
  readonly allocated: Sectors | null;
  readonly total: Sectors | null;
  readonly metadata: Sectors | null;
  /** For an origin: its snapshots' names; for a snapshot or merge: its origin's name. */
  readonly snapshots?: readonly string[];
  readonly origin?: string | null;
}

export async function snapshotReport(dm: SnapshotDm, name: string): Promise<SnapshotReport> {
  const table = await dm.table({ name });
  const m = memberOf(name, table);
  if (!m) throw new SnapshotError(`${name} has no snapshot, origin or merge target (table: ${table.map((t) => t.type).join(', ') || 'none'})`, 'ERR_SNAPSHOT_NO_TARGET');
  const all = await members(dm);
  if (m.role === 'origin') {
    const snaps = all.filter((x) => x.role === 'snapshot' && x.real === m.real).map((x) => x.name);
    return { name, type: m.line.type, state: 'origin', allocated: null, total: null, metadata: null, snapshots: snaps };
  }
  const [st] = await dm.status({ name });
  const parsed = snapshot.parseStatus(st?.status ?? '');
  const originName = m.role === 'snapshot' ? (originOf(all, m.real)?.name ?? null) : name;
  if ('problem' in parsed) return { name, type: m.line.type, state: parsed.problem, allocated: null, total: null, metadata: null, origin: originName };
  const state = m.role === 'snapshot' ? 'active' : parsed.allocated === parsed.metadata ? 'merged' : 'merging';
  return { name, type: m.line.type, state, allocated: parsed.allocated, total: parsed.total, metadata: parsed.metadata, origin: originName };
}
