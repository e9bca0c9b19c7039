/** The persistent COW reader (src/pdata/snapshot-cow.ts) on images it formats itself and on damaged ones. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  areaLocation,
  checkCowHeader,
  CowDamage,
  exceptionMap,
  formatCow,
  isMetadataChunk,
  readCow,
  readCowHeader,
  SNAP_MAGIC,
} from '../../src/pdata/snapshot-cow';
import { snapshot, TargetParseError } from '../../src/targets';
import { sectors, targetBlocks } from '../../src/units';

const CHUNK = sectors(8); // 4 KiB: 256 exceptions per area
const ex = (oldChunk: number, newChunk: number) => ({ oldChunk: targetBlocks(oldChunk), newChunk: targetBlocks(newChunk) });
const damage = (what: RegExp) => (e: unknown) => e instanceof CowDamage && e.code === 'ERR_COW_DAMAGE' && what.test(e.message);

test('layout: areas at 1 + (per area + 1) * a, data chunks in between', () => {
  assert.equal(areaLocation(256, 0), 1);
  assert.equal(areaLocation(256, 1), 258);
  assert.equal(isMetadataChunk(256, 0), true);
  assert.equal(isMetadataChunk(256, 1), true);
  assert.equal(isMetadataChunk(256, 2), false);
  assert.equal(isMetadataChunk(256, 257), false);
  assert.equal(isMetadataChunk(256, 258), true);
});

test('a formatted image reads back: header, exceptions, next free chunk', () => {
  const img = formatCow(CHUNK, 1 << 20, [ex(5, 2), ex(0, 3), ex(200, 4)]);
  const cow = readCow(img, { chunkSize: CHUNK, originSectors: sectors(2048) });
  assert.deepEqual(cow.header, { magic: SNAP_MAGIC, valid: 1, version: 1, chunkSize: 8n });
  assert.equal(cow.state, 'valid');
  assert.equal(cow.exceptionsPerArea, 256);
  assert.equal(cow.areas, 1);
  assert.deepEqual(cow.exceptions, [ex(5, 2), ex(0, 3), ex(200, 4)]);
  assert.equal(cow.nextFree, 5n);
  assert.deepEqual([...exceptionMap(cow)], [[5n, 2n], [0n, 3n], [200n, 4n]]);
});

test('a full area goes on in the next; next free skips the area chunk', () => {
  const list = Array.from({ length: 256 }, (_, i) => ex(i, 2 + i)); // chunks 2..257 fill area 0
  list.push(ex(300, 259));
  const cow = readCow(formatCow(CHUNK, 2 << 20, list));
  assert.equal(cow.areas, 2);
  assert.equal(cow.exceptions.length, 257);
  assert.equal(cow.nextFree, 260n);
  const exactlyFull = readCow(formatCow(CHUNK, 2 << 20, list.slice(0, 256)));
  assert.equal(exactlyFull.areas, 2, 'the empty next area is read too');
  assert.equal(exactlyFull.nextFree, 259n, 'chunk 258 is area 1');
});

test('new and invalid stores', () => {
  const blank = Buffer.alloc(65536);
  assert.equal(readCow(blank).state, 'new');
  const invalid = formatCow(CHUNK, 65536, [ex(1, 2)], { valid: false });
  const cow = readCow(invalid);
  assert.equal(cow.state, 'invalid');
  assert.deepEqual(cow.exceptions, []);
});

test('header damage: magic, version, chunk size (the race left 0), a chunk size other than the table', () => {
  const img = formatCow(CHUNK, 65536, []);
  const bad = (mutate: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(img);
    mutate(b);
    return b;
  };
  assert.throws(() => readCow(bad((b) => b.writeUInt32LE(0x12345678, 0))), damage(/magic 0x12345678/));
  assert.throws(() => readCow(bad((b) => b.writeUInt32LE(2, 8))), damage(/version 2/));
  assert.throws(() => readCow(bad((b) => b.writeUInt32LE(0, 12))), damage(/chunk size 0 sectors is not a power of 2/));
  assert.throws(() => readCow(bad((b) => b.writeUInt32LE(24, 12))), damage(/not a power of 2/));
  assert.throws(() => readCow(img, { chunkSize: sectors(16) }), damage(/chunk size 8 sectors, want 16/));
  assert.throws(() => readCowHeader(Buffer.alloc(8)), damage(/shorter than the header/));
  assert.throws(() => readCowHeader('x' as unknown as Buffer), TypeError);
  assert.equal(checkCowHeader({ magic: 0, valid: 0, version: 0, chunkSize: sectors(0) }), 'new');
});

test('exception damage: past the device, a metadata chunk, used twice, past the origin, no room for area 0', () => {
  const size = 64 * 4096; // 64 chunks
  assert.throws(() => readCow(formatCow(CHUNK, size, [ex(1, 64)])), damage(/new_chunk 64 past the device's 64 chunks/));
  assert.throws(() => readCow(formatCow(CHUNK, size, [ex(1, 1)])), damage(/new_chunk 1 is a metadata chunk/));
  assert.throws(() => readCow(formatCow(CHUNK, size, [ex(1, 2), ex(2, 2)])), damage(/new_chunk 2 already used by exception 0/));
  assert.throws(() => readCow(formatCow(CHUNK, size, [ex(1, 2), ex(1, 3)])), damage(/old_chunk 1 already copied by exception 0/));
  assert.throws(() => readCow(formatCow(CHUNK, size, [ex(256, 2)]), { originSectors: sectors(2048) }), damage(/old_chunk 256 past the origin's 256 chunks/));
  const headerOnly = formatCow(CHUNK, 8192, []).subarray(0, 4096);
  assert.throws(() => readCow(headerOnly), damage(/ends before the first exception area/));
});

test('formatCow refuses what it cannot lay out', () => {
  assert.throws(() => formatCow(sectors(24), 1 << 20, []), RangeError);
  assert.throws(() => formatCow(CHUNK, 4096, []), RangeError);
  assert.throws(() => formatCow(CHUNK, 4096 * 3 + 1, []), RangeError);
});

test('snapshot status: more malformed strings are typed parse errors', () => {
  for (const text of ['', '-1/2 3', '16/abc 16', '16/2048 x', 'invalid', 'Merge  failed extra', '18446744073709551616/1 1']) {
    assert.throws(() => snapshot.parseStatus(text), TargetParseError, JSON.stringify(text));
  }
  assert.throws(() => snapshot.parseStatus(7 as unknown as string), (e: unknown) => e instanceof Error && !(e instanceof TypeError && /read properties/.test(e.message)));
});
