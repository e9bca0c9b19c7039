/**
 * persistent-data block checksums: crc32c (Castagnoli, reflected 0x82F63B78) seeded with ~0, finalised
 * the kernel's way (no final inversion), then xor'ed with the block type's salt.
 */
/**
 * Slicing-by-8 tables: T[0] is the byte-at-a-time table; T[k][i] is the CRC of byte i followed by k
 * zero bytes, so eight bytes fold in with eight lookups and no per-byte dependency chain.
 */
const TABLES = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0]![i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let k = 1; k < 8; k++) t[k]![i] = (t[0]![t[k - 1]![i]! & 0xff]! ^ (t[k - 1]![i]! >>> 8)) >>> 0;
  }
  return t;
})();
const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];

/** The kernel's crc32c(seed, data): no pre- or post-inversion beyond the seed given. */
export function crc32c(seed: number, data: Uint8Array): number {
  let c = seed >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const lo = (c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    c =
      T7[lo & 0xff]! ^ T6[(lo >>> 8) & 0xff]! ^ T5[(lo >>> 16) & 0xff]! ^ T4[lo >>> 24]! ^
      T3[data[i + 4]!]! ^ T2[data[i + 5]!]! ^ T1[data[i + 6]!]! ^ T0[data[i + 7]!]!;
  }
  for (; i < n; i++) c = T0[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/** dm_bm_checksum(): crc32c(~0, data) ^ salt. */
export function blockChecksum(data: Uint8Array, salt: number): number {
  return (crc32c(0xffffffff, data) ^ salt) >>> 0;
}

/** Salts of the on-disk block types (xor'ed into their checksums). */
export const CHECKSUM_SALT = {
  btreeNode: 121107,
  smIndex: 160478,
  smBitmap: 240779,
  arrayBlock: 595846735,
  thinSuperblock: 160774,
  cacheSuperblock: 9031977,
  eraSuperblock: 146538381,
  cloneSuperblock: 257649492,
} as const;
