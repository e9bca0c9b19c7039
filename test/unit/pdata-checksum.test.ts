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
