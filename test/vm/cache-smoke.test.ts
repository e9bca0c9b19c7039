/**
 * dmkit-cache smoke suite: a small cache (16 blocks) over a larger origin (256 blocks) on brd ramdisks, so
 * random IO promotes and demotes all the time. For each mode the data read back equals a model of every
 * stamped write, the status counters move the way the mode says, cache_check passes after removal, and
 * the in-tree `cache` target, activated on the same three devices, reads the same data from our metadata.
 * Also: LVM-style reloads (inactive table loaded while live), malformed table lines and messages fail
 * with EINVAL and a kernel log line, and change nothing.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cache, type CacheInfo } from '../../src/targets';
import { assertClean, compare, sh, DataModel, prng, ramdisks, readDirect, Scope, stampDirect, verifyModel, zero, type BlockDevice } from '../../src/testing';
import { createDevice, dmsetup, dmsetupStatus, kernelLogMark, kernelLogSince } from '../../src/testing/dmsetup';
import { bytes } from '../../src/units';
import { spawnSync } from 'node:child_process';

const MiB = 1n << 20n;
const BLOCK = 64n; // sectors: 32 KiB
const LENGTH = (8n * MiB) / 512n; // 16384 sectors, 256 origin blocks
const CACHE_SECTORS = 16n * BLOCK; // 16 cache blocks
const BASE_SEED = 7;

let skip: string | false = false;
before(() => {
  spawnSync('modprobe', ['dmkit-cache']);
  const r = spawnSync('dmsetup', ['targets'], { encoding: 'utf8' });
  const have = (r.stdout ?? '').split('\n').some((l) => l.trim().split(/\s+/)[0] === 'dmkit-cache');
  skip = have ? false : 'dmkit-cache is not registered (kernel test: run it in the VM lab)';
});

/** Runs `fn` in a cleanup scope; a failure of `fn` is reported even when the cleanup fails too. */
function withScope(fn: (scope: Scope) => void): void {
  const scope = new Scope();
  try {
    fn(scope);
  } catch (e) {
    try {
      scope.close();
    } catch (c) {
      console.log(`# cleanup after the failure also failed: ${(c as Error).message}`);
    }
    throw e;
  }
  scope.close();
}

interface Rig {
  meta: BlockDevice;
  cacheDev: string;
  origin: BlockDevice;
  model: DataModel;
}

