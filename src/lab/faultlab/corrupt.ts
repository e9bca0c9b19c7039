/**
 * Lab component 'corrupt' (G13): corrupted metadata images. For each target type (era, dmkit-era, clone
 * when registered, dmkit-clone, cache) a seeded workload leaves a good metadata image; every case corrupts
 * one used block of it (a field of its structure, or random byte/bit flips; checksum stale or recomputed),
 * writes it to the metadata device and activates the target. Expected: a clean refusal (an errno), a
 * degraded mode (Error/Fail/ro/needs_check), or a device that works — never an oops (the VM lab catches
 * those), a hang (60 s watchdog per step), or a read that returns another block's data. The checker
 * (era_check/cache_check) runs on every image and must flag every checksum-breaking corruption.
 * The in-tree era, clone and cache run at release scale only (CI's budget: they add known_upstream counts).
 * The snapshot family (dmkit-snapshot; the in-tree snapshot at release scale) corrupts COW images instead,
 * with its own contract and the overflow race of fix (d): corrupt/snapshot.ts.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceMapper, DmError } from '../../dm';
import { Scope } from '../../testing';
import { caseSeed, prng, type Component, type LabContext } from './types';
import { blockRoles, describeMap, mapImage, MAGIC, type ImageMap, type Role } from './corrupt/format';
import { buildCase, describe, fieldSlots, findCase, plan, type CaseSpec, type Corruption } from './corrupt/mutate';
import { knownPanic, runKnownPanics } from './corrupt/known';
import { runSnapshotTarget, SNAPSHOT_LAB_TYPES } from './corrupt/snapshot';
import { cacheStructures, describeStructures, structureCases, type CacheStructure, type StructureCase } from './corrupt/cache-structures';
import {
  available,
  caseIo,
  cacheRig,
  checkAsync,
  cloneRig,
  deadline,
  eraRig,
  Hang,
  kmsg,
  readImage,
  writeImage,
  type CheckerRun,
  type Health,
  type IoResult,
  type Rig,
} from './corrupt/rigs';

const TYPES = ['era', 'dmkit-era', 'clone', 'dmkit-clone', 'cache', 'dmkit-cache'] as const;
type TargetType = (typeof TYPES)[number];

/**
 * The in-tree targets panic on several corruptions that pass the checksum (corrupt/known.ts, and in-tree
 * era leaking a bufio buffer when a space-map allocation fails in preresume: BUG at dm-bufio.c:1644), and
 * a panic ends the whole lab run. At CI scale they get only corruptions with a stale checksum; dmkit's
 * own targets get everything.
 */
const IN_TREE: ReadonlySet<string> = new Set(['era', 'clone', 'cache']);
const IN_TREE_DEEP = 'in-tree target: checksum-valid corruptions reach upstream BUG()s (run with DMKIT_LAB_KNOWN_PANICS=1)';

interface Stats {
  cases: number;
  noop: number;
  refused: Map<string, number>;
  degraded: number;
  ok: number;
  ioErrors: number;
  /** Loaded devices that refused the case's message (dmkit-era's fail mode shows only there). */
  messageErrors: number;
  checkerFlagged: number;
  checkerPassed: number;
  checkerOther: number;
  checksumBreaking: number;
  /** Checksum-breaking corruptions the checker passed, by role/kind of the block. */
  checkerMissed: Map<string, number>;
  missSamples: string[];
  /** Checker runs that ended neither 0 nor 1 (crashed, killed): samples. */
  otherSamples: string[];
  /** Milliseconds spent per phase. */
  ms: Map<string, number>;
  /** Cases skipped as known upstream kernel panics (corrupt/known.ts), by reason. */
  known: Map<string, number>;
  /** dmkit-cache: the structure of every block, and per structure: cases and what came of them. */
  structures?: Map<number, CacheStructure>;
  perStructure: Map<string, Map<string, number>>;
}

