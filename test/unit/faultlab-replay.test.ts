/**
 * The crash lab's dm-log-writes replay (native/replay.cc through src/lab/faultlab/logwrites.ts) against
 * the plain TypeScript reference, and the crash-state enumeration (states.ts). Logs are built here in
 * the kernel's on-disk format.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LOG_FLAG,
  LOG_MAGIC,
  imageDigest,
  isDataEntry,
  loadReplayBinding,
  logIndex,
  prefixApply,
  referenceDigest,
  referenceLogIndex,
  referenceReplay,
  replayImage,
  type TornWrite,
  type WriteLog,
} from '../../src/lab/faultlab/logwrites';
import { countStates, crashPoints, enumerateStates, type CrashState, type EnumerateOptions } from '../../src/lab/faultlab/states';
import { prng } from '../../src/lab/faultlab/types';

const { FLUSH, FUA, DISCARD, MARK, METADATA } = LOG_FLAG;

/** One log entry as the test writes it; sector and nr count log blocks, as on disk. */
interface Rec {
  sector: number;
  nr: number;
  flags: number;
  text?: string;
  data?: Buffer;
}

function randomBytes(rng: () => number, n: number): Buffer {
  const b = Buffer.alloc(n + 3);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE(Math.floor(rng() * 2 ** 32), i);
  return b.subarray(0, n);
}

/** A log in dm-log-writes' layout: superblock block, then per entry a header block and its data blocks. */
function buildLog(bs: number, recs: readonly Rec[], rng = prng(7)): Buffer {
  const sb = Buffer.alloc(bs);
  sb.writeBigUInt64LE(LOG_MAGIC, 0);
  sb.writeBigUInt64LE(1n, 8);
  sb.writeBigUInt64LE(BigInt(recs.length), 16);
  sb.writeUInt32LE(bs, 24);
  const parts: Buffer[] = [sb];
  for (const r of recs) {
    const h = Buffer.alloc(bs);
    h.writeBigUInt64LE(BigInt(r.sector), 0);
    h.writeBigUInt64LE(BigInt(r.nr), 8);
    h.writeBigUInt64LE(BigInt(r.flags), 16);
    const text = r.text === undefined ? Buffer.alloc(0) : Buffer.from(r.text);
    h.writeBigUInt64LE(BigInt(text.length), 24);
    text.copy(h, 32);
    parts.push(h);
    if (!(r.flags & (MARK | DISCARD))) parts.push(r.data ?? randomBytes(rng, r.nr * bs));
  }
  return Buffer.concat(parts);
}

const W = (sector: number, nr: number, flags = 0): Rec => ({ sector, nr, flags });
const F: Rec = { sector: 0, nr: 0, flags: FLUSH };
const M = (text: string): Rec => ({ sector: 0, nr: 0, flags: MARK, text });
const D = (sector: number, nr: number): Rec => ({ sector, nr, flags: DISCARD });

/** A random log over a device of `devSectors` 512-byte sectors; some entries reach past its end. */
function randomRecs(rng: () => number, bs: number, devSectors: number): Rec[] {
  const per = bs / 512;
  const devBlocks = Math.max(1, Math.floor(devSectors / per));
  const recs: Rec[] = [];
  const n = 1 + Math.floor(rng() * 40);
  for (let i = 0; i < n; i++) {
    const r = rng();
    const at = Math.floor(rng() * (devBlocks + 2));
    if (r < 0.4) {
      const flags = (rng() < 0.2 ? FUA : 0) | (rng() < 0.1 ? FLUSH : 0) | (rng() < 0.1 ? METADATA : 0);
      recs.push(W(at, 1 + Math.floor(rng() * 6), flags));
    } else if (r < 0.55) {
      recs.push(F);
    } else if (r < 0.65) {
      recs.push(M(rng() < 0.5 ? `mark-${i}` : `é-${i}\0\0`));
    } else if (r < 0.8) {
      recs.push(D(at, 1 + Math.floor(rng() * 10)));
    } else {
      recs.push(W(at, Math.ceil(8 / per) + Math.floor(rng() * 12), rng() < 0.2 ? FUA : 0));
    }
  }
  return recs;
}

