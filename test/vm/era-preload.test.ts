/**
 * LVM's preload on an era device: a table is loaded into the inactive slot while the live table writes and
 * commits, and its ctr reads the metadata. Found by the lab's torture component (CI, case 292838474:
 * DM_TABLE_LOAD failed with EILSEQ): the ctr read the superblock, and by the time it followed the space map
 * root in it, the live table's later commits had reused those blocks. dmkit-era holds one lock per
 * metadata device that commits and metadata reads share (kmod/include/dmkit-md-guard.h).
 *
 * The test build's knob load_delay_ms holds the ctr between reading the superblock and opening the space
 * map; meanwhile this process writes fresh blocks (each fsync a commit) and checkpoints (each a rollover
 * that frees and reuses metadata blocks). Every load must succeed; at the end the data on the origin, the
 * metadata (era_check, era_invalidate for every era) and a reactivation from it are checked.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { DeviceMapper } from '../../src/dm';
import { Scope } from '../../src/testing';
import {
  checkData, checkMetadata, createEra, EraModel, eraRigs, eraStatus, message, randomBlocks, rng, skipUnless, writeBlocks,
} from '../../src/testing/era-fixtures';
import { sectors } from '../../src/units';

const KNOB = '/sys/module/dmkit_era/parameters/load_delay_ms';
const ORIGIN_MIB = 64;
// Small metadata: the space map's allocation cursor wraps soon, so freed blocks are reused quickly.
const META_MIB = 1;
const BLOCK = 8; // sectors
const ROUNDS = 3;
const DELAY_MS = 8000;

describe('dmkit-era preload', () => {
  const skip = skipUnless('dmkit-era') || (!fs.existsSync(KNOB) && 'a test build of dmkit-era has the load_delay_ms knob');
  let scope: Scope;
  let dm: DeviceMapper;
  beforeEach(() => {
    scope = new Scope();
    dm = DeviceMapper.open();
  });
  afterEach(async () => {
    if (fs.existsSync(KNOB)) fs.writeFileSync(KNOB, '0\n');
    await dm.close();
    scope.close();
  });

  test('an inactive table loaded while the live one commits reads consistent metadata; data and metadata intact', { skip }, async () => {
    const [rig] = eraRigs(scope, 1, ORIGIN_MIB, META_MIB, 'epl');
    const nrBlocks = rig!.originSectors / BLOCK;
    const model = new EraModel(nrBlocks, BLOCK);
    const rand = rng(0x5eed);
    const dev = createEra(scope, 'epl', 'dmkit-era', rig!, BLOCK);
    const line = { start: sectors(0), length: sectors(BigInt(rig!.originSectors)), type: 'dmkit-era', params: `${rig!.meta} ${rig!.origin} ${BLOCK}` };
    const failures: string[] = [];
    let commitsDuringLoads = 0;
    let seed = 1;

    fs.writeFileSync(KNOB, `${DELAY_MS}\n`);
    for (let round = 0; round < ROUNDS; round++) {
      let settled = false;
      const loading = dm.load({ name: dev.name }, [line]).then(
        () => null,
        (e: Error) => e.message,
      ).finally(() => {
        settled = true;
      });
      // While the ctr waits in the knob: first touches (one commit per fsync) and checkpoints.
      while (!settled) {
        const era = eraStatus(dev.name).era;
        writeBlocks(dev.path, model, randomBlocks(rand, nrBlocks, 2), era, seed++);
        if (seed % 2 === 0) message(dev.name, 'checkpoint');
        commitsDuringLoads++;
        await yieldToLoop();
      }
      const error = await loading;
      if (error) failures.push(`round ${round + 1}: loading the inactive table failed: ${error}`);
      else await dm.clear({ name: dev.name });
    }
    fs.writeFileSync(KNOB, '0\n');
    // With the fix the live table's commit waits for the ctr: at least the first batch of each round ran
    // (blocked) during the load. Without it (unfixed build) some 45 commits fitted in each load.
    console.log(`# ${commitsDuringLoads} write batches during the loads`);
    assert.ok(commitsDuringLoads >= ROUNDS, `writes raced every load (${commitsDuringLoads} write batches)`);

    const last = eraStatus(dev.name).era;
    dev.remove();
    assert.deepEqual(failures, [], 'every preload succeeded');
    assert.deepEqual(checkData(rig!.origin, model), [], 'every acknowledged write is on the origin');
    assert.deepEqual(checkMetadata(rig!.meta, model, Array.from({ length: last }, (_, n) => n + 1)), [], 'era_check and era_invalidate agree with the model');

    // The metadata the last table left activates again and keeps counting eras.
    const again = createEra(scope, 'epl2', 'dmkit-era', rig!, BLOCK);
    assert.ok(eraStatus(again.name).era > last, 'reactivated after the last era');
    again.remove();
  });
});
