import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ExitCode } from '../../src/cli/errors';
import { sectors } from '../../src/units';
import { calls, FakeDm, line, run } from './cli-fake.test';

const created = (dm: FakeDm): unknown => (calls(dm, 'create')[0]!.args[1] as { targets: unknown }).targets;

describe('era', () => {
  const args = ['era', 'create', 'e', '--metadata', '/dev/ram1', '--origin', '/dev/ram0', '--block-size', '64'];

  test('create sizes the device from the origin and picks era or dmkit-era', async () => {
    const r = await run([...args, '-u', 'E1'], { sizes: { '/dev/ram0': 131072n } });
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(created(r.dm), [line('0 131072 era /dev/ram1 /dev/ram0 64')]);
    assert.equal((calls(r.dm, 'create')[0]!.args[1] as { uuid: string }).uuid, 'E1');
    const d = await run([...args, '--dmkit', '--length', '4096']);
    assert.equal(d.code, 0, d.err);
    assert.deepEqual(created(d.dm), [line('0 4096 dmkit-era /dev/ram1 /dev/ram0 64')]);
  });

  test('--dry-run prints the line and needs neither root nor the control device', async () => {
    const r = await run([...args, '--length', '8', '--dry-run'], { uid: 1000 });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '0 8 era /dev/ram1 /dev/ram0 64\n');
    assert.equal(r.opened, 0);
  });

  test('bad values are refused before the kernel: block size, missing origin, missing options', async () => {
    const bad = await run(['era', 'create', 'e', '--metadata', 'm', '--origin', 'o', '--block-size', '12', '--length', '8']);
    assert.equal(bad.code, ExitCode.USAGE);
    assert.match(bad.err, /^dmkit: era create: era: blockSize: .*\(ERR_TARGET_OUT_OF_RANGE\)\n$/);
    assert.equal(bad.opened, 0);
    const missing = await run(args);
    assert.equal(missing.code, ExitCode.NOT_FOUND);
    assert.match(missing.err, /stat '\/dev\/ram0'/);
    const noOpts = await run(['era', 'create', 'e']);
    assert.equal(noOpts.code, ExitCode.USAGE);
    assert.match(noOpts.err, /Missing required arguments?: metadata, origin, block-size/);
  });

  test('checkpoint messages the era target at its start sector, then reads the era back', async () => {
    const dm = new FakeDm();
    dm.add('e', ['0 8 linear 7:0 0', '8 1024 dmkit-era /dev/ram1 /dev/ram0 8'], { uuid: 'U' });
    dm.statusText = { 'dmkit-era': '8 12/1024 5 -', linear: '' };
    const r = await run(['era', 'checkpoint', 'e'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'era 5\n');
    assert.deepEqual(calls(dm, 'message')[0]!.args, [{ name: 'e' }, sectors(8), 'checkpoint']);
    const j = await run(['era', 'checkpoint', '-u', 'U', '--json'], { dm });
    assert.deepEqual(JSON.parse(j.out), { name: 'e', uuid: 'U', currentEra: '5' });
  });

  test('metadata-snap take/drop', async () => {
    const dm = new FakeDm();
    dm.add('e', ['0 8 era m o 8']);
    assert.equal((await run(['era', 'metadata-snap', 'e', 'take'], { dm })).code, 0);
    assert.equal((await run(['era', 'metadata-snap', 'e', 'drop'], { dm })).code, 0);
    assert.deepEqual(calls(dm, 'message').map((c) => c.args[2]), ['take_metadata_snap', 'drop_metadata_snap']);
    assert.equal((await run(['era', 'metadata-snap', 'e', 'keep'], { dm })).code, ExitCode.USAGE);
  });

  test('status: parsed fields, --json, a device without era, an unparsable status', async () => {
    const dm = new FakeDm();
    dm.add('e', ['0 8 era m o 8']);
    dm.add('z');
    dm.statusText = { era: '8 12/1024 5 -' };
    const r = await run(['era', 'status', 'e'], { dm });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^0 8 era 8 12\/1024 5 -\n {2}metadataBlockSize: 8\n[^]* {2}currentEra: 5\n {2}heldRoot: -\n$/);
    const j = JSON.parse((await run(['era', 'status', 'e', '--json'], { dm })).out);
    assert.deepEqual(j.targets[0].parsed, { metadataBlockSize: '8', metadataUsed: '12', metadataTotal: '1024', currentEra: '5', heldRoot: null });
    const none = await run(['era', 'status', 'z'], { dm });
    assert.equal(none.code, ExitCode.NOT_FOUND);
    assert.match(none.err, /z has no era target \(table: zero\)/);
    dm.statusText = { era: 'garbage' };
    const odd = JSON.parse((await run(['era', 'status', 'e', '--json'], { dm })).out);
    assert.equal(odd.targets[0].parsed, null);
    assert.equal(odd.targets[0].status, 'garbage');
    assert.match(odd.targets[0].parseError, /era/);
  });
});