/**
 * dmkit-cache at CI scale (the lab's time budget): the generic plan's first round on the superblock and the
 * space map; the structure cases cover the arrays, their btrees and random flips in them.
 */
function ciCachePlan(map: ImageMap, specs: CaseSpec[]): CaseSpec[] {
  const round0 = fieldSlots(map, 1).length;
  const keep = new Set(['superblock', 'sm-index', 'sm-bitmap']);
  const field = specs.filter((c) => c.mode === 'field' && c.index < round0 && keep.has(c.slot.blockKind));
  return field;
}

const newStats = (): Stats => ({
  cases: 0, noop: 0, refused: new Map(), degraded: 0, ok: 0, ioErrors: 0, messageErrors: 0,
  checkerFlagged: 0, checkerPassed: 0, checkerOther: 0, checksumBreaking: 0, checkerMissed: new Map(), missSamples: [], otherSamples: [], ms: new Map(), known: new Map(), perStructure: new Map(),
});

/**
 * dmkit-cache reads every structure (mappings, hints, discards, dirty bits) in preresume, so a broken
 * checksum in one of them must stop the activation or degrade it, and cache_check must flag it.
 */
const CHECKED_STRUCTURES: ReadonlySet<string> = new Set(['superblock', 'mapping', 'hint', 'discard', 'dirty']);
/**
 * Structures cache_check (thin-provisioning-tools 0.9, Debian 12) does not read: it walks the superblock,
 * the mapping and the hint arrays, but neither the discard bitset nor the format-2 dirty bitset, so it
 * passes images with those blocks broken (seen in every such case). Counted as known_upstream; the kernel
 * side (never load healthy) still holds for them.
 */
const CHECKER_BLIND: ReadonlySet<string> = new Set(['discard', 'dirty']);
const CHECKER_BLIND_WHY = 'cache_check reads neither the discard bitset nor the metadata2 dirty bitset';

function structureSummary(s: Stats): string {
  return [...s.perStructure].map(([k, m]) => `${k}: ${[...m].map(([o, n]) => `${o} ${n}`).join(' ')}`).join('; ');
}

const bump = (m: Map<string, number>, k: string, by = 1): void => void m.set(k, (m.get(k) ?? 0) + by);

/** Times `fn` into stats.ms[phase]. */
async function timed<T>(s: Stats | undefined, phase: string, fn: () => Promise<T> | T): Promise<T> {
  const t0 = Date.now();
  try {
    return await fn();
  } finally {
    if (s) bump(s.ms, phase, Date.now() - t0);
  }
}

/** errno names libuv does not know (it reports "Unknown system error -15"). */
const ERRNO_NAMES: Record<number, string> = { 15: 'ENOTBLK' };
const errnoName = (e: DmError): string => (e.errno !== undefined && ERRNO_NAMES[Math.abs(e.errno)]) || e.code;
const mapText = (m: Map<string, number>): string => [...m].map(([k, v]) => `${k} ${v}`).join(', ') || 'none';

function summary(type: string, s: Stats, secs: number): string {
  const refused = [...s.refused.values()].reduce((a, b) => a + b, 0);
  const checker = s.checkerFlagged + s.checkerPassed + s.checkerOther
    ? `; checker flagged ${s.checkerFlagged}, passed ${s.checkerPassed}, other ${s.checkerOther}; checksum-breaking ${s.checksumBreaking}, missed by the checker ${[...s.checkerMissed.values()].reduce((a, b) => a + b, 0)} (${mapText(s.checkerMissed)})`
    : '; no checker';
  const ms = [...s.ms].map(([k, v]) => `${k} ${s.cases ? Math.round(v / s.cases) : 0}`).join(', ');
  return `${type}: ${s.cases} corrupted images in ${secs.toFixed(0)} s: refused ${refused} (${mapText(s.refused)}), read-only/fail ${s.degraded}, loaded-ok ${s.ok} (IO errors in ${s.ioErrors}, message refused in ${s.messageErrors})${checker}; ${s.noop} no-op corruptions skipped; ms per case: ${ms}`;
}

