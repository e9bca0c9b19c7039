import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors, targetBlocks } from '../../src/units';
import {
  clone,
  cloneMessages,
  era,
  eraMessages,
  TargetParamError,
  TargetParseError,
  type CloneParams,

} from '../../src/targets';
import { paramError, parseError, roundTrip } from './targets-fixtures';

const at = { start: sectors(0), length: sectors(1 << 20) };

test('era round-trips block sizes that are multiples of 8, powers of 2 or not', () => {
  for (const bs of [8, 24, 128, 4096, 2 ** 32 - 8]) {
    roundTrip(era, { metadataDevice: '253:1', originDevice: '253:2', blockSize: sectors(bs) }, `253:1 253:2 ${bs}`);
  }
  roundTrip(era, { metadataDevice: '/dev/mapper/meta', originDevice: '/dev/sdc', blockSize: sectors(64) }, '/dev/mapper/meta /dev/sdc 64');
});

test('era lines carry either name', () => {
  const p = { metadataDevice: '253:1', originDevice: '253:2', blockSize: sectors(8) };
  assert.equal(era.line(p, { ...at, type: 'dmkit-era' }).type, 'dmkit-era');
  assert.equal(era.line(p, at).type, 'era');
  assert.deepEqual(era.names, ['era', 'dmkit-era']);
  assert.throws(() => era.line(p, { ...at, type: 'dmkit-clone' }), paramError('ERR_TARGET_BAD_TYPE'));
});

test('era refuses block sizes the ctr refuses', () => {
  const p = { metadataDevice: '253:1', originDevice: '253:2' };
  for (const bs of [0, 4, 12, 2 ** 32]) {
    assert.throws(() => era.format({ ...p, blockSize: sectors(bs) }), paramError('ERR_TARGET_OUT_OF_RANGE'), `bs ${bs}`);
  }
  assert.throws(() => era.parse('253:1 253:2 12'), (e: unknown) => e instanceof TargetParseError && e.cause instanceof TargetParamError);
  assert.throws(() => era.parse('253:1 253:2'), parseError(''));
  assert.throws(() => era.parse('253:1 253:2 8 8'), parseError('8'));
  assert.throws(() => era.parse('253:1 253:2 8k'), parseError('8k'));
});

test('era status parses held roots, no root, and Error', () => {
  assert.deepEqual(era.parseStatus('8 14/16384 3 58'), {
    metadataBlockSize: 8n,
    metadataUsed: 14n,
    metadataTotal: 16384n,
    currentEra: 3n,
    heldRoot: 58n,
  });
  assert.deepEqual(era.parseStatus('8 14/16384 1 -'), {
    metadataBlockSize: 8n,
    metadataUsed: 14n,
    metadataTotal: 16384n,
    currentEra: 1n,
    heldRoot: null,
  });
  assert.deepEqual(era.parseStatus('Error'), { error: true });
});

test('era status refuses malformed lines', () => {
  assert.throws(() => era.parseStatus('8 14/16384 3'), parseError(''));
  assert.throws(() => era.parseStatus('8 14-16384 3 -'), parseError('14-16384'));
  assert.throws(() => era.parseStatus('8 14/x 3 -'), parseError('x'));
  assert.throws(() => era.parseStatus('8 14/16384 3 - extra'), parseError('extra'));
  assert.throws(() => era.parseStatus('Fail'), parseError('Fail'));
  assert.throws(() => era.parseStatus(''), parseError(''));
});

test('era messages', () => {
  assert.equal(eraMessages.checkpoint(), 'checkpoint');
  assert.equal(eraMessages.takeMetadataSnap(), 'take_metadata_snap');
  assert.equal(eraMessages.dropMetadataSnap(), 'drop_metadata_snap');
});

const cloneBase: CloneParams = {
  metadataDevice: '253:0',
  destinationDevice: '253:1',
  sourceDevice: '253:2',
  regionSize: sectors(8),
  noHydration: false,
  noDiscardPassdown: false,
  hydrationThreshold: null,
  hydrationBatchSize: null,
};

test('clone round-trips feature and core arg combinations', () => {
  roundTrip(clone, cloneBase, '253:0 253:1 253:2 8');
  roundTrip(clone, { ...cloneBase, regionSize: sectors(2097152), noHydration: true }, '253:0 253:1 253:2 2097152 1 no_hydration');
  roundTrip(
    clone,
    { ...cloneBase, noHydration: true, noDiscardPassdown: true },
    '253:0 253:1 253:2 8 2 no_hydration no_discard_passdown',
  );
  roundTrip(
    clone,
    { ...cloneBase, regionSize: sectors(128), hydrationThreshold: targetBlocks(16), hydrationBatchSize: targetBlocks(64) },
    '253:0 253:1 253:2 128 0 4 hydration_threshold 16 hydration_batch_size 64',
  );
  roundTrip(
    clone,
    { ...cloneBase, noDiscardPassdown: true, hydrationBatchSize: targetBlocks(0) },
    '253:0 253:1 253:2 8 1 no_discard_passdown 2 hydration_batch_size 0',
  );
  const line = clone.line(cloneBase, { ...at, type: 'dmkit-clone' });
  assert.equal(line.type, 'dmkit-clone');
  assert.deepEqual(clone.parse(line.params), cloneBase);
});

