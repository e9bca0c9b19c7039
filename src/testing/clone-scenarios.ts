/**
 * Clone scenarios that lose acknowledged writes when a region's bookkeeping races the control plane
 * (issue 11), shared by their named tests (test/vm/clone-races.test.ts) and the crash and fault lab's
 * 'reload' component. Each returns the problems it saw (empty: the contract held); a scenario that
 * cannot run throws.
 *
 * - discardRace: a discard marks regions hydrated while their copies are queued; writes then go straight
 *   to the destination and the copies land on top with the source's bytes.
 * - reloadStale: a table loaded while the live one hydrates regions reads the metadata at load time;
 *   after the swap it serves those regions from the source again.
 * - reloadMidHydration: the same, with background hydration and a writer running across the reload.
 * - teardownLoop: a clone removed while its last copy is still finishing (the copy engine outliving the
 *   target's workqueue).
 */
import * as fs from 'node:fs';
import { DeviceMapper, type TargetLine } from '../dm';
import { readCloneMetadata } from '../pdata/reader';
import { clone } from '../targets';
import { bytes, sectors, targetBlocks, type Sectors } from '../units';
import { DataModel, stampDirect, verifyModel } from './clone-model';
import { ramdisks, sh, Scope, type BlockDevice } from './devices';
import { readDirect, writeDirectAsync } from './direct-io';
import { patternBuffer, zero } from './patterns';
import { prng } from './random';

export type CloneType = 'clone' | 'dmkit-clone';

const MiB = 1n << 20n;
const SRC_SEED = 7;
const DEST_GARBAGE = 99;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sets a test knob of dmkit-clone (test builds only); false when this module has none by that name. */
export function setCloneKnob(name: string, value: number): boolean {
  const p = `/sys/module/dmkit_clone/parameters/${name}`;
  if (!fs.existsSync(p)) return false;
  fs.writeFileSync(p, `${value}\n`);
  return true;
}

/** The hydration throttle (percent) of whichever clone module `type` is. */
export function setCloneThrottle(type: CloneType, percent: number): void {
  const p = type === 'dmkit-clone' ? '/sys/module/dmkit_clone/parameters/hydration_throttle' : '/sys/module/dm_clone/parameters/clone_hydration_throttle';
  if (fs.existsSync(p)) fs.writeFileSync(p, `${percent}\n`);
}

interface Rig {
  meta: BlockDevice;
  dest: BlockDevice;
  src: BlockDevice;
  length: Sectors;
  region: Sectors;
  nrRegions: number;
}

