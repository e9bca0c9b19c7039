/** Seeded random valid params for every codec: parse(format(x)) must give x back, under both names. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors, targetBlocks } from '../../src/units';
import {
  cache,
  clone,
  era,
  flakey,
  linear,
  logWrites,
  snapshot,
  snapshotMerge,
  snapshotOrigin,
  thin,
  thinPool,
  type TargetCodec,
} from '../../src/targets';

/** xorshift32, so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

type Rand = ReturnType<typeof rng>;
const int = (r: Rand, max: number): number => Math.floor(r() * (max + 1));
const big = (r: Rand, bits: number): bigint => BigInt.asUintN(bits, (BigInt(int(r, 2 ** 31)) << 32n) | BigInt(int(r, 2 ** 31)));
const bool = (r: Rand): boolean => r() < 0.5;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length - 1)]!;
const dev = (r: Rand): string => (bool(r) ? `${int(r, 4095)}:${int(r, 1048575)}` : pick(r, ['/dev/loop0', '/dev/mapper/vg-lv', '/dev/disk/by-id/x_1']));
const maybe = <T>(r: Rand, f: () => T): T | null => (bool(r) ? f() : null);

function check<P, S>(codec: TargetCodec<P, S, P>, gen: (r: Rand) => P, runs = 150): void {
  const r = rng(0x5eed ^ codec.type.length);
  for (let i = 0; i < runs; i++) {
    const x = gen(r);
    for (const type of codec.names) {
      const line = codec.line(x, { start: sectors(0), length: sectors(8), type });
      assert.equal(line.type, type);
      assert.deepEqual(codec.parse(line.params), x, `${type}: ${line.params}`);
      assert.equal(codec.format(codec.parse(line.params)), line.params);
    }
  }
}

test('linear, log-writes, snapshot-origin', () => {
  check(linear, (r) => ({ device: dev(r), offset: sectors(big(r, 64)) }));
  check(logWrites, (r) => ({ device: dev(r), logDevice: dev(r) }));
  check(snapshotOrigin, (r) => ({ origin: dev(r) }));
});

test('flakey', () => {
  check(flakey, (r) => {
    const writes = pick(r, ['drop_writes', 'error_writes', null] as const);
    const corrupt = maybe(r, () => ({
      byte: 1 + int(r, 2 ** 31),
      direction: writes === null ? pick(r, ['r', 'w'] as const) : ('r' as const),
      value: int(r, 255),
      flags: int(r, 2 ** 32 - 1),
    }));
    const up = int(r, 2 ** 31);
    return { device: dev(r), offset: sectors(big(r, 40)), upInterval: up, downInterval: 1 + int(r, 2 ** 31 - 1), writes, corrupt };
  });
});

test('era', () => {
  check(era, (r) => ({ metadataDevice: dev(r), originDevice: dev(r), blockSize: sectors(8 * (1 + int(r, 2 ** 28))) }));
});

test('clone', () => {
  check(clone, (r) => ({
    metadataDevice: dev(r),
    destinationDevice: dev(r),
    sourceDevice: dev(r),
    regionSize: sectors(2 ** (3 + int(r, 18))),
    noHydration: bool(r),
    noDiscardPassdown: bool(r),
    hydrationThreshold: maybe(r, () => targetBlocks(int(r, 2 ** 32 - 1))),
    hydrationBatchSize: maybe(r, () => targetBlocks(int(r, 2 ** 32 - 1))),
  }));
});

test('cache', () => {
  check(cache, (r) => ({
    metadataDevice: dev(r),
    cacheDevice: dev(r),
    originDevice: dev(r),
    blockSize: sectors(64 * (1 + int(r, 32767))),
    ioMode: pick(r, ['writeback', 'writethrough', 'passthrough', null] as const),
    metadata2: bool(r),
    noDiscardPassdown: bool(r),
    policy: pick(r, ['smq', 'mq', 'cleaner', 'default']),
    migrationThreshold: maybe(r, () => sectors(big(r, 64))),
    policyArgs: Array.from({ length: int(r, 3) }, (_, i) => ({ key: `tunable_${i}`, value: `${int(r, 9999)}` })),
  }));
});

test('snapshot and snapshot-merge', () => {
  const gen = (stores: readonly ('P' | 'PO' | 'N')[]) => (r: Rand) => {
    const store = pick(r, stores);
    const zeroes = bool(r);
    return {
      origin: `253:${int(r, 100)}`,
      cow: `254:${int(r, 100)}`,
      store,
      chunkSize: sectors(store !== 'N' && r() < 0.1 ? 0 : 2 ** int(r, 21)),
      discardZeroesCow: zeroes,
      discardPassdownOrigin: zeroes && bool(r),
    };
  };
  check(snapshot, gen(['P', 'PO', 'N']));
  check(snapshotMerge, gen(['P', 'PO']));
});

test('thin-pool and thin', () => {
  check(thinPool, (r) => {
    const flags = [bool(r), bool(r), bool(r), bool(r), bool(r)];
    if (flags.every(Boolean)) flags[int(r, 4)] = false;
    const [skipBlockZeroing, ignoreDiscard, noDiscardPassdown, readOnly, errorIfNoSpace] = flags as [boolean, boolean, boolean, boolean, boolean];
    return {
      metadataDevice: dev(r),
      dataDevice: dev(r),
      blockSize: sectors(128 * (1 + int(r, 16383))),
      lowWaterMark: targetBlocks(big(r, 64)),
      skipBlockZeroing,
      ignoreDiscard,
      noDiscardPassdown,
      readOnly,
      errorIfNoSpace,
    };
  });
  check(thin, (r) => ({ poolDevice: `253:${int(r, 9)}`, deviceId: int(r, 2 ** 24 - 1), externalOrigin: maybe(r, () => `8:${int(r, 255)}`) }));
});
