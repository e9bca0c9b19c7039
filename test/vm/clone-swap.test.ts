/**
 * Hydrate-then-swap end to end (dmkit-clone if registered, else the in-tree clone, else skipped): the
 * workflow API under a reader that never stops, and the `dmkit clone hydrate` command.
 */
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { DeviceMapper } from '../../src/dm';
import { cloneMessages } from '../../src/targets';
import { ramdisks, Scope, zero, type BlockDevice } from '../../src/testing';
import { bytes, sectors, targetBlocks } from '../../src/units';
import { hydrateAndSwap, type HydrationProgress } from '../../src/workflows';
import {
  assertModel,
  assertSuperblock,
  DataModel,
  DirectReader,
  MiB,
  pickCloneType,
  setThrottle,
  stampDirect,
  waitFor,
  type CloneKind,
} from './clone-lib';

const REGION = sectors(128);
const LENGTH = sectors((32n * MiB) / 512n);
const SRC_SEED = 1;
const DEST_GARBAGE = 99;
const DMKIT = path.resolve(__dirname, '../../../bin/dmkit');

const dm = DeviceMapper.open();
let type: CloneKind | undefined;
let skip: string | undefined;

before(async () => {
  ({ type, skip } = await pickCloneType(dm));
});
after(() => dm.close());

function rig(scope: Scope): { meta: BlockDevice; dest: BlockDevice; src: BlockDevice; model: DataModel } {
  const [meta, dest, src] = ramdisks(scope, 3, bytes(40n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
  zero(meta.path, bytes(4096));
  stampDirect(src.path, undefined, 0n, LENGTH, SRC_SEED);
  stampDirect(dest.path, undefined, 0n, LENGTH, DEST_GARBAGE);
  return { meta, dest, src, model: new DataModel(LENGTH, SRC_SEED) };
}

function removeLater(scope: Scope, name: string): void {
  scope.defer(`remove ${name}`, () => void spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'remove', '--retry', name]));
}

describe('clone: hydrate then swap to linear', () => {
  let scope: Scope;
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => {
    if (type) setThrottle(type, 100);
    scope.close();
  });

  test('the swap to linear under a running reader: zero errors, zero mismatches, same device', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    removeLater(scope, 'cl-swap');
    // Created paused (threshold 0) so the writes and the reader start before hydration does.
    const run = hydrateAndSwap(dm, {
      name: 'cl-swap',
      source: r.src.path,
      destination: r.dest.path,
      metadata: r.meta.path,
      regionSize: REGION,
      type: type!,
      length: LENGTH,
      hydrationThreshold: targetBlocks(0),
      pollIntervalMs: 100,
    });
    const samples: HydrationProgress[] = [];
    const collected = (async () => {
      for await (const p of run.progress) samples.push(p);
    })();
    await waitFor('the first progress sample', 10_000, () => (samples.length > 0 ? true : undefined));
    const devPath = dm.devicePath('cl-swap');
    const before = await dm.info({ name: 'cl-swap' });
    stampDirect(devPath, r.model, 5n * REGION + 8n, 8n, 51);
    stampDirect(devPath, r.model, 100n * REGION, REGION, 52, { fsync: true });
    stampDirect(devPath, r.model, 300n * REGION - 4n, 8n, 53);

    const reader = new DirectReader(devPath, () => r.model, LENGTH);
    setThrottle(type!, 5);
    await dm.message({ name: 'cl-swap' }, undefined, cloneMessages.hydrationThreshold(targetBlocks(2)));
    const result = await run.done;
    await collected;
    const passesAtSwap = reader.passes;
    const bytesAtSwap = reader.bytes;
    await waitFor('two reader passes after the swap', 120_000, () => (reader.passes >= passesAtSwap + 2 ? true : undefined), 100);
    await reader.stop();

    assert.deepEqual(reader.errors, [], 'reader IO errors');
    assert.deepEqual(reader.mismatches, [], 'reader mismatches');
    assert.ok(bytesAtSwap > 0, `the reader ran during hydration (${bytesAtSwap} bytes, ${passesAtSwap} passes before the swap)`);
    assert.equal(result.swapped, true);
    assert.equal(result.regions, 512n);
    const table = await dm.table({ name: 'cl-swap' });
    assert.deepEqual(table.map((l) => `${l.start} ${l.length} ${l.type}`), [`0 ${LENGTH} linear`]);
    assert.match(table[0]!.params, / 0$/);
    const afterInfo = await dm.info({ name: 'cl-swap' });
    assert.deepEqual(afterInfo.dev, before.dev, 'the same dm device throughout');
    assert.equal(afterInfo.flags.suspended, false);

    assert.ok(samples.length >= 2, `${samples.length} progress samples`);
    for (let i = 1; i < samples.length; i++) assert.ok(samples[i]!.hydrated >= samples[i - 1]!.hydrated, 'progress never goes back');
    assert.equal(samples.at(-1)!.hydrated, samples.at(-1)!.total);
    assert.equal(samples[0]!.total, 512n);

    assertModel(devPath, r.model, 'through the linear device');
    assertModel(r.dest.path, r.model, 'the destination');
    await dm.remove({ name: 'cl-swap' });
    assertSuperblock(r.meta.path, REGION, LENGTH);
  });

  test('dmkit clone hydrate creates, hydrates, swaps and prints a JSON summary', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    removeLater(scope, 'cl-cli');
    const flag = type === 'dmkit-clone' ? '--dmkit' : '--in-tree';
    const p = spawnSync(DMKIT, ['clone', 'hydrate', r.src.path, r.dest.path, '--name', 'cl-cli', '--metadata', r.meta.path, '--region-size', '128', '--hydration-threshold', '8', flag, '--json'], {
      encoding: 'utf8',
    });
    assert.equal(p.status, 0, `dmkit clone hydrate: ${p.stderr}`);
    const summary = JSON.parse(p.stdout) as Record<string, unknown>;
    assert.equal(summary['type'], type);
    // The CLI sizes the device from the source: the whole 40 MiB ramdisk.
    const whole = r.src.sectors;
    assert.equal(summary['regions'], String(whole / REGION));
    assert.match(String(summary['table']), new RegExp(`^0 ${whole} linear \\S+ 0$`));
    assert.match(p.stderr, new RegExp(`cl-cli: ${whole / REGION}/${whole / REGION} regions \\(100\\.0%\\)`), 'plain progress lines when stderr is not a terminal');
    const table = await dm.table({ name: 'cl-cli' });
    assert.equal(table[0]!.type, 'linear');
    // Data on a fresh rig equals the source (nothing was written through the device).
    assertModel(dm.devicePath('cl-cli'), r.model, 'through the swapped device');
    await dm.remove({ name: 'cl-cli' });
    assertSuperblock(r.meta.path, REGION, whole);

    // Usage errors exit 2 before anything happens.
    const u = spawnSync(DMKIT, ['clone', 'hydrate', r.src.path, r.dest.path, '--name', 'cl-cli', '--region-size', '100', '--metadata', r.meta.path], { encoding: 'utf8' });
    assert.notEqual(u.status, 0);
    await assert.rejects(dm.info({ name: 'cl-cli' }));
  });
});
