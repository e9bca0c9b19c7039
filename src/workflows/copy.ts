/**
 * The range copy engine (native/copy.cc): copies byte ranges from a regular file or block device to
 * another, or only reads and checksums them, off the JS thread with many requests in flight (io_uring
 * where the kernel has it, a thread pool otherwise), O_DIRECT where both sides take it. Ranges are cut
 * into chunks of `chunkBytes` from each range's start; a chunk is the unit of IO, of the CRC-32C
 * checksums and of the resume journal (its format is documented at the top of native/copy.cc).
 */
import { findAddon } from '../dm/native';
import { bytes, type Bytes } from '../units';

export type CopyEngine = 'auto' | 'io_uring' | 'threads';

/** One range: `length` bytes at `source` in the source go to `dest` in the destination. */
export interface CopyRange {
  readonly source: Bytes;
  readonly length: Bytes;
  readonly dest: Bytes;
}

export interface CopyOptions {
  /** Chunk size (a multiple of 4096, at most 16 MiB; default 1 MiB). */
  readonly chunkBytes?: Bytes;
  /** Requests in flight (1..128, default 16). */
  readonly queueDepth?: number;
  readonly engine?: CopyEngine;
  /** The resume journal: chunks it lists as done are skipped; finished chunks are appended. */
  readonly journal?: string;
  /** Report a CRC-32C per chunk. */
  readonly checksums?: boolean;
  /** Use O_DIRECT where a side takes it (default true). */
  readonly direct?: boolean;
  /** Aborting stops the copy: in-flight requests finish, finished chunks are journaled, it rejects with ABORT_ERR. */
  readonly signal?: AbortSignal;
  /** At most ten times a second, and once at the end: bytes done (resumed chunks included) of the total. */
  readonly onProgress?: (done: Bytes, total: Bytes) => void;
  /**
   * io_uring only: punt every request to the kernel's io-wq workers (IOSQE_ASYNC), meant to run requests
   * in parallel on devices that do the IO while it is submitted (brd). Default false (inline from the
   * engine's thread): P7 measured no gain on brd (median 191 MB/s punted, 213 MB/s inline).
   */
  readonly uringAsync?: boolean;
  /**
   * io_uring only: how many rings, each submitting from its own thread and sharing the queue depth
   * (1..4; default: one per online CPU, at most 4). brd and dm over it copy inside submit_bio, so one ring
   * copies on one CPU only (P7: 0.78-0.98 of a sequential read with one ring on 2 CPUs).
   */
  readonly uringRings?: number;
  /** For tests of resuming: stop as a cancel would once this many chunks are done in this run. */
  readonly interruptAfterChunks?: number;
}

export interface CopyResult {
  /** Bytes and chunks done, resumed chunks included; of those, the chunks a journal said were done. */
  readonly bytes: Bytes;
  readonly chunks: number;
  readonly resumedChunks: number;
  readonly totalChunks: number;
  readonly engine: 'io_uring' | 'threads';
  /** io_uring: the rings (threads) used. */
  readonly rings?: number;
  readonly directSource: boolean;
  readonly directDest: boolean;
  /** CRC-32C per chunk, in plan order (when `checksums`). */
  readonly checksums?: Uint32Array;
}

interface NativeCopyResult {
  bytes: number;
  chunks: number;
  resumedChunks: number;
  totalChunks: number;
  engine: 'io_uring' | 'threads';
  rings?: number;
  directSource: boolean;
  directDest: boolean;
  checksums?: Uint32Array;
}

/** The addon's copy functions. */
export interface CopyBinding {
  copyRanges(opts: {
    source: string;
    dest?: string;
    ranges: Float64Array;
    chunkBytes?: number;
    queueDepth?: number;
    engine?: CopyEngine;
    journal?: string;
    checksums?: boolean;
    direct?: boolean;
    onProgress?: (done: number, total: number) => void;
    interruptAfterChunks?: number;
    uringAsync?: boolean;
    uringRings?: number;
  }): { promise: Promise<NativeCopyResult>; cancel(): void };
  crc32c(data: Uint8Array): number;
  copyEngine(): 'io_uring' | 'threads';
}

let binding: CopyBinding | undefined;

