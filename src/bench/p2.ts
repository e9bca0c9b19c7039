/**
 * P2: clone hydration. (1) Background hydration bandwidth against `dd` copying the same source to the
 * same destination (bs=1M, oflag=direct, same size; brd devices prefilled so no page allocation is timed).
 * (2) p99 latency of a foreground reader (fio: random 4 KiB O_DIRECT reads, queue depth 1) on a clone
 * that is hydrating against the same reader on an idle clone that hydrates nothing (no_hydration). The
 * reader runs for half the median hydration time of part (1), so it ends while the clone still hydrates
 * (`hydrated_fraction_after_fg_run` < 1 shows it did).
 * The clone type is dmkit-clone when registered, else the in-tree clone (debug kernel). Contenders
 * alternate order round by round; the result is ratios of medians.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { DeviceMapper, DmError } from '../dm';
import { clone } from '../targets';
import { ramdisks, Scope, zero } from '../testing';
import { bytes, sectors, targetBlocks, type Sectors } from '../units';
import type { CloneType } from '../workflows';
import { sysfsBlockDir } from '../workflows/clone-hydrate';
import { median, round, timeMs } from './stats';

export interface P2Options {
  rounds: number;
  /** Device size in MiB. */
  mb: number;
  /** Region size in sectors. */
  region: number;
  /** Regions hydrating at once and batched per copy (tuned for throughput; reported). */
  threshold: number;
  batch: number;
  /** Longest fio runtime per latency sample, seconds (the run is cut to half a hydration). */
  fioSeconds: number;
}

const NAME = 'p2-clone';

async function pickType(dm: DeviceMapper): Promise<CloneType> {
  for (const t of ['dmkit-clone', 'clone'] as const) {
    try {
      await dm.targetVersion(t);
      return t;
    } catch (e) {
      if (!(e instanceof DmError)) throw e;
    }
  }
  throw new Error('P2 needs a clone target: neither dmkit-clone nor the in-tree clone (debug kernel) is registered');
}

async function fioP99Us(path: string, ms: number, sizeBytes: bigint): Promise<{ p99: number; iops: number }> {
  const { stdout: out } = await promisify(execFile)(
    'fio',
    ['--name=fg', `--filename=${path}`, '--rw=randread', '--bs=4k', '--direct=1', '--ioengine=psync', '--iodepth=1', `--size=${sizeBytes}`,
      '--time_based', `--runtime=${ms}ms`, '--randrepeat=0', '--norandommap', '--output-format=json'],
    { encoding: 'utf8', maxBuffer: 16 << 20 },
  );
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ read: { iops: number; clat_ns: { percentile: Record<string, number> } } }> }).jobs[0]!;
  return { p99: job.read.clat_ns.percentile['99.000000']! / 1000, iops: job.read.iops };
}

/** Reads completed on a block device, from its sysfs stat file. */
function readsCompleted(statFile: string): number {
  return Number(fs.readFileSync(statFile, 'utf8').trim().split(/\s+/)[0]);
}

