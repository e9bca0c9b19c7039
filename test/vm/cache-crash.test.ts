/**
 * dmkit-cache after a crash with dirty blocks (issue 16): a writeback cache of 16 blocks over a 256-block
 * origin, on three brd ramdisks each behind a device that becomes dm-flakey `drop_writes` at the crash.
 * Twelve origin blocks are read into the cache; six are overwritten and fsync'd (dirty, committed); then
 * the metadata device starts dropping writes (no commit reaches it from then on: the crash, for the
 * metadata) and the other six cached blocks get writes of their own, which land on the cache device while
 * the metadata still calls those blocks clean; then the cache and origin devices drop writes too and the
 * cache is removed (its clean-shutdown commit is lost). No block moves in or out of the cache after the
 * metadata froze, so the images are a state a power cut can leave.
 *
 * Reloaded on the raw ramdisks, the cache must count every cached block as dirty (all twelve: the
 * clean-shutdown flag is off, so the dirty bits on disk are not trusted), read every write back, and a
 * detach (cleaner until 0 dirty, then linear on the origin) must leave every stamped block on the origin;
 * cache_check passes on the metadata.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { DeviceMapper } from '../../src/dm';
import { cache, type CacheInfo } from '../../src/targets';
import { assertClean, compare, DataModel, ramdisks, readDirect, Scope, stampDirect, verifyModel, zero, type BlockDevice } from '../../src/testing';
import { createDevice, dmsetup, type TestDevice } from '../../src/testing/dmsetup';
import { bytes } from '../../src/units';
import { detachCache } from '../../src/workflows';

const MiB = 1n << 20n;
const BLOCK = 64n; // sectors: 32 KiB
const LENGTH = (8n * MiB) / 512n; // 256 origin blocks
const CACHE_SECTORS = 16n * BLOCK;
const META_SECTORS = (8n * MiB) / 512n;
const BASE_SEED = 5;
/** The cached origin blocks: the first six dirty and committed, the other six dirtied after the metadata froze. */
const BLOCKS = [3n, 20n, 41n, 77n, 90n, 111n, 130n, 151n, 170n, 199n, 222n, 250n];

let skip: string | false = false;
before(() => {
  spawnSync('modprobe', ['dmkit-cache']);
  spawnSync('modprobe', ['dm-flakey']);
  const r = spawnSync('dmsetup', ['targets'], { encoding: 'utf8' });
  const have = (t: string): boolean => (r.stdout ?? '').split('\n').some((l) => l.trim().split(/\s+/)[0] === t);
  skip = have('dmkit-cache') && have('flakey') ? false : 'dmkit-cache or flakey is not registered (kernel test: run it in the VM lab)';
});

async function info(dm: DeviceMapper, name: string): Promise<CacheInfo> {
  const [st] = await dm.status({ name });
  const parsed = cache.parseStatus(st?.status ?? '');
  assert.ok(!('fail' in parsed) && !('error' in parsed), `${name}: ${st?.status}`);
  return parsed as CacheInfo;
}

/** Swaps `dev`'s table for flakey over the same range, dropping every write from now on. */
function dropWrites(dev: TestDevice, backing: string, length: bigint, offset = 0n): void {
  dmsetup('load', dev.name, '--table', `0 ${length} flakey ${backing} ${offset} 0 1 1 drop_writes`);
  dmsetup('suspend', dev.name);
  dmsetup('resume', dev.name);
}

function cacheTable(meta: string, fast: string, origin: string, features: readonly string[]): string {
  return `0 ${LENGTH} dmkit-cache ${meta} ${fast} ${origin} ${BLOCK} ${features.length} ${features.join(' ')} dmkit-lru 0`;
}

