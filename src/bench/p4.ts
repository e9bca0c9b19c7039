/**
 * P4: a cache in front of a slow origin under a zipfian random read/write workload: hit rate and IOPS of
 * dmkit-cache (its default policy, dmkit-lru) against the in-tree cache with smq, and against the fast
 * and the slow device alone.
 *
 * Devices (VM, made once): three prefilled brd ramdisks of `originMib` each.
 *  - slow: `delay /dev/ram0 0 <delayMs>` over the whole of ram0, reads and writes delayed. dm-delay counts
 *    in jiffies (HZ=250 in the lab's Debian kernel: 4 ms a tick), so the default 5 ms is two ticks, about
 *    4..8 ms a bio: at queue depth 16 the slow device does at most a few thousand IOPS where the emulated
 *    ramdisk does many more.
 *  - the cache device: a `cacheMib` linear slice of ram1; the metadata device: ram2.
 *  - fast: a linear mapping over the whole of ram1 (same size as the origin, one dm layer like the slow one).
 * Cache contenders: a writeback cache with 64 KiB blocks (128 sectors) over the slow device, default
 * migration threshold, policy smq for `cache` and the module's default (`default`, dmkit-lru) for
 * `dmkit-cache`. The cache is much smaller than the origin (default 32 of 256 MiB: 512 blocks for 4096), so
 * what the policy keeps matters.
 *
 * Workload: fio, libaio, O_DIRECT, 4 KiB requests, randrw with 90% reads, queue depth 16,
 * random_distribution=zipf:1.2:0.5 over the whole device, a fixed byte count per pass (io_size). The zipf
 * base is fixed (the `:0.5`): without it fio places the hot set from the seed, and a warm-up pass with
 * another seed would warm the wrong blocks. The warm-up and the measured pass draw different sequences
 * (seed 1 for every warm-up, seed 100+round for the measured passes, the same for every contender of a
 * round) over the same popularity ranking.
 *
 * A sample of a cache contender: zero the metadata superblock, create the cache over the slow device, one
 * warm-up pass of `warmupIos` requests, read the status, the measured pass of `ios` requests, read the
 * status again, remove the cache. Its hit rate is read hits / (read hits + read misses) between the two
 * statuses (write hits are reported too). The devices alone keep no state, so their samples are the
 * measured pass only. Contenders rotate order round by round (reversed every other round); figures are
 * medians over rounds, ratios are ratios of medians.
 *
 * Headline: hot_read_vs_intree = dmkit-cache read IOPS / in-tree read IOPS, hit_rate_vs_intree =
 * dmkit-cache read hit rate / in-tree read hit rate.
 */
import { execFileSync } from 'node:child_process';
import { DeviceMapper } from '../dm';
import { cache, linear, type CacheInfo } from '../targets';
import { ramdisks, Scope, sh, zero } from '../testing';
import { bytes, sectors } from '../units';
import { median, round } from './stats';

export interface P4Options {
  rounds: number;
  /** 4 KiB requests in a measured pass and in a cache's warm-up pass. */
  ios: number;
  warmupIos: number;
  /** Read and write delay of the slow device in ms. */
  delayMs: number;
  originMib: number;
  cacheMib: number;
}

const SLOW = 'p4-slow';
const FAST = 'p4-fast';
const CDEV = 'p4-cdev';
const VOL = 'p4-cache';
const BLOCK_SECTORS = 128n; // 64 KiB cache blocks
const BS = 4096;

type Kind = 'cache' | 'fast' | 'slow';

interface Contender {
  label: string;
  kind: Kind;
  /** Cache target type and policy (kind 'cache'). */
  type?: 'cache' | 'dmkit-cache';
  policy?: string;
}

const CONTENDERS: readonly Contender[] = [
  { label: 'intree', kind: 'cache', type: 'cache', policy: 'smq' },
  { label: 'dmkit', kind: 'cache', type: 'dmkit-cache', policy: 'default' },
  { label: 'fast', kind: 'fast' },
  { label: 'slow', kind: 'slow' },
];

interface Pass {
  readIops: number;
  writeIops: number;
  /** Mean read completion latency, µs. */
  readLatUs: number;
}

interface Sample extends Pass {
  hitRate: number;
  writeHitRate: number;
  promotions: number;
  demotions: number;
  cacheUsed: number;
}