interface Plan {
  log: Buffer;
  index: WriteLog;
  base: Buffer | null;
  length: number;
  apply: Uint32Array;
  torn?: TornWrite;
}

function randomPlan(rng: () => number): Plan {
  const bs = rng() < 0.5 ? 512 : 4096;
  const devSectors = 16 + Math.floor(rng() * 112);
  const log = buildLog(bs, randomRecs(rng, bs, devSectors), rng);
  const index = logIndex(log);
  const length = devSectors * 512 - (rng() < 0.3 ? 1 + Math.floor(rng() * 511) : 0);
  const base = rng() < 0.5 ? null : randomBytes(rng, length);
  const n = index.entries.length;
  const apply = Uint32Array.from({ length: Math.floor(rng() * n * 1.5) }, () => Math.floor(rng() * n));
  const plan: Plan = { log, index, base, length, apply };
  const data = [...apply].filter((i) => isDataEntry(index.entries[i]!));
  if (data.length && rng() < 0.4) {
    const entry = data[Math.floor(rng() * data.length)]!;
    plan.torn = { entry, sector: Math.floor(rng() * index.entries[entry]!.sectors) };
  }
  return plan;
}

const isEinval = (e: unknown): boolean => (e as NodeJS.ErrnoException).code === 'EINVAL' && (e as NodeJS.ErrnoException).errno === 22;

