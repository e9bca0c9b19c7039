/**
 * dm-log-writes logs for the crash and fault lab: the log index and crash-state image replay run in the
 * native addon (native/replay.cc); this module types them and keeps a plain TypeScript reference
 * (`referenceLogIndex`, `referenceReplay`, `referenceDigest`) that the unit tests compare them against.
 *
 * Layout (kernel drivers/md/dm-log-writes.c, 6.1; xfstests src/log-writes/log-writes.h):
 *
 *   block 0                     superblock {le64 magic, le64 version, le64 nr_entries, le32 sectorsize}
 *   then, for each entry in order, starting at block 1 (sectorsize bytes per block):
 *     1 block                   {le64 sector, le64 nr_sectors, le64 flags, le64 data_len} [+ mark text]
 *     nr_sectors blocks         the data written (none for discards, marks and empty flushes)
 *
 * `sector` and `nr_sectors` count the device's logical blocks (sectorsize bytes); LogEntry converts them
 * to 512-byte sectors. nr_entries is only rewritten on FUA and MARK entries (and the end mark the
 * destructor adds), so read the log after removing the log-writes device. Writes are logged once a later
 * FLUSH covers them (FUA writes on completion), so every entry before a point in the log was durable at
 * that point.
 */
import { findAddon } from '../../dm/native';

export const LOG_MAGIC = 0x6a736677736872n;
export const LOG_FLAG = { FLUSH: 1, FUA: 2, DISCARD: 4, MARK: 8, METADATA: 16 } as const;
const KNOWN_FLAGS = 31;

export interface LogEntry {
  readonly index: number;
  /** In 512-byte sectors (converted from the log's blocks). */
  readonly sector: number;
  readonly sectors: number;
  readonly flags: number;
  /** Byte offset in the log of the data (writes), or of the block after the header (others). */
  readonly dataOffset: number;
  /** The mark's text for MARK entries (trailing NULs removed). */
  readonly mark?: string;
}

export interface WriteLog {
  readonly sectorSize: number;
  readonly entries: readonly LogEntry[];
}

/** A torn write: `entry` is applied except its 512-byte sector `sector` (from the entry's start). */
export interface TornWrite {
  readonly entry: number;
  readonly sector: number;
}

export interface ReplayOptions {
  /** The raw log. */
  readonly log: Buffer;
  /** Its index, from logIndex (or referenceLogIndex) of the same log. */
  readonly index: WriteLog;
  /** The device before logging began, exactly `length` bytes; null for zeros. */
  readonly base: Buffer | null;
  /** Bytes of the image; entries reaching past it are clipped. */
  readonly length: number;
  /** Entry indices applied in this order; marks and empty flushes are skipped, discards zero. */
  readonly apply: Uint32Array;
  /** One applied entry whose one sector keeps its previous content. */
  readonly torn?: TornWrite;
  /**
   * Write the image here (regular file: created, written, truncated to `length`; block device: at
   * least `length` bytes, written with O_DIRECT) and fsync it, instead of returning it.
   */
  readonly out?: string;
  /** Only compute the digest (no image returned, nothing written). */
  readonly digestOnly?: boolean;
}

export interface ReplayResult {
  /** XXH64 of the image as 16 hex digits (imageDigest of the same bytes). */
  readonly digest: string;
  /** The image, unless `out` or `digestOnly` was given. */
  readonly image?: Buffer;
}

/** The addon's replay functions (native/replay.cc). */
export interface ReplayBinding {
  logIndex(log: Buffer): { sectorSize: number; table: Float64Array; marks: { index: number; text: string }[] };
  replayImage(opts: {
    log: Buffer;
    table: Float64Array;
    base: Buffer | null;
    length: number;
    apply: Uint32Array;
    torn?: TornWrite;
    out?: string;
    digestOnly?: boolean;
  }): Promise<ReplayResult>;
  imageDigest(image: Buffer): string;
}

let binding: ReplayBinding | undefined;

/** The addon's replay functions; throws when the built addon predates them. */
export function loadReplayBinding(): ReplayBinding {
  if (binding === undefined) {
    const path = findAddon();
    const m = require(path) as Partial<Record<keyof ReplayBinding, unknown>>;
    if (typeof m.logIndex !== 'function' || typeof m.replayImage !== 'function' || typeof m.imageDigest !== 'function') {
      throw new Error(`${path} does not export logIndex/replayImage/imageDigest; rebuild the addon (npm run build)`);
    }
    binding = m as ReplayBinding;
  }
  return binding;
}

