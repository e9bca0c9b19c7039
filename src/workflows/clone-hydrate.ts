/**
 * Hydrate-then-swap: make DESTINATION a copy of SOURCE while the device is already in use, then drop
 * the clone target for a plain `linear` mapping of the destination.
 *
 *  1. Create a clone (in-tree `clone` or `dmkit-clone`) over metadata, destination and source; the
 *     metadata superblock is zeroed first (a fresh clone) unless `reuseMetadata` is set.
 *  2. Follow hydration: poll the status (the kernel also raises a dm event when hydration completes,
 *     which wakes the poller early), publishing {hydrated, total, hydrating, bytesPerSecond} samples.
 *  3. Once every region is hydrated: load `linear <destination> 0` into the inactive slot, suspend
 *     (the clone's postsuspend stops hydration and commits its metadata), read the status again without
 *     flushing to make sure it still says fully hydrated, and resume, which makes the linear table live.
 *     It is the same dm device throughout (same dev_t, same open file descriptors), so a reader running
 *     across the swap sees neither an error nor a wrong byte. If the check after suspend fails, the
 *     inactive table is cleared, the clone resumed and following goes on.
 *
 * Aborting (`signal`) stops following only: the clone device stays and keeps hydrating in the kernel.
 * Follow it again later with `create: false`.
 */
import { open, stat, readFile } from 'node:fs/promises';
import type { DevId, DeviceInfo, DeviceMapper, TargetLine, TargetStatus } from '../dm';
import { clone, linear, type CloneInfo, type CloneParams } from '../targets';
import { sectors, sectorsToBytes, targetBlocks, type Bytes, type Sectors, type TargetBlocks } from '../units';

export type CloneType = 'clone' | 'dmkit-clone';

/** The parts of DeviceMapper the workflow uses (so tests can drive it with a fake). */
export type HydrateDm = Pick<DeviceMapper, 'create' | 'load' | 'clear' | 'suspend' | 'resume' | 'status' | 'table'> &
  Partial<Pick<DeviceMapper, 'events'>>;

export interface HydrateOptions {
  /** The dm device name. */
  readonly name: string;
  readonly source: string;
  readonly destination: string;
  readonly metadata: string;
  readonly regionSize: Sectors;
  readonly type: CloneType;
  /** Device length; default: the source's size. */
  readonly length?: Sectors;
  readonly uuid?: string;
  readonly hydrationThreshold?: TargetBlocks;
  readonly batchSize?: TargetBlocks;
  /** Keep the metadata device as it is (resume an earlier clone) instead of zeroing its superblock. */
  readonly reuseMetadata?: boolean;
  /** false: follow (and swap) an existing clone device called `name` instead of creating one. */
  readonly create?: boolean;
  /** false: stop once hydrated and leave the clone table in place. Default true. */
  readonly swap?: boolean;
  /** Status polling interval (default 250 ms); a dm event for the device wakes the poller early. */
  readonly pollIntervalMs?: number;
  /** Listen for dm events through dm.events() (default true; falls back to polling when unavailable). */
  readonly events?: boolean;
  readonly signal?: AbortSignal;
  /** Writes the zeroed superblock; default: 4 KiB of zeros at offset 0, then fsync. */
  readonly zeroMetadata?: (path: string) => Promise<void>;
  /** The size of a block device; default: sysfs. */
  readonly deviceSectors?: (path: string) => Promise<Sectors>;
}

export interface HydrationProgress {
  readonly hydrated: TargetBlocks;
  readonly total: TargetBlocks;
  readonly hydrating: TargetBlocks;
  readonly regionSize: Sectors;
  /** Hydration rate over the last few seconds (regions x region size). */
  readonly bytesPerSecond: number;
  readonly elapsedSeconds: number;
}

export interface HydrateResult {
  /** From the start of following to the swap (or to full hydration with swap: false). */
  readonly seconds: number;
  /** Regions in the device (all of them hydrated). */
  readonly regions: TargetBlocks;
  readonly bytes: Bytes;
  /** Regions hydrated while we followed, per second of following, in bytes. */
  readonly bytesPerSecond: number;
  /** The table live at the end: the linear line, or the clone line with swap: false. */
  readonly table: TargetLine;
  readonly swapped: boolean;
  /** Swap attempts that found the clone not fully hydrated after suspend and went back to waiting. */
  readonly swapRetries: number;
}

export interface HydrateRun {
  /** Progress samples; the iteration ends when the run ends (its outcome is in `done`). */
  readonly progress: AsyncIterable<HydrationProgress>;
  readonly done: Promise<HydrateResult>;
}

