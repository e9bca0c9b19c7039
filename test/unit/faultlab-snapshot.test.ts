/**
 * The snapshot family's corrupt-lab oracle (src/lab/faultlab/corrupt/snapshot.ts `predict`) and case plan:
 * pure functions over COW images built with src/pdata/snapshot-cow.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCow, SNAP_MAGIC } from '../../src/pdata/snapshot-cow';
import { planCases, predict } from '../../src/lab/faultlab/corrupt/snapshot';
import { LOG_FLAG, type LogEntry } from '../../src/lab/faultlab/logwrites';
import { sectors, targetBlocks } from '../../src/units';

const CHUNK = sectors(2);
const DEVICE = 1 << 20;
// 136 exceptions: three areas of 64.
const ex = Array.from({ length: 136 }, (_, i) => ({ oldChunk: targetBlocks(BigInt(i * 3)), newChunk: targetBlocks(BigInt(2 + i + Math.floor((i + 1) / 65))) }));
const fixed = ex.map((e, i) => {
  // keep new chunks off the area chunks (1, 66, 131, ...)
  let n = 2 + i;
  n += Math.floor((n - 1) / 65);
  if ((n - 1) % 65 === 0) n++;
  return { oldChunk: e.oldChunk, newChunk: targetBlocks(BigInt(n)) };
});
const good = formatCow(CHUNK, DEVICE, fixed);

test('predict: the good image loads with every exception', () => {
  const p = predict(good);
  assert.equal(p.kind, 'loaded');
  assert.equal(p.kind === 'loaded' && p.map.size, 136);
});

test('predict: header fields', () => {
  const with32 = (at: number, v: number): Buffer => {
    const b = Buffer.from(good);
    b.writeUInt32LE(v >>> 0, at);
    return b;
  };
  assert.equal(predict(with32(0, 0)).kind, 'new');
  assert.equal(predict(with32(0, SNAP_MAGIC ^ 1)).kind, 'refuse');
  assert.equal(predict(with32(4, 0)).kind, 'invalid');
  assert.equal(predict(with32(4, 2)).kind, 'loaded');
  assert.equal(predict(with32(8, 2)).kind, 'refuse');
  assert.equal(predict(with32(12, 0)).kind, 'refuse');
  assert.equal(predict(with32(12, 3)).kind, 'refuse');
  assert.equal(predict(with32(12, 1 << 21)).kind, 'refuse');
});

test('predict: exception entries', () => {
  const entry = (i: number, field: 0 | 8, v: bigint): Buffer => {
    const b = Buffer.from(good);
    const area = Math.floor(i / 64);
    b.writeBigUInt64LE(v, (1 + 65 * area) * 1024 + (i % 64) * 16 + field);
    return b;
  };
  assert.equal(predict(entry(70, 8, 1024n)).kind, 'refuse');
  assert.equal(predict(entry(70, 8, 1n)).kind, 'refuse');
  assert.equal(predict(entry(70, 8, 66n)).kind, 'refuse');
  const cut = predict(entry(70, 8, 0n));
  assert.equal(cut.kind === 'loaded' && cut.map.size, 70, 'a terminator ends the list');
  const dupOld = predict(entry(5, 0, 9n)); // entry 3 copies chunk 9 too: the later entry wins
  assert.equal(dupOld.kind === 'loaded' && dupOld.map.get(9), 7);
});

test('planCases: field cases and random ones, each a real change, seeds stable', () => {
  const a = planCases(good, 1, 'dmkit-snapshot', 'ci');
  const b = planCases(good, 1, 'dmkit-snapshot', 'ci');
  assert.ok(a.length >= 30);
  assert.deepEqual(a.map((c) => c.seed), b.map((c) => c.seed));
  for (const c of a) assert.ok(!c.image.equals(good), c.what);
  assert.ok(planCases(good, 1, 'snapshot', 'ci').every((c) => !/chunk_size := (2097152|2147483648)$/.test(c.what)));
});

import { copiesAfter, coverage, oracle, type Op } from '../../src/lab/faultlab/crash/snapshot';
import { patternBuffer } from '../../src/testing';

test('crash oracle: a snapshot showing a later origin write, and a lost fsync\'d write, are caught', () => {
  const ORIGIN = 2 << 20;
  const base = 7;
  const ops: Op[] = [
    { on: -1, start: 0, length: 8, seed: 100, fsync: true },
    { on: 0, start: 16, length: 8, seed: 101, fsync: true },
  ];
  const cov = coverage(ops, 1);
  const origin = patternBuffer(base, sectors(0n), ORIGIN / 512);
  const cow = formatCow(sectors(8), 1 << 20, [{ oldChunk: targetBlocks(0n), newChunk: targetBlocks(2n) }, { oldChunk: targetBlocks(2n), newChunk: targetBlocks(3n) }]);
  patternBuffer(base, sectors(0n), 8).copy(cow, 2 * 4096); // chunk 0 as it was
  patternBuffer(101, sectors(16n), 8).copy(cow, 3 * 4096); // the snapshot's own write
  patternBuffer(100, sectors(0n), 8).copy(origin, 0); // the origin write after the snapshot
  const image = Buffer.concat([origin, cow]);
  assert.deepEqual(oracle(image, ops, cov, 1, base, 2), []);
  // The COW copy of chunk 0 holding the origin's new data: the snapshot shows a later origin write.
  const bad = Buffer.from(image);
  patternBuffer(100, sectors(0n), 8).copy(bad, ORIGIN + 2 * 4096);
  assert.match(oracle(bad, ops, cov, 1, base, 2).join(), /origin after the snapshot was taken/);
  // The origin without its fsync'd write once op 1's mark is durable.
  const lost = Buffer.from(image);
  patternBuffer(base, sectors(0n), 8).copy(lost, 0);
  assert.match(oracle(lost, ops, cov, 1, base, 2).join(), /lost op 0's fsync'd write/);
  assert.deepEqual(oracle(lost, ops, cov, 1, base, 0), [], 'not yet durable: either is fine');
});

test('crash: with several snapshots, chunk copies logged after an area that names them count as durable at it', () => {
  const ORIGIN_S = (2 << 20) / 512;
  const COW_S = (1 << 20) / 512;
  const F = LOG_FLAG.FLUSH;
  const U = LOG_FLAG.FUA;
  let n = 0;
  const e = (sector: number, sectors: number, flags: number): LogEntry => ({ index: n++, sector, sectors, flags, dataOffset: 0 });
  const entries = [
    e(0, 0, F), // 0: flush B of snapshot 1 (mapped after C grabbed the copies)
    e(ORIGIN_S + COW_S + 8, 8, U), // 1: snapshot 1's area (chunk 1) FUA
    e(ORIGIN_S + 16, 8, 0), // 2: copy into snapshot 0's chunk 2
    e(ORIGIN_S + COW_S + 16, 8, 0), // 3: copy into snapshot 1's chunk 2
    e(ORIGIN_S + COW_S + 16, 4, 0), // 4: a later write to that chunk: no copy
    e(100, 8, 0), // 5: an origin write
    e(0, 0, F), // 6: flush C, which had grabbed them
    e(ORIGIN_S + COW_S * 2 + 24, 8, 0), // 7: copy into snapshot 2's chunk 3, after C
    e(0, 0, F), // 8
  ];
  const early = copiesAfter({ sectorSize: 512, entries }, 4);
  assert.deepEqual(early.get(-1), [], 'flush B comes first');
  assert.deepEqual(early.get(0), [2, 3]);
  assert.deepEqual(early.get(1), [2, 3]);
  assert.deepEqual(early.get(6), [7]);
  assert.deepEqual(early.get(8), []);
  assert.equal(early.has(2), false, 'plain writes are no crash points');
});
