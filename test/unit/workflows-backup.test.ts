/**
 * Era backup and restore on regular files (the copy engine, the image format, the chain checks): a
 * full backup plus three incrementals restore byte-identical; corruption anywhere is refused before a
 * byte is written; an interrupted backup resumes from its journal; bad arguments are typed errors.
 * The VM suite test/vm/era-backup.test.ts does the same against live era devices.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { prng } from '../../src/testing/random';
import { bytes, sectors, targetBlocks, type Bytes } from '../../src/units';
import {
  BackupError,
  copyRanges,
  crc32cOf,
  readBackupHeader,
  restore,
  writeBackup,
  type BackupPlan,
} from '../../src/workflows';
import { crc32c } from '../../src/pdata/checksum';

const BLOCK = 64 * 1024; // era block: 128 sectors
const NR_BLOCKS = 160; // 10 MiB device
const LENGTH = BLOCK * NR_BLOCKS;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Writes runs of random blocks into the "device" file; returns the blocks written. */
function scribble(file: string, rng: () => number, runs: number): Set<number> {
  const fd = fs.openSync(file, 'r+');
  const written = new Set<number>();
  try {
    for (let r = 0; r < runs; r++) {
      const start = Math.floor(rng() * NR_BLOCKS);
      const n = 1 + Math.floor(rng() * 6);
      for (let b = start; b < Math.min(NR_BLOCKS, start + n); b++) {
        const data = Buffer.alloc(BLOCK);
        for (let i = 0; i < BLOCK; i += 4) data.writeUInt32LE(Math.floor(rng() * 2 ** 32), i);
        fs.writeSync(fd, data, 0, BLOCK, b * BLOCK);
        written.add(b);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return written;
}

/** Merged byte ranges of a set of blocks. */
function rangesOf(blocks: Set<number>): { start: Bytes; end: Bytes }[] {
  const sorted = [...blocks].sort((a, b) => a - b);
  const out: { start: Bytes; end: Bytes }[] = [];
  for (const b of sorted) {
    const last = out[out.length - 1];
    if (last && last.end === BigInt(b * BLOCK)) out[out.length - 1] = { start: last.start, end: bytes((b + 1) * BLOCK) };
    else out.push({ start: bytes(b * BLOCK), end: bytes((b + 1) * BLOCK) });
  }
  return out;
}

function plan(full: boolean, since: number, until: number, ranges: { start: Bytes; end: Bytes }[], identity = 'CRYPT-ERA-test'): BackupPlan {
  return { identity, full, sinceEra: since, untilEra: until, blockSize: sectors(BLOCK / 512), nrBlocks: targetBlocks(NR_BLOCKS), length: bytes(LENGTH), ranges };
}

const id = (p: BackupPlan): { identity: string; sinceEra: number; full: boolean } => ({ identity: p.identity, sinceEra: p.sinceEra, full: p.full });

describe('era backup images on regular files', () => {
  let dir: string;
  let device: string;
  const images: string[] = [];
  const states: string[] = []; // sha256 of the device after each backup's snapshot

  before(async () => {
    dir = fs.mkdtempSync(join(tmpdir(), 'dmkit-backup-'));
    device = join(dir, 'device');
    const rng = prng(17);
    const init = Buffer.alloc(LENGTH);
    for (let i = 0; i < LENGTH; i += 4) init.writeUInt32LE(Math.floor(rng() * 2 ** 32), i);
    fs.writeFileSync(device, init);
    // Full backup (era 1 current after its snapshot), then three rounds of writes + incrementals.
    const full = plan(true, 0, 1, [{ start: bytes(0), end: bytes(LENGTH) }]);
    images.push(join(dir, 'full.img'));
    await writeBackup(device, full, images[0]!, id(full));
    states.push(sha(fs.readFileSync(device)));
    for (let k = 1; k <= 3; k++) {
      const written = scribble(device, rng, 12);
      const inc = plan(false, k, k + 1, rangesOf(written));
      images.push(join(dir, `inc${k}.img`));
      await writeBackup(device, inc, images[k]!, id(inc));
      states.push(sha(fs.readFileSync(device)));
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('the engine copies scattered ranges with both engines and reports CRC-32C per chunk', async () => {
    const src = fs.readFileSync(device);
    for (const engine of ['io_uring', 'threads'] as const) {
      const out = join(dir, `copy-${engine}`);
      const r = await copyRanges(device, out, [
        { source: bytes(0), length: bytes(3 << 20), dest: bytes(0) },
        { source: bytes(5 << 20), length: bytes(1536), dest: bytes(3 << 20) },
      ], { engine, checksums: true });
      const got = fs.readFileSync(out);
      assert.ok(got.subarray(0, 3 << 20).equals(src.subarray(0, 3 << 20)));
      assert.ok(got.subarray(3 << 20, (3 << 20) + 1536).equals(src.subarray(5 << 20, (5 << 20) + 1536)));
      assert.equal(r.totalChunks, 4);
      assert.equal(r.checksums![1], crc32cOf(src.subarray(1 << 20, 2 << 20)));
      // The addon's CRC-32C is the standard one: the pdata crc32c with the usual inversions.
      assert.equal(r.checksums![3], (crc32c(0xffffffff, src.subarray(5 << 20, (5 << 20) + 1536)) ^ 0xffffffff) >>> 0);
      assert.ok(r.engine === engine || (engine === 'io_uring' && r.engine === 'threads'));
    }
  });

  test('io_uring with 1..4 rings on their threads copies every chunk once, with its CRC-32C, and resumes', async () => {
    const src = fs.readFileSync(device);
    const ranges = [
      { source: bytes(0), length: bytes(LENGTH - BLOCK), dest: bytes(BLOCK) },
      { source: bytes(LENGTH - BLOCK), length: bytes(BLOCK), dest: bytes(0) },
    ];
    const want = Buffer.concat([src.subarray(LENGTH - BLOCK), src.subarray(0, LENGTH - BLOCK)]);
    for (const rings of [1, 2, 3, 4]) {
      const out = join(dir, `rings-${rings}`);
      const r = await copyRanges(device, out, ranges, { engine: 'io_uring', uringRings: rings, queueDepth: 7, chunkBytes: bytes(64 * 1024), checksums: true });
      if (r.engine !== 'io_uring') return; // no io_uring on this kernel: the thread pool is tested above
      assert.equal(r.rings, rings);
      assert.ok(fs.readFileSync(out).equals(want), `${rings} rings`);
      assert.equal(r.chunks, r.totalChunks);
      // Checksums in plan order: the ranges' source bytes in order, i.e. the source from its start.
      r.checksums!.forEach((c, i) => assert.equal(c, crc32cOf(src.subarray(i * 64 * 1024, (i + 1) * 64 * 1024)), `chunk ${i}`));
      // Interrupted, then resumed from the journal: the same bytes and checksums.
      const journal = `${out}.journal`;
      fs.rmSync(out);
      await assert.rejects(copyRanges(device, out, ranges, { engine: 'io_uring', uringRings: rings, queueDepth: 7, chunkBytes: bytes(64 * 1024), checksums: true, journal, interruptAfterChunks: 20 }), { code: 'ABORT_ERR' });
      const again = await copyRanges(device, out, ranges, { engine: 'io_uring', uringRings: rings, queueDepth: 7, chunkBytes: bytes(64 * 1024), checksums: true, journal });
      assert.ok(again.resumedChunks >= 20 && again.resumedChunks < again.totalChunks, String(again.resumedChunks));
      assert.ok(fs.readFileSync(out).equals(want), `${rings} rings, resumed`);
      assert.deepEqual([...again.checksums!], [...r.checksums!]);
    }
    // The default: one ring per online CPU, at most 4 and at most the queue depth.
    const d = await copyRanges(device, join(dir, 'rings-default'), ranges, { engine: 'io_uring', queueDepth: 2 });
    if (d.engine === 'io_uring') assert.ok(d.rings! >= 1 && d.rings! <= 2, String(d.rings));
    await assert.rejects(copyRanges(device, null, ranges, { uringRings: 5 }), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(copyRanges(device, null, ranges, { uringRings: 1.5 }), { code: 'ERR_OUT_OF_RANGE' });
  });

  test('headers record the chain; the full image holds the whole device', () => {
    const hs = images.map((f) => readBackupHeader(f));
    assert.equal(hs[0]!.full, true);
    assert.equal(hs[0]!.dataBytes, BigInt(LENGTH));
    assert.deepEqual(hs.map((h) => [h.sinceEra, h.untilEra]), [[0, 1], [1, 2], [2, 3], [3, 4]]);
    for (const h of hs.slice(1)) assert.ok(h.dataBytes > 0n && h.dataBytes < BigInt(LENGTH), String(h.dataBytes));
  });

  test('full + three incrementals restore byte-identical; each prefix restores its own state', async () => {
    for (let k = 0; k < images.length; k++) {
      const dest = join(dir, `restored-${k}`);
      const r = await restore(images.slice(0, k + 1), dest);
      assert.equal(sha(fs.readFileSync(dest)), states[k], `state after image ${k}`);
      assert.equal(r.verifiedBytes, r.bytes);
    }
  });

  test('a corrupt data byte is refused before anything is written', async () => {
    const bad = join(dir, 'inc2-bad.img');
    fs.copyFileSync(images[2]!, bad);
    const h = readBackupHeader(bad);
    const fd = fs.openSync(bad, 'r+');
    const at = Number(h.pieces[h.pieces.length - 1]!.imageOffset) + 100;
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    fs.writeSync(fd, Buffer.of(b[0]! ^ 0x40), 0, 1, at);
    fs.closeSync(fd);
    const dest = join(dir, 'untouched');
    fs.writeFileSync(dest, Buffer.alloc(LENGTH, 0xee));
    const before = sha(fs.readFileSync(dest));
    await assert.rejects(restore([images[0]!, images[1]!, bad, images[3]!], dest), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_CHECKSUM' && /piece \d+/.test(e.message));
    assert.equal(sha(fs.readFileSync(dest)), before, 'the destination was not written');
  });

  test('a corrupt header, piece table or truncated image is refused', async () => {
    const cases: Array<[string, (b: Buffer) => Buffer, string]> = [
      ['header byte', (b) => { b[40] ^= 1; return b; }, 'ERR_BACKUP_CORRUPT'],
      ['table byte', (b) => { b[4096 + 8] ^= 2; return b; }, 'ERR_BACKUP_CORRUPT'],
      ['magic', (b) => { b[0] = 0x58; return b; }, 'ERR_BACKUP_FORMAT'],
      ['truncated', (b) => b.subarray(0, b.length - 512), 'ERR_BACKUP_CORRUPT'],
      ['empty', () => Buffer.alloc(0), 'ERR_BACKUP_FORMAT'],
    ];
    for (const [name, mutate, code] of cases) {
      const f = join(dir, `mut-${name.replace(' ', '-')}.img`);
      fs.writeFileSync(f, mutate(Buffer.from(fs.readFileSync(images[1]!))));
      await assert.rejects(restore([images[0]!, f], join(dir, `never-${name}`)), (e: unknown) => e instanceof BackupError && e.code === code, name);
      assert.equal(fs.existsSync(join(dir, `never-${name}`)), false, `${name}: nothing created`);
    }
  });

  test('gaps, wrong order, another source and a missing full image are refused', async () => {
    const other = plan(false, 4, 5, [{ start: bytes(0), end: bytes(BLOCK) }], 'CRYPT-ERA-other');
    const otherFile = join(dir, 'other.img');
    await writeBackup(device, other, otherFile, id(other));
    const expect = async (files: string[], code: string): Promise<void> => {
      await assert.rejects(restore(files, join(dir, 'never')), (e: unknown) => e instanceof BackupError && e.code === code, files.join(' '));
      assert.equal(fs.existsSync(join(dir, 'never')), false);
    };
    await expect([images[0]!, images[2]!], 'ERR_BACKUP_CHAIN'); // eras 1..2 missing
    await expect([images[0]!, images[2]!, images[1]!], 'ERR_BACKUP_CHAIN');
    await expect([images[1]!, images[2]!], 'ERR_BACKUP_CHAIN'); // no full image first
    await expect([images[0]!, images[0]!], 'ERR_BACKUP_CHAIN');
    await expect([...images, otherFile], 'ERR_BACKUP_IDENTITY');
  });

  test('an interrupted backup resumes from its journal and yields the same image', async () => {
    const full = plan(true, 0, 1, [{ start: bytes(0), end: bytes(LENGTH) }], 'CRYPT-ERA-resume');
    const to = join(dir, 'resumed.img');
    await assert.rejects(writeBackup(device, full, to, id(full), { interruptAfterChunks: 3, queueDepth: 1 }), (e: unknown) => (e as { code?: string }).code === 'ABORT_ERR');
    assert.equal(fs.existsSync(to), false);
    assert.ok(fs.existsSync(`${to}.partial`) && fs.existsSync(`${to}.journal`));
    assert.throws(() => readBackupHeader(`${to}.partial`), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_INCOMPLETE');
    // The second attempt gets a plan that would fail: the journal's plan must be the one used.
    const r = await writeBackup(device, () => Promise.reject(new Error('a resumed backup must not take a new snapshot')), to, id(full));
    assert.equal(r.resumed, true);
    assert.ok(r.copy.resumedChunks >= 3 && r.copy.resumedChunks < 10, String(r.copy.resumedChunks));
    assert.equal(fs.existsSync(`${to}.journal`), false);
    const dest = join(dir, 'restored-resumed');
    await restore([to], dest);
    assert.equal(sha(fs.readFileSync(dest)), sha(fs.readFileSync(device)));
  });

  test('an AbortSignal stops a copy with ABORT_ERR', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(copyRanges(device, join(dir, 'aborted'), [{ source: bytes(0), length: bytes(LENGTH), dest: bytes(0) }], { signal: ac.signal }), { name: 'AbortError' });
    const ac2 = new AbortController();
    await assert.rejects(
      copyRanges(device, join(dir, 'aborted2'), [{ source: bytes(0), length: bytes(LENGTH), dest: bytes(0) }], { signal: ac2.signal, chunkBytes: bytes(4096), queueDepth: 1, onProgress: () => ac2.abort() }),
      (e: unknown) => (e as { name?: string }).name === 'AbortError',
    );
  });

  test('bad arguments are typed errors', async () => {
    const full = plan(true, 0, 1, [{ start: bytes(0), end: bytes(LENGTH) }]);
    await assert.rejects(writeBackup(device, full, device, id(full)), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    await assert.rejects(writeBackup(device, full, '', id(full)), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    const unaligned = plan(false, 1, 2, [{ start: bytes(100), end: bytes(BLOCK) }]);
    await assert.rejects(writeBackup(device, unaligned, join(dir, 'x.img'), id(unaligned)), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    const outside = plan(false, 1, 2, [{ start: bytes(0), end: bytes(LENGTH + BLOCK) }]);
    await assert.rejects(writeBackup(device, outside, join(dir, 'y.img'), id(outside)), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    const badEra = plan(false, -1, 2, [{ start: bytes(0), end: bytes(BLOCK) }]);
    await assert.rejects(writeBackup(device, badEra, join(dir, 'z.img'), id(badEra)), RangeError);
    await assert.rejects(restore([], join(dir, 'd')), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    await assert.rejects(restore([join(dir, 'missing.img')], join(dir, 'd')), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    await assert.rejects(restore([images[0]!], images[0]!), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_ARGS');
    await assert.rejects(restore([images[0]!], dir), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_DEST');
    await assert.rejects(copyRanges(device, null, [{ source: -1n as Bytes, length: bytes(512), dest: bytes(0) }]), { code: 'ERR_OUT_OF_RANGE' });
    await assert.rejects(copyRanges('/dev/zero', null, [{ source: bytes(0), length: bytes(512), dest: bytes(0) }]), { code: 'EINVAL' });
    for (const p of [join(dir, 'x.img'), join(dir, 'y.img'), join(dir, 'z.img'), join(dir, 'd')]) assert.equal(fs.existsSync(p), false, p);
  });
});
