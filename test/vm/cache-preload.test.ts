/**
 * The cache-shared-metadata fix, LVM's way of reloading a cache: the new (inactive) table is loaded while
 * the live one keeps writing, then resumed. Both tables name one metadata device; with the fix they share
 * one metadata object, without it (make -C kmod REVERT=cache-shared-metadata) the new table reads the
 * superblock at load time and, after the swap, works from that stale transaction: blocks promoted and
 * written between load and resume lose their mappings, and reads return the origin's older data.
 *
 * The window needs no timing luck: the writes between `dmsetup load` and `dmsetup resume` are the test's
 * own, each followed by an fsync that makes the live table commit. So with the revert the first round
 * already fails, on the data read back.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cache, type CacheInfo } from '../../src/targets';
import { assertClean, DataModel, prng, ramdisks, Scope, stampDirect, verifyModel, zero, type BlockDevice } from '../../src/testing';
import { createDevice, dmsetup } from '../../src/testing/dmsetup';
import { bytes } from '../../src/units';

const MiB = 1n << 20n;
const BLOCK = 64n;
const LENGTH = (8n * MiB) / 512n;
const CACHE_SECTORS = 32n * BLOCK;
const ROUNDS = 5;

let skip: string | false = false;
before(() => {
  spawnSync('modprobe', ['dmkit-cache']);
  const r = spawnSync('dmsetup', ['targets'], { encoding: 'utf8' });
  const have = (r.stdout ?? '').split('\n').some((l) => l.trim().split(/\s+/)[0] === 'dmkit-cache');
  skip = have ? false : 'dmkit-cache is not registered (kernel test: run it in the VM lab)';
});

function status(name: string): CacheInfo {
  const words = dmsetup('status', name).trim().split(' ');
  const st = cache.parseStatus(words.slice(3).join(' '));
  assert.ok(!('fail' in st) && !('error' in st), `${name} status: ${words.join(' ')}`);
  return st as CacheInfo;
}

/** `count` stamped writes of half a block at random blocks, each made durable (fsync: the live table commits). */
function writeSome(path: string, model: DataModel, rand: () => number, seed: number, count: number): void {
  for (let i = 0; i < count; i++) {
    const block = BigInt(Math.floor(rand() * Number(LENGTH / BLOCK)));
    stampDirect(path, model, block * BLOCK, BLOCK / 2n, seed + i, { fsync: true });
  }
}

describe('dmkit-cache reload while live', () => {
  test('cache-shared-metadata: load the inactive table while the live one writes, resume, repeat: data and metadata intact', (t) => {
    if (skip) return t.skip(skip);
    const scope = new Scope();
    let failed = true;
    try {
      const [meta, fast, origin] = ramdisks(scope, 3, bytes(8n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
      zero(meta.path, bytes(4096));
      const model = new DataModel(LENGTH, 3);
      stampDirect(origin.path, undefined, 0n, LENGTH, 3);
      const lin = createDevice(scope, 'cp-fast', `0 ${CACHE_SECTORS} linear ${fast.path} 0`);
      const line = `0 ${LENGTH} dmkit-cache ${meta.path} ${lin.path} ${origin.path} ${BLOCK} 1 writeback default 0`;
      const dev = createDevice(scope, 'cp-cache', line);
      const rand = prng(16);

      for (let round = 0; round < ROUNDS; round++) {
        writeSome(dev.path, model, rand, 100 * round + 1000, 12);
        dmsetup('load', dev.name, '--table', line);
        // The live table promotes, dirties and commits while the inactive one exists.
        writeSome(dev.path, model, rand, 100 * round + 1050, 12);
        dmsetup('resume', dev.name);
        const bad = verifyModel(dev.path, model, 4);
        assert.deepEqual(bad, [], `round ${round}: ${bad.map((b) => `sector ${b.sector}: want ${b.want}, found ${b.found}`).join('; ')}`);
        const st = status(dev.name);
        assert.equal(st.mode, 'rw', `round ${round}: metadata mode`);
        // The status is the new table's. Round 0's promotes while the cache has room; later rounds start
        // full, and the policy does not promote blocks seen once (verifyModel's single pass), so only
        // the first round must show promotions (it is also the one that fails under the revert).
        if (round === 0) assert.ok(st.promotions > 0n, `round ${round}: promotions ${st.promotions}`);
        assert.ok(st.cacheUsed > 0n, `round ${round}: ${st.cacheUsed} cache blocks in use`);
      }
      dev.remove();
      assertClean('cache_check', meta.path);
      failed = false;
    } finally {
      try {
        scope.close();
      } catch (e) {
        if (!failed) throw e;
        console.log(`# cleanup after the failure also failed: ${(e as Error).message}`);
      }
    }
  });
});
