/**
 * persistent-data block checksums: crc32c (Castagnoli, reflected 0x82F63B78) seeded with ~0, finalised
 * the kernel's way (no final inversion), then xor'ed with the block type's salt.
 */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** The kernel's crc32c(seed, data): no pre- or post-inversion beyond the seed given. */
export function crc32c(seed: number, data: Uint8Array): number {
  let c = seed >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
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
