import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findSplats } from '../../src/lab/splat';

const clean = `[    0.000000] Linux version 6.1.0-56-amd64
[    0.000000] Command line: console=ttyS0 loglevel=5 panic=-1 oops=panic mitigations=off
[    0.412000] kasan: KernelAddressSanitizer initialized (generic)
[    4.200337] dmkit_core: loading out-of-tree module taints kernel.
[    5.100000] device-mapper: ioctl: 4.47.0-ioctl (2022-07-28) initialised: dm-devel@redhat.com`;

test('a clean boot log has no splats', () => {
  assert.deepEqual(findSplats(clean), []);
});

const reports: Array<[string, string]> = [
  ['warning', '[    5.1] WARNING: test'],
  ['warning', '[   12.000001] WARNING: CPU: 1 PID: 77 at drivers/md/dm.c:123 dm_foo+0x1/0x2 [dm_mod]'],
  ['bug', '[    9.9] BUG: KASAN: slab-out-of-bounds in era_ctr+0x12/0x40'],
  ['bug', '[    9.9] BUG: sleeping function called from invalid context at mm/slab.h:1'],
  ['bug', '[    9.9] kernel BUG at drivers/md/persistent-data/dm-btree.c:42!'],
  ['oops', '[    9.9] Oops: 0000 [#1] PREEMPT SMP NOPTI'],
  ['oops', '[    9.9] general protection fault, probably for non-canonical address 0xdead: 0000 [#1]'],
  ['ubsan', '[    9.9] UBSAN: array-index-out-of-bounds in drivers/md/dm-era-target.c:1'],
  ['lockdep', '[    9.9] ======================================================\n[ 9.9] possible circular locking dependency detected'],
  ['lockdep', '[    9.9] inconsistent lock state'],
  ['hung-task', '[  130.0] INFO: task kworker/0:1:42 blocked for more than 120 seconds.'],
  ['corruption', '[    9.9] list_add corruption. prev->next should be next'],
  ['panic', '[    9.9] Kernel panic - not syncing: Fatal exception'],
  ['kmemleak', '[    9.9] kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)'],
];

for (const [kind, line] of reports) {
  test(`detects ${kind}: ${line.split('\n').at(-1)!.slice(0, 50)}`, () => {
    const found = findSplats(`${clean}\n${line}\n`);
    assert.ok(found.length >= 1, 'expected a splat');
    assert.ok(found.some((s) => s.kind === kind), `expected kind ${kind}, got ${found.map((s) => s.kind).join(',')}`);
  });
}

test('splats carry their line number and text without the timestamp', () => {
  const [s] = findSplats('a\nb\n[    5.100000] WARNING: test\n');
  assert.deepEqual(s, { line: 3, kind: 'warning', text: 'WARNING: test' });
});
