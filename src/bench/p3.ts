/**
 * P3: what snapshots cost origin writes. fio (libaio, O_DIRECT, queue depth 16) writes to a volume over a
 * prefilled brd origin, every write the first to its chunk since the snapshots were taken, so each one
 * copies the chunk's old data into every snapshot's COW before it proceeds:
 *   4k:  4 KiB random writes with 4 KiB chunks (every chunk of the area once, random order; IOPS)
 *   64k: 64 KiB sequential writes with 64 KiB chunks (MB/s)
 * Contenders: the bare volume (linear, no snapshot), the in-tree targets (snapshot-origin + snapshot) and
 * dmkit's (dmkit-origin + dmkit-snapshot), each with 1 and 4 persistent snapshots on prefilled ramdisks of
 * their own. Each sample builds the volume and its snapshots through the API's createSnapshot (COW headers
 * zeroed first), runs one fio pass and tears everything down. Contenders rotate order round by round;
 * figures are medians over rounds, ratios are ratios of medians.
 *
 * Headline: origin_write_{1,4}snap_vs_intree = dmkit / in-tree, the geometric mean of the 4k IOPS ratio
 * and the 64k MB/s ratio (both are also reported on their own).
 */
import { execFileSync } from 'node:child_process';
import { DeviceMapper } from '../dm';
import { linear } from '../targets';
import { ramdisks, Scope, sh, zero } from '../testing';
import { bytes, sectors } from '../units';
import { createSnapshot, removeSnapshot, type SnapshotFamily } from '../workflows';
import { median, round } from './stats';

export interface P3Options {
  rounds: number;
  /** MiB written per 4k pass (4 KiB writes) and per 64k pass (64 KiB writes). */
  mib4k: number;
  mib64k: number;
}

const VOL = 'p3-vol';
const KIB = 1024;

interface Contender {
  label: string;
  family: SnapshotFamily | 'bare';
  snaps: number;
}

const CONTENDERS: readonly Contender[] = [
  { label: 'bare', family: 'bare', snaps: 0 },
  { label: 'intree_1snap', family: 'in-tree', snaps: 1 },
  { label: 'dmkit_1snap', family: 'dmkit', snaps: 1 },
  { label: 'intree_4snap', family: 'in-tree', snaps: 4 },
  { label: 'dmkit_4snap', family: 'dmkit', snaps: 4 },
];

interface Workload {
  label: '4k' | '64k';
  bs: number;
  rw: 'randwrite' | 'write';
  bytes: number;
}

interface Sample {
  iops: number;
  mbps: number;
}

function fioPass(dev: string, w: Workload): Sample {
  const out = execFileSync(
    'fio',
    ['--name=p3', `--filename=${dev}`, `--rw=${w.rw}`, `--bs=${w.bs}`, `--size=${w.bytes}`, '--ioengine=libaio', '--iodepth=16', '--direct=1',
      '--randrepeat=1', '--output-format=json'],
    { encoding: 'utf8', maxBuffer: 16 << 20, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ error: number; write: { iops: number; bw_bytes: number; io_bytes: number } }> }).jobs[0];
  if (!job || job.error) throw new Error(`fio failed on ${dev}: error ${job?.error ?? 'no job'}`);
  if (job.write.io_bytes !== w.bytes) throw new Error(`fio wrote ${job.write.io_bytes} of ${w.bytes} bytes on ${dev}`);
  return { iops: job.write.iops, mbps: job.write.bw_bytes / 1e6 };
}

