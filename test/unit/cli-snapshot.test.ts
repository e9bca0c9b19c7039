/**
 * `dmkit snapshot create|merge|remove|status` against the in-memory device-mapper: which devices and
 * tables each step leaves behind, the order of suspends (the origin is suspended around every snapshot
 * change), argument parsing and the error exits (nothing changes on a refusal).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ExitCode } from '../../src/cli/errors';
import { parseChunk } from '../../src/cli/target-commands';
import { sectors } from '../../src/units';
import { createSnapshot, mergeSnapshot, SnapshotError } from '../../src/workflows';
import { calls, FakeDm, line, run } from './cli-fake.test';

const tableOf = (dm: FakeDm, name: string): string[] =>
  (dm.devices.get(name)?.live ?? []).map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`);
const devOf = (dm: FakeDm, name: string): string => `253:${dm.devices.get(name)!.minor}`;

/** A volume `vol` on a linear table, and the dmkit snapshot targets registered. */
function volume(): FakeDm {
  const dm = new FakeDm();
  dm.add('vol', ['0 2048 linear 7:0 0']);
  dm.targetTypes.push({ name: 'dmkit-snapshot', version: { major: 1, minor: 0, patch: 0 } });
  return dm;
}

/** The merge target's status walks down from `start` allocated sectors to `metadata` in `steps` polls. */
class MergingDm extends FakeDm {
  polls = 0;
  constructor(
    private readonly start: bigint,
    private readonly metadata: bigint,
    private readonly steps: number,
  ) {
    super();
  }
  override async status(...args: Parameters<FakeDm['status']>): ReturnType<FakeDm['status']> {
    const lines = await super.status(...args);
    return lines.map((l) => {
      if (!l.type.endsWith('merge')) return l;
      const left = this.polls >= this.steps ? 0n : ((this.start - this.metadata) * BigInt(this.steps - this.polls)) / BigInt(this.steps);
      this.polls++;
      return { ...l, status: `${this.metadata + left}/2048 ${this.metadata}` };
    });
  }
}

