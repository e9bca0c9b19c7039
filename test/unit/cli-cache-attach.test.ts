/**
 * `dmkit cache attach|detach` against the in-memory device-mapper: argument errors and refusals (a usage
 * exit, nothing changed), and the tables each step leaves (attach: linear -> cache over the same origin
 * with zeroed metadata; detach: cache -> cleaner -> linear on the origin).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { ExitCode } from '../../src/cli/errors';
import { calls, FakeDm, run } from './cli-fake.test';

const tableOf = (dm: FakeDm, name: string): string[] => (dm.devices.get(name)?.live ?? []).map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`);

function metadataFile(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-cache-attach-'));
  const f = path.join(dir, 'meta');
  fs.writeFileSync(f, Buffer.alloc(8192, 0xaa));
  return f;
}

function withCacheTarget(dm: FakeDm): FakeDm {
  dm.targetTypes.push({ name: 'dmkit-cache', version: { major: 1, minor: 0, patch: 0 } });
  return dm;
}

/** dirty 0, rw: what a cache reports once the cleaner is done. */
const CLEAN = '8 10/1024 64 5/32 1 2 3 4 0 5 0 1 writeback 2 migration_threshold 2048 cleaner 0 rw -';

describe('cache attach', () => {
  test('a linear device becomes a cache over the same origin; the metadata superblock is zeroed first', async () => {
    const dm = withCacheTarget(new FakeDm());
    dm.add('vol', ['0 4096 linear 7:0 0']);
    const meta = metadataFile();
    const r = await run(['cache', 'attach', 'vol', '--metadata', meta, '--cache', '7:1', '--block-size', '64'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(tableOf(dm, 'vol'), [`0 4096 dmkit-cache ${meta} 7:1 7:0 64 1 writeback default 0`]);
    assert.ok(fs.readFileSync(meta).subarray(0, 4096).every((b) => b === 0), 'superblock zeroed');
    assert.equal(fs.readFileSync(meta)[4096], 0xaa, 'only the superblock');
    assert.deepEqual(calls(dm, 'load', 'suspend', 'resume').map((c) => c.method), ['load', 'suspend', 'resume']);
  });

  test('--in-tree, --mode, --json', async () => {
    const dm = withCacheTarget(new FakeDm());
    dm.add('vol', ['0 4096 linear 7:0 0']);
    const meta = metadataFile();
    const r = await run(['cache', 'attach', 'vol', '--metadata', meta, '--cache', '7:1', '--block-size', '128', '--in-tree', '--mode', 'writethrough', '--json'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out), { name: 'vol', origin: '7:0', table: `0 4096 cache ${meta} 7:1 7:0 128 1 writethrough default 0` });
  });

  test('argument errors: a usage exit and nothing touched', async () => {
    for (const args of [
      ['--cache', '7:1', '--block-size', '64'], // no --metadata
      ['--metadata', 'm', '--block-size', '64'], // no --cache
      ['--metadata', 'm', '--cache', '7:1'], // no --block-size
      ['--metadata', 'm', '--cache', '7:1', '--block-size', '100'], // not a multiple of 64
      ['--metadata', 'm', '--cache', '7:1', '--block-size', 'x'],
      ['--metadata', 'm', '--cache', '7:1', '--block-size', '64', '--mode', 'writearound'],
      ['--metadata', 'm', '--cache', '7:1', '--block-size', '64', '--dmkit', '--in-tree'],
    ]) {
      const dm = withCacheTarget(new FakeDm());
      dm.add('vol', ['0 4096 linear 7:0 0']);
      const r = await run(['cache', 'attach', 'vol', ...args], { dm });
      assert.equal(r.code, ExitCode.USAGE, `${args.join(' ')}: ${r.err}`);
      assert.deepEqual(tableOf(dm, 'vol'), ['0 4096 linear 7:0 0'], args.join(' '));
      assert.equal(calls(dm, 'load', 'suspend').length, 0, args.join(' '));
    }
  });

  test('refused on a device that is not one linear line from sector 0, nothing changed', async () => {
    for (const table of [['0 4096 zero'], ['0 4096 linear 7:0 8'], ['0 2048 linear 7:0 0', '2048 2048 linear 7:2 0']]) {
      const dm = withCacheTarget(new FakeDm());
      dm.add('vol', table);
      const meta = metadataFile();
      const r = await run(['cache', 'attach', 'vol', '--metadata', meta, '--cache', '7:1', '--block-size', '64'], { dm });
      assert.equal(r.code, ExitCode.USAGE, `${table.join('; ')}: ${r.err}`);
      assert.match(r.err, /ERR_CACHE_NOT_LINEAR|linear/);
      assert.equal(fs.readFileSync(meta)[0], 0xaa, 'metadata untouched');
      assert.equal(calls(dm, 'load').length, 0);
    }
  });
});

describe('cache detach', () => {
  test('cleaner first, then linear on the origin once dirty is 0', async () => {
    const dm = withCacheTarget(new FakeDm());
    dm.add('vol', ['0 4096 dmkit-cache 7:3 7:1 7:0 64 1 writeback default 2 migration_threshold 4096']);
    dm.statusText['dmkit-cache'] = CLEAN;
    const r = await run(['cache', 'detach', 'vol', '--json'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(tableOf(dm, 'vol'), ['0 4096 linear 7:0 0']);
    const loads = calls(dm, 'load').map((c) => (c.args[1] as Array<{ type: string; params: string }>).map((t) => `${t.type} ${t.params}`).join());
    assert.deepEqual(loads, ['dmkit-cache 7:3 7:1 7:0 64 1 writeback cleaner 2 migration_threshold 4096', 'linear 7:0 0']);
    assert.equal(JSON.parse(r.out).origin, '7:0');
  });

  test('refusals: not a cache, a bad --timeout, no such device', async () => {
    const dm = withCacheTarget(new FakeDm());
    dm.add('vol', ['0 4096 linear 7:0 0']);
    const notCache = await run(['cache', 'detach', 'vol'], { dm });
    assert.equal(notCache.code, ExitCode.USAGE, notCache.err);
    const badTimeout = await run(['cache', 'detach', 'vol', '--timeout', 'soon'], { dm });
    assert.equal(badTimeout.code, ExitCode.USAGE, badTimeout.err);
    const missing = await run(['cache', 'detach', 'nope'], { dm });
    assert.notEqual(missing.code, 0);
    assert.deepEqual(tableOf(dm, 'vol'), ['0 4096 linear 7:0 0']);
    assert.equal(calls(dm, 'load', 'suspend').length, 0);
  });

  test('a read-only cache is refused before anything changes', async () => {
    const dm = withCacheTarget(new FakeDm());
    dm.add('vol', ['0 4096 dmkit-cache 7:3 7:1 7:0 64 1 writeback default 0']);
    dm.statusText['dmkit-cache'] = CLEAN.replace(' rw -', ' ro needs_check');
    const r = await run(['cache', 'detach', 'vol'], { dm });
    assert.equal(r.code, ExitCode.FAILED, r.err);
    assert.equal(calls(dm, 'load').length, 0);
  });
});