export async function runP3(opts: P3Options): Promise<Record<string, unknown>> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  const snapNames: string[] = [];
  try {
    sh('modprobe', 'dm-snapshot');
    let contenders = CONTENDERS;
    let note: string | undefined;
    try {
      sh('modprobe', 'dmkit-snapshot');
    } catch {
      // Without dmkit's module the in-tree figures still come out; the headline ratios are null.
      contenders = CONTENDERS.filter((c) => c.family !== 'dmkit');
      note = 'dmkit-snapshot is not available: in-tree and bare only';
      console.error(`P3: ${note}`);
    }
    const workloads: Workload[] = [
      { label: '4k', bs: 4 * KIB, rw: 'randwrite', bytes: opts.mib4k << 20 },
      { label: '64k', bs: 64 * KIB, rw: 'write', bytes: opts.mib64k << 20 },
    ];
    const areaBytes = Math.max(...workloads.map((w) => w.bytes));
    // A COW holds every chunk written plus its exception areas (one per 256 chunks at 4 KiB): 1.25x is ample.
    const mib = Math.ceil((areaBytes * 1.25) / (1 << 20)) + 1;
    const disks = ramdisks(scope, 5, bytes(BigInt(mib) << 20n));
    // Prefill with an explicit count: brd allocates its pages on first write, which must not be timed.
    for (const d of disks) sh('dd', 'if=/dev/zero', `of=${d.path}`, 'bs=1M', `count=${mib}`, 'oflag=direct', 'status=none');
    const [origin, ...cows] = disks.map((d) => d.path) as [string, ...string[]];
    const length = sectors(BigInt(areaBytes / 512));

    const sample = async (c: Contender, w: Workload): Promise<Sample> => {
      await dm.create(VOL, { targets: [linear.line({ device: origin, offset: sectors(0) }, { start: sectors(0), length, type: 'linear' })] });
      try {
        for (let i = 0; i < c.snaps; i++) {
          zero(cows[i]!, bytes(64 * KIB));
          const r = await createSnapshot(dm, { origin: VOL, name: `p3-snap${i}`, cow: cows[i]!, chunkSize: sectors(w.bs / 512), store: 'P', family: c.family as SnapshotFamily });
          snapNames.push(r.name);
        }
        return fioPass(dm.devicePath(VOL), w);
      } finally {
        while (snapNames.length) await removeSnapshot(dm, snapNames.pop()!);
        await dm.remove({ name: VOL }, { retry: true });
      }
    };

    // Warm-up: page in fio and both families' code paths.
    for (const c of contenders) await sample(c, workloads[0]!);
    const results = new Map<string, Sample[]>();
    const t0 = Date.now();
    for (let r = 0; r < opts.rounds; r++) {
      console.error(`P3: round ${r + 1}/${opts.rounds} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      for (const w of workloads) {
        const order = contenders.map((_, i) => contenders[(i + r) % contenders.length]!);
        if (r % 2) order.reverse();
        for (const c of order) {
          const s = await sample(c, w);
          if (r === 0) console.error(`P3:   ${w.label} ${c.label}: ${s.iops.toFixed(0)} IOPS, ${s.mbps.toFixed(1)} MB/s`);
          const key = `${w.label}/${c.label}`;
          results.set(key, [...(results.get(key) ?? []), s]);
        }
      }
    }
    const med = (w: string, c: string, f: keyof Sample): number => {
      const got = results.get(`${w}/${c}`);
      return got ? median(got.map((s) => s[f])) : NaN;
    };
    const figures: Record<string, number> = {};
    for (const c of contenders) {
      figures[`${c.label}_4k_iops`] = round(med('4k', c.label, 'iops'), 0);
      figures[`${c.label}_64k_mb_s`] = round(med('64k', c.label, 'mbps'), 1);
    }
    const r4k = (a: string, b: string): number => med('4k', a, 'iops') / med('4k', b, 'iops');
    const r64k = (a: string, b: string): number => med('64k', a, 'mbps') / med('64k', b, 'mbps');
    const both = (a: string, b: string): number | null => {
      const v = Math.sqrt(r4k(a, b) * r64k(a, b));
      return Number.isFinite(v) ? round(v, 3) : null;
    };
    const one = (v: number): number | null => (Number.isFinite(v) ? round(v, 3) : null);
    return {
      bench: 'P3',
      origin_write_1snap_vs_intree: both('dmkit_1snap', 'intree_1snap'),
      origin_write_4snap_vs_intree: both('dmkit_4snap', 'intree_4snap'),
      origin_write_1snap_vs_intree_4k: one(r4k('dmkit_1snap', 'intree_1snap')),
      origin_write_1snap_vs_intree_64k: one(r64k('dmkit_1snap', 'intree_1snap')),
      origin_write_4snap_vs_intree_4k: one(r4k('dmkit_4snap', 'intree_4snap')),
      origin_write_4snap_vs_intree_64k: one(r64k('dmkit_4snap', 'intree_4snap')),
      dmkit_1snap_vs_bare: both('dmkit_1snap', 'bare'),
      intree_1snap_vs_bare: both('intree_1snap', 'bare'),
      dmkit_4snap_vs_bare: both('dmkit_4snap', 'bare'),
      intree_4snap_vs_bare: both('intree_4snap', 'bare'),
      rounds: opts.rounds,
      mib_4k: opts.mib4k,
      mib_64k: opts.mib64k,
      ramdisk_mib: mib,
      ...(note === undefined ? {} : { note }),
      ...figures,
    };
  } finally {
    for (const n of snapNames) await dm.remove({ name: n }, { retry: true }).catch(() => undefined);
    await dm.remove({ name: VOL }).catch(() => undefined);
    await dm.remove({ name: `${VOL}-real` }).catch(() => undefined);
    await dm.close();
    scope.close();
  }
}
