import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytes, bytesToSectors, parseSize, sectors, sectorsToBytes } from '../../src/units';

test('sectors and bytes convert exactly', () => {
  assert.equal(sectorsToBytes(sectors(8)), 4096n);
  assert.equal(bytesToSectors(bytes(1 << 20)), 2048n);
  assert.throws(() => bytesToSectors(bytes(100)), /whole number of sectors/);
});

test('negative and fractional values are refused', () => {
  assert.throws(() => sectors(-1), RangeError);
  assert.throws(() => bytes(1.5), RangeError);
});

test('sizes parse with binary suffixes and sectors', () => {
  assert.equal(parseSize('64M'), 64n << 20n);
  assert.equal(parseSize('1GiB'), 1n << 30n);
  assert.equal(parseSize('8s'), 4096n);
  assert.equal(parseSize('4096'), 4096n);
  assert.throws(() => parseSize('12 parsecs'), /not a size/);
});
