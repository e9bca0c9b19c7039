/**
 * The lab's torture component at the reduced scale of the debug-kernel stage (KASAN, lockdep and the
 * hung-task detector catch what the data checks miss). On the Debian kernel `npm test` runs it at CI scale
 * inside the lab stage instead, so here it runs on the debug kernel only (or with DMKIT_TORTURE=1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { runTorture } from '../../src/lab/faultlab/torture';
import type { Failure } from '../../src/lab/faultlab/types';

const debugKernel = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').includes('dmdebug');
const skip = debugKernel || process.env['DMKIT_TORTURE'] === '1' ? false : 'runs in the lab stage on this kernel (npm run lab -- --only torture)';

test('torture: suspend/resume, preload, reload, messages and removal under IO leave every target consistent', { skip }, async () => {
  const failures: Failure[] = [];
  const got = await runTorture(
    {
      scale: 'ci',
      seed: 1,
      release: os.release(),
      reverts: [],
      log: (l) => console.log(`# ${l}`),
      fail: (f) => failures.push(f),
      // dmkit's own targets: KASAN and lockdep look at our code; the in-tree ones run in the lab stage.
      wants: (t) => t.startsWith('dmkit-'),
    },
    'debug',
  );
  console.log(`# ${JSON.stringify(got)}`);
  assert.deepEqual(failures.map((f) => `${f.target} case ${f.seed}: ${f.detail}`), []);
  assert.ok((got.suspend_cycles ?? 0) > 0, 'some target ran');
});
