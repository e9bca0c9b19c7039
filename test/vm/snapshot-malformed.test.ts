/**
 * Malformed table lines and damaged COW headers, per family: every one is refused with EINVAL and a kernel
 * log line, nothing is left behind, and a live origin with a snapshot carries on with its data intact.
 * (The lab lets no oops, WARN or KASAN line through.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../src/dm';
import { formatCow } from '../../src/pdata/snapshot-cow';
import { writeDirect } from '../../src/testing';
import { kernelLogMark, kernelLogSince } from '../../src/testing/dmsetup';
import { sectors } from '../../src/units';
import { SNAPSHOT_TYPES } from '../../src/workflows';
import { describeFamilies, MiB, SnapRig } from './snapshot-lib';
import type { SnapshotFamily } from '../../src/workflows';

const LENGTH = sectors(8192n);
const dm = DeviceMapper.open();
after(() => dm.close());

/** Lines for each role, `O` the origin, `C` the COW; each must be refused. */
function badLines(family: SnapshotFamily, O: string, C: string): Array<[role: 'origin' | 'snapshot' | 'merge', params: string]> {
  return [
    ['origin', ''],
    ['origin', `${O} ${C}`],
    ['origin', '/dev/nonexistent'],
    ['snapshot', ''],
    ['snapshot', `${O} ${C} P`],
    ['snapshot', `${O} ${C} X 8`],
    ['snapshot', `${O} ${C} P 3`],
    ['snapshot', `${O} ${C} P 4294967296`],
    ['snapshot', `${O} ${C} P -8`],
    ['snapshot', `${O} ${C} P eight`],
    ['snapshot', `${O} ${C} N 0`],
    ['snapshot', `${O} ${C} P 8 1`],
    ['snapshot', `${O} ${C} P 8 3 discard_zeroes_cow discard_passdown_origin x`],
    ['snapshot', `${O} ${C} P 8 1 discard_everything`],
    ['snapshot', `${O} ${C} P 8 1 discard_passdown_origin`],
    ['snapshot', `${O} /dev/nonexistent P 8`],
    ['snapshot', `${O} ${C} P ${'9'.repeat(400)}`],
    ['merge', `${O} ${C} N 8`],
    ['merge', `${O} ${C}`],
    // A feature count past 32 bits: the in-tree parser (dm_read_arg's sscanf "%u") wraps it to 1 and takes
    // the line; dmkit refuses it.
    ...(family === 'dmkit' ? [['snapshot', `${O} ${C} P 8 4294967297 discard_zeroes_cow`] as ['snapshot', string]] : []),
  ];
}

describeFamilies(
  dm,
  'snapshot malformed input',
  (c) => {
    const { family } = c;

    test('malformed tables and damaged COW headers are EINVAL with a log line; the live devices are untouched', async (t) => {
      if (c.skip) return t.skip(c.skip);
      const { scope } = c;
      const [originDev, cowLive, cowBad] = c.disks(3, 8n * MiB) as [string, string, string];
      const rig = await new SnapRig(dm, scope, 'mf', family, originDev, LENGTH, sectors(8), 7).open();
      const live = await rig.take(cowLive);
      rig.writeOrigin(0n, 64n, 8);
      const types = SNAPSHOT_TYPES[family];
      const refused: string[] = [];
      const tryLine = async (type: string, params: string, what: string, codes: readonly string[] = ['EINVAL']): Promise<void> => {
        const mark = kernelLogMark();
        try {
          await dm.create('mf-bad', { targets: [{ start: sectors(0), length: LENGTH, type, params }] });
        } catch (e) {
          assert.ok(e instanceof DmError, `${what}: ${String(e)}`);
          assert.ok(codes.includes(e.code), `${what}: refused with ${e.code}, want ${codes.join(' or ')}`);
          const log = kernelLogSince(mark).filter((l) => /device-mapper: table:|snapshot|origin|merge/i.test(l));
          assert.ok(log.length >= 1, `${what}: a kernel log line says why`);
          refused.push(what);
          return;
        }
        await dm.remove({ name: 'mf-bad' }, { retry: true });
        assert.fail(`${what}: accepted`);
      };
      const O = originDev;
      for (const [role, params] of badLines(family, O, cowBad)) {
        const type = role === 'origin' ? types.origin : role === 'snapshot' ? types.snapshot : types.merge;
        // A path that does not exist is dm_get_device's ENODEV; every other refusal is EINVAL.
        const codes = params.includes('/dev/nonexistent') ? ['EINVAL', 'ENODEV', 'ENXIO', 'ENOENT'] : ['EINVAL'];
        await tryLine(type, params, `${type} "${params.slice(0, 60)}"`, codes);
      }
      // The COW device is the origin.
      await tryLine(types.snapshot, `${O} ${O} P 8`, 'the COW is the origin');

      // Damaged headers on an otherwise well-formed table: wrong magic, version 2, chunk size 0, not a power of 2.
      const damaged: Array<[string, (b: Buffer) => void]> = [
        ['magic', (b) => b.writeUInt32LE(0xdeadbeef, 0)],
        ['version 2', (b) => b.writeUInt32LE(2, 8)],
        ['chunk size 0', (b) => b.writeUInt32LE(0, 12)],
        ['chunk size 24', (b) => b.writeUInt32LE(24, 12)],
      ];
      for (const [what, mutate] of damaged) {
        const img = formatCow(sectors(8), 1 << 20, []);
        mutate(img);
        writeDirect(cowBad, 0n, img.subarray(0, 65536));
        // The in-tree store answers a wrong magic with ENXIO ("Invalid or corrupt snapshot").
        await tryLine(types.snapshot, `${O} ${cowBad} P 8`, `a COW header with ${what}`, ['EINVAL', 'ENXIO']);
      }

      t.diagnostic(`${refused.length} refusals`);
      assert.equal(fs.existsSync('/dev/mapper/mf-bad'), false);
      assert.deepEqual((await dm.list()).filter((d) => d.name === 'mf-bad'), []);
      // The live origin and snapshot carry on.
      rig.writeOrigin(128n, 64n, 9);
      rig.verifyData('after the refusals');
      await rig.verifyCow(live, 'after the refusals');
    });
  },
);