describe('logIndex', () => {
  /** Write 2 blocks at 4, flush, mark "m1", discard 1 at 0. */
  const sample = (bs: number): Buffer => buildLog(bs, [{ ...W(4, 2), data: Buffer.alloc(2 * bs, 0xab) }, F, M('m1'), D(0, 1)]);

  test('entries, marks and data offsets follow the kernel layout', () => {
    const parsed = logIndex(sample(512));
    assert.equal(parsed.sectorSize, 512);
    assert.deepEqual(parsed.entries, [
      { index: 0, sector: 4, sectors: 2, flags: 0, dataOffset: 1024 },
      { index: 1, sector: 0, sectors: 0, flags: FLUSH, dataOffset: 5 * 512 },
      { index: 2, sector: 0, sectors: 0, flags: MARK, dataOffset: 6 * 512, mark: 'm1' },
      { index: 3, sector: 0, sectors: 1, flags: DISCARD, dataOffset: 7 * 512 },
    ]);
  });

  test('4 KiB log blocks become 512-byte sectors', () => {
    const parsed = logIndex(sample(4096));
    assert.equal(parsed.sectorSize, 4096);
    assert.deepEqual(parsed.entries.map((e) => [e.sector, e.sectors, e.dataOffset]), [
      [32, 16, 8192],
      [0, 0, 5 * 4096],
      [0, 0, 6 * 4096],
      [0, 8, 7 * 4096],
    ]);
  });

  test('matches the reference parser on random logs', () => {
    const rng = prng(11);
    for (let i = 0; i < 200; i++) {
      const bs = i % 2 ? 512 : 4096;
      const log = buildLog(bs, randomRecs(rng, bs, 64), rng);
      assert.deepEqual(logIndex(log), referenceLogIndex(log));
    }
  });

  test('a truncated log throws EINVAL at every length', () => {
    const log = sample(512);
    for (let len = 0; len < log.length; len += 37) {
      assert.throws(() => logIndex(log.subarray(0, len)), (e) => isEinval(e) && /corrupt dm-log-writes log/.test((e as Error).message), `length ${len}`);
    }
  });

  test('corrupt superblocks and headers throw EINVAL with the reason', () => {
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      ['magic', (b) => b.writeBigUInt64LE(1n, 0), /bad log magic 0x1/],
      ['version', (b) => b.writeBigUInt64LE(2n, 8), /unknown log version 2/],
      ['sector size 0', (b) => b.writeUInt32LE(0, 24), /sector size 0/],
      ['sector size 513', (b) => b.writeUInt32LE(513, 24), /sector size 513/],
      ['sector size 1 MiB', (b) => b.writeUInt32LE(1 << 20, 24), /sector size/],
      ['entry count 2^63', (b) => b.writeBigUInt64LE(1n << 63n, 16), /claims \d+ entries/],
      ['entry count one too many', (b) => b.writeBigUInt64LE(5n, 16), /entry 4/],
      ['unknown flags', (b) => b.writeBigUInt64LE(0x40n, 512 + 16), /entry 0 .*unknown flags/],
      ['sector 2^60', (b) => b.writeBigUInt64LE(1n << 60n, 512), /out of range/],
      ['nr_sectors 2^40', (b) => b.writeBigUInt64LE(1n << 40n, 512 + 8), /past the end/],
      ['mark too long', (b) => b.writeBigUInt64LE(481n, 5 * 512 + 24), /mark text/],
      ['discard length 2^62', (b) => b.writeBigUInt64LE(1n << 62n, 6 * 512 + 8), /out of range/],
    ];
    for (const [what, corrupt, message] of cases) {
      const log = sample(512);
      corrupt(log);
      assert.throws(() => logIndex(log), (e) => isEinval(e) && message.test((e as Error).message), what);
      assert.throws(() => referenceLogIndex(log), Error, `reference: ${what}`);
    }
  });

  test('random corruption: the addon and the reference agree, and nothing crashes', () => {
    const rng = prng(12);
    let parsed = 0;
    for (let i = 0; i < 1000; i++) {
      const log = buildLog(512, randomRecs(rng, 512, 32), rng);
      for (let k = 0; k < 1 + Math.floor(rng() * 3); k++) {
        // Mostly the superblock and header fields (the first 32 bytes of a block).
        const block = Math.floor(rng() * (log.length / 512));
        log[block * 512 + Math.floor(rng() * 32)] = Math.floor(rng() * 256);
      }
      let native: WriteLog | Error;
      try {
        native = logIndex(log);
      } catch (e) {
        assert.ok(isEinval(e), `case ${i}: ${(e as Error).message}`);
        native = e as Error;
      }
      let reference: WriteLog | Error;
      try {
        reference = referenceLogIndex(log);
      } catch (e) {
        reference = e as Error;
      }
      if (native instanceof Error || reference instanceof Error) {
        assert.equal(native instanceof Error, reference instanceof Error, `case ${i}: ${String(native instanceof Error ? native.message : (reference as Error).message)}`);
      } else {
        assert.deepEqual(native, reference, `case ${i}`);
        parsed++;
      }
    }
    assert.ok(parsed > 100 && parsed < 900, `both outcomes occur (${parsed} of 1000 parsed)`);
  });
});

