/**
 * `dmkit era changed`: offline on metadata files (--metadata), where --format xml must be era_invalidate's
 * output byte for byte; on a live device through a fake device-mapper whose "metadata device" is an image
 * file (the snapshot is taken, read and dropped); refusals and damage as exit statuses with codes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import type { DevId } from '../../src/dm';
import type { Sectors } from '../../src/units';
import { ExitCode } from '../../src/cli/errors';
import { eraImage, syntheticEra } from '../../src/testing/era-image';
import { calls, FakeDm, run } from './cli-fake.test';

const HAVE_TOOLS = spawnSync('era_invalidate', ['--version']).status === 0;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-cli-era-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));

const IMAGES = [
  syntheticEra({ seed: 11, nrBlocks: 3000, currentEra: 15, archived: 5, runsPerEra: 7, maxRun: 90 }),
  syntheticEra({ seed: 12, nrBlocks: 70_001, currentEra: 40, archived: 12, runsPerEra: 4, maxRun: 2000, bitsDelta: 33 }),
  syntheticEra({ seed: 13, nrBlocks: 130, currentEra: 4, archived: 3, runsPerEra: 2, maxRun: 3, snapshotLag: 1 }),
].map((spec, i) => {
  const file = path.join(dir, `md${i}.bin`);
  fs.writeFileSync(file, eraImage(spec));
  return file;
});

describe('era changed --metadata FILE', () => {
  test('--format xml is byte for byte what era_invalidate prints', { skip: !HAVE_TOOLS && 'era_invalidate not installed' }, async () => {
    const eras = [[0, 10, 11, 16], [1, 35], [1, 3]];
    for (let i = 0; i < IMAGES.length; i++) {
      for (const since of eras[i]!) {
        const want = spawnSync('era_invalidate', ['--written-since', String(since), IMAGES[i]!], { encoding: 'utf8' });
        assert.equal(want.status, 0, want.stderr);
        const r = await run(['era', 'changed', '--since', String(since), '--metadata', IMAGES[i]!, '--format', 'xml']);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.out, want.stdout, `image ${i} since ${since}`);
        assert.equal(r.opened, 0, 'offline: the control device is never opened');
      }
    }
  });

  test('ranges and json in blocks, sectors and bytes', async () => {
    const blocks = await run(['era', 'changed', '--since', '12', '--metadata', IMAGES[0]!]);
    assert.equal(blocks.code, 0, blocks.err);
    const lines = blocks.out.trim().split('\n').map((l) => l.split(' ').map(BigInt));
    assert.ok(lines.length > 3);
    for (let i = 0; i < lines.length; i++) {
      assert.ok(lines[i]![0]! < lines[i]![1]!, 'non-empty, end-exclusive');
      if (i) assert.ok(lines[i - 1]![1]! < lines[i]![0]!, 'sorted and merged (a gap between runs)');
    }
    const secs = await run(['era', 'changed', '--since', '12', '--metadata', IMAGES[0]!, '--units', 'sectors']);
    assert.deepEqual(secs.out.trim().split('\n').map((l) => l.split(' ').map(BigInt)), lines.map(([s, e]) => [s! * 128n, e! * 128n]));
    const j = await run(['era', 'changed', '--since', '12', '--metadata', IMAGES[0]!, '--format', 'json', '--units', 'bytes']);
    const doc = JSON.parse(j.out) as { blockSize: string; nrBlocks: string; currentEra: number; sinceEra: number; units: string; roots: string; changedBlocks: string; ranges: Array<{ start: string; end: string }> };
    assert.equal(doc.blockSize, '128');
    assert.equal(doc.nrBlocks, '3000');
    assert.equal(doc.currentEra, 15);
    assert.equal(doc.sinceEra, 12);
    assert.equal(doc.units, 'bytes');
    assert.equal(doc.roots, 'superblock');
    assert.deepEqual(doc.ranges.map((x) => [BigInt(x.start), BigInt(x.end)]), lines.map(([s, e]) => [s! * 65536n, e! * 65536n]));
    assert.equal(BigInt(doc.changedBlocks), lines.reduce((n, [s, e]) => n + e! - s!, 0n));
    const snap = await run(['era', 'changed', '--since', '1', '--metadata', IMAGES[2]!, '--metadata-snapshot', '--json']);
    assert.equal(JSON.parse(snap.out).roots, 'snapshot');
  });

  test('refusals and damage: exit status and code, nothing opened', async () => {
    const usage = [
      ['--since', 'x', '--metadata', IMAGES[0]!],
      ['--since', '-1', '--metadata', IMAGES[0]!],
      ['--since', '4294967296', '--metadata', IMAGES[0]!],
      ['--since', '1', '--metadata', IMAGES[0]!, '--format', 'xml', '--units', 'bytes'],
      ['--since', '1', '--metadata', IMAGES[0]!, 'vol'],
      ['--since', '1', 'vol', '--metadata-snapshot'],
      ['--since', '1', '--metadata', IMAGES[0]!, '--format', 'yaml'],
      ['--metadata', IMAGES[0]!],
    ];
    for (const args of usage) {
      const r = await run(['era', 'changed', ...args]);
      assert.equal(r.code, ExitCode.USAGE, `${args.join(' ')}: ${r.err}`);
      assert.equal(r.opened, 0);
    }
    const damaged = path.join(dir, 'damaged.bin');
    const img = fs.readFileSync(IMAGES[0]!);
    img[4096 * 3 + 9] ^= 1;
    fs.writeFileSync(damaged, img);
    const d = await run(['era', 'changed', '--since', '1', '--metadata', damaged]);
    assert.equal(d.code, ExitCode.FAILED);
    assert.match(d.err, /block 3: .*checksum mismatch \(ERR_METADATA_DAMAGE\)/);
    const none = await run(['era', 'changed', '--since', '1', '--metadata', IMAGES[0]!, '--metadata-snapshot']);
    assert.equal(none.code, ExitCode.FAILED);
    assert.match(none.err, /ERR_ERA_NO_METADATA_SNAPSHOT/);
    const missing = await run(['era', 'changed', '--since', '1', '--metadata', path.join(dir, 'nope')]);
    assert.equal(missing.code, ExitCode.NOT_FOUND);
  });
});

describe('era changed on a live device (fake device-mapper)', () => {
  /** A dmkit-era device whose metadata "device" is image 2 (which holds a snapshot at `snapAt`). */
  function eraDevice(held: string): { dm: FakeDm; snapAt: number } {
    const snapAt = fs.readFileSync(IMAGES[2]!).readUInt32LE(216);
    const dm = new FakeDm();
    dm.add('vol', [`0 16640 dmkit-era ${IMAGES[2]!} /dev/ram1 128`], { uuid: 'ERA-1' });
    dm.statusText = { 'dmkit-era': `8 30/1024 4 ${held}` };
    const message = dm.message.bind(dm);
    dm.message = async (id: DevId, sector: Sectors | undefined, text: string) => {
      const r = await message(id, sector, text);
      if (text === 'take_metadata_snap') dm.statusText = { 'dmkit-era': `8 30/1024 5 ${snapAt}` };
      if (text === 'drop_metadata_snap') dm.statusText = { 'dmkit-era': '8 30/1024 5 -' };
      return r;
    };
    return { dm, snapAt };
  }

  test('takes the snapshot, lists from it, drops it; same as --metadata-snapshot offline', async () => {
    const { dm } = eraDevice('-');
    const r = await run(['era', 'changed', 'vol', '--since', '1', '--json'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(calls(dm, 'message').map((c) => c.args[2]), ['take_metadata_snap', 'drop_metadata_snap']);
    const doc = JSON.parse(r.out);
    assert.equal(doc.name, 'vol');
    assert.equal(doc.uuid, 'ERA-1');
    assert.equal(doc.roots, 'snapshot');
    const offline = await run(['era', 'changed', '--since', '1', '--metadata', IMAGES[2]!, '--metadata-snapshot', '--json']);
    assert.deepEqual(doc.ranges, JSON.parse(offline.out).ranges);
    // In sectors the last range stops at the device's end (16640 sectors = 130 blocks of 128).
    const s = await run(['era', 'changed', 'vol', '--since', '0', '--units', 'sectors'], { dm: eraDevice('-').dm });
    assert.equal(s.out.trim().split('\n').at(-1)!.split(' ')[1], '16640');
  });

  test('a held snapshot (exit 5) and a device without era (exit 4) change nothing', async () => {
    const { dm } = eraDevice('99');
    const r = await run(['era', 'changed', 'vol', '--since', '1'], { dm });
    assert.equal(r.code, ExitCode.BUSY, r.err);
    assert.match(r.err, /ERR_ERA_SNAPSHOT_HELD/);
    assert.deepEqual(calls(dm, 'message'), []);
    const lin = new FakeDm();
    lin.add('lin', ['0 8 linear 7:0 0']);
    const l = await run(['era', 'changed', 'lin', '--since', '1'], { dm: lin });
    assert.equal(l.code, ExitCode.NOT_FOUND, l.err);
    assert.deepEqual(calls(lin, 'message'), []);
  });
});
