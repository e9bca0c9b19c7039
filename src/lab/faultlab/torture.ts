/**
 * Lab component 'torture': the control plane racing the data plane, for every target with a profile
 * (torture/profiles.ts): dmkit-era and dmkit-clone, and the in-tree era and clone where the kernel has
 * them (their failures count as known_upstream, with the upstream source named).
 *
 * Per case (seeded; `--case` replays one): O_DIRECT writers and readers with stamped data run while a
 * storm of control operations hits the device at random moments: suspend/resume (plain, --noflush,
 * --nolockfs), LVM-style preload (load an inactive table, then swap it in or clear it), reloads with
 * changed arguments, the target's messages, and remove while open (must be EBUSY and change nothing).
 * After the storm: the status is sane, every acknowledged write reads back (torture/model.ts), a swap to
 * linear and back where the target allows it, a deferred remove while the device is held open (it goes
 * when the holder closes), the metadata is checked with the device gone (the *_check tool where there is
 * one, and our validating reader), and the device is re-created from its metadata and read back again.
 * Any device left behind is a failure.
 */
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../dm';
import { Scope } from '../../testing';
import { EXTENT, SectorModel, Workload } from './torture/model';
import { BASE_SEED, PROFILES, type TortureProfile, type TortureRig } from './torture/profiles';
import { sectors } from '../../units';
import { caseSeed, prng, type Component, type Counters, type LabContext, type Scale } from './types';

export interface TortureScale {
  cases: number;
  suspendsPerCase: number;
  reloadsPerCase: number;
}

/**
 * CI: one case of 200 suspend cycles and 50 reload races per dmkit target; release: 40 x 250 =
 * 10,000 and 40 x 25 = 1,000, and the in-tree targets too (one case of 25 + 6 at the smaller scales).
 */
export function tortureScale(scale: Scale | 'debug', inTree = false): TortureScale {
  if (scale === 'release') return { cases: 40, suspendsPerCase: 250, reloadsPerCase: 25 };
  if (scale === 'debug') return { cases: 1, suspendsPerCase: 12, reloadsPerCase: 4 };
  return inTree ? { cases: 1, suspendsPerCase: 25, reloadsPerCase: 6 } : { cases: 1, suspendsPerCase: 200, reloadsPerCase: 50 };
}

type Op = 'suspend' | 'suspend-noflush' | 'suspend-nolockfs' | 'preload-swap' | 'preload-clear' | 'reload-changed' | 'handover' | 'message' | 'remove-open';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function plan(rand: () => number, s: TortureScale): Op[] {
  const ops: Op[] = [];
  const suspends: Op[] = ['suspend', 'suspend-noflush', 'suspend-nolockfs'];
  const reloads: Op[] = ['preload-swap', 'preload-clear', 'reload-changed'];
  for (let i = 0; i < s.suspendsPerCase; i++) ops.push(suspends[Math.floor(rand() * suspends.length)]!);
  for (let i = 0; i < s.reloadsPerCase; i++) ops.push(reloads[Math.floor(rand() * reloads.length)]!);
  for (let i = 0; i < Math.ceil(s.reloadsPerCase / 10); i++) ops.push('handover');
  for (let i = 0; i < Math.ceil(s.suspendsPerCase / 5); i++) ops.push('message');
  ops.push('remove-open');
  for (let i = ops.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [ops[i], ops[j]] = [ops[j]!, ops[i]!];
  }
  return ops;
}

interface CaseResult {
  problems: string[];
  suspends: number;
  reloads: number;
}

async function statusProblem(dm: DeviceMapper, name: string): Promise<string | undefined> {
  const [st] = await dm.status({ name }, { noflush: true });
  const text = st?.status ?? '';
  if (/\bFail\b|\bError\b/.test(text) || / ro$/.test(text.trim())) return `status is not sane: ${text}`;
  return undefined;
}

async function tableOf(dm: DeviceMapper, name: string): Promise<string> {
  const t = await dm.table({ name });
  return t.map((l) => `${l.start} ${l.length} ${l.type} ${l.params}`).join('\n');
}

async function sendMessage(dm: DeviceMapper, name: string, rig: TortureRig, rand: () => number): Promise<void> {
  const [st] = await dm.status({ name }, { noflush: true });
  const m = rig.message(rand, st?.status ?? '');
  if (m) await dm.message({ name }, undefined, m);
}

