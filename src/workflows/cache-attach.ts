/**
 * Putting a cache in front of a live volume and taking it away again, without the volume's users noticing
 * (same dm device, same dev_t, open file descriptors keep working):
 *
 * - attachCache: the device must be one `linear <origin> 0` line. Its metadata device's superblock is
 *   zeroed (a fresh cache: mappings left from an earlier cache would name blocks of data since changed),
 *   then a cache line over metadata, cache device and that origin is loaded, and swapped in (suspend,
 *   resume).
 * - detachCache: the device must be one cache line (cache or dmkit-cache). Unless it runs the cleaner
 *   already, the same line with the `cleaner` policy is swapped in; the dirty count is followed
 *   (onProgress) until it is 0; then `linear <origin> 0` is loaded, the device suspended (the cache's
 *   postsuspend commits), the dirty count read again without flushing, and resumed: the linear table goes
 *   live. If blocks became dirty again meanwhile (they cannot under the cleaner, but another table may
 *   have been loaded), the inactive table is cleared, the cache resumed and following goes on.
 *
 * Both refuse, with a CacheWorkflowError and nothing changed, a device of another shape.
 */
import type { DevId, DeviceMapper, TargetLine } from '../dm';
import { cache, linear, type CacheInfo, type CacheInput, type CacheIoMode, type CacheParams } from '../targets';
import { sectors, type Sectors, type TargetBlocks } from '../units';
import { sleep } from './wait';
import { zeroSuperblock } from './clone-hydrate';

export type CacheType = 'cache' | 'dmkit-cache';

export type CacheWorkflowErrorCode =
  | 'ERR_CACHE_NOT_LINEAR'
  | 'ERR_CACHE_NOT_CACHE'
  | 'ERR_CACHE_FAILED'
  | 'ERR_CACHE_TIMEOUT';

export class CacheWorkflowError extends Error {
  constructor(
    message: string,
    readonly code: CacheWorkflowErrorCode,
  ) {
    super(message);
    this.name = 'CacheWorkflowError';
  }
}

/** The parts of DeviceMapper the workflows use (so tests can drive them with a fake). */
export type CacheDm = Pick<DeviceMapper, 'load' | 'clear' | 'suspend' | 'resume' | 'status' | 'table'>;

export interface AttachOptions {
  /** The dm device (a single `linear <origin> 0` line). */
  readonly name: string;
  readonly metadata: string;
  readonly cacheDevice: string;
  readonly blockSize: Sectors;
  readonly type: CacheType;
  /** Default writeback. */
  readonly ioMode?: CacheIoMode;
  /** Default 'default'. */
  readonly policy?: string;
  readonly metadata2?: boolean;
  /** Writes the zeroed superblock; default: 4 KiB of zeros at offset 0, then fsync. */
  readonly zeroMetadata?: (path: string) => Promise<void>;
}

export interface AttachResult {
  readonly name: string;
  readonly origin: string;
  /** The cache line now live. */
  readonly table: TargetLine;
}

export interface DetachProgress {
  /** Dirty cache blocks still to write back. */
  readonly dirty: TargetBlocks;
  /** Dirty blocks when detaching started. */
  readonly total: TargetBlocks;
  readonly elapsedSeconds: number;
}

export interface DetachOptions {
  readonly name: string;
  /** Status polling interval, default 200 ms. */
  readonly pollIntervalMs?: number;
  readonly onProgress?: (p: DetachProgress) => void;
  readonly signal?: AbortSignal;
  /** Give up waiting after this long (the cleaner keeps writing back); default: no limit. */
  readonly timeoutMs?: number;
}

export interface DetachResult {
  readonly name: string;
  readonly origin: string;
  /** Dirty blocks written back while we followed. */
  readonly flushed: TargetBlocks;
  readonly seconds: number;
  /** The linear line now live. */
  readonly table: TargetLine;
}

async function swapIn(dm: CacheDm, id: DevId, lines: readonly TargetLine[]): Promise<void> {
  await dm.load(id, lines);
  try {
    await dm.suspend(id);
  } catch (e) {
    await dm.clear(id).catch(() => undefined);
    throw e;
  }
  await dm.resume(id);
}

async function onlyLine(dm: CacheDm, name: string): Promise<TargetLine> {
  const lines = await dm.table({ name });
  if (lines.length !== 1) throw new CacheWorkflowError(`${name} has ${lines.length} table lines, want one`, lines.length ? 'ERR_CACHE_NOT_CACHE' : 'ERR_CACHE_NOT_LINEAR');
  return lines[0]!;
}

