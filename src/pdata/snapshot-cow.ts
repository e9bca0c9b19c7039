/**
 * A validating reader for the persistent snapshot COW format (the `P`/`PO` exception store shared by
 * snapshot, dmkit-snapshot, snapshot-merge and dmkit-merge; ../shared/reference/kernel-facts.md §7).
 * Everything is little-endian and in chunks of the header's chunk size:
 *
 *   chunk 0      header {le32 magic "SnAp" 0x70416e53, le32 valid, le32 version = 1, le32 chunk_size (sectors)}
 *   chunk 1      exception area 0: {le64 old_chunk, le64 new_chunk} x (chunk bytes / 16)
 *   chunks 2..   data, then area 1 at 1 + (exceptions per area + 1), and so on
 *
 * An area's list ends at the first entry whose new_chunk is 0 (chunk 0 is the header); a full area goes on
 * in the next one. Used by the VM tests as the metadata oracle after every scenario: the header must be
 * sane (the header race this reader was written for left chunk_size 0), and every exception must point
 * into the device, at a data chunk, once.
 */
import { sectors, targetBlocks, type Sectors, type TargetBlocks } from '../units';

/** "SnAp", little-endian. */
export const SNAP_MAGIC = 0x70416e53;
export const COW_VERSION = 1;
/** On-disk size of one exception: two le64. */
export const EXCEPTION_BYTES = 16;
const HEADER_BYTES = 16;
const SECTOR = 512;

/** The COW image breaks the format: what was wrong and where (a chunk number, or -1 for the whole image). */
export class CowDamage extends Error {
  readonly code = 'ERR_COW_DAMAGE' as const;
  constructor(
    readonly chunk: number,
    readonly what: string,
  ) {
    super(chunk < 0 ? what : `chunk ${chunk}: ${what}`);
    this.name = 'CowDamage';
  }
}

export interface CowHeader {
  readonly magic: number;
  readonly valid: number;
  readonly version: number;
  /** As stored; 0 only in a damaged header. */
  readonly chunkSize: Sectors;
}

/**
 * new: never written (magic 0; the next activation formats it); valid: exceptions usable; invalid: the
 * snapshot was invalidated (overflow or an I/O error) and can never be activated as valid again.
 */
export type CowState = 'new' | 'valid' | 'invalid';

export interface CowException {
  /** Chunk of the origin whose old data was copied. */
  readonly oldChunk: TargetBlocks;
  /** Chunk of the COW device holding that copy. */
  readonly newChunk: TargetBlocks;
}

export interface CowImage {
  readonly header: CowHeader;
  readonly state: CowState;
  readonly chunkSize: Sectors;
  readonly exceptionsPerArea: number;
  /** Exception areas read (the last one not full, unless the device ended). */
  readonly areas: number;
  readonly exceptions: readonly CowException[];
  /** The chunk the store would allocate next (after the highest new_chunk, past area chunks). */
  readonly nextFree: TargetBlocks;
}

/** Reads the 16-byte header at the start of `image` without judging it. */
export function readCowHeader(image: Buffer): CowHeader {
  if (!Buffer.isBuffer(image)) throw new TypeError('readCowHeader: image must be a Buffer');
  if (image.length < HEADER_BYTES) throw new CowDamage(0, `image of ${image.length} bytes is shorter than the header`);
  return {
    magic: image.readUInt32LE(0),
    valid: image.readUInt32LE(4),
    version: image.readUInt32LE(8),
    chunkSize: sectors(image.readUInt32LE(12)),
  };
}

const isPowerOfTwo = (n: bigint): boolean => n > 0n && (n & (n - 1n)) === 0n;

/**
 * Checks a header the way activation must: magic 0 is a new store; otherwise the magic, version 1 and a
 * chunk size that is a power of 2 (and, if given, the expected one). Throws CowDamage.
 */
export function checkCowHeader(h: CowHeader, expect: { chunkSize?: Sectors } = {}): CowState {
  if (h.magic === 0) return 'new';
  if (h.magic !== SNAP_MAGIC) throw new CowDamage(0, `magic 0x${h.magic.toString(16)}, want 0x${SNAP_MAGIC.toString(16)}`);
  if (h.version !== COW_VERSION) throw new CowDamage(0, `version ${h.version}, want ${COW_VERSION}`);
  if (!isPowerOfTwo(h.chunkSize)) throw new CowDamage(0, `chunk size ${h.chunkSize} sectors is not a power of 2`);
  if (expect.chunkSize !== undefined && h.chunkSize !== expect.chunkSize) {
    throw new CowDamage(0, `chunk size ${h.chunkSize} sectors, want ${expect.chunkSize}`);
  }
  return h.valid === 0 ? 'invalid' : 'valid';
}

/** The chunk holding exception area `area`. */
export function areaLocation(exceptionsPerArea: number, area: number): number {
  return 1 + (exceptionsPerArea + 1) * area;
}

/** Whether a COW chunk is the header or an exception area (not data). */
export function isMetadataChunk(exceptionsPerArea: number, chunk: number): boolean {
  return chunk === 0 || (chunk - 1) % (exceptionsPerArea + 1) === 0;
}

export interface ReadCowOptions {
  /** The chunk size the table asked for; a different one in the header is damage. */
  readonly chunkSize?: Sectors;
  /** The origin's length: every old_chunk must be inside it. */
  readonly originSectors?: Sectors;
}