function makeRig(scope: Scope, lengthMiB: bigint, region: Sectors): Rig {
  const [meta, dest, src] = ramdisks(scope, 3, bytes((lengthMiB + 4n) * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
  const length = sectors((lengthMiB * MiB) / 512n);
  zero(meta.path, bytes(4096));
  stampDirect(src.path, undefined, 0n, length, SRC_SEED, { bs: MiB });
  stampDirect(dest.path, undefined, 0n, length, DEST_GARBAGE, { bs: MiB });
  return { meta, dest, src, length, region, nrRegions: Number(length / region) };
}

function line(type: CloneType, rig: Rig, opts: { noHydration?: boolean; threshold?: number; batch?: number } = {}): TargetLine {
  return clone.line(
    {
      metadataDevice: rig.meta.path,
      destinationDevice: rig.dest.path,
      sourceDevice: rig.src.path,
      regionSize: rig.region,
      noHydration: opts.noHydration ?? false,
      hydrationThreshold: opts.threshold === undefined ? null : targetBlocks(opts.threshold),
      hydrationBatchSize: opts.batch === undefined ? null : targetBlocks(opts.batch),
    },
    { start: sectors(0), length: rig.length, type },
  );
}

async function hydration(dm: DeviceMapper, name: string): Promise<{ hydrated: bigint; total: bigint; mode: string }> {
  const [st] = await dm.status({ name });
  const info = clone.parseStatus(st!.status);
  if ('fail' in info || 'error' in info) throw new Error(`${name} status: ${st!.status}`);
  return { hydrated: info.hydrated, total: info.totalRegions, mode: info.mode };
}

async function waitHydrated(dm: DeviceMapper, name: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const h = await hydration(dm, name);
    if (h.hydrated === h.total) return;
    if (Date.now() > until) throw new Error(`${name}: ${h.hydrated}/${h.total} regions hydrated after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** The committed metadata, read by our validating reader: which regions it calls hydrated. */
function committedRegions(rig: Rig): Set<number> {
  const md = readCloneMetadata(readDirect(rig.meta.path, 0n, 4n * MiB, MiB));
  const set = new Set<number>();
  for (let r = 0; r < rig.nrRegions; r++) if (md.hydrated.has(r)) set.add(r);
  return set;
}

function regionsProblem(rig: Rig, want: ReadonlySet<number>, when: string): string[] {
  let got: Set<number>;
  try {
    got = committedRegions(rig);
  } catch (e) {
    return [`${when}: the metadata does not pass the validating reader: ${(e as Error).message}`];
  }
  const missing = [...want].filter((r) => !got.has(r));
  const extra = [...got].filter((r) => !want.has(r));
  if (!missing.length && !extra.length) return [];
  return [`${when}: committed hydrated regions differ: missing [${missing.slice(0, 8).join(',')}] extra [${extra.slice(0, 8).join(',')}]`];
}

/** With the data checker's sector numbers turned into regions for the messages. */
function describeData(path: string, model: DataModel, rig: Rig, when: string): string[] {
  return verifyModel(path, model, 4).map((b) => `${when}: region ${b.sector / rig.region} sector ${b.sector}: want ${b.want}, found ${b.found}`);
}

/**
 * Discard during hydration (issue 11, item 1): 1 MiB regions, throttle 1 %, a few regions' copies queued
 * (held back by the test knob copy_start_delay_ms where the module has it), the whole device discarded,
 * then every region written whole with O_DIRECT. After hydration finishes every region must read back
 * what was written, and the committed metadata must call every region hydrated.
 */
export async function discardRace(dm: DeviceMapper, type: CloneType, rounds: number, seed: number): Promise<string[]> {
  const problems: string[] = [];
  for (let round = 0; round < rounds; round++) {
    const scope = new Scope();
    const name = `cr-discard-${round}`;
    let created = false;
    try {
      const rig = makeRig(scope, 8n, sectors(2048));
      const model = new DataModel(rig.length, SRC_SEED);
      setCloneThrottle(type, 1);
      const knob = setCloneKnob('copy_start_delay_ms', 3000);
      await dm.create(name, { targets: [line(type, rig, { threshold: 4 })] });
      created = true;
      const dev = dm.devicePath(name);
      await sleep(300); // the worker claims its first regions and queues their copies
      sh('blkdiscard', dev);
      for (let r = 0; r < rig.nrRegions; r++) stampDirect(dev, model, BigInt(r) * rig.region, rig.region, seed + round * 100 + r, { bs: MiB });
      setCloneKnob('copy_start_delay_ms', 0);
      setCloneThrottle(type, 100);
      await waitHydrated(dm, name, 120_000);
      problems.push(...describeData(dev, model, rig, `round ${round}${knob ? '' : ' (no knob)'}: after hydration`));
      await dm.remove({ name }, { retry: true });
      created = false;
      problems.push(...regionsProblem(rig, new Set(Array.from({ length: rig.nrRegions }, (_, i) => i)), `round ${round}: metadata`));
      problems.push(...describeData(rig.dest.path, model, rig, `round ${round}: destination after removal`));
    } finally {
      setCloneKnob('copy_start_delay_ms', 0);
      setCloneThrottle(type, 100);
      if (created) await dm.remove({ name }, { retry: true }).catch(() => undefined);
      scope.close();
    }
  }
  return problems;
}

/**
 * Reload with stale metadata (issue 11, item 2), deterministic: with no_hydration, the same table is
 * loaded (inactive) while the live one holds regions 3 and 9; then a 4 KiB write and a whole-region write
 * hydrate regions 10 and 20 through the live table; the swap; a write through the new table into region
 * 30. Every write must read back after the swap, after a re-create, and the committed metadata must call
 * exactly those regions hydrated. `inTree`: a second clone type that must open the metadata too.
 */
export async function reloadStale(dm: DeviceMapper, type: CloneType, opts: { inTree?: CloneType } = {}): Promise<string[]> {
  const problems: string[] = [];
  const scope = new Scope();
  const name = 'cr-reload';
  let live = false;
  try {
    const rig = makeRig(scope, 4n, sectors(128));
    const model = new DataModel(rig.length, SRC_SEED);
    const tableLine = line(type, rig, { noHydration: true });
    await dm.create(name, { targets: [tableLine] });
    live = true;
    const dev = dm.devicePath(name);
    const R = rig.region;
    stampDirect(dev, model, 3n * R, R, 11, { fsync: true });
    stampDirect(dev, model, 9n * R + 8n, 8n, 12, { fsync: true });

    await dm.load({ name }, [tableLine]); // the new table reads the metadata now
    stampDirect(dev, model, 10n * R + 16n, 8n, 13, { fsync: true }); // copy region 10, then write
    stampDirect(dev, model, 20n * R, R, 14, { fsync: true }); // overwrite region 20 whole
    await dm.suspend({ name });
    await dm.resume({ name });
    problems.push(...describeData(dev, model, rig, 'after the swap'));

    stampDirect(dev, model, 30n * R + 8n, 8n, 15, { fsync: true });
    problems.push(...describeData(dev, model, rig, 'after a write through the new table'));
    await dm.remove({ name }, { retry: true });
    live = false;
    const want = new Set([3, 9, 10, 20, 30]);
    problems.push(...regionsProblem(rig, want, 'metadata after removal'));

    for (const t of [type, ...(opts.inTree ? [opts.inTree] : [])]) {
      await dm.create(name, { targets: [line(t, rig, { noHydration: true })] });
      live = true;
      const h = await hydration(dm, name);
      if (h.hydrated !== BigInt(want.size)) problems.push(`re-created as ${t}: ${h.hydrated} regions hydrated, want ${want.size}`);
      problems.push(...describeData(dev, model, rig, `re-created as ${t}`));
      await dm.remove({ name }, { retry: true });
      live = false;
    }
    problems.push(...regionsProblem(rig, want, 'metadata at the end'));
  } finally {
    if (live) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    scope.close();
  }
  return problems;
}

/**
 * Reload mid-hydration (issue 11, item 2): background hydration at a throttled pace and a writer putting
 * 4 KiB stamps into random regions (every fourth with a flush) while the same table is loaded, while both
 * tables exist, and after the swap. Then hydration finishes; the data must equal the model, and after
 * removal the committed metadata must call every region hydrated and a re-created clone read the same.
 */
export async function reloadMidHydration(dm: DeviceMapper, type: CloneType, seed: number, opts: { inTree?: CloneType } = {}): Promise<string[]> {
  const problems: string[] = [];
  const scope = new Scope();
  const name = 'cr-reload-hyd';
  let live = false;
  const rand = prng(seed);
  try {
    const rig = makeRig(scope, 16n, sectors(128));
    const model = new DataModel(rig.length, SRC_SEED);
    const tableLine = line(type, rig, { threshold: 4, batch: 2 });
    setCloneThrottle(type, 10);
    await dm.create(name, { targets: [tableLine] });
    live = true;
    const dev = dm.devicePath(name);

    let writing = true;
    let writes = 0;
    const writer = (async () => {
      while (writing) {
        const region = Math.floor(rand() * rig.nrRegions);
        const at = BigInt(region) * rig.region + BigInt(Math.floor(rand() * 15)) * 8n;
        const s = 1000 + writes;
        await writeDirectAsync(dev, at * 512n, patternBuffer(s, sectors(at), 8), { fsync: writes % 4 === 3 });
        model.write(at, 8n, s);
        writes++;
      }
    })();
    await sleep(300);
    await dm.load({ name }, [tableLine]);
    await sleep(600);
    await dm.suspend({ name });
    await dm.resume({ name });
    await sleep(300);
    writing = false;
    await writer;

    setCloneThrottle(type, 100);
    await waitHydrated(dm, name, 120_000);
    problems.push(...describeData(dev, model, rig, `after the reload and hydration (${writes} writes)`));
    await dm.remove({ name }, { retry: true });
    live = false;
    const all = new Set(Array.from({ length: rig.nrRegions }, (_, i) => i));
    problems.push(...regionsProblem(rig, all, 'metadata after removal'));
    for (const t of [type, ...(opts.inTree ? [opts.inTree] : [])]) {
      await dm.create(name, { targets: [line(t, rig)] });
      live = true;
      problems.push(...describeData(dev, model, rig, `re-created as ${t}`));
      await dm.remove({ name }, { retry: true });
      live = false;
    }
  } finally {
    setCloneThrottle(type, 100);
    if (live) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    scope.close();
  }
  return problems;
}

/**
 * Teardown while the last copy finishes (issue 11, item 3): a throttled clone removed mid-hydration, with
 * the test knob copy_done_delay_ms holding each finished copy between marking its regions and waking the
 * worker, `iterations` times; then a fresh clone on the same devices hydrates fully and the data and
 * metadata must be right. The KASAN kernel reports any use of the freed target or workqueue.
 */
export async function teardownLoop(dm: DeviceMapper, type: CloneType, iterations: number): Promise<string[]> {
  const problems: string[] = [];
  const scope = new Scope();
  const name = 'cr-teardown';
  let live = false;
  try {
    const rig = makeRig(scope, 4n, sectors(128));
    const model = new DataModel(rig.length, SRC_SEED);
    setCloneKnob('copy_done_delay_ms', 300);
    for (let i = 0; i < iterations; i++) {
      await dm.create(name, { targets: [line(type, rig, { threshold: 2 })] });
      live = true;
      await sleep(150);
      await dm.remove({ name }, { retry: true });
      live = false;
    }
    setCloneKnob('copy_done_delay_ms', 0);
    await dm.create(name, { targets: [line(type, rig, { threshold: 8, batch: 4 })] });
    live = true;
    await waitHydrated(dm, name, 120_000);
    problems.push(...describeData(dm.devicePath(name), model, rig, 'after the teardown loop'));
    await dm.remove({ name }, { retry: true });
    live = false;
    problems.push(...regionsProblem(rig, new Set(Array.from({ length: rig.nrRegions }, (_, i) => i)), 'metadata'));
  } finally {
    setCloneKnob('copy_done_delay_ms', 0);
    if (live) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    scope.close();
  }
  return problems;
}