describe('replayImage', () => {
  test('equals the reference replay byte for byte on random plans (torn, discards, clipping)', async () => {
    const rng = prng(21);
    let torn = 0;
    for (let i = 0; i < 400; i++) {
      const p = randomPlan(rng);
      const want = referenceReplay(p.log, p.index, p.base, p.length, p.apply, p.torn);
      const got = await replayImage(p);
      assert.ok(got.image, `case ${i}: image returned`);
      assert.ok(got.image.equals(want), `case ${i}: image differs`);
      assert.equal(got.digest, imageDigest(want), `case ${i}: digest`);
      if (p.torn) torn++;
    }
    assert.ok(torn > 50, `enough torn cases (${torn})`);
  });

  test('a torn sector keeps its previous content; the rest of the entry lands', async () => {
    const data = Buffer.alloc(8 * 512, 0xcd);
    const log = buildLog(512, [{ ...W(2, 8), data }]);
    const index = logIndex(log);
    const base = Buffer.alloc(16 * 512, 0x11);
    const { image } = await replayImage({ log, index, base, length: base.length, apply: Uint32Array.of(0), torn: { entry: 0, sector: 3 } });
    for (let s = 0; s < 16; s++) {
      const want = s >= 2 && s < 10 && s !== 5 ? 0xcd : 0x11;
      assert.ok(image!.subarray(s * 512, s * 512 + 512).every((b) => b === want), `sector ${s}`);
    }
  });

  test('discards zero, marks and empty flushes are ignored, entries past the image are clipped', async () => {
    const log = buildLog(4096, [{ ...W(0, 2), data: Buffer.alloc(8192, 0xee) }, F, M('x'), D(1, 1), { ...W(3, 2), data: Buffer.alloc(8192, 0x77) }]);
    const index = logIndex(log);
    const length = 4 * 4096 + 100;
    const { image } = await replayImage({ log, index, base: null, length, apply: Uint32Array.of(0, 1, 2, 3, 4) });
    assert.equal(image!.length, length);
    assert.ok(image!.subarray(0, 4096).every((b) => b === 0xee));
    assert.ok(image!.subarray(4096, 8192).every((b) => b === 0));
    assert.ok(image!.subarray(12288).every((b) => b === 0x77));
  });

  test('digest: XXH64 of the image, the same in the addon, the reference and replayImage', async () => {
    assert.equal(imageDigest(Buffer.alloc(0)), 'ef46db3751d8e999');
    assert.equal(imageDigest(Buffer.from('abc')), '44bc2cf5ad770999');
    const rng = prng(31);
    for (const n of [0, 1, 3, 4, 7, 8, 31, 32, 33, 63, 64, 100, 4096, 4099]) {
      const b = randomBytes(rng, n);
      assert.equal(imageDigest(b), referenceDigest(b), `${n} bytes`);
    }
    const img = randomBytes(rng, 8192);
    const other = Buffer.from(img);
    other[8191] ^= 0x80;
    assert.notEqual(imageDigest(img), imageDigest(other));
    const log = buildLog(512, [{ ...W(0, 16), data: img }]);
    const r = await replayImage({ log, index: logIndex(log), base: null, length: 8192, apply: Uint32Array.of(0), digestOnly: true });
    assert.equal(r.image, undefined);
    assert.equal(r.digest, referenceDigest(img));
  });

  test('out: writes the whole image to a file (truncating a longer one), same digest', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dmkit-replay-'));
    try {
      const rng = prng(41);
      const out = join(dir, 'img');
      for (let i = 0; i < 20; i++) {
        const p = randomPlan(rng);
        if (i % 2) writeFileSync(out, Buffer.alloc(p.length + 5000, 0x99));
        const r = await replayImage({ ...p, out });
        assert.equal(r.image, undefined);
        const onDisk = readFileSync(out);
        assert.equal(statSync(out).size, p.length);
        assert.ok(onDisk.equals(referenceReplay(p.log, p.index, p.base, p.length, p.apply, p.torn)), `case ${i}`);
        assert.equal(r.digest, imageDigest(onDisk));
      }
      const log = buildLog(512, [W(0, 1)]);
      await assert.rejects(
        replayImage({ log, index: logIndex(log), base: null, length: 512, apply: Uint32Array.of(0), out: join(dir, 'no', 'such') }),
        (e) => (e as NodeJS.ErrnoException).code === 'ENOENT' && (e as NodeJS.ErrnoException).syscall === 'open',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('many concurrent replays of buffers nothing else holds', async () => {
    const rng = prng(51);
    const plans = Array.from({ length: 64 }, () => randomPlan(rng));
    const wants = plans.map((p) => referenceReplay(p.log, p.index, p.base, p.length, p.apply, p.torn));
    const results = await Promise.all(plans.map((p) => replayImage({ ...p, log: Buffer.from(p.log), base: p.base && Buffer.from(p.base) })));
    results.forEach((r, i) => assert.ok(r.image!.equals(wants[i]!), `plan ${i}`));
  });

  test('wrong argument types throw TypeError, bad values RangeError or EINVAL, synchronously', () => {
    const native = loadReplayBinding();
    const log = buildLog(512, [W(0, 8), F, M('m')]);
    const index = logIndex(log);
    const table = native.logIndex(log).table;
    const ok = { log, table, base: null, length: 8192, apply: Uint32Array.of(0, 1, 2) };
    type Raw = Parameters<typeof native.replayImage>[0];
    const call = (o: unknown) => () => native.replayImage(o as Raw);
    const typeErrors: [string, unknown][] = [
      ['no options', undefined],
      ['options a string', 'x'],
      ['log a string', { ...ok, log: 'log' }],
      ['log missing', { ...ok, log: undefined }],
      ['table a plain array', { ...ok, table: [0, 8, 0, 1024] }],
      ['table a Uint32Array', { ...ok, table: new Uint32Array(4) }],
      ['apply a plain array', { ...ok, apply: [0] }],
      ['apply a Int32Array', { ...ok, apply: Int32Array.of(0) }],
      ['base a string', { ...ok, base: 'zeros' }],
      ['length a string', { ...ok, length: '8192' }],
      ['length a bigint', { ...ok, length: 8192n }],
      ['torn a number', { ...ok, torn: 3 }],
      ['torn.sector missing', { ...ok, torn: { entry: 0 } }],
      ['out a number', { ...ok, out: 1 }],
      ['digestOnly a string', { ...ok, digestOnly: 'yes' }],
    ];
    for (const [what, o] of typeErrors) assert.throws(call(o), TypeError, what);
    const rangeErrors: [string, unknown][] = [
      ['length negative', { ...ok, length: -1 }],
      ['length fractional', { ...ok, length: 1.5 }],
      ['base of another length', { ...ok, base: Buffer.alloc(100) }],
      ['table length not a multiple of 4', { ...ok, table: new Float64Array(5) }],
      ['apply past the entries', { ...ok, apply: Uint32Array.of(3) }],
      ['torn sector outside the entry', { ...ok, torn: { entry: 0, sector: 8 } }],
      ['torn entry not applied', { ...ok, apply: Uint32Array.of(1), torn: { entry: 0, sector: 0 } }],
      ['torn entry a mark', { ...ok, torn: { entry: 2, sector: 0 } }],
      ['out empty', { ...ok, out: '' }],
    ];
    for (const [what, o] of rangeErrors) assert.throws(call(o), RangeError, what);
    const badTable = Float64Array.from(table);
    badTable[3] = log.length - 100; // data offset: the data would run past the log
    assert.throws(call({ ...ok, table: badTable }), isEinval);
    badTable[3] = 0.5;
    assert.throws(call({ ...ok, table: badTable }), isEinval);
    assert.throws(() => native.logIndex(42 as unknown as Buffer), TypeError);
    assert.throws(() => native.imageDigest('abc' as unknown as Buffer), TypeError);
    assert.throws(() => replayImage({ log, index: {} as WriteLog, base: null, length: 8192, apply: Uint32Array.of(0) }), TypeError);
    assert.throws(() => replayImage({ log, index, base: null, length: 8192, apply: [0] as unknown as Uint32Array }), TypeError);
  });

  test('prefixApply lists the data entries before the end', () => {
    const index = logIndex(buildLog(512, [W(0, 1), F, M('a'), D(0, 1), W(1, 1, FUA), W(2, 0)]));
    assert.deepEqual([...prefixApply(index, 4)], [0, 3]);
    assert.deepEqual([...prefixApply(index, 99)], [0, 3, 4]);
  });
});

const OPTS: Omit<EnumerateOptions, 'rng'> = { exhaustiveUpTo: 12, randomSubsets: 40, tornPerPoint: 3 };

function states(index: WriteLog, at: Parameters<typeof crashPoints>[1], seed: number, opts = OPTS): CrashState[] {
  return [...enumerateStates(index, crashPoints(index, at), { ...opts, rng: prng(seed) })];
}

describe('crashPoints', () => {
  test('pending writes attach to the last durability point before them only', () => {
    // 0 W, 1 F, 2 W, 3 FUA-write, 4 W, 5 D, 6 FUA-write, 7 W, 8 W, 9 F, 10 W, 11 F, 12 end mark
    const index = logIndex(buildLog(512, [W(0, 1), F, W(1, 1), W(2, 1, FUA), W(3, 1), D(4, 1), W(5, 1, FUA), W(6, 1), W(7, 1), F, W(8, 1), F, M('dm-log-writes-end')]));
    assert.deepEqual(
      crashPoints(index, 'durability').map((p) => [p.label, p.point, p.pending]),
      [
        ['start', -1, [0]],
        ['flush@1', 1, [2]],
        ['fua@3', 3, [4, 5]],
        ['fua@6', 6, [7, 8]],
        ['flush@9', 9, [10]],
        ['flush@11', 11, []],
        ['end@12', 12, []],
      ],
    );
  });

  test('marks: matching marks only; pending runs to the next FLUSH, without FUA writes', () => {
    const index = logIndex(buildLog(512, [W(0, 1), M('cp-1'), W(1, 1), W(2, 1, FUA), D(3, 2), F, M('other'), W(4, 1), M('cp-2'), W(5, 1), F]));
    assert.deepEqual(
      crashPoints(index, { marks: /^cp-/g }).map((p) => [p.label, p.point, p.pending]),
      [
        ['mark@1:cp-1', 1, [2, 4]],
        ['mark@8:cp-2', 8, [9]],
        ['end@10', 10, []],
      ],
    );
  });
});

describe('enumerateStates', () => {
  test('every non-empty subset up to exhaustiveUpTo, plus the prefix: 2^n states per point', () => {
    for (const n of [0, 1, 3, 12]) {
      const recs = [W(100, 1), F, ...Array.from({ length: n }, (_, i) => W(i, 1)), F];
      const index = logIndex(buildLog(512, recs));
      const all = states(index, 'durability', 1, { ...OPTS, tornPerPoint: 0 });
      const atFlush = all.filter((s) => s.point === 1);
      assert.equal(atFlush.length, 2 ** n, `n=${n}`);
      assert.deepEqual(atFlush[0]!.apply, Uint32Array.of(0));
      assert.equal(atFlush[0]!.kind, 'prefix');
      const subsets = new Set(atFlush.slice(1).map((s) => [...s.apply].join(',')));
      assert.equal(subsets.size, 2 ** n - 1, `n=${n}: distinct subsets`);
      for (const s of atFlush.slice(1)) {
        assert.equal(s.kind, 'subset');
        assert.equal(s.apply[0], 0, 'prefix first');
        const rest = [...s.apply.subarray(1)];
        assert.ok(rest.length > 0 && rest.every((e, i) => e >= 2 && e < 2 + n && (i === 0 || e > rest[i - 1]!)), 'pending in log order');
      }
      assert.equal(all.length, countStates(index, crashPoints(index, 'durability'), { ...OPTS, tornPerPoint: 0 }));
      assert.deepEqual(all.map((s) => s.id), all.map((_, i) => i));
    }
  });

  test('more pending writes than exhaustiveUpTo: randomSubsets distinct subsets, the full set first', () => {
    const n = 13;
    const index = logIndex(buildLog(512, [F, ...Array.from({ length: n }, (_, i) => W(i, 1)), F]));
    const atFlush = states(index, 'durability', 2, { ...OPTS, tornPerPoint: 0 }).filter((s) => s.point === 0);
    assert.equal(atFlush.length, 1 + OPTS.randomSubsets);
    assert.deepEqual([...atFlush[1]!.apply], Array.from({ length: n }, (_, i) => i + 1));
    assert.equal(new Set(atFlush.slice(1).map((s) => s.label)).size, OPTS.randomSubsets);
    const most = states(index, 'durability', 2, { exhaustiveUpTo: 4, randomSubsets: 8000, tornPerPoint: 0 }).filter((s) => s.point === 0);
    assert.equal(new Set(most.slice(1).map((s) => s.label)).size, 8000, 'distinct even when most subsets are wanted');
  });

  test('deterministic by seed', () => {
    const rng = prng(61);
    const index = logIndex(buildLog(512, [F, ...Array.from({ length: 20 }, (_, i) => W(i * 16, 8 + (i % 4))), F]));
    const key = (ss: CrashState[]) => ss.map((s) => `${s.label}|${[...s.apply].join(',')}|${s.torn ? `${s.torn.entry}/${s.torn.sector}` : ''}`);
    const seed = Math.floor(rng() * 1e9);
    assert.deepEqual(key(states(index, 'durability', seed)), key(states(index, 'durability', seed)));
    assert.notDeepEqual(key(states(index, 'durability', seed)), key(states(index, 'durability', seed + 1)));
  });

  test('torn states: a pending write of 8+ sectors, a sector inside it, applied with it', () => {
    const index = logIndex(buildLog(512, [W(0, 1), F, W(10, 8), W(20, 4), D(30, 16), W(40, 12), F, W(60, 4), F]));
    const points = crashPoints(index, 'durability');
    const all = states(index, 'durability', 5, { ...OPTS, tornPerPoint: 25 });
    const torn = all.filter((s) => s.kind === 'torn');
    assert.equal(torn.length, 25, 'only flush@1 has a pending write of 8+ sectors');
    const sectorsSeen = new Set<string>();
    for (const s of torn) {
      const t = s.torn!;
      const e = index.entries[t.entry]!;
      assert.equal(s.point, 1);
      assert.ok(t.entry === 2 || t.entry === 5, `torn entry ${t.entry}`);
      assert.ok(e.sectors >= 8 && t.sector >= 0 && t.sector < e.sectors && Number.isInteger(t.sector));
      assert.ok(s.apply.includes(t.entry));
      assert.equal(s.apply[0], 0);
      assert.match(s.label, new RegExp(`^torn@1:${t.entry}/${t.sector}`));
      sectorsSeen.add(`${t.entry}/${t.sector}`);
    }
    assert.ok(sectorsSeen.size > 5, 'torn sectors vary');
    assert.equal(all.length, countStates(index, points, { ...OPTS, tornPerPoint: 25 }));
    assert.equal(states(index, 'durability', 5, { ...OPTS, tornPerPoint: 0 }).filter((s) => s.kind === 'torn').length, 0);
  });

  test('every enumerated state replays natively as the reference does', async () => {
    const rng = prng(71);
    const recs = [W(0, 8), F, W(8, 8), W(4, 8, FUA), W(16, 8), D(2, 4), F, M('cp'), W(0, 16), W(24, 8), F];
    const log = buildLog(512, recs, rng);
    const index = logIndex(log);
    const base = randomBytes(rng, 32 * 512);
    const digests = new Set<string>();
    let n = 0;
    for (const at of ['durability', { marks: /cp/ }] as const) {
      for (const s of enumerateStates(index, crashPoints(index, at), { ...OPTS, rng: prng(3) })) {
        const r = await replayImage({ log, index, base, length: base.length, apply: s.apply, ...(s.torn ? { torn: s.torn } : {}) });
        assert.ok(r.image!.equals(referenceReplay(log, index, base, base.length, s.apply, s.torn)), s.label);
        digests.add(r.digest);
        n++;
      }
    }
    assert.ok(n > 20 && digests.size > 10, `${n} states, ${digests.size} distinct images`);
  });
});