describe('generic status/table --json carry the typed parse', () => {
  test('known types parsed, unknown null, failures reported beside the raw text', async () => {
    const dm = new FakeDm();
    dm.add('mix', ['0 8 era /dev/ram1 /dev/ram0 8', '8 8 zero', '16 8 clone m d s 7']);
    dm.statusText = { era: 'Error', zero: '', clone: 'nonsense' };
    const t = JSON.parse((await run(['table', 'mix', '--json'], { dm })).out);
    assert.deepEqual(t.targets[0].parsed, { metadataDevice: '/dev/ram1', originDevice: '/dev/ram0', blockSize: '8' });
    assert.equal(t.targets[1].parsed, null);
    assert.equal('parseError' in t.targets[1], false);
    assert.equal(t.targets[2].parsed, null);
    assert.equal(t.targets[2].params, 'm d s 7');
    assert.equal(typeof t.targets[2].parseError, 'string');
    const s = JSON.parse((await run(['status', '--json'], { dm })).out);
    assert.deepEqual(s.devices[0].targets[0].parsed, { error: true });
    assert.equal(s.devices[0].targets[2].status, 'nonsense');
    assert.equal(typeof s.devices[0].targets[2].parseError, 'string');
  });
});

describe('clone', () => {
  const base = ['clone', 'create', 'c', '--metadata', '/dev/m', '--dest', '/dev/d', '--source', '/dev/s', '--region-size', '8'];

  test('create: length from the source; features and core args', async () => {
    const plain = await run(base, { sizes: { '/dev/s': 2048n } });
    assert.equal(plain.code, 0, plain.err);
    assert.deepEqual(created(plain.dm), [line('0 2048 clone /dev/m /dev/d /dev/s 8')]);
    const full = await run([...base, '--no-hydration', '--hydration-threshold', '16', '--batch-size', '4', '--dmkit', '--length', '64']);
    assert.equal(full.code, 0, full.err);
    assert.deepEqual(created(full.dm), [
      line('0 64 dmkit-clone /dev/m /dev/d /dev/s 8 1 no_hydration 4 hydration_threshold 16 hydration_batch_size 4'),
    ]);
    const bad = await run([...base.slice(0, -1), '12', '--length', '64']);
    assert.equal(bad.code, ExitCode.USAGE);
    assert.match(bad.err, /regionSize/);
  });

  test('hydration enable|disable|threshold N|batch-size N', async () => {
    const dm = new FakeDm();
    dm.add('c', ['0 64 clone m d s 8']);
    for (const a of [['enable'], ['disable'], ['threshold', '32'], ['batch-size', '8']]) {
      const r = await run(['clone', 'hydration', 'c', ...a], { dm });
      assert.equal(r.code, 0, r.err);
    }
    assert.deepEqual(
      calls(dm, 'message').map((c) => c.args[2]),
      ['enable_hydration', 'disable_hydration', 'hydration_threshold 32', 'hydration_batch_size 8'],
    );
    assert.equal((await run(['clone', 'hydration', 'c', 'threshold'], { dm })).code, ExitCode.USAGE);
    assert.equal((await run(['clone', 'hydration', 'c', 'enable', '3'], { dm })).code, ExitCode.USAGE);
    assert.equal((await run(['clone', 'hydration', 'c', 'faster'], { dm })).code, ExitCode.USAGE);
    assert.equal((await run(['clone', 'hydration', 'c', 'threshold', 'x'], { dm })).code, ExitCode.USAGE);
  });
});

describe('cache and snapshot', () => {
  test('cache create', async () => {
    const r = await run(
      ['cache', 'create', 'k', '--metadata', 'm', '--cache', 'f', '--origin', 'o', '--block-size', '128', '--mode', 'writethrough', '--policy', 'smq', '--migration-threshold', '4096'],
      { sizes: { o: 8192n } },
    );
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(created(r.dm), [line('0 8192 cache m f o 128 1 writethrough smq 2 migration_threshold 4096')]);
    const bad = await run(['cache', 'create', 'k', '--metadata', 'm', '--cache', 'f', '--origin', 'o', '--block-size', '100', '--length', '8']);
    assert.equal(bad.code, ExitCode.USAGE);
  });

  test('snapshot origin (low level)', async () => {
    const sizes = { o: 1000n };
    const o = await run(['snapshot', 'origin', 'so', '--origin', 'o', '--dmkit'], { sizes });
    assert.deepEqual(created(o.dm), [line('0 1000 dmkit-origin o')]);
  });

  test('snapshot status covers snapshot-merge too', async () => {
    const dm = new FakeDm();
    dm.add('sm', ['0 1000 snapshot-merge o c P 16']);
    dm.statusText = { 'snapshot-merge': '32/2048 16' };
    const j = JSON.parse((await run(['snapshot', 'status', 'sm', '--json'], { dm })).out);
    assert.deepEqual(j, { name: 'sm', type: 'snapshot-merge', state: 'merging', allocated: '32', total: '2048', metadata: '16', origin: 'sm' });
  });
});
