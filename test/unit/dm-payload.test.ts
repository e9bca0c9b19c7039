import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { describe, test } from 'node:test';
import {
  decodeDeps,
  decodeHeader,
  decodeNameList,
  decodeTargets,
  decodeVersions,
  DM_TARGET_SPEC_SIZE,
  DmArgumentError,
  DmMalformedReplyError,
  encodeHeader,
  encodeTargetMsg,
  encodeTargets,
  type DmHeader,
  type TargetLine,
} from '../../src/dm';
import { sectors } from '../../src/units';

const V4_48 = { major: 4, minor: 48, patch: 0 };

/** A reply: header with data_start 312, payload at 312, data_size = 312 + payload (or `dataSize`). */
interface ReplyShape {
  targetCount?: number;
  dataSize?: number;
  bufferSize?: number;
}

function reply(payload: Buffer, extra: ReplyShape = {}): [Buffer, DmHeader] {
  const b = Buffer.alloc(Math.max(extra.bufferSize ?? 0, 312 + payload.length));
  const dataSize = extra.dataSize ?? 312 + payload.length;
  encodeHeader(b, { version: V4_48, dataSize, targetCount: extra.targetCount ?? 0 });
  payload.copy(b, 312);
  return [b, decodeHeader(b)];
}

const line = (start: number, length: number, type: string, params: string): TargetLine => ({
  start: sectors(start),
  length: sectors(length),
  type,
  params,
});

/** Kernel-style STATUS payload: spec + params, 8-aligned, `next` relative to the first spec. */
function statusPayload(lines: TargetLine[]): Buffer {
  const parts: Buffer[] = [];
  let total = 0;
  for (const l of lines) {
    const size = (DM_TARGET_SPEC_SIZE + Buffer.byteLength(l.params) + 1 + 7) & ~7;
    const p = Buffer.alloc(size);
    p.writeBigUInt64LE(l.start, 0);
    p.writeBigUInt64LE(l.length, 8);
    total += size;
    p.writeUInt32LE(total, 20);
    p.write(l.type, 24, 'latin1');
    p.write(l.params, 40, 'latin1');
    parts.push(p);
  }
  return Buffer.concat(parts);
}

describe('target specs', { skip: endianness() !== 'LE' && 'big-endian host' }, () => {
  const table = [
    line(0, 2048, 'linear', '8:16 0'),
    line(2048, 1024, 'zero', ''),
    line(3072, 4096, 'era', '8:32 8:48 8192 x'),
  ];

  test('LOAD packs 40-byte specs with NUL-terminated params padded to 8', () => {
    const b = encodeTargets(table);
    // 40+7 -> 48, 40+1 -> 48, 40+17 -> 64
    assert.equal(b.length, 48 + 48 + 64);
    const offsets = [0, 48, 96];
    for (const [i, off] of offsets.entries()) {
      const t = table[i]!;
      assert.equal(off % 8, 0);
      assert.equal(b.readBigUInt64LE(off), t.start);
      assert.equal(b.readBigUInt64LE(off + 8), t.length);
      assert.equal(b.readInt32LE(off + 16), 0, 'status');
      assert.equal(b.toString('latin1', off + 24, off + 24 + t.type.length + 1), `${t.type}\0`);
      assert.equal(b.toString('latin1', off + 40, off + 40 + t.params.length + 1), `${t.params}\0`);
    }
    // On LOAD, next is relative to the current spec.
    assert.deepEqual(offsets.map((o) => b.readUInt32LE(o + 20)), [48, 48, 64]);
  });

  test('rejects tables the kernel would refuse', () => {
    assert.throws(() => encodeTargets([]), { code: 'ERR_DM_INVALID_TARGET' });
    assert.throws(() => encodeTargets([line(0, 0, 'zero', '')]), /length must be positive/);
    assert.throws(() => encodeTargets([line(0, 8, 'x'.repeat(16), '')]), /must be 1..15 bytes/);
    assert.throws(() => encodeTargets([line(0, 8, '', '')]), DmArgumentError);
    assert.throws(() => encodeTargets([line(0, 8, 'zero', 'a\0b')]), /NUL/);
    assert.throws(() => encodeTargets([{ ...line(0, 8, 'zero', ''), start: 0 as never }]), /Sectors/);
  });

  test('STATUS decodes specs whose next is relative to the first spec', () => {
    const [b, h] = reply(statusPayload(table), { targetCount: 3, bufferSize: 16384 });
    assert.deepEqual(decodeTargets(b, h), table);
  });

  test('zero targets decode to an empty table', () => {
    const [b, h] = reply(Buffer.alloc(0));
    assert.deepEqual(decodeTargets(b, h), []);
  });

  test('truncated or inconsistent replies throw DmMalformedReplyError', () => {
    const payload = statusPayload(table);
    const [b1, h1] = reply(payload, { targetCount: 4, bufferSize: 16384 });
    assert.throws(() => decodeTargets(b1, h1), DmMalformedReplyError, 'more specs claimed than sent');
    const [b2, h2] = reply(payload, { targetCount: 3, dataSize: 312 + 100, bufferSize: 16384 });
    assert.throws(() => decodeTargets(b2, h2), DmMalformedReplyError, 'data_size cuts the table');
    const bad = Buffer.from(payload);
    bad.fill(0x41, 40, 48); // first params lose their NUL ...
    bad.fill(0x41, 48, 96); // ... and so does everything up to the next spec
    bad.writeUInt32LE(8, 20); // and next points back into spec 0
    const [b3, h3] = reply(bad, { targetCount: 3 });
    assert.throws(() => decodeTargets(b3, h3), DmMalformedReplyError);
    const overlap = Buffer.from(payload);
    overlap.writeUInt32LE(16, 20);
    const [b4, h4] = reply(overlap, { targetCount: 3 });
    assert.throws(() => decodeTargets(b4, h4), /overlaps/);
  });
});