/**
 * LVM inserting a layer (the upstream era-postsuspend report): the target moves to another device while
 * the old table stays alive, suspended, then the old device is switched to a linear map over the new one
 * (the old target's dtr runs only now), and at last the target moves back. Checkpoint-style messages race
 * the first suspend with the background work held open, and the new instance works (writes, messages)
 * while the old one still holds its buffers, so whatever the old one leaves dirty after its suspend lands
 * over metadata the new one has written. The metadata is checked right after the old dtr, with both
 * instances quiesced. Counts as a reload race.
 */
async function handover(dm: DeviceMapper, name: string, rig: TortureRig, model: SectorModel, work: Workload, rand: () => number, nextSeed: () => number, problems: string[]): Promise<void> {
  const layer = `${name}-layer`;
  await dm.create(layer);
  try {
    await dm.load({ name: layer }, [rig.line()]);
    // Dense changes first, so the background work the suspend races (an era digest) has work in every step.
    await work.burst(BURST_EXTENTS);
    rig.holdBackground?.(true);
    try {
      await sendMessage(dm, name, rig, rand);
      await dm.suspend({ name });
    } finally {
      rig.holdBackground?.(false);
    }
    await dm.resume({ name: layer });
    // The new instance works while the old one is suspended with its buffers.
    // Its writes keep to the burst lane, which the (blocked) writers of the old device never touch: two
    // devices' writes to one sector in flight at once would have no order a model could know.
    const layerWork = new Workload(dm.devicePath(layer), model, prng(0), nextSeed, { writers: 0, readers: 0, lanes: work.lanes });
    const extents = Math.floor(rig.nrSectors / EXTENT);
    for (let i = 0; i < 8; i++) {
      await layerWork.burst(BURST_EXTENTS / 2, Math.floor(rand() * (extents - BURST_EXTENTS)));
      await sendMessage(dm, layer, rig, rand).catch((e) => problems.push(`handover: message to the new instance: ${(e as Error).message}`));
    }
    await layerWork.stop();
    problems.push(...layerWork.problems.map((p) => `handover: ${p}`));
    // The new instance quiesced (its suspend commits), the old device becomes a linear map over it, so
    // the old target's dtr runs now: it must not write the metadata at all (it was suspended before).
    await dm.suspend({ name: layer });
    const before = rig.metadataImage?.();
    await dm.load({ name }, [{ start: sectors(0), length: sectors(BigInt(rig.nrSectors)), type: 'linear', params: `${dm.devicePath(layer)} 0` }]);
    await dm.resume({ name });
    const after = rig.metadataImage?.();
    if (before && after && !before.equals(after)) problems.push(`handover: the old table wrote ${changedBlocks(before, after)} after its suspend, in its dtr`);
    problems.push(...rig.checkMetadata(model, { held: true }).map((p) => `handover, after the old table's dtr: ${p}`));
    await dm.resume({ name: layer });
    // And back: the target on the old device again, the layer removed.
    await dm.suspend({ name });
    await dm.suspend({ name: layer });
    await dm.load({ name }, [rig.line()]);
    await dm.resume({ name });
  } finally {
    await dm.remove({ name: layer }, { retry: true }).catch((e) => problems.push(`handover: removing the layer: ${(e as Error).message}`));
  }
}

/** Extents (of 64 KiB) the burst before a handover covers: 1 MiB, a third of it written. */
const BURST_EXTENTS = 16;

function changedBlocks(a: Buffer, b: Buffer): string {
  const changed: number[] = [];
  for (let off = 0; off < a.length; off += 4096) if (!a.subarray(off, off + 4096).equals(b.subarray(off, off + 4096))) changed.push(off / 4096);
  return `${changed.length} metadata block(s) (${changed.slice(0, 8).join(', ')}${changed.length > 8 ? ', ...' : ''})`;
}