interface FioDir {
  iops: number;
  total_ios: number;
  io_bytes: number;
  clat_ns?: { mean: number };
}

function fioPass(dev: string, ios: number, seed: number): Pass {
  const size = ios * BS;
  const out = execFileSync(
    'fio',
    ['--name=p4', `--filename=${dev}`, '--rw=randrw', '--rwmixread=90', `--bs=${BS}`, `--io_size=${size}`, '--ioengine=libaio', '--iodepth=16',
      '--direct=1', '--random_distribution=zipf:1.2:0.5', '--norandommap', `--randseed=${seed}`, '--output-format=json'],
    { encoding: 'utf8', maxBuffer: 16 << 20, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ error: number; read: FioDir; write: FioDir }> }).jobs[0];
  if (!job || job.error) throw new Error(`fio failed on ${dev}: error ${job?.error ?? 'no job'}`);
  const done = job.read.io_bytes + job.write.io_bytes;
  if (done !== size) throw new Error(`fio moved ${done} of ${size} bytes on ${dev}`);
  return { readIops: job.read.iops, writeIops: job.write.iops, readLatUs: (job.read.clat_ns?.mean ?? NaN) / 1000 };
}

async function cacheStatus(dm: DeviceMapper): Promise<CacheInfo> {
  const [st] = await dm.status({ name: VOL });
  if (!st) throw new Error(`${VOL} has no table`);
  const info = cache.parseStatus(st.status);
  if ('fail' in info || 'error' in info) throw new Error(`${VOL} reports ${st.status.trim()}`);
  return info as CacheInfo;
}

const ratio = (hits: bigint, misses: bigint): number => (hits + misses > 0n ? Number(hits) / Number(hits + misses) : NaN);