describe('dmkit-cache crash with dirty blocks', () => {
  for (const features of [['writeback'], ['writeback', 'metadata2']] as const) {
    test(`${features.join(' ')}: every cached block is dirty after the crash; detach writes each one to the origin`, async (t) => {
      if (skip) return t.skip(skip);
      const scope = new Scope();
      const dm = DeviceMapper.open();
      try {
        const [meta, fast, origin] = ramdisks(scope, 3, bytes(8n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
        zero(meta.path, bytes(4096));
        stampDirect(origin.path, undefined, 0n, LENGTH, BASE_SEED);
        stampDirect(fast.path, undefined, 0n, CACHE_SECTORS, 99); // garbage: never a right answer
        const model = new DataModel(LENGTH, BASE_SEED);
        const md = createDevice(scope, 'cc-meta', `0 ${META_SECTORS} linear ${meta.path} 0`);
        const fd = createDevice(scope, 'cc-fast', `0 ${CACHE_SECTORS} linear ${fast.path} 0`);
        const od = createDevice(scope, 'cc-origin', `0 ${LENGTH} linear ${origin.path} 0`);
        const dev = createDevice(scope, 'cc-cache', cacheTable(md.path, fd.path, od.path, features));

        // Twelve blocks into the cache (a miss is promoted while the cache has never been full).
        for (let round = 0; round < 2; round++) for (const b of BLOCKS) readDirect(dev.path, b * BLOCK * 512n, BLOCK * 512n);
        const until = Date.now() + 30_000;
        while ((await info(dm, dev.name)).cacheUsed < BigInt(BLOCKS.length)) {
          assert.ok(Date.now() < until, `only ${(await info(dm, dev.name)).cacheUsed} of ${BLOCKS.length} blocks promoted`);
          await new Promise((r) => setTimeout(r, 100));
        }
        // Six dirty and committed (the fsync commits the cache's metadata).
        for (const [i, b] of BLOCKS.slice(0, 6).entries()) stampDirect(dev.path, model, b * BLOCK, BLOCK, 100 + i, { fsync: i === 5 });
        const committed = await info(dm, dev.name);
        assert.ok(committed.dirty >= 6n, `dirty after the fsync: ${committed.dirty}`);

        // The metadata stops here. The other six cached blocks are written: on the cache device only.
        dropWrites(md, meta.path, META_SECTORS);
        for (const [i, b] of BLOCKS.slice(6).entries()) stampDirect(dev.path, model, b * BLOCK + 8n * BigInt(i), 8n, 200 + i);
        stampDirect(dev.path, model, BLOCKS[0]! * BLOCK + 16n, 8n, 300);
        const before = await info(dm, dev.name);
        assert.equal(before.dirty, BigInt(BLOCKS.length), 'all twelve dirty before the crash');
        assert.equal(before.cacheUsed, BigInt(BLOCKS.length), 'no other block was promoted');

        // The crash: nothing more reaches any device, the cache goes away without a clean commit.
        dropWrites(fd, fast.path, CACHE_SECTORS);
        dropWrites(od, origin.path, LENGTH);
        dev.remove();
        od.remove();
        fd.remove();
        md.remove();

        // Recovery on the raw images.
        const fd2 = createDevice(scope, 'cc-fast', `0 ${CACHE_SECTORS} linear ${fast.path} 0`);
        const vol = 'cc-cache';
        const recovered = createDevice(scope, vol, cacheTable(meta.path, fd2.path, origin.path, features));
        const after = await info(dm, vol);
        assert.equal(after.cacheUsed, BigInt(BLOCKS.length), 'the committed mappings are back');
        assert.equal(after.dirty, after.cacheUsed, `after an unclean shutdown every cached block counts as dirty (${after.dirty} of ${after.cacheUsed})`);
        // Only the cached blocks (hits): a read of the rest would promote and evict, writing dirty blocks back.
        for (const b of BLOCKS) assert.deepEqual(compare(model, b * BLOCK, readDirect(dm.devicePath(vol), b * BLOCK * 512n, BLOCK * 512n), 4), [], `block ${b} reads back through the recovered cache`);
        assert.equal((await info(dm, vol)).dirty, BigInt(BLOCKS.length), 'reading the cached blocks changed no dirty bit');
        assert.notDeepEqual(verifyModel(origin.path, model, 1), [], 'the origin alone does not hold the writes yet');

        const d = await detachCache(dm, { name: vol, pollIntervalMs: 50, timeoutMs: 120_000 });
        assert.equal(d.flushed, BigInt(BLOCKS.length), 'detach wrote back every cached block');
        assert.deepEqual(verifyModel(origin.path, model, 4), [], 'after detach the origin holds every stamped block');
        recovered.remove(); // linear on the origin by now
        assertClean('cache_check', meta.path);
      } finally {
        await dm.close();
        scope.close();
      }
    });
  }
});
