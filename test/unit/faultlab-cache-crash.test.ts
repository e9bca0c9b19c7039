/**
 * The cache crash oracle (src/lab/faultlab/crash/cache.ts): cache_dump's XML, the view a read through the
 * cache returns for an image [cache | origin], and the rule every sector of that view must satisfy.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BLOCK_SECTORS,
  CACHE_BLOCKS,
  CACHE_SECTORS,
  cacheCrashOps,
  checkView,
  ORIGIN_BLOCKS,
  ORIGIN_SECTORS,
  parseCacheDump,
  readThroughView,
  writersBySector,
  type CacheCrashOp,
} from '../../src/lab/faultlab/crash/cache';
import { patternBuffer } from '../../src/testing';
import { sectors } from '../../src/units';

const BASE = 11;
const BB = BLOCK_SECTORS * 512;

const DUMP = `<superblock uuid="" block_size="64" nr_cache_blocks="16" policy="dmkit-lru" hint_width="4">
  <mappings>
    <mapping cache_block="0" origin_block="5" dirty="true"/>
    <mapping cache_block="3" origin_block="40" dirty="false"/>
  </mappings>
  <hints>
    <hint cache_block="0" data="AAAAAA=="/>
  </hints>
</superblock>
`;

/** An image [cache | origin]: the origin stamped with BASE, cache block c holding `cache[c]`'s stamps. */
function image(cache: Record<number, { oblock: number; seed: number }>): Buffer {
  const img = Buffer.concat([patternBuffer(0x6a4c, sectors(0n), CACHE_SECTORS), patternBuffer(BASE, sectors(0n), ORIGIN_SECTORS)]);
  for (const [c, { oblock, seed }] of Object.entries(cache)) patternBuffer(seed, sectors(BigInt(oblock * BLOCK_SECTORS)), BLOCK_SECTORS).copy(img, Number(c) * BB);
  return img;
}

test('parseCacheDump reads the geometry and every mapping', () => {
  const d = parseCacheDump(DUMP);
  assert.equal(d.blockSectors, 64);
  assert.equal(d.cacheBlocks, CACHE_BLOCKS);
  assert.equal(d.policy, 'dmkit-lru');
  assert.deepEqual([...d.mappings], [[5, { cblock: 0, dirty: true }], [40, { cblock: 3, dirty: false }]]);
  assert.equal(parseCacheDump('<superblock uuid="" block_size="64" nr_cache_blocks="16" policy="smq" hint_width="4">\n</superblock>').mappings.size, 0);
  assert.throws(() => parseCacheDump('garbage'), /no superblock/);
  assert.throws(() => parseCacheDump(DUMP.replace('origin_block="40"', 'origin_block="5"')), /twice/);
});

test('readThroughView: mapped blocks from the cache device, the rest from the origin', () => {
  const img = image({ 0: { oblock: 5, seed: 200 }, 3: { oblock: 40, seed: 201 }, 7: { oblock: 9, seed: 202 } });
  const view = readThroughView(img, parseCacheDump(DUMP).mappings);
  assert.equal(view.length, ORIGIN_SECTORS * 512);
  assert.ok(view.subarray(5 * BB, 6 * BB).equals(patternBuffer(200, sectors(BigInt(5 * BLOCK_SECTORS)), BLOCK_SECTORS)));
  assert.ok(view.subarray(40 * BB, 41 * BB).equals(patternBuffer(201, sectors(BigInt(40 * BLOCK_SECTORS)), BLOCK_SECTORS)));
  // Cache block 7 is not mapped: origin block 9 reads the origin.
  assert.ok(view.subarray(9 * BB, 10 * BB).equals(patternBuffer(BASE, sectors(BigInt(9 * BLOCK_SECTORS)), BLOCK_SECTORS)));
});

