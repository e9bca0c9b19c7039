/**
 * Stamped data patterns: every 512-byte sector carries its own sector number and a seed, followed by
 * bytes derived from both, so a misplaced, stale or torn sector is told apart from the right one.
 */
import * as fs from 'node:fs';
import { Bytes, bytes, Sectors, sectors, SECTOR_SIZE } from '../units';

const SECTOR = Number(SECTOR_SIZE);
/** The first word of every stamped sector ("DMKT"). */
export const STAMP_MAGIC = 0x444d4b54;
const MAGIC = STAMP_MAGIC;

/** Fills one sector's worth of `buf` at `at` (a multiple of 4) with the stamp of (seed, sector). */
export function stampSector(buf: Buffer, at: number, seed: number, sector: bigint): void {
  buf.writeUInt32LE(MAGIC, at);
  buf.writeUInt32LE(seed >>> 0, at + 4);
  buf.writeBigUInt64LE(sector, at + 8);
  const words = new Uint32Array(buf.buffer, buf.byteOffset + at + 16, (SECTOR - 16) / 4);
  // xorshift32 seeded from (seed, sector): cheap, deterministic, different for every sector.
  const lo = Number(sector & 0xffffffffn);
  const hi = Number(sector >> 32n);
  let x = (seed ^ lo ^ Math.imul(hi, 0x9e3779b1) ^ 0x5bd1e995) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
}

/** The pattern of `count` sectors from `first`. */
export function patternBuffer(seed: number, first: Sectors, count: number): Buffer {
  const buf = Buffer.alloc(count * SECTOR);
  for (let i = 0; i < count; i++) stampSector(buf, i * SECTOR, seed, first + BigInt(i));
  return buf;
}

/** What a sector that does not match its expected stamp holds instead. */
export interface Mismatch {
  sector: Sectors;
  /** 'zero', 'stamp of seed S sector N' or 'garbage'. */
  found: string;
}

export function describeSector(buf: Buffer, at: number): string {
  if (buf.subarray(at, at + SECTOR).every((b) => b === 0)) return 'zero';
  if (buf.readUInt32LE(at) === MAGIC) return `stamp of seed ${buf.readUInt32LE(at + 4)} sector ${buf.readBigUInt64LE(at + 8)}`;
  return 'garbage';
}

export interface Extent {
  /** First sector. */
  start: Sectors;
  /** Number of sectors. */
  length: Sectors;
}

const CHUNK_SECTORS = 2048; // 1 MiB per IO

function chunks(ext: Extent, each: (first: Sectors, count: number) => void): void {
  for (let s = ext.start; s < ext.start + ext.length; ) {
    const count = Number(ext.start + ext.length - s < BigInt(CHUNK_SECTORS) ? ext.start + ext.length - s : BigInt(CHUNK_SECTORS));
    each(s, count);
    s = sectors(s + BigInt(count));
  }
}

/** Writes the pattern of `seed` over `ext` of a device or file, then fsyncs it. */
export function stamp(path: string, ext: Extent, seed: number): void {
  const fd = fs.openSync(path, 'r+');
  try {
    chunks(ext, (first, count) => {
      const buf = patternBuffer(seed, first, count);
      fs.writeSync(fd, buf, 0, buf.length, Number(first) * SECTOR);
    });
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads `ext` back and lists the sectors that differ from the pattern of `seed` (at most `limit`). */
export function verify(path: string, ext: Extent, seed: number, limit = 16): Mismatch[] {
  const fd = fs.openSync(path, 'r');
  const bad: Mismatch[] = [];
  try {
    chunks(ext, (first, count) => {
      if (bad.length >= limit) return;
      const want = patternBuffer(seed, first, count);
      const got = Buffer.alloc(want.length);
      const n = fs.readSync(fd, got, 0, got.length, Number(first) * SECTOR);
      for (let i = 0; i < count && bad.length < limit; i++) {
        const at = i * SECTOR;
        if (at + SECTOR > n || !got.subarray(at, at + SECTOR).equals(want.subarray(at, at + SECTOR))) {
          bad.push({ sector: sectors(first + BigInt(i)), found: at + SECTOR > n ? 'short read' : describeSector(got, at) });
        }
      }
    });
  } finally {
    fs.closeSync(fd);
  }
  return bad;
}

/** Writes zeros over the first `length` bytes (e.g. a metadata superblock), then fsyncs. */
export function zero(path: string, length: Bytes = bytes(4096)): void {
  const fd = fs.openSync(path, 'r+');
  try {
    const buf = Buffer.alloc(Math.min(Number(length), 1 << 20));
    for (let off = 0; off < Number(length); off += buf.length) {
      fs.writeSync(fd, buf, 0, Math.min(buf.length, Number(length) - off), off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
