/**
 * P7: copying the changed blocks of an era device with the copy engine vs a sequential read of as many
 * bytes of the same device (fio, O_DIRECT, libaio, 1 MiB requests, queue depth 16).
 *
 * Setup (VM): three prefilled brd ramdisks (origin, era metadata, copy destination), a dmkit-era device
 * (the in-tree era when dmkit-era is not loaded) with 64 KiB blocks over the origin. After a checkpoint,
 * `fraction` of the blocks are written in runs of 1..32 blocks at random places (a realistic scattered
 * set), then changedSince lists them through a metadata snapshot. Contenders, in alternating order
 * round by round:
 *  - copy (default): copyRanges with the engine's defaults (io_uring, one ring per online CPU, each on its
 *    own thread) of the changed ranges from the era device to the destination ramdisk at the same offsets
 *    (O_DIRECT, 1 MiB chunks, 16 in flight in all), wall clock including the final fsync. brd copies inside
 *    submit_bio, so each ring's thread does its share of the copying;
 *  - copy (io_uring-1ring): the same with one ring (the engine before it had several): one CPU does it all;
 *  - copy (threads): the same with the thread-pool engine;
 *  - fio: a sequential O_DIRECT read of the same byte count from the era device (fio's own bandwidth).
 * copy_vs_seq_read = copy MB/s / sequential read MB/s (medians over rounds). Every copy is checked: the
 * destination's changed ranges hash the same as the origin's.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { DeviceMapper } from '../dm';
import { Scope, sh } from '../testing';
import { createDevice, dmsetup } from '../testing/dmsetup';
import { prng } from '../testing/random';
import { bytes } from '../units';
import { changedSince, copyRanges, loadCopyBinding, rangesIn, type CopyOptions, type CopyRange } from '../workflows';
import { median, round } from './stats';

export interface P7Options {
  rounds: number;
  /** Origin size in MiB. */
  mib: number;
  /** Percent of the blocks written (and copied). */
  percent: number;
}

const NAME = 'p7-era';
const BLOCK_SECTORS = 128; // 64 KiB era blocks
const BLOCK = BLOCK_SECTORS * 512;

function fioRead(dev: string, bytesToRead: bigint): number {
  const size = (bytesToRead >> 20n) << 20n; // whole 1 MiB requests (fio rounds a partial one up)
  const out = execFileSync(
    'fio',
    ['--name=p7', `--filename=${dev}`, '--rw=read', '--bs=1M', `--size=${size}`, '--ioengine=libaio', '--iodepth=16', '--direct=1', '--output-format=json'],
    { encoding: 'utf8', maxBuffer: 16 << 20, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ error: number; read: { bw_bytes: number; io_bytes: number } }> }).jobs[0];
  if (!job || job.error) throw new Error(`fio failed on ${dev}: error ${job?.error ?? 'no job'}`);
  if (BigInt(job.read.io_bytes) !== size) throw new Error(`fio read ${job.read.io_bytes} of ${size} bytes`);
  return job.read.bw_bytes / 1e6;
}