export async function runP4(o: P4Options): Promise<Record<string, unknown>> {
  if (o.cacheMib >= o.originMib) throw new Error('the cache must be smaller than the origin');
  const scope = new Scope();
  const dm = DeviceMapper.open();
  const t0 = Date.now();
  try {
    sh('modprobe', 'dm-delay');
    sh('modprobe', 'dm-cache');
    sh('modprobe', 'dm-cache-smq');
    let contenders = CONTENDERS;
    let note: string | undefined;
    try {
      sh('modprobe', 'dmkit-cache');
    } catch {
      // Without dmkit's module the other figures still come out; the headline ratios are null.
      contenders = CONTENDERS.filter((c) => c.type !== 'dmkit-cache');
      note = 'dmkit-cache is not available: in-tree and the devices alone only';
      console.error(`P4: ${note}`);
    }
    const [origin, fastDisk, meta] = ramdisks(scope, 3, bytes(BigInt(o.originMib) << 20n), { prefill: true }).map((d) => d.path) as [string, string, string];
    const length = sectors(BigInt(o.originMib) * 2048n);
    const cacheLength = sectors(BigInt(o.cacheMib) * 2048n);
    const at = (len: typeof length, type: string) => ({ start: sectors(0), length: len, type });
    await dm.create(SLOW, { targets: [{ ...at(length, 'delay'), params: `${origin} 0 ${o.delayMs}` }] });
    await dm.create(FAST, { targets: [linear.line({ device: fastDisk, offset: sectors(0) }, at(length, 'linear'))] });
    await dm.create(CDEV, { targets: [linear.line({ device: fastDisk, offset: sectors(0) }, at(cacheLength, 'linear'))] });
    const slowPath = dm.devicePath(SLOW);
    const policies: Record<string, string> = {};

    const sample = async (c: Contender, r: number): Promise<Sample> => {
      const seed = 100 + r;
      if (c.kind !== 'cache') {
        const p = fioPass(dm.devicePath(c.kind === 'fast' ? FAST : SLOW), o.ios, seed);
        return { ...p, hitRate: NaN, writeHitRate: NaN, promotions: NaN, demotions: NaN, cacheUsed: NaN };
      }
      zero(meta, bytes(4096));
      const params = { metadataDevice: meta, cacheDevice: dm.devicePath(CDEV), originDevice: slowPath, blockSize: sectors(BLOCK_SECTORS), ioMode: 'writeback' as const, policy: c.policy! };
      await dm.create(VOL, { targets: [cache.line(params, at(length, c.type!))] });
      try {
        fioPass(dm.devicePath(VOL), o.warmupIos, 1);
        const a = await cacheStatus(dm);
        const p = fioPass(dm.devicePath(VOL), o.ios, seed);
        const b = await cacheStatus(dm);
        policies[c.label] = b.policy;
        return {
          ...p,
          hitRate: ratio(b.readHits - a.readHits, b.readMisses - a.readMisses),
          writeHitRate: ratio(b.writeHits - a.writeHits, b.writeMisses - a.writeMisses),
          promotions: Number(b.promotions - a.promotions),
          demotions: Number(b.demotions - a.demotions),
          cacheUsed: Number(b.cacheUsed),
        };
      } finally {
        await dm.remove({ name: VOL }, { retry: true });
      }
    };

    // Page in fio before anything is timed.
    fioPass(dm.devicePath(FAST), 1024, 1);
    console.error(`P4: devices ready (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    const results = new Map<string, Sample[]>();
    for (let r = 0; r < o.rounds; r++) {
      console.error(`P4: round ${r + 1}/${o.rounds} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      const order = contenders.map((_, i) => contenders[(i + r) % contenders.length]!);
      if (r % 2) order.reverse();
      for (const c of order) {
        const s = await sample(c, r);
        const hit = c.kind === 'cache' ? `, read hits ${(s.hitRate * 100).toFixed(1)}%, write hits ${(s.writeHitRate * 100).toFixed(1)}%, ${s.promotions} promotions, ${s.cacheUsed} blocks used` : '';
        console.error(`P4:   ${c.label}: read ${s.readIops.toFixed(0)} IOPS, write ${s.writeIops.toFixed(0)} IOPS, read lat ${s.readLatUs.toFixed(0)} us${hit}`);
        results.set(c.label, [...(results.get(c.label) ?? []), s]);
      }
    }
    const med = (c: string, f: keyof Sample): number => {
      const got = results.get(c);
      return got ? median(got.map((s) => s[f])) : NaN;
    };
    const one = (v: number, digits = 3): number | null => (Number.isFinite(v) ? round(v, digits) : null);
    const figures: Record<string, number | null> = {};
    for (const c of contenders) {
      figures[`${c.label}_read_iops`] = one(med(c.label, 'readIops'), 0);
      figures[`${c.label}_write_iops`] = one(med(c.label, 'writeIops'), 0);
      figures[`${c.label}_read_lat_us`] = one(med(c.label, 'readLatUs'), 0);
      if (c.kind === 'cache') {
        figures[`${c.label}_hit_rate`] = one(med(c.label, 'hitRate'), 4);
        figures[`${c.label}_write_hit_rate`] = one(med(c.label, 'writeHitRate'), 4);
        figures[`${c.label}_promotions`] = one(med(c.label, 'promotions'), 0);
      }
    }
    const rd = (a: string, b: string): number | null => one(med(a, 'readIops') / med(b, 'readIops'));
    console.error(`P4: ${o.rounds} rounds in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    return {
      bench: 'P4',
      hot_read_vs_intree: rd('dmkit', 'intree'),
      hit_rate_vs_intree: one(med('dmkit', 'hitRate') / med('intree', 'hitRate')),
      write_hit_rate_vs_intree: one(med('dmkit', 'writeHitRate') / med('intree', 'writeHitRate')),
      dmkit_vs_fast: rd('dmkit', 'fast'),
      intree_vs_fast: rd('intree', 'fast'),
      dmkit_vs_slow: rd('dmkit', 'slow'),
      intree_vs_slow: rd('intree', 'slow'),
      fast_vs_slow: rd('fast', 'slow'),
      ...figures,
      policies,
      rounds: o.rounds,
      ios: o.ios,
      warmup_ios: o.warmupIos,
      delay_ms: o.delayMs,
      origin_mib: o.originMib,
      cache_mib: o.cacheMib,
      seconds: Math.round((Date.now() - t0) / 1000),
      ...(note === undefined ? {} : { note }),
    };
  } finally {
    for (const n of [VOL, CDEV, FAST, SLOW]) await dm.remove({ name: n }, { retry: true }).catch(() => undefined);
    await dm.close();
    scope.close();
  }
}
