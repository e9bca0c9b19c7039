/**
 * Lab component 'reload': races between suspend, reload and removal.
 * - era (fix (a), era-postsuspend): an era device suspended while its worker digests, a newer table taking
 *   over its metadata, then the old table's removal; the metadata must stay exactly what the new table
 *   committed (src/testing/era-postsuspend-scenario.ts, shared with its named test).
 * - clone (issue 11): a table loaded while the live one hydrates regions, then the swap, with and without
 *   background hydration and a writer; every write must read back and the committed metadata must be
 *   exact (src/testing/clone-scenarios.ts, shared with test/vm/clone-races.test.ts). dmkit-clone must
 *   pass; the in-tree dm-clone (where the kernel has it) reads the metadata at table load and serves the
 *   regions hydrated since from the source (drivers/md/dm-clone-target.c, clone_ctr ->
 *   dm_clone_metadata_open), so its problems count as known_upstream.
 * - dmkit-cache (issue 16, fix cache-shared-metadata): LVM's preload, the same table loaded while the live
 *   one writes (promotions, demotions, dirty blocks, commits), then resumed, round after round; data
 *   against a model after every swap, cache_check and a re-created cache at the end
 *   (src/testing/cache-preload-scenario.ts). The test knob promote_delay_ms holds each promotion open.
 * Each iteration counts as one race.
 */
import { Scope } from '../../testing';
import { postsuspendRace } from '../../testing/era-postsuspend-scenario';
import { ERA_TYPES, registeredTargets } from '../../testing/era-fixtures';
import { reloadMidHydration, reloadStale, type CloneType } from '../../testing/clone-scenarios';
import { DeviceMapper } from '../../dm';
import { cachePreloadRace } from '../../testing/cache-preload-scenario';
import { caseSeed, Component, Counters, LabContext } from './types';

/** Iterations per era type: the race is caught at iteration 2–3 of 4 in every observed revert run. */
function iterations(ctx: LabContext, type: string): number {
  if (ctx.scale === 'release') return 40;
  return type === 'dmkit-era' ? 8 : 3;
}

export const component: Component = {
  name: 'reload',
  async run(ctx: LabContext, only?: { seed: number }): Promise<Partial<Counters>> {
    let races = 0;
    const have = registeredTargets();
    for (const type of ERA_TYPES) {
      if (!ctx.wants(type) || !have.has(type)) continue;
      const seed = only?.seed ?? caseSeed(ctx.seed, `reload-${type}`, 0);
      const n = iterations(ctx, type);
      const scope = new Scope();
      try {
        const r = await postsuspendRace(scope, type, n, seed);
        races += n;
        for (const p of r.problems) ctx.fail({ component: 'reload', target: type, seed, detail: `era-postsuspend race: ${p}` });
        ctx.log(`${type}: ${n} suspend/reload/remove races, writesets pending at suspend: ${r.pendingAtSuspend.join(',')}`);
      } catch (e) {
        ctx.fail({ component: 'reload', target: type, seed, detail: `scenario stopped: ${(e as Error).message}`, log: (e as Error).stack ?? '' });
      } finally {
        scope.close();
      }
    }
    const clones = await cloneRaces(ctx, only);
    races += await cacheRaces(ctx, only);
    return { reload_races: races + clones.races, known_upstream: clones.known };
  },
};

const CLONE_TYPES: readonly CloneType[] = ['dmkit-clone', 'clone'];

async function cloneRaces(ctx: LabContext, only?: { seed: number }): Promise<{ races: number; known: number }> {
  let races = 0;
  let known = 0;
  const dm = DeviceMapper.open();
  try {
    for (const type of CLONE_TYPES) {
      if (!ctx.wants(type) || !(await dm.hasTarget(type))) continue;
      const rounds = ctx.scale === 'release' ? 10 : 1;
      for (let i = 0; i < rounds; i++) {
        const seed = only?.seed ?? caseSeed(ctx.seed, `reload-${type}`, i);
        try {
          // CI: the deterministic stale-table race (the mid-hydration one runs in clone-races.test.ts).
          const mid = ctx.scale === 'release' || only ? await reloadMidHydration(dm, type, seed) : [];
          const problems = [...(await reloadStale(dm, type)), ...mid];
          races += ctx.scale === 'release' || only ? 2 : 1;
          if (type === 'clone') {
            known += problems.length ? 1 : 0;
            if (problems.length) ctx.log(`clone (in-tree): known upstream, table load reads the metadata: ${problems[0]}`);
          } else {
            for (const p of problems) ctx.fail({ component: 'reload', target: type, seed, detail: `clone reload race: ${p}` });
          }
        } catch (e) {
          ctx.fail({ component: 'reload', target: type, seed, detail: `clone scenario stopped: ${(e as Error).message}`, log: (e as Error).stack ?? '' });
        }
        if (only) break;
      }
      ctx.log(`${type}: ${rounds} round(s) of clone reload races (stale table${ctx.scale === 'release' ? ', mid-hydration with a writer' : ''})`);
    }
  } finally {
    dm.close();
  }
  return { races, known };
}

/** dmkit-cache's preload race: with the revert the first swap after a commit loses mappings. */
async function cacheRaces(ctx: LabContext, only?: { seed: number }): Promise<number> {
  const type = 'dmkit-cache';
  const dm = DeviceMapper.open();
  try {
    if (!ctx.wants(type) || !(await dm.hasTarget(type))) return 0;
    const seed = only?.seed ?? caseSeed(ctx.seed, `reload-${type}`, 0);
    const rounds = ctx.scale === 'release' ? 40 : 3;
    const started = Date.now();
    try {
      const r = await cachePreloadRace(dm, rounds, seed);
      for (const p of r.problems) ctx.fail({ component: 'reload', target: type, seed, detail: `preload race: ${p}` });
      ctx.log(
        `${type}: ${rounds} preload races (load while the live table writes, resume) in ${((Date.now() - started) / 1000).toFixed(0)} s: ` +
          `${r.writes} writes, promotions after each round ${r.promotions.join(',')}${r.knob ? '' : ' (no promote_delay_ms knob: a release build)'}`,
      );
      return rounds;
    } catch (e) {
      ctx.fail({ component: 'reload', target: type, seed, detail: `preload scenario stopped: ${(e as Error).message}`, log: (e as Error).stack ?? '' });
      return 0;
    }
  } finally {
    await dm.close();
  }
}