describe('snapshot create', () => {
  test('the first snapshot moves the table to VOL-real and makes VOL an origin, all while VOL is suspended', async () => {
    const dm = volume();
    const r = await run(['snapshot', 'create', 'vol', '--cow', '/dev/ram1', '--chunk', '4k'], { dm });
    assert.equal(r.code, 0, r.err);
    const real = devOf(dm, 'vol-real');
    assert.deepEqual(tableOf(dm, 'vol-real'), ['0 2048 linear 7:0 0']);
    assert.deepEqual(tableOf(dm, 'vol'), [`0 2048 dmkit-origin ${real}`]);
    assert.deepEqual(tableOf(dm, 'vol-snap0'), [`0 2048 dmkit-snapshot ${real} /dev/ram1 P 8`]);
    assert.match(r.out, /^vol-snap0: snapshot of vol \(0 2048 dmkit-snapshot 253:\d+ \/dev\/ram1 P 8\); vol's table moved to vol-real\n$/);
    // Order: real created, vol suspended, snapshot created, origin loaded, vol resumed.
    const steps = calls(dm, 'create', 'suspend', 'load', 'resume').map((c) => `${c.method} ${typeof c.args[0] === 'string' ? c.args[0] : (c.args[0] as { name: string }).name}`);
    assert.deepEqual(steps, ['create vol-real', 'suspend vol', 'create vol-snap0', 'load vol', 'resume vol']);
    assert.equal(dm.devices.get('vol')!.suspended, false);
  });

  test('later snapshots reuse the origin and pick the next free name; --transient, --overflow, --name, --json', async () => {
    const dm = volume();
    assert.equal((await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8'], { dm })).code, 0);
    const real = devOf(dm, 'vol-real');
    const t = await run(['snapshot', 'create', 'vol', '--cow', 'c1', '--chunk', '16', '--transient', '--json'], { dm });
    assert.equal(t.code, 0, t.err);
    assert.deepEqual(JSON.parse(t.out), { name: 'vol-snap1', origin: 'vol', real: 'vol-real', table: `0 2048 dmkit-snapshot ${real} c1 N 16`, formedOrigin: false });
    assert.equal((await run(['snapshot', 'create', 'vol', '--cow', 'c2', '--chunk', '64k', '--overflow', '--name', 'keep'], { dm })).code, 0);
    assert.deepEqual(tableOf(dm, 'keep'), [`0 2048 dmkit-snapshot ${real} c2 PO 128`]);
    assert.equal(calls(dm, 'create').filter((c) => c.args[0] === 'vol-real').length, 1, 'one real device');
  });

  test('--in-tree uses the kernel targets; an origin keeps its family', async () => {
    const dm = volume();
    assert.equal((await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8', '--in-tree'], { dm })).code, 0);
    assert.match(tableOf(dm, 'vol')[0]!, / snapshot-origin 253:\d+$/);
    const again = await run(['snapshot', 'create', 'vol', '--cow', 'c1', '--chunk', '8'], { dm });
    assert.equal(again.code, 0, again.err);
    assert.match(tableOf(dm, 'vol-snap1')[0]!, / snapshot 253:\d+ c1 P 8$/);
    const mixed = await run(['snapshot', 'create', 'vol', '--cow', 'c2', '--chunk', '8', '--dmkit'], { dm });
    assert.equal(mixed.code, ExitCode.USAGE);
    assert.match(mixed.err, /snapshot-origin volume; its snapshots must be in-tree ones.*\(ERR_SNAPSHOT_INVALID_FAMILY\)/);
    assert.equal(dm.devices.has('vol-snap2'), false);
  });

  test('bad arguments exit 2 before the control device is opened', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--chunk', '24'], /not a power of 2/],
      [['--chunk', '4x'], /--chunk must be sectors or a size/],
      [['--chunk', '-8'], /--chunk/],
      [['--chunk', '8', '--transient', '--overflow'], /mutually exclusive/],
      [['--chunk', '8', '--dmkit', '--in-tree'], /mutually exclusive/],
      [['--chunk', '8', '--discard-passdown-origin'], /requires discardZeroesCow/],
      [['--chunk', '4194304'], /ERR_TARGET_OUT_OF_RANGE/],
      [['--chunk', '0', '--transient'], /a transient store needs a chunk size/],
    ];
    for (const [extra, want] of cases) {
      const r = await run(['snapshot', 'create', 'vol', '--cow', 'c', ...extra], { dm: volume() });
      assert.equal(r.code, ExitCode.USAGE, `${extra.join(' ')}: ${r.err}`);
      assert.match(r.err, want);
      assert.equal(r.opened, 0, extra.join(' '));
    }
    const noCow = await run(['snapshot', 'create', 'vol', '--chunk', '8']);
    assert.equal(noCow.code, ExitCode.USAGE);
    assert.match(noCow.err, /Missing required argument: cow/);
    const noOrigin = await run(['snapshot', 'create', '--cow', 'c', '--chunk', '8']);
    assert.equal(noOrigin.code, ExitCode.USAGE);
  });

  test('a missing volume is NOT_FOUND, a snapshot of a snapshot or of a merging origin is refused, nothing changes', async () => {
    const dm = volume();
    const missing = await run(['snapshot', 'create', 'nope', '--cow', 'c', '--chunk', '8'], { dm });
    assert.equal(missing.code, ExitCode.NOT_FOUND);
    assert.equal((await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8'], { dm })).code, 0);
    const before = dm.devices.size;
    const ofSnap = await run(['snapshot', 'create', 'vol-snap0', '--cow', 'c1', '--chunk', '8'], { dm });
    assert.equal(ofSnap.code, ExitCode.USAGE);
    assert.match(ofSnap.err, /itself a snapshot/);
    dm.add('m', ['0 64 snapshot-merge 7:1 c P 8']);
    const merging = await run(['snapshot', 'create', 'm', '--cow', 'c1', '--chunk', '8'], { dm });
    assert.equal(merging.code, ExitCode.BUSY);
    assert.equal(dm.devices.size, before + 1);
  });

  test('a failed snapshot create leaves the volume as it was and resumed', async () => {
    const dm = volume();
    dm.add('vol-snap0');
    const r = await run(['snapshot', 'create', 'vol', '--cow', 'c', '--chunk', '8', '--name', 'vol-snap0'], { dm });
    assert.equal(r.code, ExitCode.BUSY, r.err);
    assert.deepEqual(tableOf(dm, 'vol'), ['0 2048 linear 7:0 0']);
    assert.equal(dm.devices.has('vol-real'), false);
    assert.equal(dm.devices.get('vol')!.suspended, false);
    assert.equal(dm.devices.get('vol')!.inactive, undefined);
  });
});

describe('snapshot remove and merge', () => {
  test('remove: the last snapshot gives the volume its former table back and drops VOL-real', async () => {
    const dm = volume();
    await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8'], { dm });
    await run(['snapshot', 'create', 'vol', '--cow', 'c1', '--chunk', '8'], { dm });
    const real = devOf(dm, 'vol-real');
    const one = await run(['snapshot', 'remove', 'vol-snap0'], { dm });
    assert.equal(one.code, 0, one.err);
    assert.equal(one.out, `vol-snap0 removed; vol is 0 2048 dmkit-origin ${real}\n`);
    assert.equal(dm.devices.has('vol-real'), true);
    const last = await run(['snapshot', 'remove', 'vol-snap1', '--json'], { dm });
    assert.deepEqual(JSON.parse(last.out), { name: 'vol-snap1', origin: 'vol', originTable: '0 2048 linear 7:0 0' });
    assert.deepEqual([...dm.devices.keys()], ['vol']);
    assert.deepEqual(tableOf(dm, 'vol'), ['0 2048 linear 7:0 0']);
    const again = await run(['snapshot', 'remove', 'vol-snap1'], { dm });
    assert.equal(again.code, ExitCode.NOT_FOUND);
    const notSnap = await run(['snapshot', 'remove', 'vol'], { dm });
    assert.equal(notSnap.code, ExitCode.NOT_FOUND);
    assert.match(notSnap.err, /vol is not a snapshot \(table: linear\)/);
  });

  test('remove of an open snapshot is BUSY and the origin is resumed unchanged', async () => {
    const dm = volume();
    await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8'], { dm });
    dm.devices.get('vol-snap0')!.openCount = 1;
    const before = tableOf(dm, 'vol');
    const r = await run(['snapshot', 'remove', 'vol-snap0'], { dm });
    assert.equal(r.code, ExitCode.BUSY);
    assert.deepEqual(tableOf(dm, 'vol'), before);
    assert.equal(dm.devices.get('vol')!.suspended, false);
  });

  test('merge: origin switched to the merge target on the COW, progress until merged, then the former table', async () => {
    const dm = new MergingDm(80n, 16n, 4);
    dm.add('vol', ['0 2048 linear 7:0 0']);
    await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8', '--in-tree'], { dm });
    dm.statusText = { snapshot: '80/2048 16' };
    const real = devOf(dm, 'vol-real');
    const r = await run(['snapshot', 'merge', 'vol-snap0'], { dm });
    assert.equal(r.code, 0, r.err);
    const loads = calls(dm, 'load').map((c) => (c.args[1] as Array<{ type: string; params: string }>).map((t) => `${t.type} ${t.params}`).join());
    assert.deepEqual(loads.slice(-2), [`snapshot-merge ${real} c0 P 8`, 'linear 7:0 0']);
    assert.match(r.err, /vol-snap0: \[#{30}\] 64\/64 sectors merged \(100\.0%\)\n$/);
    assert.match(r.err, /0\/64 sectors merged \(0\.0%\)/);
    assert.match(r.out, /^vol-snap0: 64 sectors merged into vol in [\d.]+ s; vol is now 0 2048 linear 7:0 0\n$/);
    assert.deepEqual([...dm.devices.keys()], ['vol']);
  });

  test('merge keeps the origin target while other snapshots remain; refusals change nothing', async () => {
    const dm = new MergingDm(40n, 8n, 1);
    dm.add('vol', ['0 2048 linear 7:0 0']);
    dm.targetTypes.push({ name: 'dmkit-snapshot', version: { major: 1, minor: 0, patch: 0 } });
    await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8'], { dm });
    await run(['snapshot', 'create', 'vol', '--cow', 'c1', '--chunk', '8', '--transient'], { dm });
    const real = devOf(dm, 'vol-real');
    dm.statusText = { 'dmkit-snapshot': 'Invalid' };
    const invalid = await run(['snapshot', 'merge', 'vol-snap0'], { dm });
    assert.equal(invalid.code, ExitCode.FAILED);
    assert.match(invalid.err, /the snapshot reports Invalid \(ERR_SNAPSHOT_UNUSABLE\)/);
    const transient = await run(['snapshot', 'merge', 'vol-snap1'], { dm });
    assert.equal(transient.code, ExitCode.USAGE);
    assert.match(transient.err, /transient/);
    assert.equal(dm.devices.size, 4);
    dm.statusText = { 'dmkit-snapshot': '40/2048 8' };
    const j = await run(['snapshot', 'merge', 'vol-snap0', '--json'], { dm });
    assert.equal(j.code, 0, j.err);
    assert.deepEqual({ ...JSON.parse(j.out), seconds: 0 }, { name: 'vol-snap0', origin: 'vol', merged: '32', seconds: 0, originTable: `0 2048 dmkit-origin ${real}` });
    assert.deepEqual([...dm.devices.keys()].sort(), ['vol', 'vol-real', 'vol-snap1']);
  });

  test('status: snapshot, origin and the problem states', async () => {
    const dm = volume();
    await run(['snapshot', 'create', 'vol', '--cow', 'c0', '--chunk', '8'], { dm });
    dm.statusText = { 'dmkit-snapshot': '24/2048 16' };
    const s = await run(['snapshot', 'status', 'vol-snap0'], { dm });
    assert.equal(s.out, 'vol-snap0: dmkit-snapshot active\n  allocated: 24 of 2048 sectors\n  metadata: 16 sectors\n  origin: vol\n');
    const o = JSON.parse((await run(['snapshot', 'status', 'vol', '--json'], { dm })).out);
    assert.deepEqual(o, { name: 'vol', type: 'dmkit-origin', state: 'origin', allocated: null, total: null, metadata: null, snapshots: ['vol-snap0'] });
    dm.statusText = { 'dmkit-snapshot': 'Overflow' };
    assert.equal(JSON.parse((await run(['snapshot', 'status', 'vol-snap0', '--json'], { dm })).out).state, 'Overflow');
    dm.statusText = { 'dmkit-snapshot': '24/2048' };
    const bad = await run(['snapshot', 'status', 'vol-snap0'], { dm });
    assert.equal(bad.code, ExitCode.FAILED);
    assert.match(bad.err, /ERR_TARGET_PARSE/);
    assert.equal((await run(['snapshot', 'status', 'nope'], { dm })).code, ExitCode.NOT_FOUND);
  });
});

describe('snapshot API', () => {
  test('parseChunk: sectors or sizes', () => {
    assert.equal(parseChunk('8'), 8n);
    assert.equal(parseChunk('4k'), 8n);
    assert.equal(parseChunk('64KiB'), 128n);
    assert.equal(parseChunk('1M'), 2048n);
    assert.throws(() => parseChunk('1.5k'), /--chunk must be/);
  });

  test('workflow errors are typed', async () => {
    const dm = volume();
    await assert.rejects(
      createSnapshot(dm.asDeviceMapper(), { origin: 'vol', cow: 'c', chunkSize: sectors(8), family: 'elsewhere' as 'dmkit' }),
      (e: unknown) => e instanceof SnapshotError && e.code === 'ERR_SNAPSHOT_INVALID_FAMILY',
    );
    await assert.rejects(
      createSnapshot(dm.asDeviceMapper(), { origin: 'vol', cow: 'c', chunkSize: sectors(12), family: 'dmkit' }),
      (e: unknown) => (e as { code?: string }).code === 'ERR_TARGET_OUT_OF_RANGE',
    );
    assert.deepEqual([...dm.devices.keys()], ['vol']);
    dm.add('orphan', ['0 2048 snapshot 7:5 c P 8']);
    dm.statusText = { snapshot: '16/2048 16' };
    await assert.rejects(mergeSnapshot(dm.asDeviceMapper(), { name: 'orphan' }), (e: unknown) => e instanceof SnapshotError && e.code === 'ERR_SNAPSHOT_NO_ORIGIN');
    assert.deepEqual(line('0 8 zero'), { start: 0n, length: 8n, type: 'zero', params: '' });
  });
});
