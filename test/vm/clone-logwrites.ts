/**
 * dm-log-writes logs, read in TypeScript (layout from the kernel's drivers/md/dm-log-writes.c, 6.1):
 *
 *   block 0                     superblock {le64 magic, le64 version, le64 nr_entries, le32 sectorsize}
 *   then, for each entry in order, starting at block 1 (sectorsize bytes per block):
 *     1 block                   {le64 sector, le64 nr_sectors, le64 flags, le64 data_len} [+ mark text]
 *     nr_sectors blocks         the data written (none for discards, marks and empty flushes)
 *
 * `sector` and `nr_sectors` count the device's logical blocks (sectorsize bytes), not 512-byte sectors.
 * nr_entries is only rewritten on FUA and MARK entries (and the end mark the destructor adds), so read
 * the log after removing the log-writes device. Writes are logged once a later FLUSH covers them (FUA
 * writes on completion), so every entry before a point in the log was durable at that point.
 */
export const LOG_MAGIC = 0x6a736677736872n;
export const LOG_FLAG = { FLUSH: 1n, FUA: 2n, DISCARD: 4n, MARK: 8n, METADATA: 16n } as const;

export interface LogEntry {
  readonly index: number;
  /** In 512-byte sectors (converted from the log's blocks). */
  readonly sector: bigint;
  readonly sectors: bigint;
  readonly flags: bigint;
  /** The mark's text for MARK entries. */
  readonly mark?: string;
  /** Byte offset of the data in the log (for writes). */
  readonly dataOffset: number;
}

export interface WriteLog {
  readonly sectorSize: number;
  readonly entries: readonly LogEntry[];
}

export function parseWriteLog(log: Buffer): WriteLog {
  if (log.length < 28) throw new Error('log shorter than its superblock');
  const magic = log.readBigUInt64LE(0);
  if (magic !== LOG_MAGIC) throw new Error(`bad log magic 0x${magic.toString(16)}`);
  const version = log.readBigUInt64LE(8);
  if (version !== 1n) throw new Error(`unknown log version ${version}`);
  const count = Number(log.readBigUInt64LE(16));
  const sectorSize = log.readUInt32LE(24);
  if (sectorSize < 512 || sectorSize & (sectorSize - 1)) throw new Error(`bad log sector size ${sectorSize}`);
  const perBlock = BigInt(sectorSize / 512);
  const entries: LogEntry[] = [];
  let at = sectorSize;
  for (let i = 0; i < count; i++) {
    if (at + 32 > log.length) throw new Error(`entry ${i} at byte ${at} is past the end of the log`);
    const sector = log.readBigUInt64LE(at);
    const nr = log.readBigUInt64LE(at + 8);
    const flags = log.readBigUInt64LE(at + 16);
    const dataLen = Number(log.readBigUInt64LE(at + 24));
    const isMark = (flags & LOG_FLAG.MARK) !== 0n;
    const mark = isMark ? log.toString('utf8', at + 32, at + 32 + dataLen).replace(/\0+$/, '') : undefined;
    const dataOffset = at + sectorSize;
    at = dataOffset;
    if (!isMark && (flags & LOG_FLAG.DISCARD) === 0n) at += Number(nr) * sectorSize;
    if (at > log.length) throw new Error(`entry ${i}'s data runs past the end of the log`);
    entries.push({ index: i, sector: sector * perBlock, sectors: nr * perBlock, flags, mark, dataOffset });
  }
  return { sectorSize, entries };
}

/**
 * The device as of a point in the log: `base` (the device before logging began) with entries
 * [0, end) applied. Discards read back as zeros.
 */
export function replay(log: Buffer, parsed: WriteLog, base: Buffer, end: number): Buffer {
  const image = Buffer.from(base);
  for (const e of parsed.entries.slice(0, end)) {
    if (e.flags & LOG_FLAG.MARK || e.sectors === 0n) continue;
    const from = Number(e.sector) * 512;
    const len = Number(e.sectors) * 512;
    if (from >= image.length) continue;
    const n = Math.min(len, image.length - from);
    if (e.flags & LOG_FLAG.DISCARD) image.fill(0, from, from + n);
    else log.copy(image, from, e.dataOffset, e.dataOffset + n);
  }
  return image;
}
