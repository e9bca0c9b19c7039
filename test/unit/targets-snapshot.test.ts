import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors } from '../../src/units';
import {
  snapshot,
  snapshotMerge,
  snapshotMergeDone,
  TargetParamError,
  TargetParseError,
  type SnapshotParams,

} from '../../src/targets';
import { paramError, parseError, roundTrip } from './targets-fixtures';

const base: SnapshotParams = {
  origin: '253:0',
  cow: '253:1',
  store: 'P',
  chunkSize: sectors(32),
  discardZeroesCow: false,
  discardPassdownOrigin: false,
};

test('snapshot round-trips stores, chunk sizes and features', () => {
  roundTrip(snapshot, base, '253:0 253:1 P 32');
  roundTrip(snapshot, { ...base, store: 'PO', chunkSize: sectors(8) }, '253:0 253:1 PO 8');
  roundTrip(snapshot, { ...base, store: 'N', chunkSize: sectors(2097152) }, '253:0 253:1 N 2097152');
  roundTrip(snapshot, { ...base, chunkSize: sectors(0) }, '253:0 253:1 P 0');
  roundTrip(snapshot, { ...base, discardZeroesCow: true }, '253:0 253:1 P 32 1 discard_zeroes_cow');
  roundTrip(
    snapshot,
    { ...base, chunkSize: sectors(1), discardZeroesCow: true, discardPassdownOrigin: true },
    '253:0 253:1 P 1 2 discard_zeroes_cow discard_passdown_origin',
  );
  assert.equal(snapshot.line(base, { start: sectors(0), length: sectors(64), type: 'dmkit-snapshot' }).type, 'dmkit-snapshot');
});

test('snapshot parse accepts lower case stores and a zero feature count', () => {
  assert.deepEqual(snapshot.parse('253:0 253:1 po 16 0'), { ...base, store: 'PO', chunkSize: 16n });
  assert.deepEqual(snapshot.normalize({ origin: 'a', cow: 'b', store: 'N', chunkSize: sectors(8) }), {
    ...base,
    origin: 'a',
    cow: 'b',
    store: 'N',
    chunkSize: 8n,
  });
});

test('snapshot refuses what the ctr refuses', () => {
  assert.throws(() => snapshot.format({ ...base, store: 'X' as 'P' }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => snapshot.format({ ...base, chunkSize: sectors(24) }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => snapshot.format({ ...base, chunkSize: sectors(4194304) }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => snapshot.format({ ...base, store: 'N', chunkSize: sectors(0) }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => snapshot.format({ ...base, discardPassdownOrigin: true }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => snapshot.format({ ...base, cow: '253:0' }), paramError('ERR_TARGET_CONFLICT'));
});

test('snapshot parse refuses malformed tables', () => {
  assert.throws(() => snapshot.parse('253:0 253:1 P'), parseError(''));
  assert.throws(() => snapshot.parse('253:0 253:1 Q 32'), parseError('Q'));
  assert.throws(() => snapshot.parse('253:0 253:1 P 32k'), parseError('32k'));
  assert.throws(() => snapshot.parse('253:0 253:1 P 32 1 discard_everything'), parseError('discard_everything'));
  assert.throws(() => snapshot.parse('253:0 253:1 P 32 3 a b c'), parseError('3'));
  assert.throws(() => snapshot.parse('253:0 253:1 P 32 1'), parseError('1'));
  assert.throws(() => snapshot.parse('253:0 253:1 P 32 1 discard_passdown_origin'), (e: unknown) => e instanceof TargetParseError && e.cause instanceof TargetParamError);
});

test('snapshot status: usage and the four problem states', () => {
  assert.deepEqual(snapshot.parseStatus('16/2097152 16'), { allocated: 16n, total: 2097152n, metadata: 16n });
  assert.deepEqual(snapshot.parseStatus('0/409600 0'), { allocated: 0n, total: 409600n, metadata: 0n });
  assert.deepEqual(snapshot.parseStatus('Invalid'), { problem: 'Invalid' });
  assert.deepEqual(snapshot.parseStatus('Overflow'), { problem: 'Overflow' });
  assert.deepEqual(snapshot.parseStatus('Merge failed'), { problem: 'Merge failed' });
  assert.deepEqual(snapshot.parseStatus('Unknown'), { problem: 'Unknown' });
  assert.throws(() => snapshot.parseStatus('Merge'), parseError('Merge'));
  assert.throws(() => snapshot.parseStatus('16/2097152'), parseError(''));
  assert.throws(() => snapshot.parseStatus('16 2097152 16'), parseError('16'));
  assert.throws(() => snapshot.parseStatus('16/2097152 16 16'), parseError('16'));
});

test('snapshot-merge: persistent stores only, both names, merge completion', () => {
  roundTrip(snapshotMerge, base, '253:0 253:1 P 32');
  roundTrip(snapshotMerge, { ...base, store: 'PO', discardZeroesCow: true }, '253:0 253:1 PO 32 1 discard_zeroes_cow');
  assert.throws(() => snapshotMerge.format({ ...base, store: 'N' }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => snapshotMerge.parse('253:0 253:1 N 32'), parseError());
  assert.deepEqual(snapshotMerge.names, ['snapshot-merge', 'dmkit-merge']);
  assert.equal(snapshotMerge.line(base, { start: sectors(0), length: sectors(64), type: 'dmkit-merge' }).type, 'dmkit-merge');
  assert.throws(() => snapshotMerge.line(base, { start: sectors(0), length: sectors(64), type: 'dmkit-snapshot' }), paramError('ERR_TARGET_BAD_TYPE'));
  assert.equal(snapshotMergeDone(snapshotMerge.parseStatus('48/2097152 48')), true);
  assert.equal(snapshotMergeDone(snapshotMerge.parseStatus('96/2097152 48')), false);
  assert.equal(snapshotMergeDone(snapshotMerge.parseStatus('Merge failed')), false);
});
