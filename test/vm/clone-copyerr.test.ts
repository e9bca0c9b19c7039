/**
 * Copy errors during hydration (issue 5, the copy engine's failure path). The source is a dm table with
 * holes: `error` segments over two whole regions and over 8 sectors in the middle of a third. Background
 * hydration must copy every other region and never mark a region whose copy failed; such a region keeps
 * reading from the source (EIO) and a partial write into it fails, while a write of the whole region needs
 * no copy and succeeds. Once the source is healed (its table swapped for plain linear), hydration must
 * finish, every sector must equal the source or what was written since, and the committed metadata must
 * call every region hydrated.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper } from '../../src/dm';
import { readCloneMetadata } from '../../src/pdata/reader';
import { clone, cloneMessages } from '../../src/targets';
import { patternBuffer, ramdisks, Scope, zero, type BlockDevice } from '../../src/testing';
import { kernelLogSince } from '../../src/testing/dmsetup';
import { bytes, sectors } from '../../src/units';
import {
  assertSuperblock, cloneStatus, DataModel, MiB, pickCloneType, readDirect, setThrottle, sleep, stampDirect, waitFor, waitHydrated, writeDirect, type CloneKind,
} from './clone-lib';

const REGION = 128n; // sectors: 64 KiB
const LENGTH = (8n * MiB) / 512n; // 128 regions
const NR_REGIONS = Number(LENGTH / REGION);
const SRC_SEED = 61;
const GARBAGE = 62; // the destination before hydration: a region marked by mistake shows it
/** Source holes, in sectors: regions 40 and 41 whole, 8 sectors inside region 90. */
const HOLES: ReadonlyArray<readonly [bigint, bigint]> = [[40n * REGION, 2n * REGION], [90n * REGION + 64n, 8n]];
const BAD = new Set([40, 41, 90]);

const dm = DeviceMapper.open();
let type: CloneKind | undefined;
let skip: string | undefined;
before(async () => {
  ({ type, skip } = await pickCloneType(dm));
});
after(() => dm.close());

/** The source table: linear over the ramdisk, with `error` over each hole when `holes`. */
function sourceTable(backing: string, holes: boolean) {
  if (!holes) return [{ start: sectors(0), length: sectors(LENGTH), type: 'linear', params: `${backing} 0` }];
  const out: Array<{ start: ReturnType<typeof sectors>; length: ReturnType<typeof sectors>; type: string; params: string }> = [];
  let at = 0n;
  for (const [start, length] of HOLES) {
    if (start > at) out.push({ start: sectors(at), length: sectors(start - at), type: 'linear', params: `${backing} ${at}` });
    out.push({ start: sectors(start), length: sectors(length), type: 'error', params: '' });
    at = start + length;
  }
  if (at < LENGTH) out.push({ start: sectors(at), length: sectors(LENGTH - at), type: 'linear', params: `${backing} ${at}` });
  return out;
}

function regionBytes(dev: string, region: number): Buffer {
  return readDirect(dev, BigInt(region) * REGION * 512n, REGION * 512n);
}

function failsWithEio(what: string, f: () => unknown): void {
  assert.throws(f, (e: Error) => /Input\/output error/.test(String((e as { stderr?: Buffer }).stderr ?? e.message)), `${what} must fail with EIO`);
}

