/**
 * Era backup and restore: `backup` copies the blocks of an era device written since era N (or all of
 * it) into a backup image with the copy engine (./copy.ts); `restore` verifies every checksum of a chain
 * of images (a full one, then incrementals in order) before it writes anything, then applies them.
 *
 * Backup image format, version 1 (little-endian; offsets in bytes):
 *
 *   header, 4096 bytes
 *     0   8  magic "DMKERABK"
 *     8   4  version (1)
 *     12  4  header bytes (4096)
 *     16  4  flags: 1 = full (the whole device, not only changed blocks), 2 = incomplete (being written)
 *     20  4  checksum kind: 1 = CRC-32C (Castagnoli, standard ~0 seed and final inversion) per piece
 *     24  8  since era: the image holds every block written in eras >= since (0 for a full image)
 *     32  8  until era: the era current once the image's metadata snapshot was taken. Blocks written
 *            later (during the copy, too) are in eras >= until, so the next incremental needs since <= until
 *     40  8  era block size (512-byte sectors)
 *     48  8  era blocks of the origin
 *     56  8  device length
 *     64  8  piece count
 *     72  8  data offset (a multiple of 4096)
 *     80  8  data bytes
 *     88  8  created (ms since the epoch)
 *     96  2  source identity length, then 128 bytes: the dm uuid of the source, or "name:<name>" without one
 *     4092 4 CRC-32C of bytes 0..4091 of the header followed by the whole piece table
 *   piece table at 4096, 32 bytes a piece:
 *     le64 device offset | le64 length (a multiple of 512, at most 1 MiB) | le64 image offset | le32 CRC-32C
 *     of the piece's data | le32 zero
 *   data at the data offset: the pieces back to back, in table order.
 *
 * Pieces are the changed ranges cut into 1 MiB pieces from each range's start, so each is one chunk of
 * the copy engine, which computes its CRC-32C on the way through. A checksum per 1 MiB piece (rather
 * than per range) names the damaged spot and lets verification stream.
 *
 * Between the snapshot and the copy the era device is suspended and resumed: era commits a block's
 * writeset mark before it issues the write, so a write marked in an older era may still be in flight
 * when the snapshot is taken; the suspend waits for it, and the copy then reads its data.
 *
 * An interrupted backup (cancelled, or the process killed) leaves `<to>.partial` (its header marked
 * incomplete; the piece table holds the plan) and the copy engine's journal `<to>.journal`; the same
 * `backup` call again continues from the journal instead of taking a new snapshot. Blocks written after
 * the first attempt's snapshot are in eras >= its until era, so the next incremental still catches them.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DevId, DeviceMapper } from '../dm';
import { bytes, sectors, SECTOR_SIZE, targetBlocks, type Bytes, type Sectors, type TargetBlocks } from '../units';
import { copyRanges, crc32cOf, type CopyEngine, type CopyResult } from './copy';
import { changedSince, rangesIn, type EraDm } from './era-backup';
import { hydrateAndSwap, zeroSuperblock, type CloneType, type HydrateDm, type HydrateRun } from './clone-hydrate';
import { clone } from '../targets';
import { checkEra } from '../pdata/era-changed';

export const BACKUP_MAGIC = 'DMKERABK';
export const BACKUP_VERSION = 1;
export const HEADER_BYTES = 4096;
export const PIECE_BYTES = 1n << 20n;
const ENTRY_BYTES = 32;
const IDENTITY_MAX = 128;
const FLAG_FULL = 1;
const FLAG_INCOMPLETE = 2;
const CHECKSUM_CRC32C = 1;

export type BackupCode =
  | 'ERR_BACKUP_ARGS'
  | 'ERR_BACKUP_FORMAT'
  | 'ERR_BACKUP_CORRUPT'
  | 'ERR_BACKUP_CHECKSUM'
  | 'ERR_BACKUP_INCOMPLETE'
  | 'ERR_BACKUP_CHAIN'
  | 'ERR_BACKUP_IDENTITY'
  | 'ERR_BACKUP_GEOMETRY'
  | 'ERR_BACKUP_DEST';

export class BackupError extends Error {
  constructor(
    message: string,
    readonly code: BackupCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BackupError';
  }
}

export interface BackupPiece {
  readonly deviceOffset: Bytes;
  readonly length: Bytes;
  readonly imageOffset: Bytes;
  readonly checksum: number;
}

export interface BackupHeader {
  readonly full: boolean;
  readonly incomplete: boolean;
  readonly sinceEra: number;
  readonly untilEra: number;
  readonly blockSize: Sectors;
  readonly nrBlocks: TargetBlocks;
  readonly length: Bytes;
  readonly dataOffset: Bytes;
  readonly dataBytes: Bytes;
  readonly created: number;
  /** The source's dm uuid, or "name:<name>" when it has none. */
  readonly identity: string;
  readonly pieces: readonly BackupPiece[];
}

