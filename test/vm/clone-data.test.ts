/**
 * The clone target against its contract, parameterised over what the booted kernel has: dmkit-clone when
 * registered, else the in-tree clone (debug kernel), else skipped. Every test ends checking the data
 * (stamped patterns, read with O_DIRECT) and the metadata (superblock magic, checksum, sizes; reopen;
 * hydrated count), as there is no clone checker in thin-provisioning-tools.
 */
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { DeviceMapper, DmError, type TargetLine } from '../../src/dm';
import { clone, cloneMessages } from '../../src/targets';
import { ramdisks, Scope, zero, type BlockDevice } from '../../src/testing';
import { bytes, sectors, targetBlocks, type Sectors } from '../../src/units';
import {
  assertModel,
  assertSuperblock,
  cloneStatus,
  DataModel,
  DirectReader,
  MiB,
  pickCloneType,
  setThrottle,
  stampDirect,
  waitFor,
  waitHydrated,
  writeDirectAsync,
  sleep,
  type CloneKind,
} from './clone-lib';
import { kernelLogMark, kernelLogSince } from '../../src/testing/dmsetup';
import { patternBuffer } from '../../src/testing';

const REGION = sectors(128); // 64 KiB
const LENGTH = sectors((32n * MiB) / 512n); // 512 regions
const SRC_SEED = 1;
const DEST_GARBAGE = 99; // what the destination holds before: never a right answer

const dm = DeviceMapper.open();
let type: CloneKind | undefined;
let skip: string | undefined;

before(async () => {
  ({ type, skip } = await pickCloneType(dm));
  if (type) console.log(`# clone suites run against ${type}`);
});
after(() => dm.close());

interface Rig {
  meta: BlockDevice;
  dest: BlockDevice;
  src: BlockDevice;
  model: DataModel;
}

/** Source stamped, destination stamped with garbage, metadata zeroed. */
function rig(scope: Scope): Rig {
  const [meta, dest, src] = ramdisks(scope, 3, bytes(40n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
  zero(meta.path, bytes(4096));
  stampDirect(src.path, undefined, 0n, LENGTH, SRC_SEED);
  stampDirect(dest.path, undefined, 0n, LENGTH, DEST_GARBAGE);
  return { meta, dest, src, model: new DataModel(LENGTH, SRC_SEED) };
}

function cloneLine(r: Rig, opts: { noHydration?: boolean; threshold?: number; batch?: number; regionSize?: Sectors } = {}): TargetLine {
  return clone.line(
    {
      metadataDevice: r.meta.path,
      destinationDevice: r.dest.path,
      sourceDevice: r.src.path,
      regionSize: opts.regionSize ?? REGION,
      noHydration: opts.noHydration ?? false,
      hydrationThreshold: opts.threshold === undefined ? null : targetBlocks(opts.threshold),
      hydrationBatchSize: opts.batch === undefined ? null : targetBlocks(opts.batch),
    },
    { start: sectors(0), length: LENGTH, type: type! },
  );
}

async function open(scope: Scope, name: string, line: TargetLine): Promise<{ path: string; remove: () => Promise<void> }> {
  await dm.create(name, { targets: [line] });
  let present = true;
  const remove = async (): Promise<void> => {
    if (!present) return;
    present = false;
    await dm.remove({ name }, { retry: true });
  };
  scope.defer(`remove ${name}`, () => {
    if (present) spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'remove', '--retry', name]);
  });
  return { path: dm.devicePath(name), remove };
}

const msg = (name: string, text: string): Promise<string | undefined> => dm.message({ name }, undefined, text);
const regionStart = (r: number, plus = 0n): bigint => BigInt(r) * REGION + plus;