/** One dm_name_list record; `next` 0 marks the last. */
function nameRecord(dev: bigint, name: string, tail?: { eventNr: number; uuid?: string | null }): Buffer {
  const nameEnd = 12 + Buffer.byteLength(name) + 1;
  const tailAt = (nameEnd + 7) & ~7;
  const uuidBytes = tail?.uuid ? Buffer.byteLength(tail.uuid) + 1 : 0;
  const size = tail ? (tailAt + 8 + uuidBytes + 7) & ~7 : (nameEnd + 7) & ~7;
  const b = Buffer.alloc(size);
  b.writeBigUInt64LE(dev, 0);
  b.write(name, 12, 'latin1');
  if (tail) {
    b.writeUInt32LE(tail.eventNr, tailAt);
    b.writeUInt32LE(tail.uuid === undefined ? 0 : tail.uuid === null ? 2 : 1, tailAt + 4);
    if (tail.uuid) b.write(tail.uuid, tailAt + 8, 'latin1');
  }
  return b;
}

function chain(records: Buffer[]): Buffer {
  records.forEach((r, i) => r.writeUInt32LE(i + 1 < records.length ? r.length : 0, 8));
  return Buffer.concat(records);
}

describe('name list', { skip: endianness() !== 'LE' && 'big-endian host' }, () => {
  test('decodes names, dev, event_nr and uuid, ending at next = 0', () => {
    const payload = chain([
      nameRecord(0xfd00n, 'alpha', { eventNr: 3, uuid: 'LVM-abcdef' }),
      nameRecord(0x10fd2cn, 'bravo-long-name', { eventNr: 0, uuid: null }),
      nameRecord(0xfd01n, 'c', { eventNr: 7 }),
    ]);
    const [b, h] = reply(payload, { bufferSize: 16384 });
    assert.deepEqual(decodeNameList(b, h, true), [
      { name: 'alpha', dev: { major: 253, minor: 0 }, eventNr: 3, uuid: 'LVM-abcdef' },
      { name: 'bravo-long-name', dev: { major: 253, minor: 300 }, eventNr: 0, uuid: '' },
      { name: 'c', dev: { major: 253, minor: 1 }, eventNr: 7 },
    ]);
  });

  test('old kernels: names only', () => {
    const payload = chain([nameRecord(0xfd00n, 'alpha'), nameRecord(0xfd01n, 'b')]);
    const [b, h] = reply(payload);
    assert.deepEqual(decodeNameList(b, h, false), [
      { name: 'alpha', dev: { major: 253, minor: 0 } },
      { name: 'b', dev: { major: 253, minor: 1 } },
    ]);
  });

  test('empty lists: no payload, or a first record with dev 0', () => {
    const [b1, h1] = reply(Buffer.alloc(0), { bufferSize: 16384 });
    assert.deepEqual(decodeNameList(b1, h1, true), []);
    const [b2, h2] = reply(Buffer.alloc(16));
    assert.deepEqual(decodeNameList(b2, h2, true), []);
  });

  test('malformed lists throw', () => {
    const good = chain([
      nameRecord(0xfd00n, 'alpha', { eventNr: 1, uuid: 'U' }),
      nameRecord(0xfd01n, 'b', { eventNr: 1 }),
    ]);
    const [b1, h1] = reply(good, { dataSize: 312 + 20, bufferSize: 16384 });
    assert.throws(() => decodeNameList(b1, h1, true), DmMalformedReplyError, 'data_size cuts record 0');
    const far = Buffer.from(good);
    far.writeUInt32LE(4096, 8);
    const [b2, h2] = reply(far, { bufferSize: 16384 });
    assert.throws(() => decodeNameList(b2, h2, true), /record 1/);
    const tiny = Buffer.from(good);
    tiny.writeUInt32LE(4, 8);
    const [b3, h3] = reply(tiny);
    assert.throws(() => decodeNameList(b3, h3, true), /too small/);
    const [b4, h4] = reply(Buffer.from([1, 0, 0, 0]));
    assert.throws(() => decodeNameList(b4, h4, true), DmMalformedReplyError, '4-byte payload');
  });
});

