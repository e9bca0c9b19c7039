/**
 * Lab component 'reload': races between suspend, reload and removal — the class of era-postsuspend (fix
 * (a)): an era device suspended while its worker digests, a newer table taking over its metadata, then
 * the old table's removal; the metadata must stay exactly what the new table committed. The scenario is
 * shared with its named test (src/testing/era-postsuspend-scenario.ts). Each iteration counts as one race.
 */
import { Scope } from '../../testing';
import { postsuspendRace } from '../../testing/era-postsuspend-scenario';
import { ERA_TYPES, registeredTargets } from '../../testing/era-fixtures';
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
    return { reload_races: races };
  },
};