describe('clone: data and metadata', () => {
  let scope: Scope;
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => {
    if (type) setThrottle(type, 100);
    scope.close();
  });

  test('data equals the source before, during and after hydration, except regions written since', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    const dev = await open(scope, 'cl-data', cloneLine(r, { noHydration: true }));

    // Before: nothing hydrated, every byte is the source's; reads hydrate nothing.
    assertModel(dev.path, r.model, 'before hydration');
    assert.equal((await cloneStatus(dm, 'cl-data')).hydrated, 0n, 'reads hydrate nothing');

    // Writes into unhydrated regions: a sub-region write (the rest of the region is copied first), a
    // full-region write (no copy), one straddling two regions, one with a flush.
    stampDirect(dev.path, r.model, regionStart(3, 16n), 8n, 11);
    stampDirect(dev.path, r.model, regionStart(10), REGION, 12);
    stampDirect(dev.path, r.model, regionStart(21) - 8n, 16n, 13);
    stampDirect(dev.path, r.model, regionStart(30, 64n), 8n, 14, { fsync: true });
    assertModel(dev.path, r.model, 'after writes, before hydration');
    assert.equal((await cloneStatus(dm, 'cl-data')).hydrated, 5n, 'regions 3, 10, 20, 21, 30 hydrated by the writes');

    // During: background hydration throttled and stopped midway; data checked while part is hydrated.
    setThrottle(type!, 5);
    await msg('cl-data', cloneMessages.enableHydration());
    const mid = await waitFor('some hydration', 60_000, async () => {
      const st = await cloneStatus(dm, 'cl-data');
      return st.hydrated >= 40n ? st : undefined;
    }, 20);
    await msg('cl-data', cloneMessages.hydrationThreshold(targetBlocks(0)));
    stampDirect(dev.path, r.model, regionStart(500, 8n), 8n, 15);
    assertModel(dev.path, r.model, `during hydration (${mid.hydrated}/${mid.totalRegions} hydrated)`);

    setThrottle(type!, 100);
    await msg('cl-data', cloneMessages.hydrationThreshold(targetBlocks(8)));
    await msg('cl-data', cloneMessages.hydrationBatchSize(targetBlocks(4)));
    const done = await waitHydrated(dm, 'cl-data');
    assert.equal(done.totalRegions, 512n);
    assertModel(dev.path, r.model, 'after hydration');
    // The destination alone now holds the whole device: what the swap to linear relies on.
    assertModel(r.dest.path, r.model, 'the destination after hydration');
    assertModel(r.src.path, new DataModel(LENGTH, SRC_SEED), 'the source is never written');

    await dev.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);
    await open(scope, 'cl-data', cloneLine(r, { noHydration: true }));
    assert.equal((await cloneStatus(dm, 'cl-data')).hydrated, 512n, 'reopened fully hydrated');
  });

  test('hydration_threshold 0 pauses hydration and raising it resumes', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    const dev = await open(scope, 'cl-pause', cloneLine(r, { threshold: 0 }));
    stampDirect(dev.path, r.model, regionStart(7, 8n), 8n, 21);
    await sleep(1500);
    const paused = await cloneStatus(dm, 'cl-pause');
    assert.equal(paused.hydrated, 1n, 'only the written region is hydrated while the threshold is 0');
    assert.equal(paused.hydrating, 0n);
    assert.equal(paused.coreArgs.hydrationThreshold, 0n);

    await msg('cl-pause', cloneMessages.hydrationThreshold(targetBlocks(1)));
    const running = await waitFor('hydration to resume', 30_000, async () => {
      const st = await cloneStatus(dm, 'cl-pause');
      return st.hydrated > 1n ? st : undefined;
    });
    // Pause again midway when we catch it there; the count must then stand still.
    await msg('cl-pause', cloneMessages.hydrationThreshold(targetBlocks(0)));
    const settled = await waitFor('in-flight hydrations to finish', 10_000, async () => {
      const st = await cloneStatus(dm, 'cl-pause');
      return st.hydrating === 0n ? st : undefined;
    });
    await sleep(1000);
    assert.equal((await cloneStatus(dm, 'cl-pause')).hydrated, settled.hydrated, `paused at ${settled.hydrated} (resumed to ${running.hydrated} first)`);
    assertModel(dev.path, r.model, 'paused midway');

    await msg('cl-pause', cloneMessages.hydrationThreshold(targetBlocks(16)));
    await waitHydrated(dm, 'cl-pause');
    assertModel(dev.path, r.model, 'after resuming');
    await dev.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);
  });

  test('a discard of 4 KiB at 4 KiB inside a 64 KiB region changes no data and marks no region', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    const dev = await open(scope, 'cl-discard', cloneLine(r, { noHydration: true }));
    for (const region of [0, 5, 511]) {
      const off = BigInt(region) * REGION * 512n + 4096n;
      const d = spawnSync('blkdiscard', ['-o', `${off}`, '-l', '4096', dev.path], { encoding: 'utf8' });
      assert.equal(d.status, 0, `blkdiscard in region ${region}: ${d.stderr}`);
    }
    const st = await cloneStatus(dm, 'cl-discard');
    assert.equal(st.hydrated, 0n, 'a partial-region discard marks nothing');
    assertModel(dev.path, r.model, 'after partial discards');

    // A discard of exactly one whole region marks that region (and only it) without copying.
    const whole = spawnSync('blkdiscard', ['-o', `${9n * REGION * 512n}`, '-l', `${REGION * 512n}`, dev.path], { encoding: 'utf8' });
    assert.equal(whole.status, 0, whole.stderr);
    assert.equal((await cloneStatus(dm, 'cl-discard')).hydrated, 1n, 'a whole-region discard marks exactly one region');
    // Region 9's contents are now undefined; rewrite it so the model covers every byte again.
    stampDirect(dev.path, r.model, regionStart(9), REGION, 31);
    assertModel(dev.path, r.model, 'after the whole-region discard');
    await dev.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);
  });

  test('suspend and resume in a loop under IO lose nothing', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    const dev = await open(scope, 'cl-suspend', cloneLine(r, { threshold: 1 }));
    setThrottle(type!, 10);
    // The writer owns regions 0..255, the reader checks 256..511 (nobody writes there).
    const reader = new DirectReader(dev.path, () => r.model, 256n * REGION, 256n * REGION);
    let writing = true;
    let seed = 1000;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const region = (i * 37) % 256;
        const start = regionStart(region, BigInt((i % 8) * 16));
        const len = i % 3 === 0 ? REGION - BigInt((i % 8) * 16) : 8n;
        const s = seed++;
        await writeDirectAsync(dev.path, start * 512n, patternBuffer(s, sectors(start), Number(len)), { fsync: i % 5 === 0 });
        r.model.write(start, len, s);
      }
    })();
    for (let i = 0; i < 20; i++) {
      await dm.suspend({ name: 'cl-suspend' });
      const st = await dm.status({ name: 'cl-suspend' }, { noflush: true });
      assert.match(st[0]!.status, / rw$/);
      await sleep(20);
      await dm.resume({ name: 'cl-suspend' });
      await sleep(60);
    }
    writing = false;
    await writer;
    await reader.stop();
    assert.deepEqual(reader.errors, [], 'reader errors');
    assert.deepEqual(reader.mismatches, [], 'reader mismatches');
    assert.ok(reader.passes > 0);
    setThrottle(type!, 100);
    await msg('cl-suspend', cloneMessages.hydrationThreshold(targetBlocks(16)));
    await waitHydrated(dm, 'cl-suspend');
    assertModel(dev.path, r.model, 'after the suspend/resume loop');
    await dev.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);
  });

  test('malformed table lines and messages get EINVAL and one kernel log line each', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    const devs = `${r.meta.path} ${r.dest.path} ${r.src.path}`;
    const bad: Array<[string, RegExp]> = [
      [`${r.meta.path} ${r.dest.path}`, /Invalid number of arguments/i],
      [`${devs} 100`, /power of 2/i],
      [`${devs} 4`, /region size/i],
      [`${devs} 4194304`, /region size/i],
      [`${devs} abc`, /region size/i],
      [`${devs} 128 1 frobnicate`, /feature/i],
      [`${devs} 128 0 1 hydration_threshold`, /core arg/i],
      [`${devs} 128 0 2 hydration_threshold abc`, /hydration_threshold/i],
      [`${devs} 128 0 2 frob 1`, /core arg/i],
      [`/dev/does-not-exist ${r.dest.path} ${r.src.path} 128`, /metadata/i],
    ];
    for (const [params, why] of bad) {
      const mark = kernelLogMark();
      await assert.rejects(
        dm.create('cl-bad', { targets: [{ start: sectors(0), length: LENGTH, type: type!, params }] }),
        (e: unknown) => e instanceof DmError && ['EINVAL', 'ENODEV', 'ENXIO', 'ENOENT'].includes(e.code),
        `table '${params}' was accepted`,
      );
      const lines = kernelLogSince(mark).filter((l) => l.includes(`${type}:`) || l.includes(`${type} `));
      assert.equal(lines.length, 1, `one log line for '${params}', got:\n${lines.join('\n')}`);
      assert.match(lines[0]!, why);
      await assert.rejects(dm.info({ name: 'cl-bad' }), DmError, 'no half-made device is left');
    }

    const dev = await open(scope, 'cl-msg', cloneLine(r, { noHydration: true }));
    const badMessages: Array<[string, boolean]> = [
      ['frobnicate now', true], // unknown: every implementation logs it
      ['hydration_threshold abc', type === 'dmkit-clone'], // upstream returns -EINVAL silently
      ['hydration_batch_size', type === 'dmkit-clone'],
      ['hydration_threshold 1 2', type === 'dmkit-clone'],
    ];
    for (const [text, logs] of badMessages) {
      const mark = kernelLogMark();
      await assert.rejects(msg('cl-msg', text), (e: unknown) => e instanceof DmError && e.code === 'EINVAL', `message '${text}'`);
      const lines = kernelLogSince(mark).filter((l) => /clone/.test(l));
      assert.equal(lines.length, logs ? 1 : 0, `log lines for '${text}':\n${lines.join('\n')}`);
    }
    assertModel(dev.path, r.model, 'data after refused messages');
    await dev.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);
  });

  test('remove and reopen keep the hydrated map', async (t) => {
    if (skip) return t.skip(skip);
    const r = rig(scope);
    const dev = await open(scope, 'cl-reopen', cloneLine(r, { noHydration: true }));
    for (const [i, region] of [2, 3, 64, 200, 511].entries()) stampDirect(dev.path, r.model, regionStart(region, 8n), 8n, 40 + i);
    assert.equal((await cloneStatus(dm, 'cl-reopen')).hydrated, 5n);
    await dev.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);

    // A different region size does not match the superblock: refused.
    await assert.rejects(dm.create('cl-reopen', { targets: [cloneLine(r, { noHydration: true, regionSize: sectors(256) })] }), DmError);

    const again = await open(scope, 'cl-reopen', cloneLine(r, { noHydration: true }));
    assert.equal((await cloneStatus(dm, 'cl-reopen')).hydrated, 5n, 'the hydrated map survived the reopen');
    assertModel(again.path, r.model, 'after reopen: written regions read what was written, the rest the source');
    await msg('cl-reopen', cloneMessages.hydrationThreshold(targetBlocks(16)));
    await msg('cl-reopen', cloneMessages.enableHydration());
    await waitHydrated(dm, 'cl-reopen');
    await again.remove();
    assertSuperblock(r.meta.path, REGION, LENGTH);
    const third = await open(scope, 'cl-reopen', cloneLine(r, { noHydration: true }));
    assert.equal((await cloneStatus(dm, 'cl-reopen')).hydrated, 512n);
    assertModel(third.path, r.model, 'after the second reopen');
    assertModel(r.dest.path, r.model, 'the destination holds everything');
  });
});