/** Per entry {sector, sectors, flags, dataOffset}: the compact index the addon replays from. */
const TABLE_STRIDE = 4;
const tables = new WeakMap<WriteLog, Float64Array>();

function tableOf(index: WriteLog): Float64Array {
  let table = tables.get(index);
  if (table !== undefined) return table;
  if (typeof index !== 'object' || index === null || !Array.isArray(index.entries)) {
    throw new TypeError('index must be a WriteLog (from logIndex)');
  }
  table = new Float64Array(index.entries.length * TABLE_STRIDE);
  index.entries.forEach((e, i) => table!.set([e.sector, e.sectors, e.flags, e.dataOffset], i * TABLE_STRIDE));
  tables.set(index, table);
  return table;
}

/**
 * Parses a log in the addon. A truncated or corrupt log throws an Error with code 'EINVAL' saying
 * which entry is wrong.
 */
export function logIndex(log: Buffer): WriteLog {
  const { sectorSize, table, marks } = loadReplayBinding().logIndex(log);
  const markAt = new Map(marks.map((m) => [m.index, m.text]));
  const entries: LogEntry[] = [];
  for (let i = 0; i < table.length / TABLE_STRIDE; i++) {
    const row = i * TABLE_STRIDE;
    const mark = markAt.get(i);
    const base = { index: i, sector: table[row]!, sectors: table[row + 1]!, flags: table[row + 2]!, dataOffset: table[row + 3]! };
    entries.push(mark === undefined ? base : { ...base, mark });
  }
  const parsed: WriteLog = { sectorSize, entries };
  tables.set(parsed, table);
  return parsed;
}

/**
 * Builds one crash state's image off the event loop (see ReplayOptions). Bad arguments throw at once
 * (TypeError, RangeError, or EINVAL for an index that does not fit the log); IO errors reject with
 * errno-shaped errors (code, errno, syscall, path).
 */
export function replayImage(opts: ReplayOptions): Promise<ReplayResult> {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('replay options must be an object');
  const { log, base, length, apply, torn, out, digestOnly } = opts;
  return loadReplayBinding().replayImage({
    log,
    table: tableOf(opts.index),
    base,
    length,
    apply,
    ...(torn !== undefined ? { torn } : {}),
    ...(out !== undefined ? { out } : {}),
    ...(digestOnly !== undefined ? { digestOnly } : {}),
  });
}

/** The digest replayImage reports (XXH64, seed 0, 16 hex digits), computed synchronously. */
export function imageDigest(image: Buffer): string {
  return loadReplayBinding().imageDigest(image);
}

/** True for entries that change the image: writes and discards with a length. */
export function isDataEntry(e: LogEntry): boolean {
  return (e.flags & LOG_FLAG.MARK) === 0 && e.sectors > 0;
}

/** The data entries before `end` in log order: the apply list of "the device as of entry `end`". */
export function prefixApply(log: WriteLog, end: number): Uint32Array {
  return Uint32Array.from(log.entries.slice(0, end).filter(isDataEntry).map((e) => e.index));
}

// ---- the plain TypeScript reference ----