describe('versions, deps, messages', { skip: endianness() !== 'LE' && 'big-endian host' }, () => {
  function versionRecord(name: string, ver: [number, number, number], last: boolean): Buffer {
    const b = Buffer.alloc((16 + name.length + 1 + 7) & ~7);
    b.writeUInt32LE(last ? 0 : b.length, 0);
    ver.forEach((n, i) => b.writeUInt32LE(n, 4 + i * 4));
    b.write(name, 16, 'latin1');
    return b;
  }

  test('target versions', () => {
    const payload = Buffer.concat([versionRecord('era', [1, 3, 0], false), versionRecord('striped', [1, 7, 0], true)]);
    const [b, h] = reply(payload);
    assert.deepEqual(decodeVersions(b, h), [
      { name: 'era', version: { major: 1, minor: 3, patch: 0 } },
      { name: 'striped', version: { major: 1, minor: 7, patch: 0 } },
    ]);
    const [b2, h2] = reply(payload.subarray(0, 30), { dataSize: 312 + 30 });
    assert.throws(() => decodeVersions(b2, h2), DmMalformedReplyError);
  });

  test('deps', () => {
    const p = Buffer.alloc(24);
    p.writeUInt32LE(2, 0);
    p.writeBigUInt64LE(0x810n, 8);
    p.writeBigUInt64LE(0x10fd2cn, 16);
    const [b, h] = reply(p);
    assert.deepEqual(decodeDeps(b, h), [
      { major: 8, minor: 16 },
      { major: 253, minor: 300 },
    ]);
    p.writeUInt32LE(5, 0);
    const [b2, h2] = reply(p);
    assert.throws(() => decodeDeps(b2, h2), /dev\[5\]/);
  });

  test('target_msg: sector u64 then the NUL-terminated message', () => {
    const b = encodeTargetMsg(sectors(4096), 'checkpoint');
    assert.equal(b.readBigUInt64LE(0), 4096n);
    assert.equal(b.toString('latin1', 8), 'checkpoint\0');
    assert.throws(() => encodeTargetMsg(sectors(0), ''), DmArgumentError);
    assert.throws(() => encodeTargetMsg(sectors(0), 'a\0b'), DmArgumentError);
  });
});