export function loadCopyBinding(): CopyBinding {
  if (binding === undefined) {
    const path = findAddon();
    const m = require(path) as Partial<Record<keyof CopyBinding, unknown>>;
    if (typeof m.copyRanges !== 'function' || typeof m.crc32c !== 'function' || typeof m.copyEngine !== 'function') {
      throw new Error(`${path} does not export copyRanges/crc32c/copyEngine; rebuild the addon (npm run build)`);
    }
    binding = m as CopyBinding;
  }
  return binding;
}

/** The standard CRC-32C of `data` (as the engine reports per chunk). */
export function crc32cOf(data: Uint8Array): number {
  return loadCopyBinding().crc32c(data);
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return Object.assign(new Error('the copy was aborted'), { name: 'AbortError', code: 'ABORT_ERR' });
}

/** The ranges as the addon takes them: [source, length, dest] triples of safe integers. */
function rangeTable(ranges: readonly CopyRange[]): Float64Array {
  if (!Array.isArray(ranges)) throw Object.assign(new TypeError('ranges must be an array of {source, length, dest}'), { code: 'ERR_INVALID_ARG_TYPE' });
  const t = new Float64Array(ranges.length * 3);
  ranges.forEach((r, i) => {
    for (const [k, v] of [['source', r?.source], ['length', r?.length], ['dest', r?.dest]] as const) {
      if (typeof v !== 'bigint' || v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw Object.assign(new RangeError(`ranges[${i}].${k} must be a byte count (bigint) in 0..2^53-1, got ${String(v)}`), { code: 'ERR_OUT_OF_RANGE' });
      }
    }
    t.set([Number(r.source), Number(r.length), Number(r.dest)], i * 3);
  });
  return t;
}

/**
 * Copies `ranges` from `source` to `dest` (null: read and checksum only). Rejects with the addon's
 * typed errors (ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE, an errno name such as EINVAL for a source that
 * is not a regular file or block device, or ABORT_ERR when `signal` aborted it).
 */
export async function copyRanges(source: string, dest: string | null, ranges: readonly CopyRange[], opts: CopyOptions = {}): Promise<CopyResult> {
  const b = loadCopyBinding();
  if (opts.signal?.aborted) throw abortError(opts.signal);
  const progress = opts.onProgress;
  const handle = b.copyRanges({
    source,
    ...(dest !== null ? { dest } : {}),
    ranges: rangeTable(ranges),
    ...(opts.chunkBytes !== undefined ? { chunkBytes: Number(opts.chunkBytes) } : {}),
    ...(opts.queueDepth !== undefined ? { queueDepth: opts.queueDepth } : {}),
    ...(opts.engine !== undefined ? { engine: opts.engine } : {}),
    ...(opts.journal !== undefined ? { journal: opts.journal } : {}),
    ...(opts.checksums !== undefined ? { checksums: opts.checksums } : {}),
    ...(opts.direct !== undefined ? { direct: opts.direct } : {}),
    ...(opts.uringAsync !== undefined ? { uringAsync: opts.uringAsync } : {}),
    ...(opts.uringRings !== undefined ? { uringRings: opts.uringRings } : {}),
    ...(opts.interruptAfterChunks !== undefined ? { interruptAfterChunks: opts.interruptAfterChunks } : {}),
    ...(progress ? { onProgress: (d: number, t: number) => progress(bytes(d), bytes(t)) } : {}),
  });
  const onAbort = (): void => handle.cancel();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const r = await handle.promise;
    return {
      bytes: bytes(r.bytes),
      chunks: r.chunks,
      resumedChunks: r.resumedChunks,
      totalChunks: r.totalChunks,
      engine: r.engine,
      ...(r.rings !== undefined ? { rings: r.rings } : {}),
      directSource: r.directSource,
      directDest: r.directDest,
      ...(r.checksums ? { checksums: r.checksums } : {}),
    };
  } catch (e) {
    if ((e as { code?: unknown })?.code === 'ABORT_ERR' && opts.signal?.aborted) {
      const err = abortError(opts.signal);
      for (const k of ['bytes', 'chunks', 'resumedChunks', 'totalChunks'] as const) {
        const v = (e as Record<string, unknown>)[k];
        if (typeof v === 'number' && !(k in err)) Object.assign(err, { [k]: v });
      }
      throw err;
    }
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
