/**
 * dmkit-era when its metadata device runs out of space: the era array of a large origin fills most of a
 * 1 MiB metadata device, digestion is held back (test knob digest_step_delay_ms), and every era writes a
 * few blocks and checkpoints until the metadata is full. The target must stop cleanly: one clear log
 * line, fail mode (a refused checkpoint or a failed write to an unmarked block), no oops, no leaked
 * buffer when the table goes (dm-bufio's BUG_ON), every write acknowledged before that on the origin
 * and in the last committed metadata (era_check, era_invalidate for each era), and the device can be
 * activated again from that metadata. The last era's writeset is not archived once the metadata is
 * full (nothing may change any more), so the committed state is checked with era_check and our reader,
 * which counts the superblock's current writeset (era_invalidate looks at archived writesets only).
 *
 * Found by the lab's torture component: 6.1's dm-array leaves the array block it shadowed locked when
 * re-inserting it fails (shadow_ablock -> __reinsert_ablock, -ENOSPC), and the table's destructor then
 * hits the BUG_ON in dm_bufio_client_destroy. dmkit-era keeps a reserve of metadata blocks and goes to
 * fail mode before the library can run out. The in-tree era has no reserve: it is not run here, as the
 * BUG would stop the whole VM run.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { eraWrittenBlocks, readEraMetadata } from '../../src/pdata/reader';
import { readDirect, Scope } from '../../src/testing';
import { dmsetup, kernelLogMark } from '../../src/testing/dmsetup';
import {
  checkData, createEra, EraModel, eraRigs, eraStatus, failingMessage, rng, skipUnless, targetLogLines, writeBlocks,
} from '../../src/testing/era-fixtures';

const KNOB = '/sys/module/dmkit_era/parameters/digest_step_delay_ms';
const ORIGIN_MIB = 700; // 179,200 blocks of 4 KiB: the era array takes most of the metadata device
const META_MIB = 1;
const BLOCK = 8; // sectors
const MAX_ERAS = 120;

describe('dmkit-era metadata full', () => {
  const skip = skipUnless('dmkit-era') || (!fs.existsSync(KNOB) && 'a test build of dmkit-era has the digest_step_delay_ms knob');
  let scope: Scope;
  beforeEach(() => {
    scope = new Scope();
  });
  afterEach(() => {
    if (fs.existsSync(KNOB)) fs.writeFileSync(KNOB, '0\n');
    scope.close();
  });

  for (const round of [0]) {
    test(`metadata full (round ${round}): fail mode with one log line, no oops, acknowledged writes kept, reactivates`, { skip }, () => {
      const [rig] = eraRigs(scope, 1, ORIGIN_MIB, META_MIB, 'emf');
      const nrBlocks = rig!.originSectors / BLOCK;
      const model = new EraModel(nrBlocks, BLOCK);
      const rand = rng(700 + round);
      const mark = kernelLogMark();
      fs.writeFileSync(KNOB, '20\n'); // a digest step every 20 ms or slower: archived eras pile up
      const dev = createEra(scope, 'emf', 'dmkit-era', rig!, BLOCK);

      assert.ok(eraStatus(dev.name).era >= 1, 'the device started its first era: the test leaves enough metadata for that');
      let stoppedBy = '';
      for (let i = 0; i < MAX_ERAS && !stoppedBy; i++) {
        const era = eraStatus(dev.name).era;
        // Round r writes 1 + r blocks per era, spread over the origin.
        for (let k = 0; k <= round && !stoppedBy; k++) {
          const block = Math.floor(rand() * nrBlocks);
          try {
            writeBlocks(dev.path, model, [block], era, 10_000 * round + 10 * i + k);
          } catch (e) {
            stoppedBy = `write of block ${block} in era ${era}: ${(e as Error).message}`;
          }
        }
        if (stoppedBy) break;
        const m = failingMessage(dev.name, 'checkpoint');
        if (m.status !== 0) stoppedBy = `checkpoint in era ${era}: ${m.stderr.trim()}`;
      }
      assert.ok(stoppedBy, `the metadata never filled in ${MAX_ERAS} eras (status ${dmsetup('status', dev.name).trim()})`);
      const logged = targetLogLines(mark, 'dmkit-era');
      assert.ok(logged.some((l) => /metadata space|ENOSPC|-28/.test(l)), `a log line names the full metadata: ${logged.join(' | ')}`);
      fs.writeFileSync(KNOB, '0\n');
      dev.remove(); // a block left locked would BUG here (the VM run fails on the splat)

      assert.deepEqual(checkData(rig!.origin, model), [], 'every acknowledged write is on the origin');
      const check = spawnSync('era_check', [rig!.meta], { encoding: 'utf8' });
      assert.equal(check.status, 0, `era_check on the last committed metadata: ${check.stdout}${check.stderr}`);
      const tracked = eraWrittenBlocks(readEraMetadata(readDirect(rig!.meta, 0n, BigInt(META_MIB) << 20n)));
      const missing = [...model.history.keys()].filter((b) => !tracked.has(b));
      assert.deepEqual(missing, [], `every acknowledged write is recorded in the committed metadata (stopped by: ${stoppedBy})`);

      const again = createEra(scope, 'emf-again', 'dmkit-era', rig!, BLOCK);
      again.remove();
      assert.equal(dmsetup('info', '-c', '--noheadings', '-o', 'name').split('\n').filter((l) => l.startsWith('emf')).length, 1, 'only the metadata slice is left');
    });
  }
});
