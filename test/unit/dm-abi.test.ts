import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { describe, test } from 'node:test';
import {
  buildRequest,
  commandName,
  decodeDev,
  decodeHeader,
  DM_IOCTL_SIZE,
  DM_MAX_TYPE_NAME,
  DM_NAME_LEN,
  DM_UUID_LEN,
  DmArgumentError,
  DmCommand,
  DmFlag,
  DmMalformedReplyError,
  encodeDev,
  encodeHeader,
  MIN_INTERFACE_VERSION,
  versionAtLeast,
} from '../../src/dm';

// Expected bytes are written out little-endian, the byte order of every host dmkit targets today.
const le = endianness() === 'LE';

describe('dm ABI constants', () => {
  test('sizes and commands match <linux/dm-ioctl.h>', () => {
    assert.equal(DM_IOCTL_SIZE, 312);
    assert.equal(DM_NAME_LEN, 128);
    assert.equal(DM_UUID_LEN, 129);
    assert.equal(DM_MAX_TYPE_NAME, 16);
    assert.equal(DmCommand.TABLE_LOAD, 9);
    assert.equal(DmCommand.GET_TARGET_VERSION, 17);
    assert.equal(commandName(DmCommand.DEV_REMOVE), 'DM_DEV_REMOVE');
    assert.equal(commandName(DmCommand.GET_TARGET_VERSION), 'DM_GET_TARGET_VERSION');
  });

  test('flags have their kernel bit positions', () => {
    assert.equal(DmFlag.PERSISTENT_DEV, 8);
    assert.equal(DmFlag.BUFFER_FULL, 0x100);
    assert.equal(DmFlag.QUERY_INACTIVE_TABLE, 0x1000);
    assert.equal(DmFlag.UUID, 0x4000);
    assert.equal(DmFlag.DATA_OUT, 0x10000);
    assert.equal(DmFlag.DEFERRED_REMOVE, 0x20000);
    assert.equal(DmFlag.IMA_MEASUREMENT, 0x80000);
  });

  test('per-command minimum interface versions follow libdm', () => {
    const minor = (c: DmCommand): number => MIN_INTERFACE_VERSION[c].minor;
    assert.equal(minor(DmCommand.DEV_CREATE), 0);
    assert.equal(minor(DmCommand.LIST_VERSIONS), 1);
    assert.equal(minor(DmCommand.TARGET_MSG), 2);
    assert.equal(minor(DmCommand.DEV_SET_GEOMETRY), 6);
    assert.equal(minor(DmCommand.DEV_ARM_POLL), 36);
    assert.equal(minor(DmCommand.GET_TARGET_VERSION), 41);
    assert.ok(Object.values(MIN_INTERFACE_VERSION).every((ver) => ver.major === 4));
  });

  test('versionAtLeast compares major, minor, patch', () => {
    assert.ok(versionAtLeast({ major: 4, minor: 48, patch: 0 }, { major: 4, minor: 41, patch: 0 }));
    assert.ok(!versionAtLeast({ major: 4, minor: 36, patch: 9 }, { major: 4, minor: 37, patch: 0 }));
    assert.ok(versionAtLeast({ major: 4, minor: 37, patch: 0 }, { major: 4, minor: 37, patch: 0 }));
  });
});