/** Metadata zeroed, origin stamped with the base seed, the cache device a 16-block linear slice of ram1. */
function rig(scope: Scope): Rig {
  const [meta, fast, origin] = ramdisks(scope, 3, bytes(8n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
  zero(meta.path, bytes(4096));
  const model = new DataModel(LENGTH, BASE_SEED);
  stampDirect(origin.path, undefined, 0n, LENGTH, BASE_SEED);
  stampDirect(fast.path, undefined, 0n, CACHE_SECTORS, 99); // garbage: never a right answer
  const lin = createDevice(scope, 'cs-fast', `0 ${CACHE_SECTORS} linear ${fast.path} 0`);
  return { meta, cacheDev: lin.path, origin, model };
}

function table(type: string, r: Rig, features: string[], policy = 'default', policyArgs: string[] = []): string {
  return `0 ${LENGTH} ${type} ${r.meta.path} ${r.cacheDev} ${r.origin.path} ${BLOCK} ${features.length} ${features.join(' ')} ${policy} ${policyArgs.length} ${policyArgs.join(' ')}`.replace(/ +/g, ' ').trim();
}

function status(name: string): CacheInfo {
  const line = dmsetup('status', name).trim();
  const words = line.split(' ');
  const st = cache.parseStatus(words.slice(3).join(' '));
  assert.ok(!('fail' in st) && !('error' in st), `${name} status: ${line}`);
  return st as CacheInfo;
}

/** Random stamped writes and checked reads, each 4..64 KiB, anywhere; returns the number of reads checked. */
function randomIo(path: string, model: DataModel, seed: number, ops: number): number {
  const rand = prng(seed);
  let reads = 0;
  for (let i = 0; i < ops; i++) {
    const len = 8n * BigInt(1 + Math.floor(rand() * 16));
    const start = 8n * BigInt(Math.floor(rand() * Number((LENGTH - len) / 8n)));
    if (rand() < 0.5) {
      stampDirect(path, model, start, len, 1000 + seed * 1000 + i);
    } else {
      const bad = compare(model, start, readDirect(path, start * 512n, len * 512n, 4096n));
      assert.deepEqual(bad, [], `read of ${len} sectors at ${start}: ${JSON.stringify(bad.slice(0, 2), (_, v) => (typeof v === 'bigint' ? `${v}` : v))}`);
      reads++;
    }
  }
  return reads;
}

function assertModel(path: string, model: DataModel, what: string): void {
  const bad = verifyModel(path, model);
  assert.deepEqual(bad, [], `${what}: ${bad.map((b) => `sector ${b.sector}: want ${b.want}, found ${b.found}`).join('; ')}`);
}

describe('dmkit-cache smoke', () => {
  for (const mode of ['writeback', 'writethrough', 'passthrough', 'writeback metadata2'] as const) {
    test(`${mode}: random IO equals the model; cache_check clean; the in-tree cache reads the same data`, (t) => {
      if (skip) return t.skip(skip);
      withScope((scope) => {
        const r = rig(scope);
        const features = mode.split(' ');
        const dev = createDevice(scope, 'cs-cache', table('dmkit-cache', r, features));
        const reads = randomIo(dev.path, r.model, features.length, 120);
        assert.ok(reads > 30, `${reads} reads checked`);
        // Before the full read-back below, which promotes clean blocks over the dirty ones.
        const st = status(dev.name);
        assert.equal(st.cacheTotal, 16n);
        assert.equal(st.blockSize, BLOCK);
        assert.equal(st.ioMode, features.includes('passthrough') ? 'passthrough' : features[0]);
        assert.deepEqual(st.features.includes('metadata2'), features.includes('metadata2'));
        assert.equal(st.mode, 'rw');
        assert.equal(st.needsCheck, false);
        if (mode === 'passthrough') {
          assert.equal(st.promotions, 0n, 'passthrough never promotes');
          assert.equal(st.cacheUsed, 0n);
        } else {
          assert.ok(st.promotions > 16n && st.demotions > 0n, `promotions ${st.promotions}, demotions ${st.demotions}`);
          assert.ok(st.cacheUsed >= 12n, `${st.cacheUsed} of 16 cache blocks in use`);
        }
        if (mode.startsWith('writeback')) assert.ok(st.dirty > 0n, `writeback leaves dirty blocks (${st.dirty})`);
        else assert.equal(st.dirty, 0n, `${mode} never dirties a block`);
        assert.ok(st.readHits + st.readMisses > 0n && st.writeHits + st.writeMisses > 0n);
        assertModel(dev.path, r.model, `${mode} after random IO`);
        // A few more writes, so the in-tree target below meets dirty blocks in writeback.
        for (let b = 0n; b < 3n; b++) stampDirect(dev.path, r.model, (b * 50n + 7n) * BLOCK, 16n, 700 + Number(b));
        const last = status(dev.name);
        if (mode.startsWith('writeback')) assert.ok(last.dirty >= 3n, `${last.dirty} dirty blocks before removal`);
        dev.remove();
        assertClean('cache_check', r.meta.path);
        // cache_dump reads our mappings (and, format 1, the dirty flags in them).
        const dump = sh('cache_dump', r.meta.path);
        const mappings = [...dump.matchAll(/<mapping cache_block="\d+" origin_block="\d+" dirty="(true|false)"/g)];
        assert.equal(BigInt(mappings.length), last.cacheUsed, 'cache_dump lists every mapping');
        if (!features.includes('metadata2')) assert.equal(BigInt(mappings.filter((m) => m[1] === 'true').length), last.dirty, 'cache_dump: the dirty blocks');
        for (const attr of [`block_size="${BLOCK}"`, 'nr_cache_blocks="16"', 'policy="dmkit-lru"']) assert.match(dump, new RegExp(`<superblock [^>]*${attr}`));

        // Ours again, after a clean shutdown: every mapping and dirty bit back (format 2: the dirty bitset).
        const again = createDevice(scope, 'cs-cache', table('dmkit-cache', r, features));
        const ast = status(again.name);
        assert.equal(ast.cacheUsed, last.cacheUsed, 'reloaded mappings');
        assert.equal(ast.dirty, last.dirty, 'reloaded dirty bits');
        again.remove();
        assertClean('cache_check', r.meta.path);

        // The in-tree target on our metadata reads the same data (dirty blocks from the cache device).
        const intree = createDevice(scope, 'cs-intree', table('cache', r, features, 'smq'));
        assert.equal(status(intree.name).cacheUsed, last.cacheUsed, 'the in-tree cache loads every mapping');
        assertModel(intree.path, r.model, `in-tree cache over our metadata (${mode})`);
        intree.remove();
        assertClean('cache_check', r.meta.path);

        // And ours reads what the in-tree target left.
        const third = createDevice(scope, 'cs-cache', table('dmkit-cache', r, features));
        assertModel(third.path, r.model, `dmkit-cache after the in-tree cache (${mode})`);
        third.remove();
        assertClean('cache_check', r.meta.path);
      });
    });
  }

  test('LVM-style reloads: the inactive table loads while the live one writes; data and metadata intact', (t) => {
    if (skip) return t.skip(skip);
    withScope((scope) => {
      const r = rig(scope);
      const line = table('dmkit-cache', r, ['writeback']);
      const dev = createDevice(scope, 'cs-cache', line);
      for (let round = 0; round < 4; round++) {
        randomIo(dev.path, r.model, 50 + round, 30);
        dmsetup('load', dev.name, '--table', line);
        randomIo(dev.path, r.model, 80 + round, 30);
        dmsetup('resume', dev.name);
      }
      assertModel(dev.path, r.model, 'after 4 reloads');
      const st = status(dev.name);
      assert.equal(st.mode, 'rw');
      dev.remove();
      assertClean('cache_check', r.meta.path);
    });
  });

  test('malformed table lines and messages: EINVAL, a kernel log line, nothing changes', (t) => {
    if (skip) return t.skip(skip);
    withScope((scope) => {
      const r = rig(scope);
      const bad: Array<[string, string]> = [
        ['block size not a multiple of 64', table('dmkit-cache', r, ['writeback']).replace(` ${BLOCK} 1 `, ' 96 1 ')],
        ['block size too small', table('dmkit-cache', r, ['writeback']).replace(` ${BLOCK} 1 `, ' 32 1 ')],
        ['unknown feature', table('dmkit-cache', r, ['writeforward'])],
        ['two io modes', table('dmkit-cache', r, ['writeback', 'writethrough'])],
        ['unknown policy', table('dmkit-cache', r, ['writeback'], 'lfu')],
        ['odd policy args', table('dmkit-cache', r, ['writeback'], 'default', ['migration_threshold'])],
        ['bad policy value', table('dmkit-cache', r, ['writeback'], 'default', ['migration_threshold', 'lots'])],
        ['unknown policy key', table('dmkit-cache', r, ['writeback'], 'default', ['colour', '3'])],
        ['trailing words', `${table('dmkit-cache', r, ['writeback'])} extra`],
        ['missing policy', `0 ${LENGTH} dmkit-cache ${r.meta.path} ${r.cacheDev} ${r.origin.path} ${BLOCK} 0`],
        ['feature count too large', table('dmkit-cache', r, ['writeback']).replace(` ${BLOCK} 1 `, ` ${BLOCK} 9 `)],
      ];
      let mark = kernelLogMark();
      for (const [why, line] of bad) {
        const res = dmsetupStatus('create', 'cs-bad', '--table', line);
        assert.notEqual(res.status, 0, `${why}: create must fail`);
        assert.match(res.stderr, /Invalid argument/, `${why}: ${res.stderr}`);
        dmsetupStatus('remove', 'cs-bad');
      }
      const ctrLog = kernelLogSince(mark).filter((l) => /dmkit-cache: /.test(l));
      assert.equal(ctrLog.length, bad.length, `one kernel log line per bad table line:\n${ctrLog.join('\n')}`);
      const zeroes = readDirect(r.meta.path, 0n, 4096n, 4096n);
      assert.ok(zeroes.every((b) => b === 0), 'no failed table touched the metadata');

      const dev = createDevice(scope, 'cs-cache', table('dmkit-cache', r, ['writeback']));
      randomIo(dev.path, r.model, 3, 40);
      const before = status(dev.name);
      const badMessages = [['invalidate_cblocks', '0-4'], ['migration_threshold', 'x'], ['colour', '3'], ['frobnicate'], ['migration_threshold', '1', '2']];
      mark = kernelLogMark();
      for (const msg of badMessages) {
        const res = dmsetupStatus('message', dev.name, '0', ...msg);
        assert.notEqual(res.status, 0, `message ${msg.join(' ')} must fail`);
      }
      const msgLog = kernelLogSince(mark).filter((l) => /dmkit-cache: /.test(l));
      assert.equal(msgLog.length, badMessages.length, `one kernel log line per bad message:\n${msgLog.join('\n')}`);
      dmsetup('message', dev.name, '0', 'migration_threshold', '4096');
      dmsetup('message', dev.name, '0', 'random_threshold', '4');
      const after = status(dev.name);
      assert.equal(after.coreArgs.migrationThreshold, 4096n);
      assert.equal(after.cacheUsed, before.cacheUsed);
      assertModel(dev.path, r.model, 'after the failed messages');
      for (let b = 0n; b < 4n; b++) stampDirect(dev.path, r.model, b * 40n * BLOCK, BLOCK, 500 + Number(b));
      assert.ok(status(dev.name).dirty >= 4n, 'the last writes left dirty blocks');
      dev.remove();
      assertClean('cache_check', r.meta.path);

      // Passthrough is refused while a block is dirty; the cleaner writes every one back, then it is allowed.
      mark = kernelLogMark();
      const refused = dmsetupStatus('create', 'cs-bad', '--table', table('dmkit-cache', r, ['passthrough']));
      assert.notEqual(refused.status, 0, 'passthrough over dirty blocks must be refused');
      assert.ok(kernelLogSince(mark).some((l) => /passthrough refused/.test(l)), 'the refusal is logged');
      dmsetupStatus('remove', 'cs-bad');
      const cl = createDevice(scope, 'cs-cache', table('dmkit-cache', r, ['writeback'], 'cleaner'));
      const until = Date.now() + 20_000;
      while (status(cl.name).dirty > 0n) {
        assert.ok(Date.now() < until, `the cleaner leaves ${status(cl.name).dirty} dirty blocks`);
        spawnSync('sleep', ['0.2']);
      }
      assert.equal(status(cl.name).policy, 'cleaner');
      cl.remove();
      assertClean('cache_check', r.meta.path);

      // invalidate_cblocks in passthrough drops mappings, data stays right (it comes from the origin).
      const pt = createDevice(scope, 'cs-cache', table('dmkit-cache', r, ['passthrough']));
      dmsetup('message', pt.name, '0', 'invalidate_cblocks', '0-8', '8', '9-16');
      assert.equal(status(pt.name).cacheUsed, 0n);
      assertModel(pt.path, r.model, 'passthrough after invalidate_cblocks');
      pt.remove();
      assertClean('cache_check', r.meta.path);
    });
  });
});