function hashRanges(dev: string, ranges: readonly CopyRange[]): string {
  const h = createHash('sha256');
  const fd = fs.openSync(dev, 'r');
  try {
    for (const r of ranges) {
      const b = Buffer.alloc(Number(r.length));
      fs.readSync(fd, b, 0, b.length, Number(r.source));
      h.update(b);
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export async function runP7(o: P7Options): Promise<Record<string, unknown>> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  try {
    let type = 'dmkit-era';
    try {
      sh('modprobe', 'dmkit-era');
    } catch {
      sh('modprobe', 'dm-era');
      type = 'era';
    }
    if (fs.existsSync('/sys/module/brd')) sh('modprobe', '-r', 'brd');
    sh('modprobe', 'brd', 'rd_nr=3', `rd_size=${o.mib * 1024}`, 'max_part=0');
    scope.defer('unload brd', () => sh('modprobe', '-r', 'brd'));
    const [origin, meta, dest] = ['/dev/ram0', '/dev/ram1', '/dev/ram2'];
    // Prefill with an explicit count: brd allocates its pages on first write, which must not be timed.
    for (const d of [origin, dest]) sh('dd', 'if=/dev/zero', `of=${d}`, 'bs=1M', `count=${o.mib}`, 'oflag=direct', 'status=none');
    sh('dd', 'if=/dev/zero', `of=${meta}`, 'bs=1M', `count=${Math.min(o.mib, 64)}`, 'oflag=direct', 'status=none');
    const lengthSectors = o.mib * 2048;
    const dev = createDevice(scope, NAME, `0 ${lengthSectors} ${type} ${meta} ${origin} ${BLOCK_SECTORS}`).path;
    dmsetup('message', NAME, '0', 'checkpoint');

    // Scattered runs of changed blocks, through the era device so that it tracks them.
    const nrBlocks = lengthSectors / BLOCK_SECTORS;
    const want = Math.floor((nrBlocks * o.percent) / 100);
    const rand = prng(7);
    const written = new Set<number>();
    const fd = fs.openSync(dev, 'r+');
    try {
      while (written.size < want) {
        const start = Math.floor(rand() * nrBlocks);
        const n = Math.min(1 + Math.floor(rand() * 32), nrBlocks - start, want - written.size);
        const buf = Buffer.alloc(n * BLOCK, (start * 31) & 0xff);
        fs.writeSync(fd, buf, 0, buf.length, start * BLOCK);
        for (let b = start; b < start + n; b++) written.add(b);
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    const changed = await changedSince(dm, { name: NAME }, 1);
    const ranges: CopyRange[] = rangesIn(changed, 'bytes', changed.length).map((r) => ({ source: r.start, length: bytes(r.end - r.start), dest: r.start }));
    const total = ranges.reduce((n, r) => n + r.length, 0n);
    if (changed.changed < BigInt(written.size)) throw new Error(`era lists ${changed.changed} changed blocks, ${written.size} were written`);
    const wantHash = hashRanges(dev, ranges);

    // 'default' is what copyRanges does without options (the backup's engine): io_uring with one ring
    // per online CPU, each on its own thread. 'io_uring-1ring' is the engine before that change (one ring
    // submitting from one thread), 'threads' the thread pool.
    let rings = 0;
    let defaultEngine = 'threads';
    const copy = async (contender: string): Promise<number> => {
      const opts: CopyOptions =
        contender === 'threads' ? { engine: 'threads' } : contender === 'io_uring-1ring' ? { engine: 'io_uring', uringRings: 1 } : {};
      const t0 = process.hrtime.bigint();
      const r = await copyRanges(dev, dest, ranges, { queueDepth: 16, chunkBytes: bytes(1n << 20n), ...opts });
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      if (r.bytes !== total) throw new Error(`copied ${r.bytes} of ${total} bytes`);
      if (contender === 'default') {
        defaultEngine = r.engine;
        rings = r.rings ?? 0;
      }
      return Number(total) / 1e6 / s;
    };
    const engines: string[] = loadCopyBinding().copyEngine() === 'io_uring' ? ['default', 'io_uring-1ring', 'threads'] : ['default'];
    // Warm-up (and the data check, once per engine).
    for (const e of engines) {
      sh('dd', 'if=/dev/zero', `of=${dest}`, 'bs=1M', `count=${o.mib}`, 'oflag=direct', 'status=none');
      await copy(e);
      if (hashRanges(dest, ranges) !== wantHash) throw new Error(`the ${e} copy differs from the origin's changed blocks`);
    }
    fioRead(dev, total);

    const times: Record<string, number[]> = { seq: [] };
    for (const e of engines) times[e] = [];
    const contenders: Array<[string, () => Promise<number>]> = [['seq', async () => fioRead(dev, total)], ...engines.map((e): [string, () => Promise<number>] => [e, () => copy(e)])];
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 ? [...contenders].reverse() : contenders;
      for (const [k, fn] of order) times[k]!.push(await fn());
      console.error(`P7: round ${r + 1}/${o.rounds}: ${order.map(([k]) => `${k} ${round(times[k]![r]!, 1)} MB/s`).join(', ')}`);
    }
    const med = (k: string): number => median(times[k]!);
    const best = engines[0]!; // what the engine's defaults do here
    const others: Record<string, number> = {};
    for (const e of engines.slice(1)) {
      others[`${e.replace('-', '_')}_vs_seq_read`] = round(med(e) / med('seq'), 3);
      others[`${e.replace('-', '_')}_mb_s`] = round(med(e), 1);
    }
    return {
      bench: 'P7',
      copy_vs_seq_read: round(med(best) / med('seq'), 3),
      engine: defaultEngine,
      ...(rings ? { rings } : {}),
      copy_mb_s: round(med(best), 1),
      seq_read_mb_s: round(med('seq'), 1),
      ...others,
      era_type: type,
      origin_mib: o.mib,
      changed_percent: round((Number(changed.changed) * 100) / nrBlocks, 1),
      changed_ranges: ranges.length,
      copied_mib: round(Number(total) / 2 ** 20, 1),
      rounds: o.rounds,
    };
  } finally {
    await dm.close();
    scope.close();
  }
}