function runDir(): string {
  return process.env['DMKIT_RUN_DIR'] ?? (fs.existsSync('/run/dmkit') ? '/run/dmkit' : os.tmpdir());
}

function kernelTail(lines = 40): string {
  const r = spawnSync('dmesg', { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').filter(Boolean).slice(-lines).join('\n');
}

/** Keeps a failing case's corrupted image beside its log. */
function saveImage(type: string, seed: number, image: Buffer): string {
  const dir = path.join(runDir(), 'lab-failures');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `corrupt-${type}-${seed}.img`);
  fs.writeFileSync(file, image);
  return file;
}

/*----------------------------------------------------------------
 * One activation
 *--------------------------------------------------------------*/

type Activation =
  | { created: false; code: string; message: string }
  | { created: true; health: Health; statuses: string[]; io: IoResult; messageError?: string; removeError?: string };

async function statusOf(dm: DeviceMapper, rig: Rig, name: string, s?: Stats): Promise<{ health: Health; text: string }> {
  try {
    const [st] = await timed(s, 'status', () => deadline(dm.status({ name }, { noflush: true }), 'status'));
    return rig.health(st?.status ?? '');
  } catch (e) {
    if (e instanceof Hang) throw e;
    return { health: 'degraded', text: `status failed: ${(e as Error).message}` };
  }
}

/** Creates the target over whatever the metadata device holds, does a little IO and a message, removes it. */
async function activate(dm: DeviceMapper, rig: Rig, name: string, seed: number, s?: Stats): Promise<Activation> {
  const rand = prng(seed ^ 0x6a09e667);
  try {
    await timed(s, 'create', () => deadline(dm.create(name, { targets: [rig.table(rand)] }), 'create (load + resume)'));
  } catch (e) {
    if (e instanceof DmError) return { created: false, code: errnoName(e), message: e.message };
    throw e;
  }
  const statuses: string[] = [];
  let health: Health = 'ok';
  const note = (h: { health: Health; text: string }): void => {
    statuses.push(h.text);
    if (h.health === 'degraded') health = 'degraded';
  };
  let messageError: string | undefined;
  note(await statusOf(dm, rig, name, s));
  const r = Math.floor(rand() * rig.ioBlocks);
  const w = Math.floor(rand() * rig.ioBlocks);
  const io = await timed(s, 'io', () => caseIo(dm.devicePath(name), rig, r, w, (seed ^ 0x3c6ef372) >>> 0));
  try {
    await timed(s, 'message', () => deadline(dm.message({ name }, undefined, rig.message), `message '${rig.message}'`));
  } catch (e) {
    if (e instanceof Hang) throw e;
    messageError = e instanceof DmError ? errnoName(e) : (e as Error).message;
  }
  note(await statusOf(dm, rig, name, s));
  let removeError: string | undefined;
  try {
    await timed(s, 'remove', () => deadline(dm.remove({ name }, { retry: { count: 50, intervalMs: 100 } }), 'remove'));
  } catch (e) {
    if (e instanceof Hang) throw e;
    removeError = (e as Error).message;
  }
  return { created: true, health, statuses, io, ...(messageError ? { messageError } : {}), ...(removeError ? { removeError } : {}) };
}

/*----------------------------------------------------------------
 * One case
 *--------------------------------------------------------------*/

function isChecksumMiss(c: Corruption, chk: CheckerRun | undefined): boolean {
  return !!chk && c.breaksChecksum && chk.status === 0;
}

async function runCase(ctx: LabContext, dm: DeviceMapper, rig: Rig, good: Buffer, map: ImageMap, roles: Map<number, Role>, spec: CaseSpec, s: Stats): Promise<boolean> {
  const { image, corruption } = buildCase(good, map, spec);
  if (!corruption.edits.length) {
    s.noop++;
    return false;
  }
  const desc = describe(corruption);
  const known = knownPanic(rig.type, corruption) ?? (ctx.scale === 'ci' && IN_TREE.has(rig.type) && corruption.csum === 'fixed' ? IN_TREE_DEEP : null);
  if (known && !runKnownPanics()) {
    if (!s.known.has(known)) ctx.log(`${rig.type}: skipping a known upstream panic (case ${spec.seed}: ${desc}): ${known}`);
    s.known.set(known, (s.known.get(known) ?? 0) + 1);
    return false;
  }
  kmsg(`corrupt ${rig.type} case ${spec.seed}: ${desc}`);
  await timed(s, 'write', () => {
    writeImage(rig.meta, image);
    if (rig.checker) writeImage(rig.checkDev, image);
  });
  const checking = rig.checker ? checkAsync(rig.checker, rig.checkDev) : undefined;
  const name = `corrupt-${rig.type}`;
  const fail = (detail: string, extra: string): void => {
    const img = saveImage(rig.type, spec.seed, image);
    ctx.fail({ component: 'corrupt', target: rig.type, seed: spec.seed, detail: `${detail}; corruption: ${desc}`, log: `${extra}\nimage: ${img}\nkernel log (tail):\n${kernelTail()}` });
  };
  s.cases++;
  let act: Activation;
  try {
    act = await activate(dm, rig, name, spec.seed, s);
  } catch (e) {
    if (e instanceof Hang) {
      fail(`hang: ${e.message}`, '');
      throw e;
    }
    fail(`unexpected error: ${(e as Error).message}`, (e as Error).stack ?? '');
    return true;
  }
  const chk = checking ? await timed(s, 'checker-wait', () => checking) : undefined;
  if (!act.created) bump(s.refused, act.code);
  else if (act.health === 'degraded') s.degraded++;
  else s.ok++;
  if (act.created) {
    if (act.io.readError || act.io.writeError) s.ioErrors++;
    if (act.messageError) s.messageErrors++;
    const ctxLines = `statuses: ${act.statuses.join(' | ')}\nio: ${JSON.stringify(act.io)}${act.messageError ? `\nmessage: ${act.messageError}` : ''}`;
    if (act.io.foreign) fail(`a read returned another block's data: ${act.io.foreign}`, ctxLines);
    if (act.removeError) fail(`remove failed: ${act.removeError}`, ctxLines);
  }
  if (chk) {
    if (chk.status === 0) s.checkerPassed++;
    else if (chk.status === 1) s.checkerFlagged++;
    else s.checkerOther++;
    if (chk.status !== 0 && chk.status !== 1 && s.otherSamples.length < 3) {
      s.otherSamples.push(`case ${spec.seed} (${desc}): ${rig.checker} exited ${chk.status}: ${chk.output.split('\n').slice(-2).join(' / ').slice(0, 300)}`);
    }
    if (corruption.breaksChecksum) s.checksumBreaking++;
    if (s.structures) {
      const st = s.structures.get(corruption.block) ?? 'unreferenced';
      const m = s.perStructure.get(st) ?? new Map<string, number>();
      s.perStructure.set(st, m);
      bump(m, 'cases');
      bump(m, !act.created ? 'refused' : act.health === 'degraded' ? 'degraded' : 'ok');
      if (corruption.breaksChecksum) bump(m, 'csum-broken');
      if (chk.status === 1) bump(m, 'flagged');
      if (corruption.breaksChecksum && CHECKED_STRUCTURES.has(st)) {
        if (chk.status !== 1 && CHECKER_BLIND.has(st)) bump(s.known, CHECKER_BLIND_WHY);
        else if (chk.status !== 1) fail(`cache_check did not flag a broken checksum in the ${st} (exit ${chk.status})`, chk.output.slice(0, 1500));
        if (act.created && act.health === 'ok') fail(`loaded healthy with a broken checksum in the ${st}`, `statuses: ${act.statuses.join(' | ')}`);
      }
    }
    if (isChecksumMiss(corruption, chk)) {
      bump(s.checkerMissed, `${roles.get(corruption.block) ?? 'unreferenced'} ${corruption.blockKind}`);
      if (s.missSamples.length < 5) s.missSamples.push(`case ${spec.seed} [${roles.get(corruption.block) ?? 'unreferenced'}]: ${desc}`);
    }
  }
  return true;
}

/*----------------------------------------------------------------
 * One target
 *--------------------------------------------------------------*/

async function makeRig(dm: DeviceMapper, scope: Scope, type: TargetType, seed: number): Promise<Rig> {
  switch (type) {
    case 'era':
    case 'dmkit-era': return eraRig(dm, scope, type, seed);
    case 'clone':
    case 'dmkit-clone': return cloneRig(dm, scope, type, seed);
    case 'cache': return cacheRig(dm, scope, seed);
    case 'dmkit-cache': return cacheRig(dm, scope, seed, 'dmkit-cache');
  }
}

/** The good image must pass the checker and work (loads healthy, IO clean) before anything is corrupted. */
async function baseline(ctx: LabContext, dm: DeviceMapper, rig: Rig, good: Buffer, map: ImageMap): Promise<boolean> {
  const problems: string[] = [];
  if (map.kinds[0] !== 'superblock' || good.readBigUInt64LE(32) !== MAGIC[rig.format]) problems.push(`block 0 is not a ${rig.format} superblock (${map.kinds[0]})`);
  if (rig.checker) {
    writeImage(rig.checkDev, good);
    const chk = await checkAsync(rig.checker, rig.checkDev);
    if (chk.status !== 0) problems.push(`${rig.checker} on the good image exited ${chk.status}: ${chk.output.slice(0, 500)}`);
  }
  writeImage(rig.meta, good);
  const act = await activate(dm, rig, `corrupt-${rig.type}`, caseSeed(ctx.seed, `corrupt/${rig.type}/baseline`, 0));
  if (!act.created) problems.push(`the good image does not load: ${act.code} ${act.message}`);
  else {
    if (act.health !== 'ok') problems.push(`the good image loads degraded: ${act.statuses.join(' | ')}`);
    if (act.io.readError || act.io.writeError || act.io.foreign) problems.push(`IO on the good image: ${JSON.stringify(act.io)}`);
    if (act.messageError) problems.push(`message on the good image: ${act.messageError}`);
    if (act.removeError) problems.push(`remove: ${act.removeError}`);
  }
  if (problems.length) {
    ctx.fail({ component: 'corrupt', target: rig.type, seed: ctx.seed, detail: `good image unusable: ${problems[0]}`, log: `${problems.join('\n')}\n${kernelTail()}` });
    return false;
  }
  return true;
}

async function runTarget(ctx: LabContext, dm: DeviceMapper, type: TargetType, only?: { seed: number }): Promise<{ images: number; known: number }> {
  const started = Date.now();
  const scope = new Scope();
  const s = newStats();
  let hung = false;
  try {
    const rig = await makeRig(dm, scope, type, ctx.seed);
    const buildStatus = await rig.build(dm, `corrupt-${type}`, caseSeed(ctx.seed, `corrupt/${type}/build`, 0));
    // A replay can start from the failing run's good image (the workload's block placement depends on timing).
    const savedDir = process.env['DMKIT_CORRUPT_IMAGES'];
    const saved = savedDir ? path.join(savedDir, `corrupt-good-${type}.img`) : undefined;
    const good = saved && fs.existsSync(saved) ? fs.readFileSync(saved) : readImage(rig.meta);
    if (saved && fs.existsSync(saved)) ctx.log(`${type}: good image from ${saved}`);
    fs.writeFileSync(path.join(runDir(), `corrupt-good-${type}.img`), good);
    const map = mapImage(good, rig.format);
    const roles = blockRoles(good, map);
    const hash = createHash('sha256').update(good).digest('hex').slice(0, 16);
    ctx.log(`${type}: good image sha256 ${hash}: ${describeMap(map, roles)}; after the workload: ${buildStatus}`);
    let extra: StructureCase[] = [];
    if (type === 'dmkit-cache') {
      s.structures = cacheStructures(good, map);
      extra = structureCases(map, s.structures, ctx.seed, type, ctx.scale);
      ctx.log(`${type}: blocks by structure: ${describeStructures(s.structures)}; ${extra.length} structure cases`);
    }
    if (!(await baseline(ctx, dm, rig, good, map))) return { images: 0, known: 0 };
    let specs: CaseSpec[];
    if (only) {
      const one = findCase(map, ctx.seed, type, only.seed) ?? extra.find((c) => c.seed === only.seed);
      if (!one) {
        ctx.log(`${type}: no case with seed ${only.seed} in this image's plan (the good image may differ from the failing run's)`);
        return { images: 0, known: 0 };
      }
      specs = [one];
    } else {
      const generic = plan(map, ctx.seed, type, ctx.scale);
      specs = [...(type === 'dmkit-cache' && ctx.scale === 'ci' ? ciCachePlan(map, generic) : generic), ...extra];
    }
    for (const spec of specs) {
      try {
        await runCase(ctx, dm, rig, good, map, roles, spec, s);
      } catch (e) {
        if (!(e instanceof Hang)) throw e;
        hung = true;
        ctx.log(`${type}: a step hung; the remaining cases of ${type} are skipped`);
        break;
      }
      if (only) ctx.log(`${type} case ${spec.seed}: ${describe(buildCase(good, map, spec).corruption)}`);
    }
    ctx.log(summary(type, s, (Date.now() - started) / 1000));
    if (s.missSamples.length) ctx.log(`${type}: checker misses, e.g. ${s.missSamples.join('; ')}`);
    if (s.otherSamples.length) ctx.log(`${type}: checker neither passed nor flagged, e.g. ${s.otherSamples.join('; ')}`);
    if (s.known.size) ctx.log(`${type}: known upstream (panics skipped, checker blind spots): ${mapText(s.known)}`);
    if (s.perStructure.size) ctx.log(`${type}: by structure: ${structureSummary(s)}`);
  } finally {
    if (!hung) {
      try {
        scope.close();
      } catch (e) {
        ctx.log(`${type}: ${(e as Error).message}`);
      }
    }
  }
  return { images: s.cases, known: [...s.known.values()].reduce((a, b) => a + b, 0) };
}

/** The in-tree targets (about 35 s each) only add known_upstream counts: release scale, or asked for by seed. */
function inTreeSkipped(ctx: LabContext, type: string, only: unknown): boolean {
  if (type.startsWith('dmkit-') || ctx.scale !== 'ci' || only) return false;
  ctx.log(`${type} (in-tree): release scale only (CI's budget)`);
  return true;
}

export const component: Component = {
  name: 'corrupt',
  async run(ctx, only) {
    const dm = DeviceMapper.open();
    let images = 0;
    let known = 0;
    try {
      for (const type of TYPES) {
        if (!ctx.wants(type)) continue;
        if (inTreeSkipped(ctx, type, only)) continue;
        if (!(await available(dm, type))) {
          ctx.log(`${type}: target not registered here, skipped`);
          continue;
        }
        const r = await runTarget(ctx, dm, type, only);
        images += r.images;
        known += r.known;
      }
      // The snapshot family: COW images rather than persistent-data metadata (corrupt/snapshot.ts).
      for (const type of SNAPSHOT_LAB_TYPES) {
        if (!ctx.wants(type)) continue;
        if (inTreeSkipped(ctx, type, only)) continue;
        if (!(await available(dm, type))) {
          ctx.log(`${type}: target not registered here, skipped`);
          continue;
        }
        const r = await runSnapshotTarget(ctx, dm, type, only);
        images += r.images;
        known += r.known;
      }
    } finally {
      await dm.close();
    }
    return { corrupted_images: images, known_upstream: known };
  },
};