test('clone parse accepts what the kernel echoes verbatim: any order, any case, explicit zero counts', () => {
  assert.deepEqual(clone.parse('253:0 253:1 253:2 8 0'), cloneBase);
  assert.deepEqual(clone.parse('253:0 253:1 253:2 8 0 0'), cloneBase);
  assert.deepEqual(
    clone.parse('253:0 253:1 253:2 8 2 NO_DISCARD_PASSDOWN no_hydration 4 hydration_batch_size 2 hydration_threshold 3'),
    { ...cloneBase, noHydration: true, noDiscardPassdown: true, hydrationThreshold: 3n, hydrationBatchSize: 2n },
  );
  assert.deepEqual(clone.normalize({ metadataDevice: 'a', destinationDevice: 'b', sourceDevice: 'c', regionSize: sectors(8) }), {
    ...cloneBase,
    metadataDevice: 'a',
    destinationDevice: 'b',
    sourceDevice: 'c',
  });
});

test('clone refuses region sizes and counts the ctr refuses', () => {
  for (const rs of [0, 4, 12, 24, 4194304]) {
    assert.throws(() => clone.format({ ...cloneBase, regionSize: sectors(rs) }), paramError('ERR_TARGET_OUT_OF_RANGE'), `rs ${rs}`);
  }
  assert.throws(() => clone.format({ ...cloneBase, hydrationThreshold: targetBlocks(2 ** 32) }), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => clone.format({ ...cloneBase, noHydration: 'yes' as unknown as boolean }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => clone.parse('253:0 253:1 253:2 12'), parseError());
  assert.throws(() => clone.parse('253:0 253:1 253:2 8 1 yes_hydration'), parseError('yes_hydration'));
  assert.throws(() => clone.parse('253:0 253:1 253:2 8 3 no_hydration no_hydration no_hydration'), parseError('3'));
  assert.throws(() => clone.parse('253:0 253:1 253:2 8 0 1 hydration_threshold'), parseError('1'));
  assert.throws(() => clone.parse('253:0 253:1 253:2 8 0 2 hydration_speed 4'), parseError('hydration_speed'));
  assert.throws(() => clone.parse('253:0 253:1 253:2 8 0 2 hydration_threshold -4'), parseError('-4'));
  assert.throws(() => clone.parse('253:0 253:1 253:2 8 0 0 junk'), parseError('junk'));
  assert.throws(() => clone.parse('253:0 253:1 253:2'), parseError(''));
});

test('clone status parses features, core args and ro/rw', () => {
  const s = clone.parseStatus(
    '8 72/4096 8 1024/8192 3 2 no_hydration no_discard_passdown 4 hydration_threshold 1 hydration_batch_size 1 ro',
  );
  assert.deepEqual(s, {
    metadataBlockSize: 8n,
    metadataUsed: 72n,
    metadataTotal: 4096n,
    regionSize: 8n,
    hydrated: 1024n,
    totalRegions: 8192n,
    hydrating: 3n,
    features: ['no_hydration', 'no_discard_passdown'],
    coreArgs: { hydrationThreshold: 1n, hydrationBatchSize: 1n },
    mode: 'ro',
  });
  const hydrated = clone.parseStatus('8 105/262144 64 16384/16384 0 0 4 hydration_threshold 8 hydration_batch_size 32 rw');
  assert.ok('mode' in hydrated && hydrated.mode === 'rw' && hydrated.hydrated === hydrated.totalRegions);
  assert.deepEqual(clone.parseStatus('Fail'), { fail: true });
  assert.deepEqual(clone.parseStatus('Error'), { error: true });
});

test('clone status refuses malformed lines', () => {
  const good = '8 72/4096 8 1024/8192 0 0 4 hydration_threshold 1 hydration_batch_size 1 rw';
  assert.doesNotThrow(() => clone.parseStatus(good));
  assert.throws(() => clone.parseStatus(good.replace(' rw', ' Fail')), parseError('Fail'));
  assert.throws(() => clone.parseStatus(good.replace(' rw', '')), parseError(''));
  assert.throws(() => clone.parseStatus(good.replace('0 0 4', '0 1 4')), parseError());
  assert.throws(() => clone.parseStatus(good.replace('4 hydration_threshold 1 ', '2 ')), parseError(''));
  assert.throws(() => clone.parseStatus(good.replace('1024/8192', '1024')), parseError('1024'));
  assert.throws(() => clone.parseStatus(`${good} rw`), parseError('rw'));
});

test('clone messages validate their counts', () => {
  assert.equal(cloneMessages.enableHydration(), 'enable_hydration');
  assert.equal(cloneMessages.disableHydration(), 'disable_hydration');
  assert.equal(cloneMessages.hydrationThreshold(targetBlocks(0)), 'hydration_threshold 0');
  assert.equal(cloneMessages.hydrationBatchSize(targetBlocks(256)), 'hydration_batch_size 256');
  assert.throws(() => cloneMessages.hydrationThreshold(targetBlocks(2 ** 32)), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => cloneMessages.hydrationBatchSize(-1n as never), paramError('ERR_TARGET_OUT_OF_RANGE'));
});