async function storm(dm: DeviceMapper, name: string, path: string, rig: TortureRig, model: SectorModel, work: Workload, rand: () => number, nextSeed: () => number, ops: Op[], problems: string[]): Promise<{ suspends: number; reloads: number }> {
  let suspends = 0;
  let reloads = 0;
  for (const op of ops) {
    if (problems.length > 4) break;
    await sleep(Math.floor(rand() * 20));
    try {
      switch (op) {
        case 'suspend':
        case 'suspend-noflush':
        case 'suspend-nolockfs':
          await dm.suspend({ name }, { noflush: op === 'suspend-noflush', nolockfs: op === 'suspend-nolockfs' });
          await sleep(Math.floor(rand() * 5));
          await dm.resume({ name });
          suspends++;
          break;
        case 'preload-swap':
        case 'reload-changed':
          await dm.load({ name }, [op === 'reload-changed' ? rig.variant(rand) : rig.line()]);
          await sleep(Math.floor(rand() * 30));
          // Half the swaps race a message (an era checkpoint starts a digest) sent right before the suspend,
          // with the target's background work held open (test builds) so the suspend lands in it.
          if (rand() < 0.5) {
            rig.holdBackground?.(true);
            try {
              await sendMessage(dm, name, rig, rand);
              await dm.suspend({ name });
              await dm.resume({ name });
            } finally {
              rig.holdBackground?.(false);
            }
          } else {
            await dm.suspend({ name });
            await dm.resume({ name });
          }
          reloads++;
          if (rand() < 0.5) {
            // Back to back (LVM does this in lvconvert): the next table reads from the disk what the
            // previous one committed, after the table before that was destroyed.
            await dm.load({ name }, [rig.line()]);
            await dm.suspend({ name });
            await dm.resume({ name });
            reloads++;
          }
          break;
        case 'handover':
          await handover(dm, name, rig, model, work, rand, nextSeed, problems);
          reloads++;
          break;
        case 'preload-clear':
          await dm.load({ name }, [rig.line()]);
          await sleep(Math.floor(rand() * 30));
          await dm.clear({ name });
          reloads++;
          break;
        case 'message':
          await sendMessage(dm, name, rig, rand);
          break;
        case 'remove-open': {
          const before = await tableOf(dm, name);
          const fd = fs.openSync(path, 'r');
          try {
            await dm.remove({ name });
            problems.push('remove while open succeeded');
          } catch (e) {
            if (!(e instanceof DmError) || e.code !== 'EBUSY') problems.push(`remove while open: ${(e as Error).message} (want EBUSY)`);
          } finally {
            fs.closeSync(fd);
          }
          if ((await tableOf(dm, name)) !== before) problems.push('a refused remove changed the table');
          break;
        }
      }
    } catch (e) {
      problems.push(`${op}: ${(e as Error).message}`);
    }
  }
  return { suspends, reloads };
}

async function waitGone(dm: DeviceMapper, name: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!(await dm.list()).some((d) => d.name === name)) return true;
    await sleep(50);
  }
  return false;
}

/** One case on a live device `name`; leaves the device re-created from its metadata for the next one. */
async function runCase(dm: DeviceMapper, name: string, rig: TortureRig, model: SectorModel, seed: number, s: TortureScale, nextSeed: () => number): Promise<CaseResult> {
  const rand = prng(seed);
  const path = dm.devicePath(name);
  const problems: string[] = [];
  const work = new Workload(path, model, prng(seed ^ 0x5a5a5a5a), nextSeed, { writers: 2, readers: 1 });
  const counts = await storm(dm, name, path, rig, model, work, rand, nextSeed, plan(rand, s), problems);
  await work.stop();
  problems.push(...work.problems);

  const sp = await statusProblem(dm, name);
  if (sp) problems.push(sp);
  problems.push(...model.checkAll(path).map((p) => `after the storm: ${p}`));

  const lin = rig.linear ? await rig.linear(dm, name) : undefined;
  if (lin) {
    await dm.load({ name }, [lin]);
    await dm.suspend({ name });
    await dm.resume({ name });
    problems.push(...model.checkAll(path).map((p) => `on linear: ${p}`));
    await dm.load({ name }, [rig.line()]);
    await dm.suspend({ name });
    await dm.resume({ name });
    problems.push(...model.checkAll(path).map((p) => `back from linear: ${p}`));
  }

  // Deferred remove while held open: the device stays until the holder closes, then goes.
  const fd = fs.openSync(path, 'r');
  await dm.remove({ name }, { deferred: true });
  const stillThere = (await dm.list()).some((d) => d.name === name);
  fs.closeSync(fd);
  if (!stillThere) problems.push('a deferred remove took the device while it was open');
  if (!(await waitGone(dm, name, 5000))) {
    problems.push('the device outlived its deferred remove');
    await dm.remove({ name }, { retry: true }).catch(() => undefined);
  }
  problems.push(...rig.checkMetadata(model));

  await dm.create(name, { targets: [rig.line()] });
  problems.push(...model.checkAll(path).map((p) => `re-created from its metadata: ${p}`));
  return { problems, ...counts };
}

