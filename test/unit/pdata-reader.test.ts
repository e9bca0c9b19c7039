/**
 * The validating metadata reader on synthetic clone images built here block by block (layouts from
 * kernel-facts §2): a good image reads back, and each kind of damage is reported as MetadataDamage.
 * The VM suite pdata-reader.test.ts checks it against images the kernel wrote.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockChecksum, CHECKSUM_SALT } from '../../src/pdata/checksum';
import { CLONE_MAGIC, MetadataDamage, readCloneMetadata } from '../../src/pdata/reader';

const B = 4096;

function seal(img: Buffer, n: number, salt: number): void {
  const blk = img.subarray(n * B, (n + 1) * B);
  blk.writeUInt32LE(blockChecksum(blk.subarray(4), salt), 0);
}

/** A clone image: superblock (0), array btree leaf (1) pointing at array blocks (2, 3) of le64 words. */
function cloneImage(regions: number, hydrated: readonly number[]): Buffer {
  const img = Buffer.alloc(8 * B);
  const words = Math.ceil(regions / 64);
  const perBlock = Math.floor((B - 24) / 8);
  const blocks = Math.ceil(words / perBlock);
  const leaf = 1;
  img.writeUInt32LE(2, leaf * B + 4); // LEAF_NODE
  img.writeBigUInt64LE(BigInt(leaf), leaf * B + 8);
  const max = 3 * Math.floor((B - 32) / 16 / 3);
  img.writeUInt32LE(blocks, leaf * B + 16);
  img.writeUInt32LE(max, leaf * B + 20);
  img.writeUInt32LE(8, leaf * B + 24);
  for (let i = 0; i < blocks; i++) {
    const at = 2 + i;
    img.writeBigUInt64LE(BigInt(i), leaf * B + 32 + 8 * i);
    img.writeBigUInt64LE(BigInt(at), leaf * B + 32 + 8 * max + 8 * i);
    const n = Math.min(perBlock, words - i * perBlock);
    img.writeUInt32LE(perBlock, at * B + 4);
    img.writeUInt32LE(n, at * B + 8);
    img.writeUInt32LE(8, at * B + 12);
    img.writeBigUInt64LE(BigInt(at), at * B + 16);
  }
  for (const r of hydrated) {
    const w = Math.floor(r / 64);
    const at = (2 + Math.floor(w / perBlock)) * B + 24 + 8 * (w % perBlock);
    img.writeBigUInt64LE(img.readBigUInt64LE(at) | (1n << BigInt(r % 64)), at);
  }
  for (let i = 0; i < blocks; i++) seal(img, 2 + i, CHECKSUM_SALT.arrayBlock);
  seal(img, leaf, CHECKSUM_SALT.btreeNode);
  img.writeBigUInt64LE(0n, 8);
  img.writeBigUInt64LE(CLONE_MAGIC, 32);
  img.writeUInt32LE(1, 40);
  img.writeBigUInt64LE(128n, 172);
  img.writeBigUInt64LE(BigInt(regions * 128), 180);
  img.writeBigUInt64LE(BigInt(leaf), 188);
  seal(img, 0, CHECKSUM_SALT.cloneSuperblock);
  return img;
}

test('a clone image reads back its region size, length and hydrated regions', () => {
  const set = [0, 1, 63, 64, 500, 32000, 40000];
  const md = readCloneMetadata(cloneImage(40001, set));
  assert.equal(md.regionSectors, 128);
  assert.equal(md.nrRegions, 40001);
  assert.deepEqual([...md.hydrated.members()], set);
  assert.equal(md.hydrated.count(), set.length);
});

test('damage is reported, never read as data', () => {
  const good = cloneImage(1000, [3, 999]);
  const damaged = (what: string, edit: (img: Buffer) => void, pattern: RegExp): void => {
    const img = Buffer.from(good);
    edit(img);
    assert.throws(() => readCloneMetadata(img), (e) => e instanceof MetadataDamage && pattern.test(e.message), what);
  };
  damaged('a flipped bit in an array block', (img) => void (img[2 * B + 100] ^= 1), /array block checksum/);
  damaged('a flipped bit in the superblock', (img) => void (img[200] ^= 1), /superblock checksum/);
  damaged('a bitset root past the device', (img) => {
    img.writeBigUInt64LE(99n, 188);
    seal(img, 0, CHECKSUM_SALT.cloneSuperblock);
  }, /out of range/);
  damaged('a valid node at the wrong place', (img) => {
    img.copy(img, 5 * B, 1 * B, 2 * B);
    img.writeBigUInt64LE(5n, 188);
    seal(img, 0, CHECKSUM_SALT.cloneSuperblock);
  }, /claims to be block 1/);
  damaged('nr_entries above max_entries', (img) => {
    img.writeUInt32LE(1000, B + 16);
    seal(img, 1, CHECKSUM_SALT.btreeNode);
  }, /nr_entries/);
  damaged('a leaf that points at itself', (img) => {
    img.writeUInt32LE(1, B + 4); // internal: its child is block 2 (an array block), read as a node
    seal(img, 1, CHECKSUM_SALT.btreeNode);
  }, /btree node checksum|value size/);
  damaged('a wrong magic', (img) => {
    img.writeBigUInt64LE(1n, 32);
    seal(img, 0, CHECKSUM_SALT.cloneSuperblock);
  }, /magic/);
});
