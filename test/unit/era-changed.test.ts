/**
 * The changed-block listing (src/pdata/era-changed.ts) against the real era_invalidate on era metadata
 * images written by src/testing/era-image.ts (era_check must accept each image first): the XML must be
 * byte for byte era_invalidate's for several eras, images with multi-level trees, writesets longer and
 * shorter than the origin, an empty history. Damaged images give MetadataDamage (and era_invalidate
 * fails on them too), a missing snapshot EraSnapshotMissing, bad arguments RangeError/TypeError.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { blockChecksum, CHECKSUM_SALT } from '../../src/pdata/checksum';
import {
  changedBlocksFromMetadata,
  changedRunsFromMetadata,
  EraSnapshotMissing,
  eraInvalidateXml,
  runsOf,
} from '../../src/pdata/era-changed';
import { MetadataDamage } from '../../src/pdata/reader';
import { bitSet, eraImage, setBit, syntheticEra, type EraImageSpec } from '../../src/testing/era-image';

const B = 4096;
const HAVE_TOOLS = spawnSync('era_invalidate', ['--version']).status === 0;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-era-changed-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

let serial = 0;
function save(img: Buffer): string {
  const file = path.join(dir, `md-${serial++}.bin`);
  fs.writeFileSync(file, img);
  return file;
}

function tool(cmd: string, ...args: string[]): { status: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function sameAsEraInvalidate(file: string, eras: readonly number[]): void {
  const check = tool('era_check', file);
  assert.equal(check.status, 0, `era_check rejects ${file}: ${check.err}`);
  for (const since of eras) {
    const want = tool('era_invalidate', '--written-since', String(since), file);
    assert.equal(want.status, 0, want.err);
    assert.equal(eraInvalidateXml(changedRunsFromMetadata(file, since).runs), want.out, `--written-since ${since}`);
  }
}

const CASES: Array<{ name: string; spec: EraImageSpec; eras: number[] }> = [
  {
    name: 'a small history (single-leaf trees, nr_blocks not a multiple of 64)',
    spec: syntheticEra({ seed: 1, nrBlocks: 1000, currentEra: 12, archived: 4, runsPerEra: 6, maxRun: 40 }),
    eras: [0, 1, 2, 5, 7, 8, 9, 11, 12, 13, 4294967295],
  },
  {
    // 257 array blocks (252 fit a leaf) and 205 writesets (201 fit a leaf): two-level trees.
    name: 'multi-level array and writeset trees',
    spec: syntheticEra({ seed: 2, nrBlocks: 261_500, currentEra: 215, archived: 205, runsPerEra: 3, maxRun: 3000 }),
    eras: [150],
  },
  {
    name: 'writesets longer than the origin (it shrank)',
    spec: syntheticEra({ seed: 3, nrBlocks: 777, currentEra: 9, archived: 3, runsPerEra: 5, maxRun: 60, bitsDelta: 100 }),
    eras: [1, 5, 6, 8],
  },
  {
    name: 'writesets shorter than the origin (it grew)',
    spec: syntheticEra({ seed: 4, nrBlocks: 4100, currentEra: 7, archived: 6, runsPerEra: 8, maxRun: 300, bitsDelta: -37 }),
    eras: [1, 3, 6],
  },
  {
    name: 'a fresh device: no writesets, an all-zero era array',
    spec: syntheticEra({ seed: 5, nrBlocks: 64, currentEra: 1, archived: 0, runsPerEra: 0, maxRun: 1 }),
    eras: [0, 1, 2],
  },
];

for (const c of CASES) {
  test(`era changed equals era_invalidate: ${c.name}`, { skip: !HAVE_TOOLS && 'era_invalidate not installed' }, () => {
    sameAsEraInvalidate(save(eraImage(c.spec)), c.eras);
  });
}

test('ranges are merged, end-exclusive, in blocks, with the metadata facts', () => {
  const n = 300;
  const bits = bitSet(n);
  for (const b of [5, 6, 7, 64, 299]) setBit(bits, b);
  const eraArray = new Uint32Array(n);
  eraArray[8] = 3;
  eraArray[63] = 3;
  eraArray[100] = 1; // older than since: not listed
  const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  const img = eraImage({ blockSizeSectors: 24, nrBlocks: n, currentEra: 5, eraArray, writesets: [{ era: 4, nrBits: n, bits }], uuid });
  const r = changedBlocksFromMetadata(img, 2);
  assert.deepEqual(
    r.ranges.map((x) => [x.start, x.end]),
    [[5n, 9n], [63n, 65n], [299n, 300n]],
  );
  assert.equal(r.changed, 7n);
  assert.equal(r.blockSize, 24n);
  assert.equal(r.nrBlocks, 300n);
  assert.equal(r.currentEra, 5);
  assert.equal(r.metadataUuid, uuid.toString('hex'));
  assert.equal(r.roots, 'superblock');
});

test('the current writeset is left out as era_invalidate does, unless asked for', () => {
  const n = 100;
  const cur = bitSet(n);
  setBit(cur, 42);
  const img = eraImage({ blockSizeSectors: 8, nrBlocks: n, currentEra: 3, eraArray: new Uint32Array(n), writesets: [], current: { nrBits: n, bits: cur } });
  assert.deepEqual(changedRunsFromMetadata(img, 1).runs, []);
  assert.deepEqual(changedRunsFromMetadata(img, 1, { includeCurrent: true }).runs, [42, 43]);
  assert.deepEqual(changedRunsFromMetadata(img, 4, { includeCurrent: true }).runs, []);
  if (HAVE_TOOLS) assert.equal(tool('era_invalidate', '--written-since', '1', save(img)).out, '<blocks>\n</blocks>\n');
});

test('a held snapshot is read from its own roots; none held is a typed error', () => {
  const spec = syntheticEra({ seed: 6, nrBlocks: 2000, currentEra: 10, archived: 3, runsPerEra: 4, maxRun: 50, snapshotLag: 2 });
  const img = eraImage(spec);
  const fromSnap = changedRunsFromMetadata(img, 1, { snapshot: true });
  // The snapshot's history equals a live image written with that history.
  const older = eraImage({ ...spec, ...spec.snapshot!, snapshot: undefined });
  assert.deepEqual(fromSnap.runs, changedRunsFromMetadata(older, 1).runs);
  assert.notDeepEqual(fromSnap.runs, changedRunsFromMetadata(img, 1).runs);
  assert.equal(changedBlocksFromMetadata(img, 1, { snapshot: true }).roots, 'snapshot');
  assert.throws(() => changedRunsFromMetadata(older, 1, { snapshot: true }), EraSnapshotMissing);
});

test('runsOf cuts bit sets into maximal runs across word edges', () => {
  const w = new Uint32Array([0x80000000, 0xffffffff, 0x00000001, 0, 0b1010]);
  assert.deepEqual(runsOf(w), [31, 65, 129, 130, 131, 132]);
  assert.deepEqual(runsOf(new Uint32Array([0xffffffff])), [0, 32]);
  assert.deepEqual(runsOf(new Uint32Array(3)), []);
});

test('damage is a MetadataDamage naming the block (era_invalidate fails on it too)', () => {
  const spec = syntheticEra({ seed: 7, nrBlocks: 5000, currentEra: 6, archived: 2, runsPerEra: 4, maxRun: 100 });
  const good = eraImage(spec);
  const reseal = (img: Buffer, n: number, salt: number): void => {
    const blk = img.subarray(n * B, (n + 1) * B);
    blk.writeUInt32LE(blockChecksum(blk.subarray(4), salt), 0);
  };
  const cases: Array<[string, (img: Buffer) => void, RegExp, boolean]> = [
    ['a flipped bit in the superblock', (img) => void (img[300] ^= 1), /superblock checksum/, true],
    ['a wrong magic', (img) => {
      img.writeBigUInt64LE(1n, 32);
      reseal(img, 0, CHECKSUM_SALT.eraSuperblock);
    }, /magic/, false],
    ['an era array root past the end', (img) => {
      img.writeBigUInt64LE(BigInt(img.length / B + 10), 208);
      reseal(img, 0, CHECKSUM_SALT.eraSuperblock);
    }, /out of range/, true],
    ['a flipped bit in a bitset block', (img) => void (img[3 * B + 500] ^= 4), /checksum/, true],
    ['the writeset tree root pointing at an array block', (img) => {
      img.writeBigUInt64LE(1n, 200);
      reseal(img, 0, CHECKSUM_SALT.eraSuperblock);
    }, /checksum/, true],
    ['nr_blocks larger than the era array', (img) => {
      img.writeUInt32LE(5001, 180);
      reseal(img, 0, CHECKSUM_SALT.eraSuperblock);
    }, /array holds 5000 entries, expected 5001/, false],
    ['a truncated image', () => undefined, /out of range/, true],
  ];
  for (const [what, edit, pattern, toolFails] of cases) {
    const img = Buffer.from(what === 'a truncated image' ? good.subarray(0, 8 * B) : good);
    edit(img);
    assert.throws(() => changedRunsFromMetadata(img, 1), (e: unknown) => e instanceof MetadataDamage && e.code === 'ERR_METADATA_DAMAGE' && pattern.test(e.message), what);
    if (HAVE_TOOLS && toolFails) assert.notEqual(tool('era_invalidate', '--written-since', '1', save(img)).status, 0, `era_invalidate on ${what}`);
  }
});

test('bad arguments are typed errors', () => {
  const img = eraImage(syntheticEra({ seed: 8, nrBlocks: 64, currentEra: 2, archived: 1, runsPerEra: 1, maxRun: 2 }));
  for (const era of [-1, 1.5, 2 ** 32, NaN, '3', null]) assert.throws(() => changedRunsFromMetadata(img, era as number), RangeError, String(era));
  assert.throws(() => changedRunsFromMetadata(42 as unknown as Buffer, 1), TypeError);
  assert.throws(() => changedRunsFromMetadata(path.join(dir, 'missing'), 1), (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT');
  assert.throws(() => changedRunsFromMetadata(dir, 1), (e: unknown) => (e as { code?: string }).code === 'ERR_METADATA_FILE');
  assert.throws(() => changedRunsFromMetadata(Buffer.alloc(100), 1), MetadataDamage);
});

/** Metadata written by the kernel (in-tree era and dmkit-era), made by test/vm/era-fixtures-gen.ts. */
const FIXTURES = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'era');
const fixtureNames = fs.existsSync(FIXTURES) ? fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.bin.gz')).map((f) => f.slice(0, -'.bin.gz'.length)) : [];

const blocksOfRuns = (runs: readonly number[]): number[] => {
  const out: number[] = [];
  for (let i = 0; i < runs.length; i += 2) for (let b = runs[i]!; b < runs[i + 1]!; b++) out.push(b);
  return out;
};

for (const name of fixtureNames) {
  test(`kernel-written metadata ${name}: era_invalidate's XML, the model's blocks, damage`, { skip: !HAVE_TOOLS && 'era_invalidate not installed' }, () => {
    const img = zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, `${name}.bin.gz`)));
    const model = JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8')) as { snapshot?: Record<string, number[]>; live?: Record<string, number[]> };
    const file = save(img);
    sameAsEraInvalidate(file, [1, 4, 6]);
    for (const [which, sets] of Object.entries(model)) {
      for (const [n, want] of Object.entries(sets)) {
        if (Number(n) === 0) continue;
        assert.deepEqual(blocksOfRuns(changedRunsFromMetadata(img, Number(n), { snapshot: which === 'snapshot' }).runs), want, `${which} since ${n}`);
      }
    }
    const bad = Buffer.from(img);
    bad[190] ^= 0x10;
    assert.throws(() => changedRunsFromMetadata(bad, 1), MetadataDamage);
  });
}
