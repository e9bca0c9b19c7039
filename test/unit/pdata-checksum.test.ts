import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockChecksum, crc32c, CHECKSUM_SALT } from '../../src/pdata/checksum';

test('crc32c matches the Castagnoli check value', () => {
  // The standard check value 0xE3069283 includes a final inversion, which the kernel's crc32c() leaves out.
  assert.equal(crc32c(0xffffffff, Buffer.from('123456789')), ~0xe3069283 >>> 0);
});

test('block checksum xors in the salt', () => {
  const data = Buffer.alloc(4092, 0xab);
  assert.equal((blockChecksum(data, CHECKSUM_SALT.eraSuperblock) ^ CHECKSUM_SALT.eraSuperblock) >>> 0, crc32c(0xffffffff, data));
});

test('the sliced crc32c equals the bytewise definition at every length and alignment', () => {
  const bytewise = (seed: number, data: Uint8Array): number => {
    let c = seed >>> 0;
    for (const b of data) {
      c ^= b;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    }
    return c >>> 0;
  };
  const data = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 131 + 7) & 0xff));
  for (let start = 0; start < 9; start++) {
    for (let len = 0; len < 40; len++) assert.equal(crc32c(0x1234567, data.subarray(start, start + len)), bytewise(0x1234567, data.subarray(start, start + len)));
  }
  assert.equal(crc32c(0xffffffff, data), bytewise(0xffffffff, data));
});
