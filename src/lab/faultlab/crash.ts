/**
 * Lab component 'crash': recorded workloads replayed to crash states (every FLUSH/FUA point or crash mark,
 * subsets of the pending writes, torn 4 KiB writes), each checked against the target's durability
 * contract in user space, a sample recovered in the kernel. See crash/era.ts, crash/clone.ts and
 * crash/snapshot.ts and crash/snapshot-merge.ts (the snapshot family; the in-tree snapshot at release scale),
 * crash/cache.ts (writeback and writethrough; the in-tree cache at release scale).
 */
import { DeviceMapper } from '../../dm';
import { setCloneThrottle, type CloneType } from '../../testing/clone-scenarios';
import { spawnSync } from 'node:child_process';
import { ramdisks, Scope } from '../../testing';
import { bytes } from '../../units';
import { cacheCrashWorkload } from './crash/cache';
import { cloneCrashWorkload } from './crash/clone';
import { eraCrashWorkload } from './crash/era';
import { crashPlan, MiB } from './crash/rig';
import { snapshotCrashWorkload } from './crash/snapshot';
import { snapshotMergeCrashWorkload } from './crash/snapshot-merge';
import { caseSeed, Component, Counters, LabContext } from './types';

const ERA_TYPES = ['era', 'dmkit-era'];
const CLONE_TYPES = ['dmkit-clone', 'clone'];
const SNAPSHOT_TYPES = ['dmkit-snapshot', 'snapshot'];
const CACHE_TYPES = ['dmkit-cache', 'cache'];

function cloneThrottle(type: string): (percent: number) => void {
  return (percent) => setCloneThrottle(type as CloneType, percent);
}

export const component: Component = {
  name: 'crash',
  async run(ctx: LabContext, only?: { seed: number }): Promise<Partial<Counters>> {
    const dm = DeviceMapper.open();
    const scope = new Scope();
    const got = { crash_states: 0, crash_states_kernel: 0, known_upstream: 0, backup_checks: 0 };
    try {
      const [rec, log, crash, src, meta, crashMeta] = ramdisks(scope, 6, bytes(BigInt(48 * MiB))).map((d) => d.path) as [string, string, string, string, string, string];
      const eraPlan = crashPlan(ctx.scale, 'era');
      for (const type of ERA_TYPES) {
        if (!ctx.wants(type) || !(await dm.hasTarget(type))) continue;
        for (let w = 0; w < eraPlan.workloads; w++) {
          const seed = only?.seed ?? caseSeed(ctx.seed, `crash-${type}`, w);
          const c = await eraCrashWorkload(ctx, dm, type, { rec, log, crash }, seed, eraPlan);
          got.crash_states += c.states;
          got.crash_states_kernel += c.kernel;
          got.known_upstream += c.known;
          got.backup_checks += c.backups;
          if (only) break;
        }
      }
      const clonePlan = crashPlan(ctx.scale, 'clone');
      for (const type of CLONE_TYPES) {
        if (!ctx.wants(type) || !(await dm.hasTarget(type))) continue;
        for (let w = 0; w < clonePlan.workloads; w++) {
          const seed = only?.seed ?? caseSeed(ctx.seed, `crash-${type}`, w);
          const disks = { src, dest: rec, log, meta, crashDest: crash, crashMeta };
          const c = await cloneCrashWorkload(ctx, dm, type, disks, seed, clonePlan, cloneThrottle(type));
          got.crash_states += c.states;
          got.crash_states_kernel += c.kernel;
          got.known_upstream += c.known;
          if (only) break;
        }
      }
      // The snapshot family (crash/snapshot.ts): one workload with 1 snapshot and one with 4 per target.
      const snapPlan = ctx.scale === 'ci' ? { ...crashPlan('ci', 'era'), maxStates: 300 } : crashPlan('release', 'era');
      for (const type of SNAPSHOT_TYPES) {
        if (!ctx.wants(type) || (type === 'snapshot' && ctx.scale === 'ci' && !only) || !(await dm.hasTarget(type))) continue; // in-tree: release scale (CI's budget)
        for (const snaps of [1, 4]) {
          for (let w = 0; w < (ctx.scale === 'ci' ? 1 : 20); w++) {
            const seed = only?.seed ?? caseSeed(ctx.seed, `crash-${type}-${snaps}`, w);
            const c = await snapshotCrashWorkload(ctx, dm, type, { rec, log }, seed, snaps, ctx.scale === 'ci' && snaps > 1 ? { ...snapPlan, ops: 8 } : snapPlan);
            got.crash_states += c.states;
            if (only) break;
          }
        }
        // A merge crashed at each point resumes in the kernel and ends with the origin equal to the snapshot.
        for (let w = 0; w < (ctx.scale === 'ci' ? 1 : 10); w++) {
          const seed = only?.seed ?? caseSeed(ctx.seed, `crash-${type}-merge`, w);
          const c = await snapshotMergeCrashWorkload(ctx, dm, type, { rec, log, crash }, seed, snapPlan);
          got.crash_states += c.states;
          got.crash_states_kernel += c.kernel;
          if (only) break;
        }
      }
      // The cache (crash/cache.ts): one writeback and one writethrough workload per target at CI scale.
      const cachePlan = ctx.scale === 'ci' ? { ...crashPlan('ci', 'clone'), ops: 400, kernelPerWorkload: 6, maxStates: 360 } : { ...crashPlan('release', 'clone'), ops: 600, workloads: 20, kernelPerWorkload: 60, maxStates: 20_000 };
      for (const type of CACHE_TYPES) {
        if (!ctx.wants(type) || (type === 'cache' && ctx.scale === 'ci' && !only)) continue; // in-tree: release scale (CI's budget)
        if (type === 'cache') for (const m of ['dm-cache', 'dm-cache-smq', 'dm-cache-cleaner']) spawnSync('modprobe', [m]);
        if (!(await dm.hasTarget(type))) continue;
        for (const mode of ['writeback', 'writethrough'] as const) {
          for (let w = 0; w < cachePlan.workloads; w++) {
            const seed = only?.seed ?? caseSeed(ctx.seed, `crash-${type}-${mode}`, w);
            const c = await cacheCrashWorkload(ctx, dm, type, mode, { rec, log, meta, crash, crashMeta }, seed, cachePlan);
            got.crash_states += c.states;
            got.crash_states_kernel += c.kernel;
            if (only) break;
          }
        }
      }
    } finally {
      await dm.close();
      scope.close();
    }
    return got;
  },
};