export class HydrateError extends Error {
  constructor(
    message: string,
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HydrateError';
  }
}

const RATE_WINDOW_MS = 3000;

/** A broadcast of progress samples: each iterator sees the latest sample, then every later one (latest wins when slow). */
class ProgressChannel implements AsyncIterable<HydrationProgress> {
  private latest: HydrationProgress | undefined;
  private seq = 0;
  private closed = false;
  private waiters: Array<() => void> = [];

  publish(p: HydrationProgress): void {
    this.latest = p;
    this.seq++;
    this.wake();
  }

  close(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<HydrationProgress> {
    let seen = this.latest === undefined ? this.seq : this.seq - 1;
    for (;;) {
      if (this.seq > seen && this.latest !== undefined) {
        seen = this.seq;
        yield this.latest;
        continue;
      }
      if (this.closed) return;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

/** The sysfs folder of a block device (`/sys/dev/block/MAJOR:MINOR`), found through its device number. */
export async function sysfsBlockDir(path: string): Promise<string> {
  const st = await stat(path, { bigint: true });
  if (!st.isBlockDevice()) throw new HydrateError(`${path} is not a block device`, 'ERR_NOT_BLOCK_DEVICE');
  const rdev = st.rdev;
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn & 0xffffffffn);
  return `/sys/dev/block/${major}:${minor}`;
}

/** The size of a block device from sysfs. */
export async function blockDeviceSectors(path: string): Promise<Sectors> {
  const text = await readFile(`${await sysfsBlockDir(path)}/size`, 'utf8');
  return sectors(BigInt(text.trim()));
}

/** Zeroes the first 4 KiB (the clone superblock), so the target formats fresh metadata. */
export async function zeroSuperblock(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.write(Buffer.alloc(4096), 0, 4096, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new HydrateError('hydration following aborted', 'ABORT_ERR');
}

/** The clone's INFO status, or a HydrateError when it failed or is not a clone. */
function cloneInfo(name: string, lines: readonly TargetStatus[]): CloneInfo {
  const line = lines.find((l) => l.type === 'clone' || l.type === 'dmkit-clone');
  if (!line) {
    throw new HydrateError(`${name} has no clone target (${lines.map((l) => l.type).join(', ') || 'no table'})`, 'ERR_NO_CLONE');
  }
  const st = clone.parseStatus(line.status);
  if ('fail' in st || 'error' in st) throw new HydrateError(`${name}: the clone target reports ${line.status.trim()}`, 'ERR_CLONE_FAILED');
  return st;
}

/** Sliding-window rate of hydrated regions. */
class Rate {
  private readonly samples: Array<{ t: number; hydrated: bigint }> = [];
  add(t: number, hydrated: bigint): void {
    this.samples.push({ t, hydrated });
    while (this.samples.length > 2 && t - this.samples[1]!.t >= RATE_WINDOW_MS) this.samples.shift();
  }
  regionsPerSecond(): number {
    const a = this.samples[0];
    const b = this.samples[this.samples.length - 1];
    if (!a || !b || b.t <= a.t) return 0;
    return (Number(b.hydrated - a.hydrated) * 1000) / (b.t - a.t);
  }
}

/**
 * Starts the workflow. `done` resolves once the device maps the destination linearly (or is fully
 * hydrated, with swap: false); it rejects on a kernel error, a failed clone, or abort.
 */
export function hydrateAndSwap(dm: HydrateDm, opts: HydrateOptions): HydrateRun {
  const channel = new ProgressChannel();
  const done = run(dm, opts, channel).finally(() => channel.close());
  return { progress: channel, done };
}

async function run(dm: HydrateDm, opts: HydrateOptions, channel: ProgressChannel): Promise<HydrateResult> {
  const id: DevId = { name: opts.name };
  const signal = opts.signal;
  const interval = opts.pollIntervalMs ?? 250;
  if (signal?.aborted) throw abortError(signal);

  let cloneLine: TargetLine;
  if (opts.create === false) {
    const table = await dm.table(id);
    const found = table.find((t) => t.type === 'clone' || t.type === 'dmkit-clone');
    if (!found) throw new HydrateError(`${opts.name} has no clone target to follow`, 'ERR_NO_CLONE');
    cloneLine = found;
  } else {
    const length = opts.length ?? (await (opts.deviceSectors ?? blockDeviceSectors)(opts.source));
    cloneLine = clone.line(
      {
        metadataDevice: opts.metadata,
        destinationDevice: opts.destination,
        sourceDevice: opts.source,
        regionSize: opts.regionSize,
        hydrationThreshold: opts.hydrationThreshold ?? null,
        hydrationBatchSize: opts.batchSize ?? null,
      },
      { start: sectors(0), length, type: opts.type },
    );
    if (!opts.reuseMetadata) await (opts.zeroMetadata ?? zeroSuperblock)(opts.metadata);
    await dm.create(opts.name, { uuid: opts.uuid, targets: [cloneLine] });
  }
  const params: CloneParams = clone.parse(cloneLine.params);
  const linearLine = linear.line({ device: params.destinationDevice, offset: sectors(0) }, { start: cloneLine.start, length: cloneLine.length });

  const waker = new Waker();
  const stopEvents = listenForEvents(dm, opts, waker);
  const started = Date.now();
  const rate = new Rate();
  let firstHydrated: bigint | undefined;
  let swapRetries = 0;
  const onAbort = (): void => waker.kick();
  signal?.addEventListener('abort', onAbort);
  try {
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      const info = cloneInfo(opts.name, await dm.status(id));
      const now = Date.now();
      rate.add(now, info.hydrated);
      firstHydrated ??= info.hydrated;
      channel.publish({
        hydrated: info.hydrated,
        total: info.totalRegions,
        hydrating: info.hydrating,
        regionSize: info.regionSize,
        bytesPerSecond: rate.regionsPerSecond() * Number(sectorsToBytes(info.regionSize)),
        elapsedSeconds: (now - started) / 1000,
      });
      if (info.hydrated >= info.totalRegions) {
        const swapped = opts.swap === false ? false : await swap(dm, id, linearLine);
        if (opts.swap === false || swapped) {
          const seconds = (Date.now() - started) / 1000;
          const regionBytes = Number(sectorsToBytes(info.regionSize));
          return {
            seconds,
            regions: targetBlocks(info.totalRegions),
            bytes: sectorsToBytes(cloneLine.length),
            bytesPerSecond: seconds > 0 ? (Number(info.hydrated - firstHydrated) * regionBytes) / seconds : 0,
            table: opts.swap === false ? cloneLine : linearLine,
            swapped: opts.swap !== false,
            swapRetries,
          };
        }
        swapRetries++;
      }
      await waker.wait(interval);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await stopEvents();
  }
}

/**
 * load linear (inactive) -> suspend -> recheck hydration (no flush) -> resume. Returns false (and puts
 * the clone back) when the suspended clone is not fully hydrated after all.
 */
async function swap(dm: HydrateDm, id: DevId, linearLine: TargetLine): Promise<boolean> {
  await dm.load(id, [linearLine]);
  let suspended: DeviceInfo | undefined;
  try {
    suspended = await dm.suspend(id);
    const info = cloneInfo(id.name ?? '', await dm.status(id, { noflush: true }));
    if (info.hydrated < info.totalRegions || info.mode !== 'rw') {
      await dm.clear(id);
      await dm.resume(id);
      return false;
    }
  } catch (e) {
    // Leave the clone live: drop the linear table, resume what was there.
    await dm.clear(id).catch(() => undefined);
    if (suspended) await dm.resume(id).catch(() => undefined);
    throw e;
  }
  await dm.resume(id);
  return true;
}

/** A sleep that a dm event (or abort) can cut short. */
class Waker {
  private pending: (() => void) | undefined;
  private kicked = false;
  kick(): void {
    this.kicked = true;
    this.pending?.();
  }
  wait(ms: number): Promise<void> {
    if (this.kicked) {
      this.kicked = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(finish, ms);
      function finish(): void {
        clearTimeout(timer);
        resolve();
      }
      this.pending = () => {
        this.pending = undefined;
        this.kicked = false;
        finish();
      };
    });
  }
}

/** Kicks the waker on every dm event of this device; returns a stopper. Silent fallback to polling. */
function listenForEvents(dm: HydrateDm, opts: HydrateOptions, waker: Waker): () => Promise<void> {
  if (opts.events === false || !dm.events) return async () => undefined;
  let stream: ReturnType<DeviceMapper['events']>;
  try {
    stream = dm.events.call(dm);
  } catch {
    return async () => undefined; // another iteration owns the events of this handle, or no poll support
  }
  const loop = (async () => {
    try {
      for await (const ev of stream) if (ev.name === opts.name) waker.kick();
    } catch {
      /* events are only a hint; polling goes on */
    }
  })();
  return async () => {
    await stream.return();
    await loop;
  };
}
