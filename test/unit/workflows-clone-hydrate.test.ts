/** hydrateAndSwap against a scripted device-mapper. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { DevId, DeviceInfo, TargetLine, TargetStatus } from '../../src/dm';
import { sectors, targetBlocks } from '../../src/units';
import { hydrateAndSwap, type HydrateDm, type HydrationProgress } from '../../src/workflows';

const info = { name: 'c' } as unknown as DeviceInfo;

/** A fake that hydrates `step` regions per status call, logging every call. */
function fakeDm(total: number, step: number, opts: { unhydrateOnSuspend?: number; failLoad?: boolean } = {}) {
  const calls: string[] = [];
  let hydrated = 0;
  let live: TargetLine[] = [];
  let inactive: TargetLine[] | undefined;
  let suspended = false;
  let dropOnce = opts.unhydrateOnSuspend ?? 0;
  const status = (): string =>
    live[0]!.type === 'linear' ? '' : `8 10/1024 128 ${hydrated}/${total} 0 0 4 hydration_threshold 1 hydration_batch_size 1 rw`;
  const dm: HydrateDm = {
    create: async (name: string, o?: { targets?: readonly TargetLine[] }) => {
      calls.push(`create ${name} ${o!.targets![0]!.type} ${o!.targets![0]!.params}`);
      live = [...o!.targets!];
      return info;
    },
    load: async (_id: DevId, t: readonly TargetLine[]) => {
      calls.push(`load ${t[0]!.type} ${t[0]!.params}`);
      if (opts.failLoad) throw new Error('EINVAL');
      inactive = [...t];
      return info;
    },
    clear: async () => {
      calls.push('clear');
      inactive = undefined;
      return info;
    },
    suspend: async () => {
      calls.push('suspend');
      suspended = true;
      if (dropOnce > 0) {
        hydrated -= dropOnce;
        dropOnce = 0;
      }
      return info;
    },
    resume: async () => {
      calls.push('resume');
      if (inactive) live = inactive;
      inactive = undefined;
      suspended = false;
      return info;
    },
    status: async (_id: DevId, o?: { noflush?: boolean }): Promise<TargetStatus[]> => {
      calls.push(o?.noflush ? 'status noflush' : 'status');
      if (!suspended && live[0]!.type !== 'linear') hydrated = Math.min(total, hydrated + step);
      return [{ start: sectors(0), length: live[0]!.length, type: live[0]!.type, status: status() }];
    },
    table: async () => live,
  };
  return { dm, calls, live: () => live };
}

const base = {
  name: 'c',
  source: '/dev/src',
  destination: '/dev/dst',
  metadata: '/dev/meta',
  regionSize: sectors(128),
  type: 'dmkit-clone' as const,
  length: sectors(128 * 10),
  pollIntervalMs: 1,
  events: false,
};

describe('hydrateAndSwap', () => {
  test('creates on zeroed metadata, follows progress, then load linear, suspend, check, resume', async () => {
    const f = fakeDm(10, 3);
    const zeroed: string[] = [];
    const run = hydrateAndSwap(f.dm, { ...base, hydrationThreshold: targetBlocks(4), zeroMetadata: async (p) => void zeroed.push(p) });
    const seen: HydrationProgress[] = [];
    const consume = (async () => {
      for await (const p of run.progress) seen.push(p);
    })();
    const result = await run.done;
    await consume;
    assert.deepEqual(zeroed, ['/dev/meta']);
    assert.equal(f.calls[0], 'create c dmkit-clone /dev/meta /dev/dst /dev/src 128 0 2 hydration_threshold 4');
    const tail = f.calls.slice(f.calls.indexOf('load linear /dev/dst 0'));
    assert.deepEqual(tail, ['load linear /dev/dst 0', 'suspend', 'status noflush', 'resume']);
    assert.equal(f.live()[0]!.type, 'linear');
    assert.equal(result.swapped, true);
    assert.equal(result.regions, 10n);
    assert.equal(result.bytes, 128n * 10n * 512n);
    assert.ok(seen.length >= 1);
    assert.equal(seen.at(-1)!.hydrated, 10n);
    assert.equal(seen.at(-1)!.regionSize, 128n);
  });

  test('reuseMetadata leaves the superblock alone; swap: false keeps the clone', async () => {
    const f = fakeDm(4, 4);
    let zeroed = false;
    const r = await hydrateAndSwap(f.dm, { ...base, reuseMetadata: true, swap: false, zeroMetadata: async () => void (zeroed = true) }).done;
    assert.equal(zeroed, false);
    assert.equal(r.swapped, false);
    assert.ok(!f.calls.some((c) => c.startsWith('load')));
  });

  test('a clone found not fully hydrated after suspend is resumed as it was, and the swap retried', async () => {
    const f = fakeDm(6, 6, { unhydrateOnSuspend: 1 });
    const r = await hydrateAndSwap(f.dm, { ...base, zeroMetadata: async () => undefined }).done;
    assert.equal(r.swapRetries, 1);
    const firstSwap = f.calls.indexOf('suspend');
    assert.deepEqual(f.calls.slice(firstSwap, firstSwap + 4), ['suspend', 'status noflush', 'clear', 'resume']);
    assert.equal(f.live()[0]!.type, 'linear');
  });

  test('a failed load leaves the clone live and rejects', async () => {
    const f = fakeDm(2, 2, { failLoad: true });
    await assert.rejects(hydrateAndSwap(f.dm, { ...base, zeroMetadata: async () => undefined }).done, /EINVAL/);
    assert.equal(f.live()[0]!.type, 'dmkit-clone');
    assert.ok(!f.calls.includes('suspend'));
  });

  test('abort stops following and leaves the clone', async () => {
    const f = fakeDm(1000, 1);
    const ac = new AbortController();
    const run = hydrateAndSwap(f.dm, { ...base, pollIntervalMs: 5, signal: ac.signal, zeroMetadata: async () => undefined });
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(run.done, (e: unknown) => (e as Error).name === 'AbortError');
    assert.equal(f.live()[0]!.type, 'dmkit-clone');
  });

  test('create: false follows the existing clone table', async () => {
    const f = fakeDm(3, 3);
    await f.dm.create('c', { targets: [{ start: sectors(0), length: sectors(384), type: 'clone', params: '/dev/m /dev/d /dev/s 128' }] });
    const r = await hydrateAndSwap(f.dm, { ...base, create: false }).done;
    assert.deepEqual(r.table, { start: 0n, length: 384n, type: 'linear', params: '/dev/d 0' });
  });
});