/** What to back up: the source's facts and the byte ranges to copy. */
export interface BackupPlan {
  readonly identity: string;
  readonly full: boolean;
  readonly sinceEra: number;
  readonly untilEra: number;
  readonly blockSize: Sectors;
  readonly nrBlocks: TargetBlocks;
  readonly length: Bytes;
  /** End-exclusive byte ranges of the source, sorted, within `length`, multiples of 512. */
  readonly ranges: readonly { readonly start: Bytes; readonly end: Bytes }[];
}

export interface BackupProgressOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (done: Bytes, total: Bytes) => void;
  readonly engine?: CopyEngine;
  readonly queueDepth?: number;
  /** For tests: interrupt the copy (as a cancel) after this many pieces. */
  readonly interruptAfterChunks?: number;
}

export interface BackupResult {
  readonly file: string;
  readonly header: BackupHeader;
  readonly copy: CopyResult;
  /** True when an interrupted backup was continued from its journal. */
  readonly resumed: boolean;
}

/** The copy engine's options among a caller's. */
function copyOptions(o: BackupProgressOptions): BackupProgressOptions {
  return {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    ...(o.engine ? { engine: o.engine } : {}),
    ...(o.queueDepth ? { queueDepth: o.queueDepth } : {}),
    ...(o.interruptAfterChunks ? { interruptAfterChunks: o.interruptAfterChunks } : {}),
  };
}

const u64 = (b: Buffer, at: number): bigint => b.readBigUInt64LE(at);
const roundUp = (n: bigint, to: bigint): bigint => ((n + to - 1n) / to) * to;

function bad(message: string, code: BackupCode = 'ERR_BACKUP_ARGS'): BackupError {
  return new BackupError(message, code);
}

/** Cuts the ranges into pieces of at most PIECE_BYTES, packed from the data offset. */
function piecesOf(plan: BackupPlan): { pieces: BackupPiece[]; dataOffset: bigint; dataBytes: bigint } {
  const raw: { deviceOffset: bigint; length: bigint }[] = [];
  let last = 0n;
  for (const r of plan.ranges) {
    if (typeof r.start !== 'bigint' || typeof r.end !== 'bigint' || r.start % SECTOR_SIZE !== 0n || r.end % SECTOR_SIZE !== 0n || r.end <= r.start || r.start < last || r.end > plan.length) {
      throw bad(`backup ranges must be sorted, disjoint, sector-aligned and inside the device (${plan.length} bytes); got [${String(r.start)}, ${String(r.end)})`);
    }
    last = r.end;
    for (let at: bigint = r.start; at < r.end; at += PIECE_BYTES) raw.push({ deviceOffset: at, length: r.end - at < PIECE_BYTES ? r.end - at : PIECE_BYTES });
  }
  const dataOffset = roundUp(BigInt(HEADER_BYTES) + BigInt(raw.length * ENTRY_BYTES), 4096n);
  let at = dataOffset;
  const pieces = raw.map((p) => {
    const piece = { deviceOffset: bytes(p.deviceOffset), length: bytes(p.length), imageOffset: bytes(at), checksum: 0 };
    at += p.length;
    return piece;
  });
  return { pieces, dataOffset, dataBytes: at - dataOffset };
}

