import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors, targetBlocks } from '../../src/units';
import { cache, cacheMessages, TargetParamError, TargetParseError, type CacheParams } from '../../src/targets';
import { paramError, parseError, roundTrip } from './targets-fixtures';

const base: CacheParams = {
  metadataDevice: '253:3',
  cacheDevice: '253:4',
  originDevice: '253:5',
  blockSize: sectors(64),
  ioMode: null,
  metadata2: false,
  noDiscardPassdown: false,
  policy: 'default',
  migrationThreshold: null,
  policyArgs: [],
};
const devs = '253:3 253:4 253:5';

test('cache round-trips features, policies and policy args', () => {
  roundTrip(cache, base, `${devs} 64 0 default 0`);
  roundTrip(cache, { ...base, ioMode: 'writethrough', policy: 'smq' }, `${devs} 64 1 writethrough smq 0`);
  roundTrip(
    cache,
    { ...base, blockSize: sectors(2097152), ioMode: 'passthrough', metadata2: true, noDiscardPassdown: true, policy: 'cleaner' },
    `${devs} 2097152 3 metadata2 passthrough no_discard_passdown cleaner 0`,
  );
  roundTrip(cache, { ...base, policy: 'smq', migrationThreshold: sectors(204800) }, `${devs} 64 0 smq 2 migration_threshold 204800`);
  roundTrip(
    cache,
    {
      ...base,
      ioMode: 'writeback',
      policy: 'mq',
      migrationThreshold: sectors(0),
      policyArgs: [
        { key: 'sequential_threshold', value: '512' },
        { key: 'random_threshold', value: '4' },
      ],
    },
    `${devs} 64 1 writeback mq 6 migration_threshold 0 sequential_threshold 512 random_threshold 4`,
  );
  const line = cache.line(base, { start: sectors(0), length: sectors(1 << 21), type: 'dmkit-cache' });
  assert.equal(line.type, 'dmkit-cache');
});

test('cache fills in defaults and accepts the verbatim echo of other orders', () => {
  assert.deepEqual(cache.normalize({ metadataDevice: '253:3', cacheDevice: '253:4', originDevice: '253:5', blockSize: sectors(64) }), base);
  assert.deepEqual(
    cache.parse(`${devs} 128 2 WriteThrough metadata2 smq 4 random_threshold 8 migration_threshold 100`),
    { ...base, blockSize: 128n, ioMode: 'writethrough', metadata2: true, policy: 'smq', migrationThreshold: 100n, policyArgs: [{ key: 'random_threshold', value: '8' }] },
  );
});

