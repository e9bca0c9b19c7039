/**
 * Era backup and restore on live era devices (dmkit-era in CI; the in-tree era at release scale): a
 * full backup and three incrementals with stamped writes between them, one incremental interrupted and
 * resumed from its journal, writes made DURING a backup (after its snapshot) caught by the next
 * incremental, and the chain restored onto another device byte for byte (sha256 of the whole device),
 * through the API and through `dmkit era restore`, and instantly (a dmkit-clone over the full image,
 * usable at once, hydrated and swapped to linear). A backup with one flipped data byte is refused and
 * leaves the destination untouched. Every backup drops its metadata snapshot; era_check stays clean and
 * the origin holds every stamp.
 */
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DeviceMapper } from '../../src/dm';
import { Scope } from '../../src/testing';
import {
  checkData, createEra, deviceHash, ERA_TYPES, EraModel, eraRigs, eraStatus, message, randomBlocks, rng, scratchFile, skipUnlessScaled, writeBlocks,
} from '../../src/testing/era-fixtures';
import { sh } from '../../src/testing/devices';
import { dmsetup } from '../../src/testing/dmsetup';
import { sectors } from '../../src/units';
import { backup, BackupError, instantRestore, readBackupHeader, restore } from '../../src/workflows';

const dm = DeviceMapper.open();
after(() => dm.close());

const CLI = path.join(__dirname, '..', '..', '..', 'bin', 'dmkit');