async function runProfile(ctx: LabContext, dm: DeviceMapper, p: TortureProfile, s: TortureScale, only?: { seed: number }): Promise<{ suspends: number; reloads: number; known: number }> {
  const scope = new Scope();
  const name = `tt-${p.type}`;
  let suspends = 0;
  let reloads = 0;
  let known = 0;
  let seedCounter = 1000;
  try {
    const rig = p.makeRig(scope);
    const model = new SectorModel(rig.nrSectors, BASE_SEED);
    await dm.create(name, { targets: [rig.line()] });
    const cases = only ? 1 : s.cases;
    for (let i = 0; i < cases; i++) {
      const seed = only?.seed ?? caseSeed(ctx.seed, `torture-${p.type}`, i);
      let r: CaseResult;
      try {
        r = await runCase(dm, name, rig, model, seed, s, () => seedCounter++);
      } catch (e) {
        r = { problems: [`case stopped: ${(e as Error).message}`], suspends: 0, reloads: 0 };
      }
      suspends += r.suspends;
      reloads += r.reloads;
      if (r.problems.length && p.knownUpstream) {
        known++;
        ctx.log(`${p.type}: known upstream (${p.knownUpstream}): ${r.problems[0]}`);
      } else if (r.problems.length) {
        ctx.fail({ component: 'torture', target: p.type, seed, detail: r.problems.slice(0, 4).join('; '), log: r.problems.join('\n') });
        break; // the model no longer describes the device
      }
      if (!(await dm.list()).some((d) => d.name === name)) break;
    }
    await dm.remove({ name }, { retry: true });
    // The devices this component makes (the rig's own, under the rig's scope, go when it closes).
    const leaked = (await dm.list()).filter((d) => d.name === name || d.name === `${name}-layer`);
    if (leaked.length) ctx.fail({ component: 'torture', target: p.type, seed: ctx.seed, detail: `devices left behind: ${leaked.map((d) => d.name).join(', ')}` });
    ctx.log(`${p.type}: ${suspends} suspend cycles, ${reloads} reload races under IO`);
  } finally {
    await dm.remove({ name }).catch(() => undefined);
    scope.close();
  }
  return { suspends, reloads, known };
}

/** Runs the component at a scale; 'debug' is the reduced scale of the debug-kernel stage. */
export async function runTorture(ctx: LabContext, scaleName: Scale | 'debug', only?: { seed: number }): Promise<Partial<Counters>> {
  const dm = DeviceMapper.open();
  const perTarget: Record<string, { suspend_cycles: number; reload_races: number }> = {};
  let suspendCycles = 0;
  let reloadRaces = 0;
  let known = 0;
  try {
    for (const p of PROFILES) {
      // In-tree targets only add known_upstream counts: release scale only, to keep CI within its budget.
      if (p.knownUpstream && scaleName !== 'release') continue;
      if (!ctx.wants(p.type) || !(await dm.hasTarget(p.type))) continue;
      const started = Date.now();
      const r = await runProfile(ctx, dm, p, tortureScale(scaleName, !!p.knownUpstream), only);
      ctx.log(`${p.type}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
      perTarget[p.type] = { suspend_cycles: r.suspends, reload_races: r.reloads };
      suspendCycles += r.suspends;
      reloadRaces += r.reloads;
      known += r.known;
    }
  } finally {
    dm.close();
  }
  return { suspend_cycles: suspendCycles, reload_races: reloadRaces, known_upstream: known, per_target: perTarget };
}

export const component: Component = {
  name: 'torture',
  run: (ctx, only) => runTorture(ctx, ctx.scale, only),
};