test('cache refuses block sizes, modes and policy args the ctr refuses', () => {
  for (const bs of [0, 32, 96, 2097216, 4194304]) {
    assert.throws(() => cache.format({ ...base, blockSize: sectors(bs) }), paramError('ERR_TARGET_OUT_OF_RANGE'), `bs ${bs}`);
  }
  assert.throws(() => cache.format({ ...base, ioMode: 'writearound' as 'writeback' }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => cache.format({ ...base, policy: 'my policy' }), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => cache.format({ ...base, policyArgs: [{ key: 'migration_threshold', value: '1' }] }), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => cache.format({ ...base, policyArgs: [{ key: 'k', value: '' }] }), paramError('ERR_TARGET_BAD_VALUE'));
  const many = Array.from({ length: 513 }, (_, i) => ({ key: `k${i}`, value: '1' }));
  assert.throws(() => cache.format({ ...base, policyArgs: many }), paramError('ERR_TARGET_OUT_OF_RANGE'));
});

test('cache parse refuses malformed tables', () => {
  assert.throws(() => cache.parse(`${devs} 64`), parseError(''));
  assert.throws(() => cache.parse(`${devs} 64 0`), parseError(''));
  assert.throws(() => cache.parse(`${devs} 64 2 writeback writethrough smq 0`), parseError('writeback writethrough'));
  assert.throws(() => cache.parse(`${devs} 64 1 writearound smq 0`), parseError('writearound'));
  assert.throws(() => cache.parse(`${devs} 64 4 a b c d smq 0`), parseError('4'));
  assert.throws(() => cache.parse(`${devs} 64 0 smq 1 migration_threshold`), parseError('1'));
  assert.throws(() => cache.parse(`${devs} 64 0 smq 2 migration_threshold lots`), parseError('lots'));
  assert.throws(() => cache.parse(`${devs} 64 0 smq 0 extra`), parseError('extra'));
  assert.throws(() => cache.parse(`${devs} 100 0 smq 0`), (e: unknown) => e instanceof TargetParseError && e.cause instanceof TargetParamError);
});

test('cache status: smq writeback, clean', () => {
  const s = cache.parseStatus('8 1090/4096 128 22/16384 59 1037 12 1009 0 22 5 1 writeback 2 migration_threshold 2048 smq 0 rw - ');
  assert.deepEqual(s, {
    metadataBlockSize: 8n,
    metadataUsed: 1090n,
    metadataTotal: 4096n,
    blockSize: 128n,
    cacheUsed: 22n,
    cacheTotal: 16384n,
    readHits: 59n,
    readMisses: 1037n,
    writeHits: 12n,
    writeMisses: 1009n,
    demotions: 0n,
    promotions: 22n,
    dirty: 5n,
    features: ['writeback'],
    ioMode: 'writeback',
    coreArgs: { migrationThreshold: 2048n },
    policy: 'smq',
    policyArgs: [],
    mode: 'rw',
    needsCheck: false,
  });
});

test('cache status: metadata2 writethrough, read-only with needs_check', () => {
  const s = cache.parseStatus('8 27/4096 64 0/32768 0 0 0 0 0 0 0 3 metadata2 writethrough no_discard_passdown 2 migration_threshold 4096 smq 0 ro needs_check ');
  assert.ok('needsCheck' in s);
  assert.equal(s.needsCheck, true);
  assert.equal(s.mode, 'ro');
  assert.equal(s.ioMode, 'writethrough');
  assert.deepEqual(s.features, ['metadata2', 'writethrough', 'no_discard_passdown']);
  assert.equal(s.coreArgs.migrationThreshold, 4096n);
});

test('cache status: mq prints its ignored tunables; Fail and Error', () => {
  const s = cache.parseStatus(
    '8 100/4096 512 7/100 1 2 3 4 5 6 0 1 passthrough 2 migration_threshold 2048 mq 10 random_threshold 0 sequential_threshold 0 discard_promote_adjustment 0 read_promote_adjustment 0 write_promote_adjustment 0 rw - ',
  );
  assert.ok('policyArgs' in s);
  assert.equal(s.policy, 'mq');
  assert.equal(s.policyArgs.length, 5);
  assert.deepEqual(s.policyArgs[0], { key: 'random_threshold', value: '0' });
  assert.deepEqual(cache.parseStatus('Fail'), { fail: true });
  assert.deepEqual(cache.parseStatus('Error'), { error: true });
});

test('cache status refuses malformed lines', () => {
  const good = '8 1090/4096 128 22/16384 59 1037 12 1009 0 22 5 1 writeback 2 migration_threshold 2048 smq 0 rw -';
  assert.doesNotThrow(() => cache.parseStatus(good));
  assert.throws(() => cache.parseStatus(good.replace(' -', ' maybe')), parseError('maybe'));
  assert.throws(() => cache.parseStatus(good.replace(' rw', ' rx')), parseError('rx'));
  assert.throws(() => cache.parseStatus(good.replace('1 writeback', '1 metadata2')), parseError());
  assert.throws(() => cache.parseStatus(good.replace('migration_threshold', 'sequential_threshold')), parseError('sequential_threshold'));
  assert.throws(() => cache.parseStatus(good.replace('59 ', '')), parseError());
  assert.throws(() => cache.parseStatus(good.replace('smq 0', 'smq 1 x')), parseError());
  assert.throws(() => cache.parseStatus(`${good} extra`), parseError('extra'));
});

test('cache messages', () => {
  assert.equal(cacheMessages.migrationThreshold(sectors(4096)), 'migration_threshold 4096');
  assert.equal(cacheMessages.policyTunable('sequential_threshold', '1024'), 'sequential_threshold 1024');
  assert.equal(
    cacheMessages.invalidateCblocks([targetBlocks(7), { begin: targetBlocks(10), end: targetBlocks(20) }]),
    'invalidate_cblocks 7 10-20',
  );
  assert.throws(() => cacheMessages.invalidateCblocks([]), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => cacheMessages.invalidateCblocks([{ begin: targetBlocks(5), end: targetBlocks(5) }]), paramError('ERR_TARGET_CONFLICT'));
  assert.throws(() => cacheMessages.invalidateCblocks([3 as never]), paramError('ERR_TARGET_BAD_VALUE'));
  assert.throws(() => cacheMessages.migrationThreshold(-1n as never), paramError('ERR_TARGET_OUT_OF_RANGE'));
  assert.throws(() => cacheMessages.policyTunable('a b', '1'), paramError('ERR_TARGET_BAD_VALUE'));
});
