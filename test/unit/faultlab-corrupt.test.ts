import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CHECKSUM_SALT } from '../../src/pdata/checksum';
import {
  bitmapEntry,
  blockRoles,
  BLOCK,
  blockAt,
  checksumOf,
  classifyBlock,
  fieldNames,
  fixChecksum,
  mapImage,
  resolveField,
  type BlockKind,
} from '../../src/lab/faultlab/corrupt/format';
import { buildCase, corruptField, corruptRandom, describe, fieldSlots, findCase, plan, VARIANTS } from '../../src/lab/faultlab/corrupt/mutate';
import { foreignData } from '../../src/lab/faultlab/corrupt/rigs';
import { prng } from '../../src/lab/faultlab/types';
import { patternBuffer } from '../../src/testing';
import { sectors } from '../../src/units';

/**
 * A small era metadata image built by hand: superblock (0), sm index (1), sm bitmap (2), an empty ref-count
 * leaf (3), the writeset tree leaf (4), the era array's btree leaf (5), an array block (6), a stale block
 * with garbage (7, unused) and zeros after.
 */
function syntheticEraImage(): Buffer {
  const img = Buffer.alloc(16 * BLOCK);
  const sb = blockAt(img, 0);
  sb.writeBigUInt64LE(2126579579n, 32); // magic
  sb.writeUInt32LE(1, 40); // version
  sb.writeBigUInt64LE(16n, 44); // sm nr_blocks
  sb.writeBigUInt64LE(7n, 52); // nr_allocated
  sb.writeBigUInt64LE(1n, 60); // bitmap_root: the index block
  sb.writeBigUInt64LE(3n, 68); // ref_count_root
  sb.writeUInt32LE(8, 172);
  sb.writeUInt32LE(8, 176);
  sb.writeUInt32LE(100, 180); // nr_blocks
  sb.writeUInt32LE(3, 184); // current_era
  sb.writeBigUInt64LE(4n, 200); // writeset_tree_root
  sb.writeBigUInt64LE(5n, 208); // era_array_root
  fixChecksum(sb, 'superblock', 'era');

  const index = blockAt(img, 1);
  index.writeBigUInt64LE(1n, 8);
  index.writeBigUInt64LE(2n, 16);
  index.writeUInt32LE(16320 - 7, 24);
  index.writeUInt32LE(7, 28);
  fixChecksum(index, 'sm-index', 'era');

  const bitmap = blockAt(img, 2);
  bitmap.writeBigUInt64LE(2n, 8);
  // Blocks 0..6 have refcount 1: entry i is bits 2i (high) and 2i+1 (low), so 1 sets bit 2i+1.
  let word = 0n;
  for (let i = 0; i < 7; i++) word |= 1n << BigInt(2 * i + 1);
  bitmap.writeBigUInt64LE(word, 16);
  fixChecksum(bitmap, 'sm-bitmap', 'era');

  const leaf = (nr: number, valueSize: number, entries: Array<[bigint, Buffer]>): void => {
    const b = blockAt(img, nr);
    const max = 3 * Math.floor((BLOCK - 32) / (8 + valueSize) / 3);
    b.writeUInt32LE(2, 4);
    b.writeBigUInt64LE(BigInt(nr), 8);
    b.writeUInt32LE(entries.length, 16);
    b.writeUInt32LE(max, 20);
    b.writeUInt32LE(valueSize, 24);
    entries.forEach(([k, v], i) => {
      b.writeBigUInt64LE(k, 32 + 8 * i);
      v.copy(b, 32 + 8 * max + valueSize * i);
    });
    fixChecksum(b, 'btree-leaf', 'era');
  };
  leaf(3, 4, []);
  const ws = Buffer.alloc(12);
  ws.writeUInt32LE(100, 0);
  ws.writeBigUInt64LE(6n, 4);
  leaf(4, 12, [[2n, ws]]);
  const ptr = Buffer.alloc(8);
  ptr.writeBigUInt64LE(6n);
  leaf(5, 8, [[0n, ptr]]);

  const arr = blockAt(img, 6);
  arr.writeUInt32LE(1018, 4);
  arr.writeUInt32LE(100, 8);
  arr.writeUInt32LE(4, 12);
  arr.writeBigUInt64LE(6n, 16);
  for (let i = 0; i < 100; i++) arr.writeUInt32LE(i % 4, 24 + 4 * i);
  fixChecksum(arr, 'array', 'era');

  const rand = prng(7);
  const stale = blockAt(img, 7);
  for (let i = 0; i < BLOCK; i++) stale[i] = Math.floor(rand() * 256);
  return img;
}