describe('dm_ioctl header', { skip: !le && 'big-endian host' }, () => {
  const fields = {
    version: { major: 4, minor: 41, patch: 7 },
    dataSize: 16384,
    dataStart: 312,
    targetCount: 3,
    flags: DmFlag.READONLY | DmFlag.NOFLUSH,
    eventNr: 0x0d4d0042,
    dev: 0x10fd2cn,
    name: 'vol',
    uuid: 'DMKIT-1234',
  };

  test('encodes every field at its struct offset', () => {
    const b = Buffer.alloc(400, 0xaa);
    encodeHeader(b, fields);
    assert.deepEqual([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8)], [4, 41, 7]);
    assert.equal(b.readUInt32LE(12), 16384);
    assert.equal(b.readUInt32LE(16), 312);
    assert.equal(b.readUInt32LE(20), 3);
    assert.equal(b.readInt32LE(24), 0);
    assert.equal(b.readUInt32LE(28), 0x801);
    assert.equal(b.readUInt32LE(32), 0x0d4d0042);
    assert.equal(b.readUInt32LE(36), 0, 'padding');
    assert.equal(b.readBigUInt64LE(40), 0x10fd2cn);
    assert.equal(b.toString('latin1', 48, 52), 'vol\0');
    assert.ok(b.subarray(51, 176).every((x) => x === 0), 'name field zero-filled');
    assert.equal(b.toString('latin1', 176, 187), 'DMKIT-1234\0');
    assert.ok(b.subarray(186, 312).every((x) => x === 0), 'uuid and data[7] zero-filled');
    assert.equal(b[312], 0xaa, 'bytes after the header untouched');
  });

  test('decodes what it encodes', () => {
    const b = Buffer.alloc(16384);
    encodeHeader(b, fields);
    const h = decodeHeader(b);
    assert.deepEqual(h, { ...fields, openCount: 0 });
  });

  test('names and uuids must leave room for the NUL', () => {
    const b = Buffer.alloc(312);
    encodeHeader(b, { ...fields, dataSize: 312, name: 'n'.repeat(127), uuid: 'u'.repeat(128) });
    assert.equal(decodeHeader(b).name.length, 127);
    assert.throws(() => encodeHeader(b, { ...fields, name: 'n'.repeat(128) }), { code: 'ERR_DM_INVALID_NAME' });
    assert.throws(() => encodeHeader(b, { ...fields, uuid: 'u'.repeat(129) }), { code: 'ERR_DM_INVALID_UUID' });
    assert.throws(() => encodeHeader(b, { ...fields, name: 'é'.repeat(64) }), DmArgumentError, '128 UTF-8 bytes');
  });

  test('buildRequest puts the payload at 312 and data_size = buffer length', () => {
    const payload = Buffer.from('hello\0');
    const small = buildRequest({ version: fields.version }, payload, 0);
    assert.equal(small.length, 320);
    assert.equal(small.readUInt32LE(12), 320);
    assert.equal(small.readUInt32LE(16), 312);
    assert.equal(small.toString('latin1', 312, 318), 'hello\0');
    const roomy = buildRequest({ version: fields.version }, payload, 16384);
    assert.equal(roomy.length, 16384);
    assert.equal(roomy.readUInt32LE(12), 16384);
  });

  test('malformed headers raise DmMalformedReplyError', () => {
    assert.throws(() => decodeHeader(Buffer.alloc(100)), DmMalformedReplyError);
    const b = Buffer.alloc(400);
    encodeHeader(b, { ...fields, dataSize: 401 });
    assert.throws(() => decodeHeader(b), /data_size 401/);
    encodeHeader(b, { ...fields, dataSize: 304 });
    assert.throws(() => decodeHeader(b), DmMalformedReplyError);
    encodeHeader(b, { ...fields, dataSize: 305 }); // header-only replies report offsetof(data)
    assert.equal(decodeHeader(b).dataSize, 305);
    b.fill(0x41, 48, 176); // name without NUL
    assert.throws(() => decodeHeader(b), /name .* not NUL-terminated/);
  });
});

describe('dev_t huge encoding', () => {
  const cases: Array<[number, number, bigint]> = [
    [253, 0, 0xfd00n],
    [253, 300, 0x10fd2cn], // minor bits above 7 move to bit 20
    [7, 1048576, 0x1_0000_0700n], // minor beyond 20 bits spills above bit 31
    [8, 16, 0x810n],
    [4096, 5, 0x1000_0000_0005n], // major beyond 12 bits spills above bit 43
  ];
  for (const [major, minor, dev] of cases) {
    test(`${major}:${minor} <-> 0x${dev.toString(16)}`, () => {
      assert.equal(encodeDev({ major, minor }), dev);
      assert.deepEqual(decodeDev(dev), { major, minor });
    });
  }

  test('matches the kernel formula for 32-bit dev_t', () => {
    for (const [major, minor] of [[1, 255], [259, 65535], [4095, 1048575]] as const) {
      const kernel = BigInt((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) & 0xffffffffn;
      assert.equal(encodeDev({ major, minor }), kernel);
    }
  });

  test('rejects non-u32 numbers', () => {
    assert.throws(() => encodeDev({ major: -1, minor: 0 }), DmArgumentError);
    assert.throws(() => encodeDev({ major: 1, minor: 2 ** 32 }), DmArgumentError);
    assert.throws(() => encodeDev({ major: 1.5, minor: 0 }), DmArgumentError);
  });
});
