/**
 * P1: era's cost on the write path. fio writes (libaio, O_DIRECT) to `linear`, the in-tree `era` and
 * `dmkit-era` over the same prefilled brd origin (the era metadata on a second brd ramdisk), with era
 * block sizes of 4 KiB and 64 KiB. Each sample creates the device, sends `checkpoint`, then replays
 *   first touch: one pass that writes every era block of the table once, in random order, so every write
 *               is the first to its block since the checkpoint (for era the one that waits for a commit);
 *   marked:     a second pass over the same offsets (every block already marked: no metadata work).
 * Workloads: 4 KiB random writes at queue depth 16 (one 4 KiB write at a random offset inside each era
 * block; IOPS), the same at queue depth 1 (p50/p99 completion latency per write), and 64 KiB sequential
 * writes at queue depth 16 (MB/s). The offsets are fixed in a fio replay log, so every contender replays
 * exactly the same writes. Contenders rotate their order round by round; every figure is a median over
 * the rounds, and the ratios are ratios of medians. `linear` runs the 4 KiB-block offsets.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceMapper } from '../dm';
import { era } from '../targets';
import { prng, ramdisks, Scope, sh, writeFioIolog, zero } from '../testing';
import { bytes, sectors } from '../units';
import { median, round } from './stats';

export interface P1Options {
  rounds: number;
  /** 4 KiB random writes per pass at queue depth 16 (= era blocks in the table). */
  ios: number;
  /** The same at queue depth 1. */
  ios1: number;
  /** MiB written per pass by the 64 KiB sequential workload. */
  seqMib: number;
  /** Only the headline samples (4 KiB writes at queue depth 16 on linear and both eras with 4 KiB blocks). */
  quick?: boolean;
}

const NAME = 'p1-bench';
const KIB = 1024;

type Kind = 'linear' | 'era' | 'dmkit-era';
interface Contender {
  kind: Kind;
  /** Era block size in bytes (linear: the offsets of the 4 KiB-block case). */
  blockBytes: number;
  label: string;
}

const CONTENDERS: readonly Contender[] = [
  { kind: 'linear', blockBytes: 4 * KIB, label: 'linear' },
  { kind: 'era', blockBytes: 4 * KIB, label: 'era_4k' },
  { kind: 'dmkit-era', blockBytes: 4 * KIB, label: 'dmkit_4k' },
  { kind: 'era', blockBytes: 64 * KIB, label: 'era_64k' },
  { kind: 'dmkit-era', blockBytes: 64 * KIB, label: 'dmkit_64k' },
];

interface Workload {
  label: string;
  iodepth: number;
  /** Writes per pass and their offsets for one era block size. */
  offsets: (blockBytes: number) => { offsets: number[]; ioBytes: number; tableBytes: number };
}

interface Sample {
  iops: number;
  mbps: number;
  p50us: number;
  p99us: number;
}

function shuffle(values: number[], rand: () => number): number[] {
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [values[i], values[j]] = [values[j]!, values[i]!];
  }
  return values;
}

/** Replays `log` on `dev` twice in one fio run (first touch, then marked; fio starts slowly under TCG). */
function fioPasses(log: string, dev: string, iodepth: number): { first: Sample; marked: Sample } {
  const out = execFileSync(
    'fio',
    [`--replay_redirect=${dev}`, '--replay_no_stall=1', '--ioengine=libaio', `--iodepth=${iodepth}`, '--direct=1', '--output-format=json',
      '--name=first', `--read_iolog=${log}`, '--name=marked', '--stonewall', `--read_iolog=${log}`],
    { encoding: 'utf8', maxBuffer: 16 << 20, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  type Job = { jobname: string; error: number; write: { iops: number; bw_bytes: number; total_ios: number; clat_ns: { percentile: Record<string, number> } } };
  const jobs = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Job[] }).jobs;
  const pass = (name: string): Sample => {
    const job = jobs.find((j) => j.jobname === name);
    if (!job || job.error) throw new Error(`fio failed on ${dev} (${name}): error ${job?.error ?? 'no job'}`);
    const w = job.write;
    return {
      iops: w.iops,
      mbps: w.bw_bytes / 1e6,
      p50us: (w.clat_ns.percentile['50.000000'] ?? NaN) / 1000,
      p99us: (w.clat_ns.percentile['99.000000'] ?? NaN) / 1000,
    };
  };
  return { first: pass('first'), marked: pass('marked') };
}

