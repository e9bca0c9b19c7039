/** The ioerr component's host-side pieces: injector status and messages, point seeds, seeded workloads. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { armMessage, FAMILIES, IOERR_TARGETS, parseInjectorStatus, pointFromSeed, pointSeed, type Point } from '../../src/lab/faultlab/ioerr/injector';
import { eraWorkload } from '../../src/lab/faultlab/ioerr/era';
import { cloneWorkload, REGION_SECTORS } from '../../src/lab/faultlab/ioerr/clone';

describe('ioerr injector', () => {
  test('parses the dmkit-core status with its fault counters', () => {
    assert.deepEqual(parseInjectorStatus('0.1.0 6.1.0-56-amd64 tm-commit-order pass 39 16 tripped 4'), {
      version: '0.1.0', release: '6.1.0-56-amd64', reverts: 'tm-commit-order', selftest: 'pass',
      writes: 39, flushes: 16, fault: 'tripped', failed: 4,
    });
    assert.equal(parseInjectorStatus('0.1.0 r - - 0 0 off 0').fault, 'off');
  });

  test('refuses a status without the injector fields or with bad ones', () => {
    assert.throws(() => parseInjectorStatus('0.1.0 6.1.0-56-amd64 - -'), /4 fields, want 8/);
    assert.throws(() => parseInjectorStatus('0.1.0 r - - x 0 off 0'), /writes 'x'/);
    assert.throws(() => parseInjectorStatus('0.1.0 r - - 1 0 maybe 0'), /fault state/);
  });

  test('arm messages', () => {
    assert.equal(armMessage('writes', 0, 'error'), 'fault writes 0 error');
    assert.equal(armMessage('flushes', 12, 'drop'), 'fault flushes 12 drop');
    assert.throws(() => armMessage('writes', -1, 'error'), RangeError);
    assert.throws(() => armMessage('writes', 1.5, 'error'), RangeError);
  });
});

describe('ioerr point seeds', () => {
  test('every point round-trips through its seed, and seeds differ', () => {
    const seen = new Set<number>();
    for (const target of IOERR_TARGETS) {
      for (const f of [...FAMILIES, { layout: 'whole', kind: 'flushes', mode: 'error' } as const]) {
        for (const n of [1, 2, 150, (1 << 24) - 1]) {
          const p: Point = { target, ...f, n };
          const s = pointSeed(p);
          assert.ok(s >= 0 && s <= 0xffffffff);
          assert.deepEqual(pointFromSeed(s), p);
          assert.ok(!seen.has(s));
          seen.add(s);
        }
      }
    }
  });

  test('seeds that name no point are refused', () => {
    assert.equal(pointFromSeed(0), null);
    assert.equal(pointFromSeed(0x10000000), null); // n = 0
    assert.equal(pointFromSeed(0xf0000001), null); // no such target
    assert.throws(() => pointSeed({ target: 'era', layout: 'split', kind: 'writes', mode: 'error', n: 0 }), RangeError);
  });
});

describe('ioerr workloads', () => {
  test('the era workload is seeded: rounds of distinct in-range writes between checkpoints', () => {
    const a = eraWorkload(7, 1024, 3, 6);
    assert.deepEqual(a, eraWorkload(7, 1024, 3, 6));
    assert.notDeepEqual(a, eraWorkload(8, 1024, 3, 6));
    assert.deepEqual(a.map((o) => o.kind), ['write', 'checkpoint', 'write', 'checkpoint', 'write']);
    for (const o of a) if (o.kind === 'write') {
      assert.equal(new Set(o.blocks).size, 6);
      assert.ok(o.blocks.every((b) => b >= 0 && b < 1024));
    }
  });

  test('the clone workload: partial writes stay inside one region, each round ends with a flush', () => {
    const ops = cloneWorkload(3, 64, 2, 3);
    assert.deepEqual(ops, cloneWorkload(3, 64, 2, 3));
    assert.deepEqual(ops.map((o) => o.kind), ['write', 'write', 'write', 'write', 'flush', 'write', 'write', 'write', 'write', 'flush']);
    for (const o of ops) {
      if (o.kind !== 'write') continue;
      const region = Math.floor(o.start / REGION_SECTORS);
      assert.equal(Math.floor((o.start + o.length - 1) / REGION_SECTORS), region);
      assert.ok(region < 64);
      assert.ok(o.length === 8 || (o.length === REGION_SECTORS && o.start % REGION_SECTORS === 0));
    }
  });
});

describe('ioerr dmkit-cache workload', () => {
  test('seeded: rounds of 4 KiB writes inside one cache block, a whole-block read and a flush', async () => {
    const { cacheWorkload, CACHE_BLOCK_SECTORS } = await import('../../src/lab/faultlab/ioerr/cache');
    const ops = cacheWorkload(7, 3, 4);
    assert.deepEqual(ops, cacheWorkload(7, 3, 4), 'same seed, same ops');
    assert.notDeepEqual(ops, cacheWorkload(8, 3, 4));
    assert.equal(ops.length, 3 * 6);
    for (let r = 0; r < 3; r++) {
      assert.equal(ops[r * 6 + 4]!.kind, 'read');
      assert.equal(ops[r * 6 + 5]!.kind, 'flush');
    }
    for (const op of ops) {
      if (op.kind !== 'write') continue;
      assert.equal(op.length, 8);
      assert.equal(op.start % 8, 0);
      assert.equal(Math.floor(op.start / CACHE_BLOCK_SECTORS), Math.floor((op.start + op.length - 1) / CACHE_BLOCK_SECTORS), 'one cache block');
      assert.ok(op.start + op.length <= 48 * CACHE_BLOCK_SECTORS, 'within the hot blocks');
    }
  });

  test('a dmkit-cache point round-trips through its seed', () => {
    assert.ok(IOERR_TARGETS.includes('dmkit-cache'));
    const p: Point = { target: 'dmkit-cache', layout: 'split', kind: 'flushes', mode: 'error', n: 6 };
    assert.deepEqual(pointFromSeed(pointSeed(p)), p);
  });
});