export async function attachCache(dm: CacheDm, o: AttachOptions): Promise<AttachResult> {
  const id = { name: o.name };
  const cur = await dm.table(id);
  const only = cur.length === 1 ? cur[0]! : undefined;
  if (!only || only.type !== 'linear') throw new CacheWorkflowError(`${o.name} is not a single linear mapping (${cur.map((l) => l.type).join(', ') || 'no table'}): nothing to put a cache in front of`, 'ERR_CACHE_NOT_LINEAR');
  const lin = linear.parse(only.params);
  if (lin.offset !== 0n || only.start !== 0n) throw new CacheWorkflowError(`${o.name} maps ${lin.device} from sector ${lin.offset}: a cache needs the whole origin from sector 0`, 'ERR_CACHE_NOT_LINEAR');
  const params: CacheInput = {
    metadataDevice: o.metadata,
    cacheDevice: o.cacheDevice,
    originDevice: lin.device,
    blockSize: o.blockSize,
    ioMode: o.ioMode ?? 'writeback',
    metadata2: o.metadata2 ?? false,
    policy: o.policy ?? 'default',
  };
  const line = cache.line(params, { start: sectors(0), length: only.length, type: o.type }); // bad arguments throw here
  await (o.zeroMetadata ?? zeroSuperblock)(o.metadata);
  await swapIn(dm, id, [line]);
  return { name: o.name, origin: lin.device, table: line };
}

function cacheInfo(name: string, text: string): CacheInfo {
  const st = cache.parseStatus(text);
  if ('fail' in st || 'error' in st) throw new CacheWorkflowError(`${name}: the cache reports ${text.trim()}`, 'ERR_CACHE_FAILED');
  return st as CacheInfo;
}

export async function detachCache(dm: CacheDm, o: DetachOptions): Promise<DetachResult> {
  const id = { name: o.name };
  const line = await onlyLine(dm, o.name);
  if (!cache.names.includes(line.type)) throw new CacheWorkflowError(`${o.name} is a ${line.type} device, not a cache`, 'ERR_CACHE_NOT_CACHE');
  const params: CacheParams = cache.parse(line.params) as CacheParams;
  const [st0] = await dm.status(id);
  const first = cacheInfo(o.name, st0?.status ?? '');
  if (first.mode !== 'rw') throw new CacheWorkflowError(`${o.name}: the cache metadata is read-only${first.needsCheck ? ' (needs_check)' : ''}: dirty blocks cannot be cleaned`, 'ERR_CACHE_FAILED');
  if (params.policy !== 'cleaner') {
    // The cleaner takes no tunables; migration_threshold stays (it belongs to the core).
    await swapIn(dm, id, [cache.line({ ...params, policy: 'cleaner', policyArgs: [] }, { start: line.start, length: line.length, type: line.type })]);
  }
  const started = Date.now();
  const total = first.dirty;
  const linearLine = linear.line({ device: params.originDevice, offset: sectors(0) }, { start: line.start, length: line.length, type: 'linear' });
  for (;;) {
    for (;;) {
      if (o.signal?.aborted) throw o.signal.reason;
      const [st] = await dm.status(id);
      const info = cacheInfo(o.name, st?.status ?? '');
      o.onProgress?.({ dirty: info.dirty, total: total > info.dirty ? total : info.dirty, elapsedSeconds: (Date.now() - started) / 1000 });
      if (info.dirty === 0n) break;
      if (info.mode !== 'rw') throw new CacheWorkflowError(`${o.name}: the cache went read-only with ${info.dirty} dirty blocks`, 'ERR_CACHE_FAILED');
      if (o.timeoutMs !== undefined && Date.now() - started > o.timeoutMs) {
        throw new CacheWorkflowError(`${o.name}: ${info.dirty} blocks still dirty after ${o.timeoutMs} ms (the cleaner goes on in the kernel)`, 'ERR_CACHE_TIMEOUT');
      }
      await sleep(o.pollIntervalMs ?? 200, o.signal);
    }
    await dm.load(id, [linearLine]);
    let clean = false;
    try {
      await dm.suspend(id);
      const [st] = await dm.status(id, { noflush: true });
      clean = cacheInfo(o.name, st?.status ?? '').dirty === 0n;
    } catch (e) {
      await dm.clear(id).catch(() => undefined);
      await dm.resume(id).catch(() => undefined);
      throw e;
    }
    if (!clean) await dm.clear(id);
    await dm.resume(id);
    if (clean) break;
  }
  return { name: o.name, origin: params.originDevice, flushed: total, seconds: (Date.now() - started) / 1000, table: linearLine };
}