export async function runP1(opts: P1Options): Promise<Record<string, unknown>> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-p1-'));
  try {
    for (const m of ['dm-era', 'dmkit-era']) sh('modprobe', m);
    const rand = prng(0x9e1);

    // One write per era block, at a random 4 KiB slot inside it, blocks in random order.
    const randomWrites = (count: number) => (blockBytes: number) => {
      const slots = blockBytes / (4 * KIB);
      const offsets = shuffle(Array.from({ length: count }, (_, b) => b * blockBytes + Math.floor(rand() * slots) * 4 * KIB), rand);
      return { offsets, ioBytes: 4 * KIB, tableBytes: count * blockBytes };
    };
    const seqBytes = opts.seqMib << 20;
    const workloads: Workload[] = [
      { label: 'rand4k_qd16', iodepth: 16, offsets: randomWrites(opts.ios) },
      { label: 'rand4k_qd1', iodepth: 1, offsets: randomWrites(opts.ios1) },
      {
        label: 'seq64k_qd16',
        iodepth: 16,
        offsets: () => ({ offsets: Array.from({ length: seqBytes / (64 * KIB) }, (_, i) => i * 64 * KIB), ioBytes: 64 * KIB, tableBytes: seqBytes }),
      },
    ];

    // The largest table decides the ramdisk size; brd gives both disks that size.
    const logs = new Map<string, { file: string; tableBytes: number }>();
    let diskBytes = 0;
    for (const w of workloads) {
      for (const blockBytes of [4 * KIB, 64 * KIB]) {
        const { offsets, ioBytes, tableBytes } = w.offsets(blockBytes);
        const file = path.join(dir, `${w.label}-${blockBytes}.log`);
        writeFioIolog(file, '/dev/p1', offsets, ioBytes);
        logs.set(`${w.label}/${blockBytes}`, { file, tableBytes });
        diskBytes = Math.max(diskBytes, tableBytes);
      }
    }
    const mib = Math.ceil(diskBytes / (1 << 20));
    const [origin, meta] = ramdisks(scope, 2, bytes(BigInt(mib) << 20n));
    // Prefill with an explicit count: brd allocates its pages on first write, which must not be timed.
    for (const d of [origin!, meta!]) sh('dd', 'if=/dev/zero', `of=${d.path}`, 'bs=1M', `count=${mib}`, 'oflag=direct', 'status=none');

    const id = { name: NAME };
    const sample = async (c: Contender, w: Workload): Promise<{ first: Sample; marked: Sample }> => {
      const { file, tableBytes } = logs.get(`${w.label}/${c.blockBytes}`)!;
      const length = sectors(BigInt(tableBytes / 512));
      const line =
        c.kind === 'linear'
          ? { start: sectors(0), length, type: 'linear', params: `${origin!.path} 0` }
          : era.line(
              { metadataDevice: meta!.path, originDevice: origin!.path, blockSize: sectors(BigInt(c.blockBytes / 512)) },
              { start: sectors(0), length, type: c.kind },
            );
      if (c.kind !== 'linear') zero(meta!.path, bytes(4096));
      await dm.create(NAME, { targets: [line] });
      try {
        if (c.kind !== 'linear') await dm.message(id, undefined, 'checkpoint');
        const dev = dm.devicePath(NAME);
        return fioPasses(file, dev, w.iodepth);
      } finally {
        await dm.remove(id, { retry: true });
      }
    };

    const contenders = opts.quick ? CONTENDERS.filter((c) => c.blockBytes === 4 * KIB) : CONTENDERS;
    if (opts.quick) workloads.splice(1);
    // Warm-up: page in fio and both era modules' paths.
    for (const c of contenders) await sample(c, workloads[0]!);

    const results = new Map<string, { first: Sample[]; marked: Sample[] }>();
    const t0 = Date.now();
    for (let r = 0; r < opts.rounds; r++) {
      console.error(`P1: round ${r + 1}/${opts.rounds} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      for (const w of workloads) {
        const order = contenders.map((_, i) => contenders[(i + r) % contenders.length]!);
        if (r % 2) order.reverse();
        for (const c of order) {
          const s = await sample(c, w);
          if (r === 0) console.error(`P1:   ${w.label} ${c.label}: first ${s.first.iops.toFixed(0)} IOPS, marked ${s.marked.iops.toFixed(0)} IOPS`);
          const key = `${w.label}/${c.label}`;
          const acc = results.get(key) ?? { first: [], marked: [] };
          acc.first.push(s.first);
          acc.marked.push(s.marked);
          results.set(key, acc);
        }
      }
    }

    const med = (w: string, c: string, pass: 'first' | 'marked', f: keyof Sample): number => {
      const got = results.get(`${w}/${c}`);
      return got ? median(got[pass].map((s) => s[f])) : NaN;
    };
    const figures: Record<string, number> = {};
    for (const w of workloads) {
      for (const c of contenders) {
        for (const pass of ['first', 'marked'] as const) {
          const k = `${w.label}_${c.label}_${pass}`;
          if (w.iodepth === 1) {
            figures[`${k}_p50_us`] = round(med(w.label, c.label, pass, 'p50us'), 1);
            figures[`${k}_p99_us`] = round(med(w.label, c.label, pass, 'p99us'), 1);
          } else if (w.label.startsWith('seq')) figures[`${k}_mb_s`] = round(med(w.label, c.label, pass, 'mbps'), 1);
          else figures[`${k}_iops`] = round(med(w.label, c.label, pass, 'iops'), 0);
        }
      }
    }
    const ratio = (a: number, b: number): number => round(a / b, 3);
    const iops = (c: string, pass: 'first' | 'marked'): number => med('rand4k_qd16', c, pass, 'iops');
    const mbps = (c: string, pass: 'first' | 'marked'): number => med('seq64k_qd16', c, pass, 'mbps');
    const lat = (c: string, pass: 'first' | 'marked', f: 'p50us' | 'p99us'): number => med('rand4k_qd1', c, pass, f);
    return {
      bench: 'P1',
      first_touch_vs_intree: ratio(iops('dmkit_4k', 'first'), iops('era_4k', 'first')),
      marked_vs_linear: ratio(iops('dmkit_4k', 'marked'), iops('linear', 'marked')),
      first_touch_vs_intree_64k: ratio(iops('dmkit_64k', 'first'), iops('era_64k', 'first')),
      marked_vs_linear_64k: ratio(iops('dmkit_64k', 'marked'), iops('linear', 'marked')),
      intree_first_touch_vs_linear: ratio(iops('era_4k', 'first'), iops('linear', 'marked')),
      intree_marked_vs_linear: ratio(iops('era_4k', 'marked'), iops('linear', 'marked')),
      qd1_first_p50_vs_intree: ratio(lat('dmkit_4k', 'first', 'p50us'), lat('era_4k', 'first', 'p50us')),
      qd1_first_p99_vs_intree: ratio(lat('dmkit_4k', 'first', 'p99us'), lat('era_4k', 'first', 'p99us')),
      seq64k_first_touch_vs_intree: ratio(mbps('dmkit_4k', 'first'), mbps('era_4k', 'first')),
      seq64k_first_touch_vs_intree_64k: ratio(mbps('dmkit_64k', 'first'), mbps('era_64k', 'first')),
      seq64k_marked_vs_linear: ratio(mbps('dmkit_4k', 'marked'), mbps('linear', 'marked')),
      rounds: opts.rounds,
      ios_qd16: opts.ios,
      ios_qd1: opts.ios1,
      seq_mib: opts.seqMib,
      ramdisk_mib: mib,
      ...figures,
    };
  } finally {
    await dm.remove({ name: NAME }).catch(() => undefined);
    await dm.close();
    fs.rmSync(dir, { recursive: true, force: true });
    scope.close();
  }
}
