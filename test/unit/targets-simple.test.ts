import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors } from '../../src/units';
import {
  flakey,
  linear,
  logWrites,
  logWritesMessages,
  snapshotOrigin,
  TargetParamError,
  TargetParseError,
  type FlakeyParams,

} from '../../src/targets';
import { paramError, parseError, roundTrip } from './targets-fixtures';

test('linear round-trips with paths and maj:min', () => {
  roundTrip(linear, { device: '/dev/loop0', offset: sectors(0) }, '/dev/loop0 0');
  roundTrip(linear, { device: '7:3', offset: sectors(2n ** 40n) }, '7:3 1099511627776');
  const line = linear.line({ device: '8:16', offset: sectors(2048) }, { start: sectors(0), length: sectors(100) });
  assert.deepEqual(line, { start: 0n, length: 100n, type: 'linear', params: '8:16 2048' });
});

test('linear rejects bad devices, offsets and type names', () => {
  assert.throws(() => linear.format({ device: '', offset: sectors(0) }), paramError('ERR_TARGET_BAD_DEVICE'));
  assert.throws(() => linear.format({ device: '/dev/a b', offset: sectors(0) }), paramError('ERR_TARGET_BAD_DEVICE'));
  assert.throws(() => linear.format({ device: '8:0', offset: 5 as never }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(
    () => linear.line({ device: '8:0', offset: sectors(0) }, { start: sectors(0), length: sectors(1), type: 'dmkit-era' }),
    paramError('ERR_TARGET_BAD_TYPE'),
  );
  assert.throws(() => linear.line({ device: '8:0', offset: sectors(0) }, { start: sectors(0), length: sectors(0) }), paramError('ERR_TARGET_OUT_OF_RANGE'));
});

test('errors name the target, the field and the offending text', () => {
  assert.throws(() => linear.format({ device: 5n as never, offset: sectors(0) }), {
    name: 'TargetParamError',
    code: 'ERR_TARGET_BAD_DEVICE',
    target: 'linear',
    field: 'device',
    message: 'linear: device: 5 is not a device path or maj:min',
  });
  assert.throws(() => linear.parse('8:0 zero'), {
    name: 'TargetParseError',
    code: 'ERR_TARGET_PARSE',
    token: 'zero',
    input: '8:0 zero',
    message: 'linear: offset is not a decimal number at "zero" in "8:0 zero"',
  });
  assert.throws(() => flakey.parse('8:0 0 0 0'), { message: 'flakey: downInterval: up + down interval is zero in "8:0 0 0 0"' });
  assert.throws(() => linear.parse(7 as never), { name: 'TargetParseError' });
});

test('linear parse refuses wrong word counts and non-numbers', () => {
  assert.throws(() => linear.parse('8:0'), parseError(''));
  assert.throws(() => linear.parse('8:0 0 9'), parseError('9'));
  assert.throws(() => linear.parse('8:0 -1'), parseError('-1'));
  assert.throws(() => linear.parse('8:0 0x10'), parseError('0x10'));
  assert.deepEqual(linear.parseStatus(''), {});
  assert.throws(() => linear.parseStatus('junk'), parseError('junk'));
});

const flakeyBase: FlakeyParams = {
  device: '8:0',
  offset: sectors(0),
  upInterval: 1,
  downInterval: 1,
  writes: null,
  corrupt: null,
};

test('flakey round-trips exactly as flakey_status prints, trailing space included', () => {
  roundTrip(flakey, flakeyBase, '8:0 0 1 1 0 ');
  roundTrip(flakey, { ...flakeyBase, upInterval: 0, downInterval: 60, writes: 'drop_writes' }, '8:0 0 0 60 1 drop_writes ');
  roundTrip(flakey, { ...flakeyBase, writes: 'error_writes' }, '8:0 0 1 1 1 error_writes ');
  const corrupt = { byte: 32, direction: 'r', value: 255, flags: 0 } as const;
  roundTrip(flakey, { ...flakeyBase, offset: sectors(8), corrupt }, '8:0 8 1 1 5 corrupt_bio_byte 32 r 255 0 ');
  roundTrip(
    flakey,
    { ...flakeyBase, writes: 'drop_writes', corrupt },
    '8:0 0 1 1 6 drop_writes corrupt_bio_byte 32 r 255 0 ',
  );
  roundTrip(flakey, { ...flakeyBase, corrupt: { byte: 1, direction: 'w', value: 0, flags: 0x800 } }, '8:0 0 1 1 5 corrupt_bio_byte 1 w 0 2048 ');
});

test('flakey accepts the shorter forms a user may load', () => {
  assert.deepEqual(flakey.parse('/dev/sdb 0 5 5'), { ...flakeyBase, device: '/dev/sdb', upInterval: 5, downInterval: 5 });
  assert.deepEqual(flakey.parse('8:0 0 1 1 1 DROP_WRITES').writes, 'drop_writes');
  assert.equal(flakey.format({ device: '8:0', offset: sectors(0), upInterval: 3, downInterval: 0 }), '8:0 0 3 0 0 ');
});

test('flakey refuses what flakey_ctr refuses', () => {
  assert.throws(() => flakey.format({ ...flakeyBase, upInterval: 0, downInterval: 0 }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => flakey.format({ ...flakeyBase, upInterval: 2 ** 32 - 1, downInterval: 1 }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => flakey.format({ ...flakeyBase, upInterval: -1 }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => flakey.format({ ...flakeyBase, upInterval: 1.5 }), paramError('ERR_TARGET_BAD_VALUE'));
  const w = { byte: 1, direction: 'w', value: 1, flags: 0 } as const;
  assert.throws(() => flakey.format({ ...flakeyBase, writes: 'error_writes', corrupt: w }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => flakey.format({ ...flakeyBase, corrupt: { ...w, byte: 0 } }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => flakey.format({ ...flakeyBase, corrupt: { ...w, value: 256 } }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => flakey.format({ ...flakeyBase, corrupt: { ...w, direction: 'x' as 'r' } }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => flakey.format({ ...flakeyBase, writes: 'error_reads' as 'drop_writes' }), paramError('ERR_TARGET_BAD_VALUE'));
});

test('flakey parse refuses malformed feature groups', () => {
  assert.throws(() => flakey.parse('8:0 0 1'), parseError(''));
  assert.throws(() => flakey.parse('8:0 0 1 1 1 error_reads'), parseError('error_reads'));
  assert.throws(() => flakey.parse('8:0 0 1 1 2 drop_writes'), parseError('2'));
  assert.throws(() => flakey.parse('8:0 0 1 1 7 a b c d e f g'), parseError('7'));
  assert.throws(() => flakey.parse('8:0 0 1 1 2 corrupt_bio_byte 1 r 0 0'), parseError('corrupt_bio_byte'));
  assert.throws(() => flakey.parse('8:0 0 1 1 5 corrupt_bio_byte 1 x 0 0'), parseError('x'));
  assert.throws(() => flakey.parse('8:0 0 1 1 2 drop_writes error_writes'), parseError('error_writes'));
  assert.throws(() => flakey.parse('8:0 0 1 1 6 drop_writes corrupt_bio_byte 1 w 0 0'), (e: unknown) => e instanceof TargetParseError && e.cause instanceof TargetParamError);
  assert.throws(() => flakey.parse('8:0 0 one 1'), parseError('one'));
  assert.deepEqual(flakey.parseStatus(''), {});
});

test('log-writes round-trips and parses its status', () => {
  roundTrip(logWrites, { device: '8:0', logDevice: '8:16' }, '8:0 8:16');
  roundTrip(logWrites, { device: '/dev/vdb', logDevice: '/dev/vdc' }, '/dev/vdb /dev/vdc');
  assert.deepEqual(logWrites.parseStatus('1234 5678'), { entries: 1234n, highestSector: 5678n, loggingDisabled: false });
  assert.deepEqual(logWrites.parseStatus('12 100 logging_disabled'), { entries: 12n, highestSector: 100n, loggingDisabled: true });
  assert.throws(() => logWrites.parseStatus('12'), parseError(''));
  assert.throws(() => logWrites.parseStatus('12 100 paused'), parseError('paused'));
  assert.throws(() => logWrites.parse('8:0'), parseError(''));
  assert.equal(logWritesMessages.mark('mkfs-done'), 'mark mkfs-done');
  assert.throws(() => logWritesMessages.mark('two words'), paramError('ERR_TARGET_BAD_VALUE'));
});

test('snapshot-origin serves both names', () => {
  roundTrip(snapshotOrigin, { origin: '253:0' }, '253:0');
  const line = snapshotOrigin.line({ origin: '/dev/vg/lv' }, { start: sectors(0), length: sectors(8), type: 'dmkit-origin' });
  assert.equal(line.type, 'dmkit-origin');
  assert.equal(snapshotOrigin.line({ origin: '/dev/vg/lv' }, { start: sectors(0), length: sectors(8) }).type, 'snapshot-origin');
  assert.throws(() => snapshotOrigin.parse('253:0 253:1'), parseError('253:1'));
  assert.throws(() => snapshotOrigin.parse(''), parseError(''));
  assert.deepEqual(snapshotOrigin.parseStatus(''), {});
});