test('checkView: a write acknowledged before a flush must show; later ones may', () => {
  const ops: CacheCrashOp[] = [
    { kind: 'write', start: 5 * BLOCK_SECTORS, length: 8, seed: 300, sync: 'none' },
    { kind: 'write', start: 40 * BLOCK_SECTORS, length: 8, seed: 301, sync: 'fsync' }, // makes op 0 durable too
    { kind: 'write', start: 5 * BLOCK_SECTORS, length: 8, seed: 302, sync: 'none' },
    { kind: 'write', start: 9 * BLOCK_SECTORS, length: 8, seed: 303, sync: 'fua' },
  ];
  const writers = writersBySector(ops);
  const ack = { done: 4, flushed: 1, issued: 4 };
  const view = (over: Array<[number, number]>): Buffer => {
    const v = patternBuffer(BASE, sectors(0n), ORIGIN_SECTORS);
    for (const [op, seed] of over) {
      const o = ops[op] as { start: number; length: number };
      patternBuffer(seed, sectors(BigInt(o.start)), o.length).copy(v, o.start * 512);
    }
    return v;
  };
  assert.deepEqual(checkView(view([[0, 300], [1, 301], [3, 303]]), ops, writers, ack, BASE), []);
  assert.deepEqual(checkView(view([[1, 301], [2, 302], [3, 303]]), ops, writers, ack, BASE), [], 'a later unflushed write may show');
  const lost = checkView(view([[1, 301], [3, 303]]), ops, writers, ack, BASE);
  assert.equal(lost.length, 1);
  assert.match(lost[0]!, /^sector 320 \(block 5\): stamp of seed 11 sector 320, want op 0's seed 300/);
  assert.match(checkView(view([[0, 300], [1, 301]]), ops, writers, ack, BASE)[0]!, /block 9\).*op 3's seed 303/, 'a FUA write is durable on its own');
  // Before the flush, op 0 may be lost, and op 3 was not yet acknowledged.
  assert.deepEqual(checkView(view([]), ops, writers, { done: 1, flushed: -1, issued: 2 }, BASE), []);
  // Another sector's data, or a seed never written there, is always wrong.
  const moved = view([[0, 300], [1, 301], [3, 303]]);
  moved.copy(moved, 600 * 512, 601 * 512, 602 * 512);
  assert.match(checkView(moved, ops, writers, ack, BASE)[0]!, /^sector 600 \(block 9\): stamp of seed 11 sector 601/);
  const garbage = view([[0, 300], [1, 301], [3, 303]]);
  patternBuffer(0x6a4c, sectors(700n), 1).copy(garbage, 700 * 512);
  assert.equal(checkView(garbage, ops, writers, ack, BASE).length, 1);
});

test('cacheCrashOps: reads of a moving hot set, writes of every kind, seeded', () => {
  const ops = cacheCrashOps(7, 400);
  assert.deepEqual(ops, cacheCrashOps(7, 400));
  const reads = ops.filter((o) => o.kind === 'read');
  const writes = ops.filter((o): o is Extract<CacheCrashOp, { kind: 'write' }> => o.kind === 'write');
  assert.ok(reads.length > 150 && writes.length > 150);
  assert.ok(new Set(reads.map((r) => r.block)).size > CACHE_BLOCKS * 2, 'the hot set moves across more blocks than the cache holds');
  for (const sync of ['none', 'fsync', 'fua'] as const) assert.ok(writes.some((w) => w.sync === sync), sync);
  assert.ok(writes.some((w) => w.length === BLOCK_SECTORS) && writes.some((w) => w.length === 8));
  assert.ok(writes.every((w) => w.start >= 0 && w.start + w.length <= ORIGIN_BLOCKS * BLOCK_SECTORS && Math.floor(w.start / BLOCK_SECTORS) === Math.floor((w.start + w.length - 1) / BLOCK_SECTORS)));
  assert.equal(new Set(writes.map((w) => w.seed)).size, writes.length, 'one seed per write');
});
