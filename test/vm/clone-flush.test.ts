/**
 * clone-flush: the destination is a volatile write cache, and a region the metadata calls hydrated must
 * never read bytes that were not durably written there (fix 8b3fd1f53af3: flush the destination before
 * committing the metadata).
 *
 * Model. The destination sits on `log-writes <dest> <log>` (in-tree dm-log-writes), which logs a write
 * only once a later FLUSH covers it (FUA writes on completion), so the entries before any point of the
 * log are exactly what was durable on the destination at that point. The metadata device is modelled
 * as having no volatile cache (its completed writes are durable): it sits on a linear device, and at
 * each crash point we suspend that linear device (in-flight metadata IO completes, new IO waits), put a
 * MARK into the destination's log, copy the metadata with O_DIRECT, and resume. The metadata image and
 * the log position are thus one moment: the metadata is frozen from before the mark until after it, and
 * any destination write logged before the mark was durable by then. (A second log-writes on the metadata
 * would give two logs with no common order; a shared log over one device would let metadata flushes
 * flush the destination too and hide the bug.)
 *
 * Replay. The log is parsed and replayed by the lab's log-writes module (src/lab/faultlab/logwrites.ts).
 * For each crash point the destination is rebuilt from its pre-logging contents (a garbage stamp nobody
 * writes) plus the entries before the mark, the metadata image is restored, and the clone is reopened
 * (no_hydration) on the crash images: every sector must hold the source's stamp or a stamp the user
 * wrote there. With the fix this passes; built with --revert clone-flush, hydrated regions read back the
 * garbage stamp.
 *
 * Runs against dmkit-clone when registered (the revert switch only exists there), else the in-tree clone.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper } from '../../src/dm';
import { clone, cloneMessages, linear, logWrites, logWritesMessages } from '../../src/targets';
import { describeSector, flushBuffers, patternBuffer, ramdisks, Scope, stampSector, writeDirect, zero, type BlockDevice } from '../../src/testing';
import { bytes, sectors, targetBlocks } from '../../src/units';
import { cloneStatus, DataModel, MiB, pickCloneType, readDirect, readSuperblock, setThrottle, stampDirect, sleep, writeDirectAsync, type CloneKind } from './clone-lib';
import { LOG_FLAG, logIndex, prefixApply, replayImage } from '../../src/lab/faultlab/logwrites';

const REGION = sectors(128); // 64 KiB
const LENGTH = sectors((24n * MiB) / 512n); // 384 regions
const META_LEN = sectors((4n * MiB) / 512n);
const SRC_SEED = 1;
const GARBAGE = 0x6a4b; // the destination's contents before logging began

const dm = DeviceMapper.open();
let type: CloneKind | undefined;
let skip: string | undefined;

before(async () => {
  ({ type, skip } = await pickCloneType(dm));
});
after(() => dm.close());


function writeWhole(dev: string, data: Buffer): void {
  writeDirect(dev, 0n, data, { bs: MiB });
}

describe('clone-flush', () => {
  const scope = new Scope();
  const names: string[] = [];
  afterEach(async () => {
    if (type) setThrottle(type, 100);
    for (const name of names.reverse()) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    names.length = 0;
    scope.close();
  });

  test('clone-flush: after a crash at any destination flush, no hydrated region reads bytes never written there', async (t) => {
    if (skip) return t.skip(skip);
    const [src, destRam, logRam, metaRam, crashDest, crashMeta] = ramdisks(scope, 6, bytes(48n * MiB)) as BlockDevice[] as [
      BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice,
    ];
    stampDirect(src!.path, undefined, 0n, LENGTH, SRC_SEED);
    const base = patternBuffer(GARBAGE, sectors(0), Number(LENGTH));
    writeWhole(destRam!.path, base);
    zero(metaRam!.path, bytes(4096));
    zero(logRam!.path, bytes(1n * MiB));

    const create = async (name: string, line: ReturnType<typeof linear.line>): Promise<string> => {
      await dm.create(name, { targets: [line] });
      names.push(name);
      return dm.devicePath(name);
    };
    const dest = await create('cf-dest', logWrites.line({ device: destRam!.path, logDevice: logRam!.path }, { start: sectors(0), length: LENGTH }));
    const meta = await create('cf-meta', linear.line({ device: metaRam!.path, offset: sectors(0) }, { start: sectors(0), length: META_LEN }));
    setThrottle(type!, 3);
    const cloneLine = (m: string, d: string, noHydration: boolean) =>
      clone.line(
        { metadataDevice: m, destinationDevice: d, sourceDevice: src!.path, regionSize: REGION, noHydration, hydrationThreshold: targetBlocks(1) },
        { start: sectors(0), length: LENGTH, type: type! },
      );
    const dev = await create('cf-clone', cloneLine(meta, dest, false));

    // The user: sub-region and whole-region writes, every fourth one followed by a flush.
    const user = new DataModel(LENGTH, SRC_SEED);
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing && i < 400; i++) {
        const region = (i * 53 + 7) % 384;
        const whole = i % 5 === 0;
        const start = BigInt(region) * REGION + (whole ? 0n : BigInt((i % 7) * 8));
        const len = whole ? REGION : 8n;
        const seed = 5000 + i;
        user.write(start, len, seed); // recorded before it is issued: a crash may keep it or not
        await writeDirectAsync(dev, start * 512n, patternBuffer(seed, sectors(start), Number(len)), { fsync: i % 4 === 3 });
        await sleep(30);
      }
    })();

    // Crash points: metadata frozen, mark in the destination log, metadata copied.
    const points: Array<{ mark: string; meta: Buffer; user: DataModel }> = [];
    for (let k = 0; k < 40; k++) {
      await sleep(80);
      // No status call inside the window: a commit in flight holds the metadata lock while its IO waits
      // on the frozen device, so even a noflush status would wait for the resume below.
      await dm.suspend({ name: 'cf-meta' }, { noflush: true });
      try {
        const userNow = user.clone();
        const mark = `crash-${k}`;
        await dm.message({ name: 'cf-dest' }, undefined, logWritesMessages.mark(mark));
        points.push({ mark, meta: readDirect(metaRam!.path, 0n, META_LEN * 512n, 1n * MiB), user: userNow });
      } finally {
        await dm.resume({ name: 'cf-meta' });
      }
      const now = await cloneStatus(dm, 'cf-clone', { noflush: true });
      if (now.hydrated === now.totalRegions && k >= 8) break;
    }
    writing = false;
    await writer;
    await dm.message({ name: 'cf-clone' }, undefined, cloneMessages.hydrationThreshold(targetBlocks(64)));
    setThrottle(type!, 100);
    await dm.remove({ name: 'cf-clone' });
    await dm.remove({ name: 'cf-meta' });
    await dm.remove({ name: 'cf-dest' }); // logs the end mark and the final superblock
    names.length = 0;

    flushBuffers(logRam!.path);
    const logBuf = readDirect(logRam!.path, 0n, 48n * MiB, 1n * MiB);
    const log = logIndex(logBuf);
    const markAt = new Map(log.entries.filter((e) => e.mark !== undefined).map((e) => [e.mark!, e.index]));
    const flushes = log.entries.filter((e) => e.flags & LOG_FLAG.FLUSH).length;
    assert.ok(points.length >= 3, 'enough crash points');
    const reopened: bigint[] = [];

    const failures: string[] = [];
    for (const p of points) {
      const end = markAt.get(p.mark);
      assert.notEqual(end, undefined, `mark ${p.mark} is in the log`);
      await replayImage({ log: logBuf, index: log, base, length: base.length, apply: prefixApply(log, end!), out: crashDest!.path });
      writeWhole(crashMeta!.path, p.meta);
      const sb = readSuperblock(p.meta);
      if (sb.magic !== 0x8af27f64n) continue; // no commit yet at this point: nothing is marked hydrated
      assert.ok(sb.csumOk, `${p.mark}: metadata superblock checksum`);
      const crash = await create('cf-crash', cloneLine(crashMeta!.path, crashDest!.path, true));
      const st = await cloneStatus(dm, 'cf-crash');
      reopened.push(st.hydrated);
      const got = readDirect(crash, 0n, LENGTH * 512n, 1n * MiB);
      await dm.remove({ name: 'cf-crash' });
      names.length = 0;
      const bad: string[] = [];
      const want = Buffer.alloc(512);
      for (let s = 0n; s < LENGTH && bad.length < 4; s++) {
        // Right: the full stamp of the source or of a write the user made there (the stamp names its sector).
        const at = Number(s) * 512;
        const seed = got.readUInt32LE(at + 4);
        if (seed === SRC_SEED || p.user.seedsAt(s).has(seed)) {
          stampSector(want, 0, seed, s);
          if (want.equals(got.subarray(at, at + 512))) continue;
        }
        bad.push(`sector ${s} (region ${s / REGION}): ${describeSector(got, at)}`);
      }
      if (bad.length) failures.push(`${p.mark} (${st.hydrated}/${st.totalRegions} hydrated on reopen, entries before mark ${end}): ${bad.join('; ')}`);
    }
    t.diagnostic(`${points.length} crash points, ${log.entries.length} log entries, ${flushes} flushes; regions hydrated on reopen: ${reopened.join(',')}`);
    assert.deepEqual(failures, [], 'hydrated regions returned bytes never written there');
    assert.ok(reopened.some((h) => h > 0n && h < 384n), 'some crash points fall mid-hydration');
  });
});
