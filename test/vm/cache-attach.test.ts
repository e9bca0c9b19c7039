/**
 * `dmkit cache attach` / `detach` (src/workflows/cache-attach.ts) on dmkit-cache, with data checks: a
 * linear volume over a stamped origin gets a writeback cache in front of it, stamped writes (each fsynced)
 * leave dirty blocks, and detach switches to the cleaner, follows the dirty count to 0 and swaps the
 * volume back to linear on the origin. The volume must read the model throughout, the origin itself must
 * equal the model at the end (every dirty block written back), the metadata must pass cache_check, and a
 * reader holding the volume open across both swaps must see no error.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper } from '../../src/dm';
import { cache, type CacheInfo } from '../../src/targets';
import { assertClean, DataModel, prng, ramdisks, Scope, stamp, stampDirect, verifyModel, type BlockDevice } from '../../src/testing';
import { bytes, sectors } from '../../src/units';
import { attachCache, detachCache, type DetachProgress } from '../../src/workflows';

const MiB = 1n << 20n;
const BLOCK = 64n;
const LENGTH = (8n * MiB) / 512n;
const ORIGIN_SEED = 5;

let skip: string | false = false;
before(() => {
  spawnSync('modprobe', ['dmkit-cache']);
  const r = spawnSync('dmsetup', ['targets'], { encoding: 'utf8' });
  const have = (r.stdout ?? '').split('\n').some((l) => l.trim().split(/\s+/)[0] === 'dmkit-cache');
  skip = have ? false : 'dmkit-cache is not registered (kernel test: run it in the VM lab)';
});

/** MAJOR:MINOR of a block device, as tables name it. */
function devNum(path: string): string {
  const rdev = fs.statSync(path).rdev;
  return `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((Math.floor(rdev / 4096)) & ~0xff)}`;
}

async function info(dm: DeviceMapper, name: string): Promise<CacheInfo> {
  const [st] = await dm.status({ name });
  const parsed = cache.parseStatus(st?.status ?? '');
  assert.ok(!('fail' in parsed) && !('error' in parsed), `${name}: ${st?.status}`);
  return parsed as CacheInfo;
}

describe('dmkit cache attach/detach', () => {
  test('attach a writeback cache to a linear volume, dirty it, detach: the origin holds every write', async (t) => {
    if (skip) return t.skip(skip);
    const scope = new Scope();
    const dm = DeviceMapper.open();
    const name = 'ca-vol';
    let created = false;
    let reader: fs.promises.FileHandle | undefined;
    try {
      const [meta, fast, origin] = ramdisks(scope, 3, bytes(8n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
      stamp(origin.path, { start: sectors(0), length: sectors(LENGTH) }, ORIGIN_SEED);
      fs.writeFileSync(meta.path, Buffer.alloc(4096, 0xee)); // a stale superblock: attach must zero it
      const model = new DataModel(LENGTH, ORIGIN_SEED);
      await dm.create(name, { targets: [{ start: sectors(0), length: sectors(LENGTH), type: 'linear', params: `${origin.path} 0` }] });
      created = true;
      const dev = dm.devicePath(name);
      reader = await fs.promises.open(dev, 'r');

      const a = await attachCache(dm, { name, metadata: meta.path, cacheDevice: fast.path, blockSize: sectors(BLOCK), type: 'dmkit-cache', ioMode: 'writeback', metadata2: true });
      assert.equal(a.origin, devNum(origin.path));
      assert.equal((await dm.table({ name }))[0]!.type, 'dmkit-cache');
      const rand = prng(16);
      for (let i = 0; i < 40; i++) {
        const at = BigInt(Math.floor(rand() * Number(LENGTH / BLOCK))) * BLOCK + BigInt(Math.floor(rand() * 8)) * 8n;
        stampDirect(dev, model, at, 8n, 1000 + i, { fsync: i % 5 === 4 });
      }
      stampDirect(dev, model, 0n, BLOCK, 2000, { fsync: true });
      const before = await info(dm, name);
      assert.ok(before.dirty > 0n, `dirty blocks after the writes: ${before.dirty}`);
      assert.deepEqual(verifyModel(dev, model, 4), [], 'through the cache');
      // The origin alone does not hold the writes yet (they sit in dirty cache blocks).
      assert.notDeepEqual(verifyModel(origin.path, model, 1), [], 'the origin before detach');

      const samples: DetachProgress[] = [];
      await reader.read(Buffer.alloc(4096), 0, 4096, 0);
      const d = await detachCache(dm, { name, pollIntervalMs: 50, onProgress: (p) => samples.push(p), timeoutMs: 120_000 });
      assert.equal(d.flushed, before.dirty, 'flushed = dirty at the start');
      assert.equal(samples.at(-1)?.dirty, 0n, 'the last sample says 0 dirty');
      const table = await dm.table({ name });
      assert.deepEqual(table.map((l) => `${l.type} ${l.params}`), [`linear ${devNum(origin.path)} 0`]);
      const r = await reader.read(Buffer.alloc(4096), 0, 4096, 8192);
      assert.equal(r.bytesRead, 4096, 'the reader kept working across the swaps');
      assert.deepEqual(verifyModel(dev, model, 4), [], 'through the linear volume');
      assert.deepEqual(verifyModel(origin.path, model, 4), [], 'the origin itself');
      assertClean('cache_check', meta.path);
    } finally {
      await reader?.close();
      if (created) await dm.remove({ name }, { retry: true }).catch(() => undefined);
      await dm.close();
      scope.close();
    }
  });
});