for (const type of ERA_TYPES) {
  describe(`${type}: backup and restore`, () => {
    const skip = skipUnlessScaled(type);
    let scope: Scope;
    beforeEach(() => {
      scope = new Scope();
    });
    afterEach(() => scope.close());

    test('full + three incrementals restore byte-identical; writes during a backup land in the next; corruption refused', { skip }, async () => {
      const [rig, spare, instant] = eraRigs(scope, 3, 16, 4, 'erbk');
      const bs = 16; // 8 KiB blocks: 2048 of them
      const sectorsAll = rig!.originSectors;
      const model = new EraModel(sectorsAll / bs, bs);
      const dev = createEra(scope, `erbk-${type}`, type, rig!, bs);
      const rand = rng(type === 'era' ? 271 : 272);
      const img = (n: string): string => scratchFile(scope, n);
      const images: string[] = [];
      const noSnapshotHeld = (): void => assert.equal(eraStatus(dev.name).heldRoot, null, 'the metadata snapshot was dropped');

      // Era 1: the whole origin stamped, then the full backup.
      writeBlocks(dev.path, model, Array.from({ length: model.nrBlocks }, (_, i) => i), eraStatus(dev.name).era, 1);
      images.push(img('full.img'));
      const full = await backup(dm, { name: dev.name }, { to: images[0]! });
      noSnapshotHeld();
      assert.equal(full.header.full, true);
      assert.equal(full.header.dataBytes, BigInt(sectorsAll * 512));
      const states = [deviceHash(dev.path, sectorsAll)];
      let since = full.header.untilEra;
      assert.ok(since >= 2 && since <= eraStatus(dev.name).era, `until era ${since}: writes from now on are in it or later (now ${eraStatus(dev.name).era})`);

      // Incremental 1, interrupted after two pieces and resumed from its journal.
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 150), eraStatus(dev.name).era, 2);
      images.push(img('inc1.img'));
      await assert.rejects(backup(dm, { name: dev.name }, { since, to: images[1]!, interruptAfterChunks: 2, queueDepth: 1 }), { code: 'ABORT_ERR' });
      noSnapshotHeld();
      assert.ok(fs.existsSync(`${images[1]}.journal`) && !fs.existsSync(images[1]!));
      const inc1 = await backup(dm, { name: dev.name }, { since, to: images[1]! });
      assert.equal(inc1.resumed, true);
      assert.ok(inc1.copy.resumedChunks >= 2, String(inc1.copy.resumedChunks));
      states.push(deviceHash(dev.path, sectorsAll));
      since = inc1.header.untilEra;

      // Incremental 2: more writes before it, and writes DURING it (after its snapshot).
      writeBlocks(dev.path, model, Array.from({ length: 300 }, (_, i) => 500 + i), eraStatus(dev.name).era, 3);
      images.push(img('inc2.img'));
      const during = [3, 700, 701, 1999, ...randomBlocks(rand, model.nrBlocks, 20)];
      let wroteDuring = false;
      const writeDuring = (): void => {
        if (wroteDuring) return;
        wroteDuring = true;
        writeBlocks(dev.path, model, during, eraStatus(dev.name).era, 4);
      };
      const inc2 = await backup(dm, { name: dev.name }, { since, to: images[2]!, queueDepth: 1, onProgress: writeDuring });
      writeDuring(); // if the copy finished before its first progress report: still after the snapshot
      noSnapshotHeld();
      since = inc2.header.untilEra;

      // Incremental 3 through the CLI; it must hold every block written during incremental 2.
      writeBlocks(dev.path, model, randomBlocks(rand, model.nrBlocks, 60), eraStatus(dev.name).era, 5);
      images.push(img('inc3.img'));
      const cli = spawnSync(process.execPath, [CLI, 'era', 'backup', dev.name, '--since', String(since), '--to', images[3]!, '--json'], { encoding: 'utf8' });
      assert.equal(cli.status, 0, cli.stderr);
      assert.equal(JSON.parse(cli.stdout).sinceEra, since);
      noSnapshotHeld();
      const h3 = readBackupHeader(images[3]!);
      const covered = (block: number): boolean => h3.pieces.some((p) => BigInt(block * bs * 512) >= p.deviceOffset && BigInt((block + 1) * bs * 512) <= p.deviceOffset + p.length);
      assert.deepEqual(during.filter((b) => !covered(b)), [], 'blocks written during incremental 2 are in incremental 3');
      const final = deviceHash(dev.path, sectorsAll);

      // Restore the chain onto the spare ramdisk: each prefix gives its own state (the API), the
      // whole chain the final one (the CLI).
      const target = spare!.origin;
      for (const k of [0, 1]) {
        await restore(images.slice(0, k + 1), target);
        assert.equal(deviceHash(target, sectorsAll), states[k], `restore of images 0..${k}`);
      }
      const r = spawnSync(process.execPath, [CLI, 'era', 'restore', ...images, target, '--json'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(deviceHash(target, sectorsAll), final, 'full + three incrementals restore the device byte for byte');

      // One flipped data byte in incremental 2: refused before anything is written.
      const bad = img('inc2-bad.img');
      fs.copyFileSync(images[2]!, bad);
      const h2 = readBackupHeader(bad);
      const at = Number(h2.pieces[Math.floor(h2.pieces.length / 2)]!.imageOffset) + 4096;
      const fd = fs.openSync(bad, 'r+');
      const one = Buffer.alloc(1);
      fs.readSync(fd, one, 0, 1, at);
      fs.writeSync(fd, Buffer.of(one[0]! ^ 0x01), 0, 1, at);
      fs.closeSync(fd);
      await restore(images.slice(0, 1), target); // the target now differs from the final state
      const beforeBad = deviceHash(target, sectorsAll);
      await assert.rejects(restore([images[0]!, images[1]!, bad, images[3]!], target), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_CHECKSUM');
      assert.equal(deviceHash(target, sectorsAll), beforeBad, 'the refused restore wrote nothing');
      const cliBad = spawnSync(process.execPath, [CLI, 'era', 'restore', images[0]!, images[1]!, bad, target], { encoding: 'utf8' });
      assert.equal(cliBad.status, 1, cliBad.stderr);
      assert.match(cliBad.stderr, /ERR_BACKUP_CHECKSUM/);
      // A gap (incremental 2 without 1) is refused as well.
      await assert.rejects(restore([images[0]!, images[2]!], target), (e: unknown) => e instanceof BackupError && e.code === 'ERR_BACKUP_CHAIN');

      // Instant restore: a dmkit-clone over the full image and a third ramdisk, usable at once with
      // every incremental applied; once hydrated it is a linear mapping of the destination.
      sh('modprobe', 'dmkit-clone');
      const name = `erbk-inst-${type}`;
      scope.defer(`remove ${name}`, () => {
        if (fs.existsSync(`/dev/mapper/${name}`)) dmsetup('remove', '--retry', name);
      });
      const inst = await instantRestore(dm, images, instant!.origin, { name, metadata: instant!.meta, regionSize: sectors(64) });
      assert.equal(deviceHash(inst.device, sectorsAll), final, 'the instant device reads the final state before hydration finishes');
      await inst.hydration!.done;
      assert.equal(deviceHash(instant!.origin, sectorsAll), final, 'the destination holds it all once hydrated');
      assert.match(dmsetup('table', name), / linear /);
      await dm.remove({ name });

      message(dev.name, 'checkpoint');
      dev.remove();
      assert.equal(spawnSync('era_check', [rig!.meta]).status, 0, 'era_check is clean');
      assert.deepEqual(checkData(rig!.origin, model), []);
    });
  });
}