/** The reference parser: same result as logIndex on a valid log; throws on a corrupt one. */
export function referenceLogIndex(log: Buffer): WriteLog {
  if (log.length < 28) throw new Error('log shorter than its superblock');
  const magic = log.readBigUInt64LE(0);
  if (magic !== LOG_MAGIC) throw new Error(`bad log magic 0x${magic.toString(16)}`);
  const version = log.readBigUInt64LE(8);
  if (version !== 1n) throw new Error(`unknown log version ${version}`);
  const count = Number(log.readBigUInt64LE(16));
  const sectorSize = log.readUInt32LE(24);
  if (sectorSize < 512 || sectorSize > 65536 || sectorSize & (sectorSize - 1)) throw new Error(`bad log sector size ${sectorSize}`);
  const perBlock = sectorSize / 512;
  const entries: LogEntry[] = [];
  let at = sectorSize;
  for (let i = 0; i < count; i++) {
    if (at + sectorSize > log.length) throw new Error(`entry ${i} at byte ${at} is past the end of the log`);
    const sector = Number(log.readBigUInt64LE(at)) * perBlock;
    const sectors = Number(log.readBigUInt64LE(at + 8)) * perBlock;
    const flags = Number(log.readBigUInt64LE(at + 16));
    const dataLen = Number(log.readBigUInt64LE(at + 24));
    if (flags > KNOWN_FLAGS) throw new Error(`entry ${i}: unknown flags ${flags}`);
    if (!Number.isSafeInteger((sector + sectors) * 512)) throw new Error(`entry ${i}: sector out of range`);
    const isMark = (flags & LOG_FLAG.MARK) !== 0;
    if (isMark && dataLen > sectorSize - 32) throw new Error(`entry ${i}: mark text does not fit its block`);
    const mark = isMark ? log.toString('utf8', at + 32, at + 32 + dataLen).replace(/\0+$/, '') : undefined;
    const dataOffset = at + sectorSize;
    at = dataOffset;
    if (!isMark && (flags & LOG_FLAG.DISCARD) === 0) at += sectors * 512;
    if (at > log.length) throw new Error(`entry ${i}'s data runs past the end of the log`);
    const e = { index: i, sector, sectors, flags, dataOffset };
    entries.push(mark === undefined ? e : { ...e, mark });
  }
  return { sectorSize, entries };
}

/**
 * The reference replay: `base` (or zeros) of `length` bytes with the `apply` entries applied in order,
 * clipped to the image, `torn`'s sector left as it was before that entry.
 */
export function referenceReplay(log: Buffer, index: WriteLog, base: Buffer | null, length: number, apply: ArrayLike<number>, torn?: TornWrite): Buffer {
  const image = Buffer.alloc(length);
  if (base) base.copy(image, 0, 0, length);
  for (let k = 0; k < apply.length; k++) {
    const e = index.entries[apply[k]!];
    if (e === undefined) throw new RangeError(`apply[${k}] is not an entry index`);
    if (!isDataEntry(e)) continue;
    for (let s = 0; s < e.sectors; s++) {
      if (torn && torn.entry === e.index && torn.sector === s) continue;
      const at = (e.sector + s) * 512;
      if (at >= length) break;
      const end = Math.min(at + 512, length);
      if (e.flags & LOG_FLAG.DISCARD) image.fill(0, at, end);
      else log.copy(image, at, e.dataOffset + s * 512, e.dataOffset + s * 512 + (end - at));
    }
  }
  return image;
}

const M64 = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;
const rotl = (x: bigint, r: bigint): bigint => ((x << r) | (x >> (64n - r))) & M64;
const round = (acc: bigint, input: bigint): bigint => (rotl((acc + input * P2) & M64, 31n) * P1) & M64;

/** The reference digest: XXH64 (seed 0) in BigInt arithmetic; slow, for small test images. */
export function referenceDigest(buf: Buffer): string {
  let p = 0;
  let h: bigint;
  if (buf.length >= 32) {
    const v = [(P1 + P2) & M64, P2, 0n, (0n - P1) & M64];
    for (; p + 32 <= buf.length; p += 32) for (let i = 0; i < 4; i++) v[i] = round(v[i]!, buf.readBigUInt64LE(p + 8 * i));
    h = (rotl(v[0]!, 1n) + rotl(v[1]!, 7n) + rotl(v[2]!, 12n) + rotl(v[3]!, 18n)) & M64;
    for (const x of v) h = ((((h ^ round(0n, x)) * P1) & M64) + P4) & M64;
  } else {
    h = P5;
  }
  h = (h + BigInt(buf.length)) & M64;
  for (; p + 8 <= buf.length; p += 8) h = (((rotl(h ^ round(0n, buf.readBigUInt64LE(p)), 27n) * P1) & M64) + P4) & M64;
  if (p + 4 <= buf.length) {
    h = (((rotl(h ^ ((BigInt(buf.readUInt32LE(p)) * P1) & M64), 23n) * P2) & M64) + P3) & M64;
    p += 4;
  }
  for (; p < buf.length; p++) h = (rotl(h ^ ((BigInt(buf[p]!) * P5) & M64), 11n) * P1) & M64;
  h ^= h >> 33n;
  h = (h * P2) & M64;
  h ^= h >> 29n;
  h = (h * P3) & M64;
  h ^= h >> 32n;
  return h.toString(16).padStart(16, '0');
}
