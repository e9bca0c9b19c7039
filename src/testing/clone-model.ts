/**
 * A data model of stamped extents for device tests: what every sector of a device must hold after a
 * sequence of stamped writes (src/testing/patterns.ts), compared sector by sector with what a direct-IO
 * read returns, so a stale, zeroed, misplaced or torn sector is named.
 */
import { describeSector, patternBuffer, stampSector } from './patterns';
import { readDirect, writeDirect, writeDirectAsync } from './direct-io';
import { sectors } from '../units';

const MiB = 1n << 20n;

/**
 * What a device should hold: a base seed everywhere, then stamped writes in order (later wins).
 * Extents are in sectors.
 */
export class DataModel {
  private readonly writes: Array<{ start: bigint; length: bigint; seed: number }> = [];
  constructor(
    readonly length: bigint,
    readonly baseSeed: number,
  ) {}

  write(start: bigint, length: bigint, seed: number): void {
    this.writes.push({ start, length, seed });
  }

  /** The expected seed of one sector. */
  seedAt(sector: bigint): number {
    for (let i = this.writes.length - 1; i >= 0; i--) {
      const w = this.writes[i]!;
      if (sector >= w.start && sector < w.start + w.length) return w.seed;
    }
    return this.baseSeed;
  }

  /** Every seed this sector ever held or may hold (base and every write covering it). */
  seedsAt(sector: bigint): Set<number> {
    const s = new Set([this.baseSeed]);
    for (const w of this.writes) if (sector >= w.start && sector < w.start + w.length) s.add(w.seed);
    return s;
  }

  /** The expected bytes of [start, start+count) sectors. */
  expected(start: bigint, count: number): Buffer {
    const buf = Buffer.alloc(count * 512);
    for (let i = 0; i < count; i++) stampSector(buf, i * 512, this.seedAt(start + BigInt(i)), start + BigInt(i));
    return buf;
  }

  clone(): DataModel {
    const m = new DataModel(this.length, this.baseSeed);
    for (const w of this.writes) m.write(w.start, w.length, w.seed);
    return m;
  }
}

export interface SectorMismatch {
  sector: bigint;
  want: string;
  found: string;
}

/** Compares a buffer holding sectors [first, ...) with the model; at most `limit` mismatches. */
export function compare(model: DataModel, first: bigint, got: Buffer, limit = 8): SectorMismatch[] {
  const bad: SectorMismatch[] = [];
  const count = got.length / 512;
  const want = model.expected(first, count);
  for (let i = 0; i < count && bad.length < limit; i++) {
    const a = i * 512;
    if (!got.subarray(a, a + 512).equals(want.subarray(a, a + 512))) {
      const s = first + BigInt(i);
      bad.push({ sector: s, want: `stamp of seed ${model.seedAt(s)} sector ${s}`, found: describeSector(got, a) });
    }
  }
  return bad;
}

/** Reads the whole modelled range of `path` with O_DIRECT and checks it against the model. */
export function verifyModel(path: string, model: DataModel, limit = 8): SectorMismatch[] {
  const bad: SectorMismatch[] = [];
  const step = 8n * MiB / 512n;
  for (let s = 0n; s < model.length && bad.length < limit; s += step) {
    const n = model.length - s < step ? model.length - s : step;
    bad.push(...compare(model, s, readDirect(path, s * 512n, n * 512n), limit - bad.length));
  }
  return bad;
}

/** Stamps [start, start+length) of `path` with `seed` by direct IO, and records it in the model. */
export function stampDirect(path: string, model: DataModel | undefined, start: bigint, length: bigint, seed: number, opts: { fsync?: boolean; bs?: bigint } = {}): void {
  writeDirect(path, start * 512n, patternBuffer(seed, sectors(start), Number(length)), opts);
  model?.write(start, length, seed);
}

/**
 * stampDirect without blocking the event loop: needed while a workflow has a device suspended between two
 * awaits, where a synchronous write to that device would wait for a resume only the event loop can issue.
 */
export async function stampDirectAsync(path: string, model: DataModel | undefined, start: bigint, length: bigint, seed: number, opts: { fsync?: boolean } = {}): Promise<void> {
  await writeDirectAsync(path, start * 512n, patternBuffer(seed, sectors(start), Number(length)), opts);
  model?.write(start, length, seed);
}

