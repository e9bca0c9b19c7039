import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors, targetBlocks } from '../../src/units';
import {
  thin,
  thinPool,
  thinPoolMessages,
  TargetParamError,
  TargetParseError,

  type ThinPoolParams,
} from '../../src/targets';
import { paramError, parseError, roundTrip } from './targets-fixtures';

const pool: ThinPoolParams = {
  metadataDevice: '253:0',
  dataDevice: '253:1',
  blockSize: sectors(128),
  lowWaterMark: targetBlocks(0),
  skipBlockZeroing: false,
  ignoreDiscard: false,
  noDiscardPassdown: false,
  readOnly: false,
  errorIfNoSpace: false,
};

test('thin-pool round-trips exactly as pool_status prints, trailing space included', () => {
  roundTrip(thinPool, pool, '253:0 253:1 128 0 0 ');
  roundTrip(thinPool, { ...pool, blockSize: sectors(2097152), lowWaterMark: targetBlocks(1024), skipBlockZeroing: true }, '253:0 253:1 2097152 1024 1 skip_block_zeroing ');
  roundTrip(
    thinPool,
    { ...pool, ignoreDiscard: true, readOnly: true, errorIfNoSpace: true },
    '253:0 253:1 128 0 3 ignore_discard read_only error_if_no_space ',
  );
  roundTrip(
    thinPool,
    { ...pool, blockSize: sectors(384), skipBlockZeroing: true, noDiscardPassdown: true, readOnly: true, errorIfNoSpace: true },
    '253:0 253:1 384 0 4 skip_block_zeroing no_discard_passdown read_only error_if_no_space ',
  );
  assert.equal(thinPool.format({ metadataDevice: '/dev/a', dataDevice: '/dev/b', blockSize: sectors(256), lowWaterMark: targetBlocks(8) }), '/dev/a /dev/b 256 8 0 ');
});

test('thin-pool parse accepts a table without the feature group, any order and case', () => {
  assert.deepEqual(thinPool.parse('253:0 253:1 128 0'), pool);
  assert.deepEqual(thinPool.parse('253:0 253:1 128 0 2 Error_If_No_Space skip_block_zeroing'), { ...pool, errorIfNoSpace: true, skipBlockZeroing: true });
});