/** The header block and piece table of `h`, with the header checksum filled in. */
export function encodeBackupHeader(h: BackupHeader): Buffer {
  const table = Buffer.alloc(h.pieces.length * ENTRY_BYTES);
  h.pieces.forEach((p, i) => {
    const o = i * ENTRY_BYTES;
    table.writeBigUInt64LE(p.deviceOffset, o);
    table.writeBigUInt64LE(p.length, o + 8);
    table.writeBigUInt64LE(p.imageOffset, o + 16);
    table.writeUInt32LE(p.checksum >>> 0, o + 24);
  });
  const head = Buffer.alloc(HEADER_BYTES);
  head.write(BACKUP_MAGIC, 0, 'latin1');
  head.writeUInt32LE(BACKUP_VERSION, 8);
  head.writeUInt32LE(HEADER_BYTES, 12);
  head.writeUInt32LE((h.full ? FLAG_FULL : 0) | (h.incomplete ? FLAG_INCOMPLETE : 0), 16);
  head.writeUInt32LE(CHECKSUM_CRC32C, 20);
  head.writeBigUInt64LE(BigInt(h.sinceEra), 24);
  head.writeBigUInt64LE(BigInt(h.untilEra), 32);
  head.writeBigUInt64LE(h.blockSize, 40);
  head.writeBigUInt64LE(h.nrBlocks, 48);
  head.writeBigUInt64LE(h.length, 56);
  head.writeBigUInt64LE(BigInt(h.pieces.length), 64);
  head.writeBigUInt64LE(h.dataOffset, 72);
  head.writeBigUInt64LE(h.dataBytes, 80);
  head.writeBigUInt64LE(BigInt(h.created), 88);
  const id = Buffer.from(h.identity, 'utf8');
  if (id.length > IDENTITY_MAX) throw bad(`source identity is ${id.length} bytes, more than ${IDENTITY_MAX}`);
  head.writeUInt16LE(id.length, 96);
  id.copy(head, 98);
  head.writeUInt32LE(crc32cOf(Buffer.concat([head.subarray(0, HEADER_BYTES - 4), table])), HEADER_BYTES - 4);
  return Buffer.concat([head, table]);
}

function readExactly(fd: number, length: number, position: number, file: string): Buffer {
  const b = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, b, got, length - got, position + got);
    if (n === 0) throw bad(`${file}: ends at byte ${position + got}, inside its header or piece table`, 'ERR_BACKUP_CORRUPT');
    got += n;
  }
  return b;
}

function sizeOf(st: fs.Stats, file: string): bigint {
  if (st.isFile()) return BigInt(st.size);
  if (!st.isBlockDevice()) throw bad(`${file} is not a regular file or a block device`, 'ERR_BACKUP_ARGS');
  return blockDeviceBytes(file);
}

/** A block device's size from sysfs (0 when sysfs does not know it, so callers refuse it). */
function blockDeviceBytes(file: string): bigint {
  try {
    const name = path.basename(fs.realpathSync(file));
    return BigInt(fs.readFileSync(`/sys/class/block/${name}/size`, 'utf8').trim()) * SECTOR_SIZE;
  } catch {
    return 0n;
  }
}

/**
 * Reads and checks the header and piece table of a backup image (or of an incomplete one when
 * `allowIncomplete`). Every field is bounded by the file's size before anything is allocated.
 */