describe('clone copy errors', () => {
  test('a region whose copy fails is never marked; healing the source lets hydration finish', async (t) => {
    if (skip) return t.skip(skip);
    const scope = new Scope();
    const names: string[] = [];
    try {
      const [srcRam, dest, metaRam] = ramdisks(scope, 3, bytes(16n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
      stampDirect(srcRam.path, undefined, 0n, LENGTH, SRC_SEED);
      stampDirect(dest.path, undefined, 0n, LENGTH, GARBAGE);
      zero(metaRam.path, bytes(1n * MiB));
      setThrottle(type!, 100);

      await dm.create('ce-src', { targets: sourceTable(srcRam.path, true) });
      names.push('ce-src');
      const logMark = kernelLogSince(1).length + 1;
      const line = clone.line(
        { metadataDevice: metaRam.path, destinationDevice: dest.path, sourceDevice: dm.devicePath('ce-src'), regionSize: sectors(REGION) },
        { start: sectors(0), length: sectors(LENGTH), type: type! },
      );
      await dm.create('ce-clone', { targets: [line] });
      names.push('ce-clone');
      const dev = dm.devicePath('ce-clone');
      const model = new DataModel(LENGTH, SRC_SEED);

      // Every region but the three behind holes gets hydrated, and those three stay unmarked while
      // background hydration keeps retrying them.
      const good = NR_REGIONS - BAD.size;
      await waitFor(`${good} regions hydrated`, 60_000, async () => ((await cloneStatus(dm, 'ce-clone', { noflush: true })).hydrated === BigInt(good) ? true : undefined));
      await sleep(1500);
      const st = await cloneStatus(dm, 'ce-clone');
      assert.equal(st.hydrated, BigInt(good), 'no region behind a hole is marked hydrated');

      for (let r = 0; r < NR_REGIONS; r++) {
        if (BAD.has(r)) failsWithEio(`reading region ${r}`, () => regionBytes(dev, r));
        else assert.ok(regionBytes(dev, r).equals(model.expected(BigInt(r) * REGION, Number(REGION))), `region ${r} equals the source`);
      }
      if (type === 'dmkit-clone') {
        const log = kernelLogSince(logMark).join('\n');
        assert.match(log, /copying from region (40|41|90) failed/, 'the failed copies are logged');
      }

      // Background hydration keeps retrying regions 40, 41 and 90, and a write that finds a retry in flight
      // waits for it and shares its failure (both clone targets do that). Stop the retries and drain the
      // copies in flight (a suspend waits for them) so each write below meets only its own copy or none.
      await dm.message({ name: 'ce-clone' }, undefined, cloneMessages.disableHydration());
      await dm.suspend({ name: 'ce-clone' });
      await dm.resume({ name: 'ce-clone' });
      // A partial write into an unhydrated region behind a hole waits for a copy that fails.
      failsWithEio('a 4 KiB write into region 40', () => writeDirect(dev, 40n * REGION * 512n + 4096n, Buffer.alloc(4096, 1)));
      // A write of the whole region (one 64 KiB bio) needs no copy.
      writeDirect(dev, 41n * REGION * 512n, patternBuffer(7001, sectors(41n * REGION), Number(REGION)), { bs: REGION * 512n });
      model.write(41n * REGION, REGION, 7001);
      // A partial write into a hydrated region.
      stampDirect(dev, model, 10n * REGION + 8n, 8n, 7002);
      assert.ok(regionBytes(dev, 41).equals(model.expected(41n * REGION, Number(REGION))), 'region 41 holds the whole-region write');
      assert.equal((await cloneStatus(dm, 'ce-clone')).hydrated, BigInt(good + 1), 'the whole-region write hydrated region 41');

      // Heal the source: hydration finishes, and nothing of the failed write landed.
      await dm.message({ name: 'ce-clone' }, undefined, cloneMessages.enableHydration());
      await dm.load({ name: 'ce-src' }, sourceTable(srcRam.path, false));
      await dm.suspend({ name: 'ce-src' });
      await dm.resume({ name: 'ce-src' });
      await waitHydrated(dm, 'ce-clone', 60_000);
      const got = readDirect(dev, 0n, LENGTH * 512n, 1n * MiB);
      for (let r = 0; r < NR_REGIONS; r++) {
        const at = r * Number(REGION) * 512;
        assert.ok(got.subarray(at, at + Number(REGION) * 512).equals(model.expected(BigInt(r) * REGION, Number(REGION))), `region ${r} after healing`);
      }

      await dm.remove({ name: 'ce-clone' });
      names.splice(names.indexOf('ce-clone'), 1);
      const meta = readDirect(metaRam.path, 0n, 1n * MiB);
      assertSuperblock(meta, sectors(REGION), sectors(LENGTH));
      assert.equal(readCloneMetadata(meta).hydrated.count(), NR_REGIONS, 'the committed map calls every region hydrated');
    } finally {
      for (const name of names.reverse()) await dm.remove({ name }, { retry: true }).catch(() => undefined);
      scope.close();
    }
  });
});