test('thin-pool refuses what the ctr refuses', () => {
  for (const bs of [0, 64, 192, 2097280, 4194304]) {
    assert.throws(() => thinPool.format({ ...pool, blockSize: sectors(bs) }), paramError('ERR_TARGET_OUT_OF_RANGE'), `bs ${bs}`);
  }
  const all = { skipBlockZeroing: true, ignoreDiscard: true, noDiscardPassdown: true, readOnly: true, errorIfNoSpace: true };
  assert.throws(() => thinPool.format({ ...pool, ...all }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => thinPool.format({ ...pool, lowWaterMark: 3 as never }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => thinPool.parse('253:0 253:1 128'), parseError(''));
  assert.throws(() => thinPool.parse('253:0 253:1 128 0 1 yes_discard_passdown'), parseError('yes_discard_passdown'));
  assert.throws(() => thinPool.parse('253:0 253:1 128 0 1 igyesre_discard'), parseError('igyesre_discard'));
  assert.throws(() => thinPool.parse('253:0 253:1 128 0 2 read_only'), parseError('2'));
  assert.throws(() => thinPool.parse('253:0 253:1 100 0 0'), (e: unknown) => e instanceof TargetParseError && e.cause instanceof TargetParamError);
});

test('thin-pool status: healthy, out of space with held root and needs_check, Fail', () => {
  assert.deepEqual(thinPool.parseStatus('0 141/4096 0/16384 - rw discard_passdown queue_if_no_space - 1024 '), {
    transactionId: 0n,
    metadataUsed: 141n,
    metadataTotal: 4096n,
    dataUsed: 0n,
    dataTotal: 16384n,
    heldRoot: null,
    mode: 'rw',
    discards: 'discard_passdown',
    noSpace: 'queue_if_no_space',
    needsCheck: false,
    metadataLowWatermark: 1024n,
  });
  const s = thinPool.parseStatus('5 200/4096 16384/16384 17 out_of_data_space no_discard_passdown error_if_no_space needs_check 1024 ');
  assert.ok('mode' in s);
  assert.equal(s.mode, 'out_of_data_space');
  assert.equal(s.heldRoot, 17n);
  assert.equal(s.needsCheck, true);
  assert.equal(s.noSpace, 'error_if_no_space');
  const ro = thinPool.parseStatus('18446744073709551615 9/4096 1/2 - ro ignore_discard queue_if_no_space - 409');
  assert.ok('mode' in ro && ro.mode === 'ro' && ro.transactionId === 2n ** 64n - 1n);
  assert.deepEqual(thinPool.parseStatus('Fail'), { fail: true });
  assert.deepEqual(thinPool.parseStatus('Error'), { error: true });
});

test('thin-pool status refuses malformed lines', () => {
  const good = '0 141/4096 0/16384 - rw discard_passdown queue_if_no_space - 1024';
  assert.doesNotThrow(() => thinPool.parseStatus(good));
  assert.throws(() => thinPool.parseStatus(good.replace(' 1024', '')), parseError(''));
  assert.throws(() => thinPool.parseStatus(good.replace(' rw ', ' fail ')), parseError('fail'));
  assert.throws(() => thinPool.parseStatus(good.replace('discard_passdown', 'yes_discard_passdown')), parseError('yes_discard_passdown'));
  assert.throws(() => thinPool.parseStatus(good.replace('queue_if_no_space', 'error_if_yes_space')), parseError('error_if_yes_space'));
  assert.throws(() => thinPool.parseStatus(good.replace('0 141', '18446744073709551616 141')), parseError('18446744073709551616'));
  assert.throws(() => thinPool.parseStatus(`Fail 1`), parseError('Fail'));
});

test('thin-pool messages validate ids', () => {
  assert.equal(thinPoolMessages.createThin(0), 'create_thin 0');
  assert.equal(thinPoolMessages.createThin(2 ** 24 - 1), 'create_thin 16777215');
  assert.equal(thinPoolMessages.createSnap(1, 0), 'create_snap 1 0');
  assert.equal(thinPoolMessages.delete(7), 'delete 7');
  assert.equal(thinPoolMessages.setTransactionId(0n, 1n), 'set_transaction_id 0 1');
  assert.equal(thinPoolMessages.reserveMetadataSnap(), 'reserve_metadata_snap');
  assert.equal(thinPoolMessages.releaseMetadataSnap(), 'release_metadata_snap');
  assert.throws(() => thinPoolMessages.createThin(2 ** 24), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => thinPoolMessages.createSnap(1, -1), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => thinPoolMessages.delete(1.5), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => thinPoolMessages.setTransactionId(0n, 2n ** 64n), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => thinPoolMessages.setTransactionId(0 as never, 1n), paramError('ERR_TARGET_BAD_VALUE'));
});

test('thin round-trips with and without an external origin', () => {
  roundTrip(thin, { poolDevice: '253:2', deviceId: 0, externalOrigin: null }, '253:2 0');
  roundTrip(thin, { poolDevice: '253:2', deviceId: 16777215, externalOrigin: '8:32' }, '253:2 16777215 8:32');
  assert.deepEqual(thin.normalize({ poolDevice: '/dev/mapper/pool', deviceId: 3 }), { poolDevice: '/dev/mapper/pool', deviceId: 3, externalOrigin: null });
  assert.throws(() => thin.format({ poolDevice: '253:2', deviceId: 2 ** 24 }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => thin.format({ poolDevice: '253:2', deviceId: 1, externalOrigin: '253:2' }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => thin.parse('253:2'), parseError(''));
  assert.throws(() => thin.parse('253:2 16777216'), parseError());
  assert.throws(() => thin.parse('253:2 1 8:32 8:48'), parseError('8:48'));
  assert.throws(() => thin.parse('Fail'), parseError());
});

test('thin status', () => {
  assert.deepEqual(thin.parseStatus('2097152 2097151'), { mappedSectors: 2097152n, highestMappedSector: 2097151n });
  assert.deepEqual(thin.parseStatus('0 -'), { mappedSectors: 0n, highestMappedSector: null });
  assert.deepEqual(thin.parseStatus('Fail'), { fail: true });
  assert.deepEqual(thin.parseStatus('Error'), { error: true });
  assert.deepEqual(thin.parseStatus('-'), { inactive: true });
  assert.throws(() => thin.parseStatus('128'), parseError(''));
  assert.throws(() => thin.parseStatus('128 x'), parseError('x'));
  assert.throws(() => thin.parseStatus('128 127 0'), parseError('0'));
});