export function readBackupHeader(file: string, opts: { allowIncomplete?: boolean } = {}): BackupHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new BackupError(`cannot open ${file}: ${(e as Error).message}`, 'ERR_BACKUP_ARGS', { cause: e });
  }
  try {
    const st = fs.fstatSync(fd);
    const size = sizeOf(st, file);
    if (size < BigInt(HEADER_BYTES)) throw bad(`${file} is ${size} bytes, shorter than a backup header`, 'ERR_BACKUP_FORMAT');
    const head = readExactly(fd, HEADER_BYTES, 0, file);
    if (head.toString('latin1', 0, 8) !== BACKUP_MAGIC) throw bad(`${file} is not a dmkit era backup (bad magic)`, 'ERR_BACKUP_FORMAT');
    const version = head.readUInt32LE(8);
    if (version !== BACKUP_VERSION) throw bad(`${file}: backup format version ${version}, this dmkit reads ${BACKUP_VERSION}`, 'ERR_BACKUP_FORMAT');
    if (head.readUInt32LE(12) !== HEADER_BYTES || head.readUInt32LE(20) !== CHECKSUM_CRC32C) throw bad(`${file}: unknown header size or checksum kind`, 'ERR_BACKUP_CORRUPT');
    const count = u64(head, 64);
    if (count > (size - BigInt(HEADER_BYTES)) / BigInt(ENTRY_BYTES)) throw bad(`${file}: claims ${count} pieces, more than its ${size} bytes hold`, 'ERR_BACKUP_CORRUPT');
    const table = readExactly(fd, Number(count) * ENTRY_BYTES, HEADER_BYTES, file);
    const want = head.readUInt32LE(HEADER_BYTES - 4);
    if (crc32cOf(Buffer.concat([head.subarray(0, HEADER_BYTES - 4), table])) !== want) throw bad(`${file}: header or piece table checksum mismatch (corrupt)`, 'ERR_BACKUP_CORRUPT');
    const flags = head.readUInt32LE(16);
    if ((flags & ~(FLAG_FULL | FLAG_INCOMPLETE)) !== 0) throw bad(`${file}: unknown flags 0x${flags.toString(16)}`, 'ERR_BACKUP_CORRUPT');
    if ((flags & FLAG_INCOMPLETE) !== 0 && !opts.allowIncomplete) throw bad(`${file} is an incomplete backup (interrupted; run the same backup again to finish it)`, 'ERR_BACKUP_INCOMPLETE');
    const idLength = head.readUInt16LE(96);
    if (idLength > IDENTITY_MAX) throw bad(`${file}: identity of ${idLength} bytes`, 'ERR_BACKUP_CORRUPT');
    const length = u64(head, 56);
    const dataOffset = u64(head, 72);
    const dataBytes = u64(head, 80);
    const since = u64(head, 24);
    const until = u64(head, 32);
    if (since > 0xffffffffn || until > 0xffffffffn || since > until) throw bad(`${file}: era range ${since}..${until} is impossible`, 'ERR_BACKUP_CORRUPT');
    if (dataOffset % 4096n !== 0n || dataOffset < BigInt(HEADER_BYTES) + count * BigInt(ENTRY_BYTES)) throw bad(`${file}: data offset ${dataOffset} overlaps the table`, 'ERR_BACKUP_CORRUPT');
    if ((flags & FLAG_INCOMPLETE) === 0 && dataOffset + dataBytes > size) throw bad(`${file}: ${dataBytes} data bytes at ${dataOffset} run past its end (${size} bytes): truncated`, 'ERR_BACKUP_CORRUPT');
    const pieces: BackupPiece[] = [];
    let next = dataOffset;
    let lastEnd = 0n;
    for (let i = 0; i < Number(count); i++) {
      const o = i * ENTRY_BYTES;
      const p = { deviceOffset: u64(table, o), length: u64(table, o + 8), imageOffset: u64(table, o + 16), checksum: table.readUInt32LE(o + 24) };
      if (p.length === 0n || p.length > PIECE_BYTES || p.length % SECTOR_SIZE !== 0n || p.deviceOffset % SECTOR_SIZE !== 0n || p.deviceOffset < lastEnd || p.deviceOffset + p.length > length || p.imageOffset !== next) {
        throw bad(`${file}: piece ${i} (device ${p.deviceOffset}+${p.length}, image ${p.imageOffset}) is out of place`, 'ERR_BACKUP_CORRUPT');
      }
      lastEnd = p.deviceOffset + p.length;
      next += p.length;
      pieces.push({ deviceOffset: bytes(p.deviceOffset), length: bytes(p.length), imageOffset: bytes(p.imageOffset), checksum: p.checksum });
    }
    if (next - dataOffset !== dataBytes) throw bad(`${file}: pieces hold ${next - dataOffset} bytes, the header says ${dataBytes}`, 'ERR_BACKUP_CORRUPT');
    return {
      full: (flags & FLAG_FULL) !== 0,
      incomplete: (flags & FLAG_INCOMPLETE) !== 0,
      sinceEra: Number(since),
      untilEra: Number(until),
      blockSize: sectors(u64(head, 40)),
      nrBlocks: targetBlocks(u64(head, 48)),
      length: bytes(length),
      dataOffset: bytes(dataOffset),
      dataBytes: bytes(dataBytes),
      created: Number(u64(head, 88)),
      identity: head.toString('utf8', 98, 98 + idLength),
      pieces,
    };
  } finally {
    fs.closeSync(fd);
  }
}

function isBlockDevice(p: string): boolean {
  try {
    return fs.statSync(p).isBlockDevice();
  } catch {
    return false;
  }
}

/** Where an interrupted backup to `to` keeps its image and journal. */
export function backupPaths(to: string): { image: string; journal: string; inPlace: boolean } {
  const inPlace = isBlockDevice(to);
  return { image: inPlace ? to : `${to}.partial`, journal: `${inPlace ? path.join('/var/tmp', `dmkit-backup-${path.basename(to)}`) : to}.journal`, inPlace };
}