test('corrupt: blocks are classified by salted checksum and block number', () => {
  const img = syntheticEraImage();
  const map = mapImage(img, 'era');
  const want: BlockKind[] = ['superblock', 'sm-index', 'sm-bitmap', 'btree-leaf', 'btree-leaf', 'btree-leaf', 'array', 'unknown', 'zero'];
  assert.deepEqual(map.kinds.slice(0, 9), want);
  assert.deepEqual(map.used, [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(map.byKind.get('btree-leaf'), [3, 4, 5]);
  // A correct checksum at the wrong place is not that block.
  assert.equal(classifyBlock(blockAt(img, 4), 5, 'era'), 'unknown');
  // An era superblock read as a clone image is not a superblock (different salt).
  assert.equal(classifyBlock(blockAt(img, 0), 0, 'clone'), 'unknown');
  // An internal node is told apart by its flags.
  const node = Buffer.from(blockAt(img, 5));
  node.writeUInt32LE(1, 4);
  fixChecksum(node, 'btree-internal', 'era');
  assert.equal(classifyBlock(node, 5, 'era'), 'btree-internal');
});

test('corrupt: used blocks get the role of what references them', () => {
  const img = syntheticEraImage();
  const map = mapImage(img, 'era');
  const roles = blockRoles(img, map);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((b) => roles.get(b)), ['live', 'space-map', 'space-map', 'space-map', 'live', 'live', 'live']);
  assert.equal(roles.get(7), undefined);
});

test('corrupt: space-map bitmap entries use bit 2i as the high bit', () => {
  const b = Buffer.alloc(BLOCK);
  b[16] = 0b0000_0110; // entry 0: bits 0 (hi) = 0, 1 (lo) = 1 -> 1; entry 1: bit 2 (hi) = 1, bit 3 = 0 -> 2
  assert.equal(bitmapEntry(b, 0), 1);
  assert.equal(bitmapEntry(b, 1), 2);
  assert.equal(bitmapEntry(b, 2), 0);
});

test('corrupt: field mutation with a recomputed checksum round-trips', () => {
  const img = syntheticEraImage();
  const map = mapImage(img, 'era');
  for (const nr of map.used) {
    const kind = map.kinds[nr]!;
    for (const name of fieldNames(kind, 'era')) {
      for (const variant of VARIANTS) {
        const { image, corruption } = corruptField(img, map, nr, name, variant, 'fixed', prng(nr * 1000 + name.length));
        const block = blockAt(image, nr);
        if (name !== 'csum') {
          const salt = kind === 'superblock' ? CHECKSUM_SALT.eraSuperblock : kind === 'array' ? CHECKSUM_SALT.arrayBlock : kind === 'sm-index' ? CHECKSUM_SALT.smIndex : kind === 'sm-bitmap' ? CHECKSUM_SALT.smBitmap : CHECKSUM_SALT.btreeNode;
          assert.equal(block.readUInt32LE(0), checksumOf(block, salt), `${kind} ${name} ${variant}: checksum recomputed`);
        }
        assert.equal(corruption.breaksChecksum, false);
        // Only this block changed, and undoing the edits restores the image byte for byte.
        for (let b = 0; b < map.nrBlocks; b++) if (b !== nr) assert.ok(blockAt(image, b).equals(blockAt(img, b)));
        const undo = Buffer.from(image);
        for (const e of corruption.edits) {
          assert.ok(image.subarray(e.at, e.at + e.new.length).equals(e.new));
          e.old.copy(undo, e.at);
        }
        assert.ok(undo.equals(img), `${kind} ${name} ${variant}: edits undo`);
      }
    }
  }
});

test('corrupt: field values: 0, max, +1, -1, past the end, another used block', () => {
  const img = syntheticEraImage();
  const map = mapImage(img, 'era');
  const read = (image: Buffer): bigint => blockAt(image, 0).readBigUInt64LE(208);
  const apply = (v: (typeof VARIANTS)[number]): bigint => read(corruptField(img, map, 0, 'era_array_root', v, 'fixed', prng(1)).image);
  assert.equal(apply('zero'), 0n);
  assert.equal(apply('max'), 0xffffffffffffffffn);
  assert.equal(apply('inc'), 6n);
  assert.equal(apply('dec'), 4n);
  assert.ok(apply('past-end') >= 16n);
  const other = apply('other-block');
  assert.ok(map.used.includes(Number(other)) && other !== 5n);
  // A stale checksum makes the block unrecognisable, and is flagged as checksum-breaking.
  const stale = corruptField(img, map, 0, 'nr_blocks', 'inc', 'stale', prng(1));
  assert.equal(stale.corruption.breaksChecksum, true);
  assert.equal(classifyBlock(blockAt(stale.image, 0), 0, 'era'), 'unknown');
  assert.match(describe(stale.corruption), /nr_blocks := inc, csum stale .*@0\+180 0x00000064->0x00000065/);
  // Entry fields resolve against the block's own counts.
  assert.equal(resolveField(blockAt(img, 4), 'btree-leaf', 'era', 'value2[last]', prng(1)).name, 'value[0].root');
  assert.equal(resolveField(blockAt(img, 6), 'array', 'era', 'value[last]', prng(1)).offset, 24 + 4 * 99);
});

test('corrupt: random flips stay inside one used block', () => {
  const img = syntheticEraImage();
  const map = mapImage(img, 'era');
  for (let s = 0; s < 200; s++) {
    const { image, corruption } = corruptRandom(img, map, prng(s));
    assert.ok(map.used.includes(corruption.block));
    for (const e of corruption.edits) assert.equal(Math.floor(e.at / BLOCK), corruption.block);
    if (corruption.csum === 'stale' && corruption.edits.length) assert.equal(corruption.breaksChecksum, true);
    if (corruption.csum === 'fixed') assert.equal(classifyBlock(blockAt(image, corruption.block), corruption.block, 'era') !== 'unknown' || corruption.edits.some((e) => e.at % BLOCK >= 4), true);
  }
});

test('corrupt: cases are deterministic by seed and ci is a subset of release', () => {
  const img = syntheticEraImage();
  const map = mapImage(img, 'era');
  const ci = plan(map, 42, 'dmkit-era', 'ci');
  assert.deepEqual(plan(map, 42, 'dmkit-era', 'ci'), ci);
  assert.notDeepEqual(plan(map, 43, 'dmkit-era', 'ci').map((c) => c.seed), ci.map((c) => c.seed));
  assert.notDeepEqual(plan(map, 42, 'era', 'ci').map((c) => c.seed), ci.map((c) => c.seed));
  const release = plan(map, 42, 'dmkit-era', 'release');
  assert.ok(release.length >= 100_000);
  for (const c of ci) assert.deepEqual(release[c.index], c);
  // Every field of every kind present meets every variant with each checksum mode at release scale.
  const all = fieldSlots(map);
  const names = new Set(all.map((s) => `${s.blockKind}/${s.field}/${s.variant}/${s.csum}`));
  assert.ok(names.has('superblock/era_array_root/past-end/fixed'));
  assert.ok(names.has('btree-leaf/nr_entries/max/stale'));
  // ci covers each field at least once with a recomputed checksum (the checksum field: stale).
  const ciFields = new Set(ci.filter((c) => c.mode === 'field').map((c) => (c.mode === 'field' ? `${c.slot.blockKind}/${c.slot.field}` : '')));
  for (const s of all) assert.ok(ciFields.has(`${s.blockKind}/${s.field}`));
  for (const c of [ci[0]!, ci[ci.length - 1]!, ci[17]!]) {
    const again = findCase(map, 42, 'dmkit-era', c.seed);
    assert.deepEqual(again, c);
    const a = buildCase(img, map, c);
    const b = buildCase(img, map, again!);
    assert.ok(a.image.equals(b.image));
    assert.equal(describe(a.corruption), describe(b.corruption));
  }
});

test('corrupt: reads must hold known stamps of their own sectors', () => {
  const seeds = new Set([5, 9]);
  assert.equal(foreignData(patternBuffer(5, sectors(80), 8), 80, seeds), undefined);
  assert.match(foreignData(patternBuffer(5, sectors(88), 8), 80, seeds)!, /sector 80: found stamp of seed 5 sector 88/);
  assert.match(foreignData(patternBuffer(6, sectors(80), 8), 80, seeds)!, /seed 6/);
  assert.match(foreignData(Buffer.alloc(4096), 80, seeds)!, /zero/);
});
