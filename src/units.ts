/**
 * Units never mix: sectors (512 B), bytes and target blocks are distinct branded types. A value of one
 * cannot be passed where another is expected without an explicit conversion below.
 */
declare const unitBrand: unique symbol;
type Unit<T extends string> = bigint & { readonly [unitBrand]: T };

/** A count or offset in 512-byte sectors. */
export type Sectors = Unit<'sectors'>;
/** A count or offset in bytes. */
export type Bytes = Unit<'bytes'>;
/** A count or index of target blocks (era blocks, clone regions, cache blocks, snapshot chunks). */
export type TargetBlocks = Unit<'target-blocks'>;

export const SECTOR_SIZE = 512n;

function whole(v: bigint | number, what: string): bigint {
  const b = typeof v === 'bigint' ? v : Number.isSafeInteger(v) ? BigInt(v) : NaN;
  if (typeof b !== 'bigint' || b < 0n) throw new RangeError(`${what} must be a non-negative integer, got ${String(v)}`);
  return b;
}

export const sectors = (v: bigint | number): Sectors => whole(v, 'sectors') as Sectors;
export const bytes = (v: bigint | number): Bytes => whole(v, 'bytes') as Bytes;
export const targetBlocks = (v: bigint | number): TargetBlocks => whole(v, 'target blocks') as TargetBlocks;

export const sectorsToBytes = (s: Sectors): Bytes => (s * SECTOR_SIZE) as Bytes;

/** Bytes to sectors; the byte count must be sector-aligned. */
export function bytesToSectors(b: Bytes): Sectors {
  if (b % SECTOR_SIZE !== 0n) throw new RangeError(`${b} bytes is not a whole number of sectors`);
  return (b / SECTOR_SIZE) as Sectors;
}

/** Parses sizes such as 64M, 1G, 4096, 8s (sectors). The result is in bytes. */
export function parseSize(text: string): Bytes {
  const m = /^(\d+)([kKmMgGtT]|[sS])?i?[bB]?$/.exec(text.trim());
  if (!m) throw new RangeError(`not a size: ${JSON.stringify(text)}`);
  const n = BigInt(m[1]!);
  const suffix = (m[2] ?? '').toLowerCase();
  const scale: Record<string, bigint> = { '': 1n, s: 512n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n };
  return (n * scale[suffix]!) as Bytes;
}