/** Resolves once the device has completed a read more than it had at the call. */
async function firstRead(devPath: string): Promise<void> {
  const statFile = `${await sysfsBlockDir(devPath)}/stat`;
  const before = readsCompleted(statFile);
  const deadline = Date.now() + 30_000;
  while (readsCompleted(statFile) === before) {
    if (Date.now() > deadline) throw new Error(`no read reached ${devPath} in 30 s`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

export async function runP2(opts: P2Options): Promise<Record<string, unknown>> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  try {
    const type = await pickType(dm);
    const size = bytes(BigInt(opts.mb) << 20n);
    // Prefill (brd allocates pages on first write) with an explicit count: ramdisks()' own prefill runs dd
    // to the end of the device, which dd reports as ENOSPC.
    const [src, dest, meta] = ramdisks(scope, 3, size);
    for (const d of [src!, dest!, meta!]) {
      execFileSync('dd', ['if=/dev/urandom', `of=${d.path}`, 'bs=1M', `count=${opts.mb}`, 'oflag=direct', 'status=none']);
    }
    const length = sectors(src!.sectors);
    const regionSize = sectors(opts.region) as Sectors;
    const id = { name: NAME };

    const create = async (noHydration: boolean): Promise<void> => {
      zero(meta!.path, bytes(4096));
      const line = clone.line(
        {
          metadataDevice: meta!.path,
          destinationDevice: dest!.path,
          sourceDevice: src!.path,
          regionSize,
          noHydration,
          hydrationThreshold: targetBlocks(opts.threshold),
          hydrationBatchSize: targetBlocks(opts.batch),
        },
        { start: sectors(0), length, type },
      );
      await dm.create(NAME, { targets: [line] });
    };
    // Polled every 10 ms: with noflush, or each poll would commit the metadata (and flush the destination
    // first) as a status request does, and the poller would throttle what it measures.
    const hydration = async (): Promise<{ hydrated: bigint; total: bigint }> => {
      const st = clone.parseStatus((await dm.status(id, { noflush: true }))[0]!.status);
      if ('fail' in st || 'error' in st) throw new Error(`${NAME} failed`);
      return { hydrated: st.hydrated, total: st.totalRegions };
    };
    const remove = (): Promise<unknown> => dm.remove(id, { retry: true });

    const ddMs = async (): Promise<number> => timeMs(() => void execFileSync('dd', [`if=${src!.path}`, `of=${dest!.path}`, 'bs=1M', `count=${opts.mb}`, 'iflag=direct', 'oflag=direct', 'status=none']));
    const hydrateMs = async (): Promise<number> => {
      await create(true);
      try {
        return await timeMs(async () => {
          await dm.message(id, undefined, 'enable_hydration');
          for (;;) {
            const h = await hydration();
            if (h.hydrated === h.total) return;
            await new Promise((r) => setTimeout(r, 10));
          }
        });
      } finally {
        await remove();
      }
    };
    // The reader starts on a clone that does not hydrate; for the busy sample, hydration is enabled once
    // the reader's first reads show, so the whole run overlaps hydration (fio's own start is slow here).
    const latency = async (hydrating: boolean, ms: number): Promise<{ p99: number; iops: number; hydratedAfter: number }> => {
      await create(true);
      try {
        const dev = dm.devicePath(NAME);
        const started = firstRead(dev);
        const run = fioP99Us(dev, ms, size);
        await started;
        if (hydrating) await dm.message(id, undefined, 'enable_hydration');
        const r = await run;
        const h = await hydration();
        return { ...r, hydratedAfter: Number(h.hydrated) / Number(h.total) };
      } finally {
        await remove();
      }
    };

    // Warm-up: page in dd, fio, the module paths.
    await ddMs();
    await hydrateMs();

    const dd: number[] = [];
    const hyd: number[] = [];
    const idle: number[] = [];
    const busy: number[] = [];
    const busyIops: number[] = [];
    const idleIops: number[] = [];
    const fractions: number[] = [];
    for (let r = 0; r < opts.rounds; r++) {
      const pairs: Array<() => Promise<void>> = [
        async () => void dd.push(await ddMs()),
        async () => void hyd.push(await hydrateMs()),
      ];
      if (r % 2) pairs.reverse();
      for (const f of pairs) await f();
    }
    const fioMs = Math.max(100, Math.min(opts.fioSeconds * 1000, Math.round(median(hyd) / 2)));
    for (let r = 0; r < opts.rounds; r++) {
      const lat: Array<() => Promise<void>> = [
        async () => {
          const x = await latency(false, fioMs);
          idle.push(x.p99);
          idleIops.push(x.iops);
        },
        async () => {
          const x = await latency(true, fioMs);
          busy.push(x.p99);
          busyIops.push(x.iops);
          fractions.push(x.hydratedAfter);
        },
      ];
      if (r % 2) lat.reverse();
      for (const f of lat) await f();
    }
    const mbps = (ms: number): number => opts.mb / 1.048576 / (ms / 1000);
    const ddMedian = median(dd);
    const hydMedian = median(hyd);
    return {
      bench: 'P2',
      type,
      size_mib: opts.mb,
      region_sectors: opts.region,
      hydration_threshold: opts.threshold,
      hydration_batch_size: opts.batch,
      rounds: opts.rounds,
      dd_mb_s: round(mbps(ddMedian), 1),
      hydration_mb_s: round(mbps(hydMedian), 1),
      fg_run_ms: fioMs,
      fg_p99_us_idle: round(median(idle), 1),
      fg_p99_us_hydrating: round(median(busy), 1),
      fg_iops_idle: round(median(idleIops), 0),
      fg_iops_hydrating: round(median(busyIops), 0),
      hydrated_fraction_after_fg_run: round(median(fractions), 3),
      hydration_vs_dd: round(ddMedian / hydMedian, 3),
      fg_p99_vs_idle: round(median(busy) / median(idle), 3),
    };
  } finally {
    await dm.remove({ name: NAME }).catch(() => undefined);
    await dm.close();
    scope.close();
  }
}