/**
 * Reads and validates a whole COW image (the device's bytes from offset 0; at least through the last
 * exception area in use). An invalid store reports its state and no exceptions, as the kernel reads none.
 */
export function readCow(image: Buffer, opts: ReadCowOptions = {}): CowImage {
  const header = readCowHeader(image);
  const state = checkCowHeader(header, { chunkSize: opts.chunkSize });
  const chunkSize = header.chunkSize;
  if (state === 'new') return { header, state, chunkSize, exceptionsPerArea: 0, areas: 0, exceptions: [], nextFree: targetBlocks(2) };
  const chunkBytes = Number(chunkSize) * SECTOR;
  const perArea = chunkBytes / EXCEPTION_BYTES;
  if (state === 'invalid') return { header, state, chunkSize, exceptionsPerArea: perArea, areas: 0, exceptions: [], nextFree: targetBlocks(2) };
  const deviceChunks = Math.floor(image.length / chunkBytes);
  const originChunks = opts.originSectors === undefined ? undefined : opts.originSectors / chunkSize;
  const exceptions: CowException[] = [];
  const usedNew = new Map<number, number>();
  const usedOld = new Map<bigint, number>();
  let nextFree = 2;
  let area = 0;
  for (;;) {
    const at = areaLocation(perArea, area);
    if (at >= deviceChunks) {
      if (area === 0) throw new CowDamage(at, 'the device ends before the first exception area');
      break; // the previous area was full and the device has no room for another
    }
    const base = at * chunkBytes;
    let full = true;
    for (let i = 0; i < perArea; i++) {
      const oldChunk = image.readBigUInt64LE(base + i * EXCEPTION_BYTES);
      const newChunk = image.readBigUInt64LE(base + i * EXCEPTION_BYTES + 8);
      if (newChunk === 0n) {
        full = false;
        break;
      }
      const where = `area ${area} entry ${i}`;
      if (newChunk >= BigInt(deviceChunks)) throw new CowDamage(at, `${where}: new_chunk ${newChunk} past the device's ${deviceChunks} chunks`);
      const n = Number(newChunk);
      if (isMetadataChunk(perArea, n)) throw new CowDamage(at, `${where}: new_chunk ${n} is a metadata chunk`);
      const twice = usedNew.get(n);
      if (twice !== undefined) throw new CowDamage(at, `${where}: new_chunk ${n} already used by exception ${twice}`);
      if (originChunks !== undefined && oldChunk >= originChunks) {
        throw new CowDamage(at, `${where}: old_chunk ${oldChunk} past the origin's ${originChunks} chunks`);
      }
      const again = usedOld.get(oldChunk);
      if (again !== undefined) throw new CowDamage(at, `${where}: old_chunk ${oldChunk} already copied by exception ${again}`);
      usedOld.set(oldChunk, exceptions.length);
      usedNew.set(n, exceptions.length);
      exceptions.push({ oldChunk: targetBlocks(oldChunk), newChunk: targetBlocks(newChunk) });
      if (n + 1 > nextFree) nextFree = n + 1;
    }
    area++;
    if (!full) break;
  }
  while (isMetadataChunk(perArea, nextFree)) nextFree++;
  return { header, state, chunkSize, exceptionsPerArea: perArea, areas: area, exceptions, nextFree: targetBlocks(nextFree) };
}

/** Origin chunk -> the COW chunk holding its copy. */
export function exceptionMap(image: CowImage): Map<bigint, bigint> {
  return new Map(image.exceptions.map((e) => [e.oldChunk as bigint, e.newChunk as bigint]));
}

/**
 * A COW image in the persistent format, for tests and the differential checks: the header, then the given
 * exceptions packed into areas in order. `deviceBytes` sizes the image (a multiple of the chunk size).
 */
export function formatCow(chunkSize: Sectors, deviceBytes: number, exceptions: readonly CowException[], opts: { valid?: boolean } = {}): Buffer {
  if (!isPowerOfTwo(chunkSize)) throw new RangeError(`chunk size ${chunkSize} sectors is not a power of 2`);
  const chunkBytes = Number(chunkSize) * SECTOR;
  if (!Number.isSafeInteger(deviceBytes) || deviceBytes < 2 * chunkBytes || deviceBytes % chunkBytes !== 0) {
    throw new RangeError(`device of ${deviceBytes} bytes is not a whole number (>= 2) of ${chunkBytes}-byte chunks`);
  }
  const image = Buffer.alloc(deviceBytes);
  image.writeUInt32LE(SNAP_MAGIC, 0);
  image.writeUInt32LE(opts.valid === false ? 0 : 1, 4);
  image.writeUInt32LE(COW_VERSION, 8);
  image.writeUInt32LE(Number(chunkSize), 12);
  const perArea = chunkBytes / EXCEPTION_BYTES;
  exceptions.forEach((e, i) => {
    const at = areaLocation(perArea, Math.floor(i / perArea)) * chunkBytes + (i % perArea) * EXCEPTION_BYTES;
    if (at + EXCEPTION_BYTES > deviceBytes) throw new RangeError(`exception ${i} does not fit in the device`);
    image.writeBigUInt64LE(e.oldChunk, at);
    image.writeBigUInt64LE(e.newChunk, at + 8);
  });
  return image;
}