/** An interrupted backup of the same source and era to continue, or null. */
function resumable(to: string, identity: string, sinceEra: number, full: boolean): BackupHeader | null {
  const p = backupPaths(to);
  if (!fs.existsSync(p.journal) || !fs.existsSync(p.image)) return null;
  try {
    const h = readBackupHeader(p.image, { allowIncomplete: true });
    return h.incomplete && h.identity === identity && h.sinceEra === sinceEra && h.full === full ? h : null;
  } catch {
    return null;
  }
}

function checkArgs(source: string, to: string): void {
  if (typeof source !== 'string' || source === '') throw bad('the source must be a device path');
  if (typeof to !== 'string' || to === '') throw bad('--to must name a file or a block device');
  if (path.resolve(to) === path.resolve(source)) throw bad('the backup cannot be written over its source');
}

/**
 * Writes a backup image of `source` (a block device or, in tests, a regular file) to `to` according to
 * `plan`, or continues an interrupted one with the same identity and since era.
 */
export async function writeBackup(source: string, plan: BackupPlan | (() => Promise<BackupPlan>), to: string, identity: { identity: string; sinceEra: number; full: boolean }, opts: BackupProgressOptions = {}): Promise<BackupResult> {
  checkArgs(source, to);
  const paths = backupPaths(to);
  let header = resumable(to, identity.identity, identity.sinceEra, identity.full);
  const resumed = header !== null;
  if (header === null) {
    const p = typeof plan === 'function' ? await plan() : plan;
    const { pieces, dataOffset, dataBytes } = piecesOf(p);
    header = {
      full: p.full,
      incomplete: true,
      sinceEra: checkEra(p.sinceEra, 'since era'),
      untilEra: checkEra(p.untilEra, 'until era'),
      blockSize: p.blockSize,
      nrBlocks: p.nrBlocks,
      length: p.length,
      dataOffset: bytes(dataOffset),
      dataBytes: bytes(dataBytes),
      created: Date.now(),
      identity: p.identity,
      pieces,
    };
    if (paths.inPlace && BigInt(blockDeviceBytes(to)) < dataOffset + dataBytes) {
      throw bad(`${to} holds ${blockDeviceBytes(to)} bytes; the backup needs ${dataOffset + dataBytes}`, 'ERR_BACKUP_DEST');
    }
    fs.rmSync(paths.journal, { force: true });
    const fd = fs.openSync(paths.image, paths.inPlace ? 'r+' : 'w');
    try {
      fs.writeSync(fd, encodeBackupHeader(header), 0, undefined, 0);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
  const h = header;
  const copy = await copyRanges(
    source,
    paths.image,
    h.pieces.map((p) => ({ source: p.deviceOffset, length: p.length, dest: p.imageOffset })),
    { journal: paths.journal, checksums: true, chunkBytes: bytes(PIECE_BYTES), ...copyOptions(opts) },
  );
  const sums = copy.checksums!;
  const done: BackupHeader = { ...h, incomplete: false, pieces: h.pieces.map((p, i) => ({ ...p, checksum: sums[i]! })) };
  const fd = fs.openSync(paths.image, 'r+');
  try {
    if (!paths.inPlace) fs.ftruncateSync(fd, Number(h.dataOffset + h.dataBytes));
    fs.writeSync(fd, encodeBackupHeader(done), 0, undefined, 0);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  if (!paths.inPlace) {
    fs.renameSync(paths.image, to);
    const dir = fs.openSync(path.dirname(path.resolve(to)), 'r');
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  }
  fs.rmSync(paths.journal, { force: true });
  return { file: to, header: done, copy, resumed };
}

export interface EraBackupOptions extends BackupProgressOptions {
  /** Back up the blocks written in this era or later; omitted: a full backup of the whole device. */
  readonly since?: number;
  /** The image file (or a block device to write it to). */
  readonly to: string;
  /** The device node to read; default /dev/mapper/<name>. */
  readonly devicePath?: string;
}

/** `dmkit era backup`: a full or incremental backup of the live era device `id` (see the file comment). */
export type BackupDm = EraDm & Pick<DeviceMapper, 'suspend' | 'resume'>;

export async function backup(dm: BackupDm, id: DevId, opts: EraBackupOptions): Promise<BackupResult> {
  if (typeof opts !== 'object' || opts === null) throw bad('backup options must be an object {since?, to}');
  const since = opts.since === undefined ? undefined : checkEra(opts.since, '--since');
  const info = await dm.info(id);
  const identity = info.uuid ? info.uuid : `name:${info.name}`;
  const source = opts.devicePath ?? `/dev/mapper/${info.name}`;
  const full = since === undefined;
  return writeBackup(
    source,
    async () => {
      // The snapshot rolls the era over: everything written from here on is in eras >= liveEra (the
      // status's era while the snapshot was held; the snapshot's own superblock may name the era before).
      const changed = await changedSince(dm, id, since ?? 0);
      // A write era marked in an older writeset may still be in flight when the snapshot is taken (era
      // commits the mark, then issues the write): a suspend waits for every in-flight bio, so the copy
      // below reads its data. Writes issued after the snapshot are in eras >= currentEra.
      await dm.suspend(id);
      await dm.resume(id);
      const length = bytes(changed.length * SECTOR_SIZE);
      const ranges = full ? (length > 0n ? [{ start: bytes(0n), end: length }] : []) : rangesIn(changed, 'bytes', changed.length);
      return { identity, full, sinceEra: since ?? 0, untilEra: changed.liveEra, blockSize: changed.blockSize, nrBlocks: changed.nrBlocks, length, ranges };
    },
    opts.to,
    { identity, sinceEra: since ?? 0, full },
    opts,
  );
}

export interface RestoreOptions extends BackupProgressOptions {
  /** Verify every piece's checksum before writing anything (default true). */
  readonly verify?: boolean;
}

export interface RestoreResult {
  readonly images: readonly BackupHeader[];
  readonly bytes: Bytes;
  readonly verifiedBytes: Bytes;
}

/** Checks that `headers` make one chain: a full image, then incrementals of the same source, in order. */
export function checkChain(files: readonly string[], headers: readonly BackupHeader[]): void {
  if (headers.length === 0) throw bad('restore needs at least one backup image');
  if (!headers[0]!.full) throw bad(`${files[0]} is an incremental backup (since era ${headers[0]!.sinceEra}); a restore starts from a full backup`, 'ERR_BACKUP_CHAIN');
  for (let i = 1; i < headers.length; i++) {
    const a = headers[i - 1]!, b = headers[i]!;
    if (b.identity !== a.identity) throw bad(`${files[i]} is a backup of ${b.identity}, ${files[0]} of ${a.identity}`, 'ERR_BACKUP_IDENTITY');
    if (b.length !== a.length || b.blockSize !== a.blockSize || b.nrBlocks !== a.nrBlocks) throw bad(`${files[i]}: the device geometry differs from ${files[i - 1]}`, 'ERR_BACKUP_GEOMETRY');
    if (b.full) throw bad(`${files[i]} is a full backup after ${files[i - 1]}; give the latest full backup first`, 'ERR_BACKUP_CHAIN');
    if (b.sinceEra > a.untilEra) throw bad(`gap in the era chain: ${files[i]} holds eras >= ${b.sinceEra} but ${files[i - 1]} ends at era ${a.untilEra} (blocks written in eras ${a.untilEra}..${b.sinceEra - 1} are in neither)`, 'ERR_BACKUP_CHAIN');
    if (b.untilEra <= a.untilEra) throw bad(`${files[i]} (until era ${b.untilEra}) is not newer than ${files[i - 1]} (until era ${a.untilEra}): out of order`, 'ERR_BACKUP_CHAIN');
  }
}

/** Reads every piece of every image and compares its checksum; throws ERR_BACKUP_CHECKSUM on the first bad one. */
async function verifyImages(files: readonly string[], headers: readonly BackupHeader[], common: CopyCommon, done: (n: bigint) => void): Promise<bigint> {
  let verified = 0n;
  for (let k = 0; k < files.length; k++) {
    const h = headers[k]!;
    const r = await copyRanges(files[k]!, null, h.pieces.map((p) => ({ source: p.imageOffset, length: p.length, dest: bytes(0n) })), common);
    compareSums(files[k]!, h, r.checksums, 'before anything was written');
    verified += h.dataBytes;
    done(h.dataBytes);
  }
  return verified;
}

function compareSums(file: string, h: BackupHeader, sums: Uint32Array | undefined, when: string): void {
  h.pieces.forEach((p, i) => {
    if (sums?.[i] !== p.checksum) {
      throw bad(`${file}: piece ${i} (device bytes ${p.deviceOffset}..${p.deviceOffset + p.length}) fails its checksum ${when} (corrupt backup)`, 'ERR_BACKUP_CHECKSUM');
    }
  });
}

type CopyCommon = BackupProgressOptions & { chunkBytes: Bytes; checksums: true };

/** Checks the arguments, every header and the chain; the headers. */
function openChain(files: readonly string[], dest: string): BackupHeader[] {
  if (!Array.isArray(files) || files.some((f) => typeof f !== 'string' || f === '')) throw bad('restore needs backup image paths');
  if (typeof dest !== 'string' || dest === '') throw bad('restore needs a destination device');
  if (files.some((f) => path.resolve(f) === path.resolve(dest))) throw bad('the destination is one of the backup images');
  const headers = files.map((f) => readBackupHeader(f));
  checkChain(files, headers);
  return headers;
}

/** Applies images in order onto `dest`, comparing the checksums again on the way. */
async function applyImages(files: readonly string[], headers: readonly BackupHeader[], dest: string, common: CopyCommon, done: (n: bigint) => void): Promise<bigint> {
  let written = 0n;
  for (let k = 0; k < files.length; k++) {
    const h = headers[k]!;
    const r = await copyRanges(files[k]!, dest, h.pieces.map((p) => ({ source: p.imageOffset, length: p.length, dest: p.deviceOffset })), common);
    compareSums(files[k]!, h, r.checksums, `while it was applied (the image changed after verification; ${dest} is partly restored)`);
    written += h.dataBytes;
    done(h.dataBytes);
  }
  return written;
}

/**
 * Restores a chain of backup images to `dest` (a block device, or a regular file). All headers and the
 * chain are checked, then (verify, the default) every piece of every image is read and its checksum
 * compared, before the first byte is written; then the images are applied in order.
 */
export async function restore(files: readonly string[], dest: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
  const headers = openChain(files, dest);
  const length = headers[0]!.length;
  if (isBlockDevice(dest)) {
    const size = blockDeviceBytes(dest);
    if (size < length) throw bad(`${dest} holds ${size} bytes; the backup is of a ${length}-byte device`, 'ERR_BACKUP_DEST');
  } else if (fs.existsSync(dest) && !fs.statSync(dest).isFile()) {
    throw bad(`${dest} is not a block device or a regular file`, 'ERR_BACKUP_DEST');
  }
  const total = headers.reduce((n, h) => n + h.dataBytes, 0n) * (opts.verify === false ? 1n : 2n);
  let before = 0n;
  const common: CopyCommon = { chunkBytes: bytes(PIECE_BYTES), checksums: true, ...copyOptions(opts), onProgress: (d: Bytes): void => opts.onProgress?.(bytes(before + d), bytes(total)) };
  const advance = (n: bigint): void => {
    before += n;
  };
  const verified = opts.verify === false ? 0n : await verifyImages(files, headers, common, advance);
  if (!isBlockDevice(dest)) {
    // A regular file stands for a device of `length` bytes: blocks no image holds read as zeros.
    const fd = fs.openSync(dest, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NONBLOCK);
    try {
      if (!fs.fstatSync(fd).isFile()) throw bad(`${dest} is not a block device or a regular file`, 'ERR_BACKUP_DEST');
      if (BigInt(fs.fstatSync(fd).size) < length) fs.ftruncateSync(fd, Number(length));
    } finally {
      fs.closeSync(fd);
    }
  }
  const written = await applyImages(files, headers, dest, common, advance);
  return { images: headers, bytes: bytes(written), verifiedBytes: bytes(verified) };
}

export interface InstantRestoreOptions extends RestoreOptions {
  /** The dm device to create: a clone of the full image onto `dest`, usable at once. */
  readonly name: string;
  /** The clone's metadata device (its superblock is zeroed). */
  readonly metadata: string;
  /** Clone region size (default 128 sectors). */
  readonly regionSize?: Sectors;
  readonly type?: CloneType;
  /** Swap to a linear mapping of `dest` once hydrated (default true). */
  readonly swap?: boolean;
  /**
   * Follow hydration (default true). false: return once usable; the kernel keeps hydrating, and
   * `dmkit clone hydrate NAME --attach` follows and swaps later (the loop device then stays attached).
   */
  readonly follow?: boolean;
}

export interface InstantRestore {
  /** The usable device (/dev/mapper/<name>), already holding every incremental. */
  readonly device: string;
  /** The read-only loop device over the full image's data (the clone's source). */
  readonly loop: string;
  readonly images: readonly BackupHeader[];
  readonly verifiedBytes: Bytes;
  /** Incremental bytes written through the clone before it was handed over. */
  readonly incrementalBytes: Bytes;
  /** Background hydration (null without `follow`); the loop device is detached after the swap. */
  readonly hydration: HydrateRun | null;
}

function losetup(...args: string[]): string {
  const r = spawnSync('losetup', args, { encoding: 'utf8' });
  if (r.status !== 0) throw bad(`losetup ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`, 'ERR_BACKUP_DEST');
  return r.stdout.trim();
}

/**
 * Instant restore: after the chain is checked and verified, a read-only loop device maps the full
 * image's data (contiguous in a full image) and a clone target (dmkit-clone by default) is created with
 * it as the source and `dest` as the destination, so the device is usable at once; the incrementals are
 * then written through the clone (clone writes land on the destination and mark their regions
 * hydrated), and hydration copies the rest in the background.
 */
export async function instantRestore(dm: HydrateDm, files: readonly string[], dest: string, opts: InstantRestoreOptions): Promise<InstantRestore> {
  if (typeof opts?.name !== 'string' || opts.name === '' || typeof opts.metadata !== 'string' || opts.metadata === '') throw bad('instant restore needs a device name and a clone metadata device');
  const headers = openChain(files, dest);
  const full = headers[0]!;
  if (!isBlockDevice(dest) || !isBlockDevice(opts.metadata)) throw bad('instant restore needs block devices for the destination and the clone metadata', 'ERR_BACKUP_DEST');
  if (blockDeviceBytes(dest) < full.length) throw bad(`${dest} holds ${blockDeviceBytes(dest)} bytes; the backup is of a ${full.length}-byte device`, 'ERR_BACKUP_DEST');
  if (full.length % SECTOR_SIZE !== 0n || full.dataBytes !== full.length) throw bad(`${files[0]} does not hold the whole device contiguously`, 'ERR_BACKUP_CORRUPT');
  let before = 0n;
  const total = headers.reduce((n, h) => n + h.dataBytes, 0n) + headers.slice(1).reduce((n, h) => n + h.dataBytes, 0n);
  const common: CopyCommon = { chunkBytes: bytes(PIECE_BYTES), checksums: true, ...copyOptions(opts), onProgress: (d: Bytes): void => opts.onProgress?.(bytes(before + d), bytes(total)) };
  const advance = (n: bigint): void => {
    before += n;
  };
  const verified = opts.verify === false ? 0n : await verifyImages(files, headers, common, advance);
  if (!fs.existsSync('/dev/loop-control')) spawnSync('modprobe', ['loop']);
  const loop = losetup('--find', '--show', '--read-only', '--offset', String(full.dataOffset), '--sizelimit', String(full.length), files[0]!);
  const length = sectors(full.length / SECTOR_SIZE);
  let created = false;
  try {
    const line = clone.line(
      { metadataDevice: opts.metadata, destinationDevice: dest, sourceDevice: loop, regionSize: opts.regionSize ?? sectors(128), hydrationThreshold: null, hydrationBatchSize: null },
      { start: sectors(0), length, type: opts.type ?? 'dmkit-clone' },
    );
    await zeroSuperblock(opts.metadata);
    await dm.create(opts.name, { targets: [line] });
    created = true;
    const device = `/dev/mapper/${opts.name}`;
    const written = await applyImages(files.slice(1), headers.slice(1), device, common, advance);
    if (opts.follow === false) return { device, loop, images: headers, verifiedBytes: bytes(verified), incrementalBytes: bytes(written), hydration: null };
    const hydration = hydrateAndSwap(dm, { name: opts.name, source: loop, destination: dest, metadata: opts.metadata, regionSize: opts.regionSize ?? sectors(128), type: opts.type ?? 'dmkit-clone', create: false, swap: opts.swap ?? true, ...(opts.signal ? { signal: opts.signal } : {}) });
    const detach = (): void => {
      if (opts.swap !== false) spawnSync('losetup', ['--detach', loop]);
    };
    const done = hydration.done.then(
      (r) => {
        detach();
        return r;
      },
      (e: unknown) => {
        throw e;
      },
    );
    return { device, loop, images: headers, verifiedBytes: bytes(verified), incrementalBytes: bytes(written), hydration: { progress: hydration.progress, done } };
  } catch (e) {
    if (!created) spawnSync('losetup', ['--detach', loop]);
    throw e;
  }
}
