/**
 * The merge crash oracle (src/lab/faultlab/crash/snapshot-merge.ts): the snapshot's view of an origin + COW
 * image, and the chunk comparison that names what differs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chunkDiff, mergedView } from '../../src/lab/faultlab/crash/snapshot-merge';
import { CHUNK, COW, ORIGIN, ORIGIN_SECTORS } from '../../src/lab/faultlab/crash/snapshot';
import { formatCow } from '../../src/pdata/snapshot-cow';
import { patternBuffer } from '../../src/testing';
import { sectors, targetBlocks } from '../../src/units';

const CB = CHUNK * 512;

function image(exceptions: Array<[number, number]>): Buffer {
  const origin = patternBuffer(1, sectors(0n), ORIGIN_SECTORS);
  const cow = formatCow(sectors(CHUNK), COW, exceptions.map(([o, n]) => ({ oldChunk: targetBlocks(BigInt(o)), newChunk: targetBlocks(BigInt(n)) })));
  // COW chunk n holds origin chunk o's data as of the snapshot (seed 2).
  for (const [o, n] of exceptions) patternBuffer(2, sectors(BigInt(o * CHUNK)), CHUNK).copy(cow, n * CB);
  return Buffer.concat([origin, cow]);
}

test('mergedView lays the remaining exceptions over the origin', () => {
  const img = image([[3, 2], [10, 3]]);
  const got = mergedView(img);
  assert.ok(!('problem' in got));
  assert.equal(got.exceptions, 2);
  const want = Buffer.from(img.subarray(0, ORIGIN));
  patternBuffer(2, sectors(BigInt(3 * CHUNK)), CHUNK).copy(want, 3 * CB);
  patternBuffer(2, sectors(BigInt(10 * CHUNK)), CHUNK).copy(want, 10 * CB);
  assert.deepEqual(chunkDiff(got.view, want), []);
  // A merge step that dropped chunk 10's exception before the origin held its data: the view shows it.
  const early = mergedView(image([[3, 2]]));
  assert.ok(!('problem' in early));
  assert.deepEqual(chunkDiff(early.view, want), ['chunk 10 holds seed 1 (want 2)']);
});

test('mergedView reports an invalid or damaged COW', () => {
  const img = image([[3, 2]]);
  const invalid = Buffer.from(img);
  invalid.writeUInt32LE(0, ORIGIN + 4);
  assert.match(JSON.stringify(mergedView(invalid)), /COW is invalid/);
  const damaged = Buffer.from(img);
  damaged.writeUInt32LE(0x12345, ORIGIN);
  assert.match(JSON.stringify(mergedView(damaged)), /problem/);
});
