import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sectors, targetBlocks } from '../../src/units';
import type { TargetLine } from '../../src/dm/payload';
import {
  cache,
  clone,
  codecFor,
  era,
  flakey,
  knownTargetTypes,
  linear,
  logWrites,
  parseStatusFor,
  parseTable,
  snapshot,
  snapshotMerge,
  snapshotOrigin,
  targetKind,
  thin,
  thinPool,
  TargetParseError,
} from '../../src/targets';

const at = (start: number, length = 1024) => ({ start: sectors(start), length: sectors(length) });

test('codecFor knows every in-tree and dmkit name', () => {
  const pairs: [string, unknown][] = [
    ['linear', linear],
    ['flakey', flakey],
    ['log-writes', logWrites],
    ['era', era],
    ['dmkit-era', era],
    ['clone', clone],
    ['dmkit-clone', clone],
    ['cache', cache],
    ['dmkit-cache', cache],
    ['snapshot', snapshot],
    ['dmkit-snapshot', snapshot],
    ['snapshot-origin', snapshotOrigin],
    ['dmkit-origin', snapshotOrigin],
    ['snapshot-merge', snapshotMerge],
    ['dmkit-merge', snapshotMerge],
    ['thin-pool', thinPool],
    ['thin', thin],
  ];
  for (const [name, codec] of pairs) assert.equal(codecFor(name), codec, name);
  assert.deepEqual([...knownTargetTypes].sort(), pairs.map(([n]) => n).sort());
  assert.equal(codecFor('crypt'), undefined);
  assert.equal(targetKind('dmkit-merge'), 'snapshot-merge');
  assert.equal(targetKind('ERA'), undefined);
});

test('every codec builds lines under each of its names that parseTable reads back', () => {
  const lines: TargetLine[] = [
    linear.line({ device: '8:0', offset: sectors(0) }, at(0)),
    flakey.line({ device: '8:0', offset: sectors(0), upInterval: 1, downInterval: 2, writes: 'drop_writes' }, at(1024)),
    logWrites.line({ device: '8:0', logDevice: '8:16' }, at(2048)),
    era.line({ metadataDevice: '8:1', originDevice: '8:2', blockSize: sectors(8) }, { ...at(3072), type: 'dmkit-era' }),
    clone.line({ metadataDevice: 'm', destinationDevice: 'd', sourceDevice: 's', regionSize: sectors(8), noHydration: true }, { ...at(4096), type: 'dmkit-clone' }),
    cache.line({ metadataDevice: 'm', cacheDevice: 'c', originDevice: 'o', blockSize: sectors(64), ioMode: 'writethrough' }, { ...at(5120), type: 'dmkit-cache' }),
    snapshotOrigin.line({ origin: 'o' }, { ...at(6144), type: 'dmkit-origin' }),
    snapshot.line({ origin: 'o', cow: 'c', store: 'PO', chunkSize: sectors(16) }, { ...at(7168), type: 'dmkit-snapshot' }),
    snapshotMerge.line({ origin: 'o', cow: 'c', store: 'P', chunkSize: sectors(16) }, { ...at(8192), type: 'dmkit-merge' }),
    thinPool.line({ metadataDevice: 'm', dataDevice: 'd', blockSize: sectors(128), lowWaterMark: targetBlocks(10) }, at(9216)),
    thin.line({ poolDevice: 'p', deviceId: 1, externalOrigin: 'o' }, at(10240)),
    { start: sectors(11264), length: sectors(8), type: 'crypt', params: 'aes-xts-plain64 - 0 8:0 0' },
  ];
  const parsed = parseTable(lines);
  assert.deepEqual(
    parsed.map((p) => p.kind),
    ['linear', 'flakey', 'log-writes', 'era', 'clone', 'cache', 'snapshot-origin', 'snapshot', 'snapshot-merge', 'thin-pool', 'thin', null],
  );
  parsed.forEach((p, i) => {
    assert.equal(p.type, lines[i]!.type);
    assert.equal(p.text, lines[i]!.params);
    assert.equal(p.start, lines[i]!.start);
  });
  const first = parsed[3]!;
  assert.ok(first.kind === 'era');
  assert.equal(first.params.blockSize, 8n);
  assert.equal(parsed[11]!.params, null);
});

test('the same params give the same string under both names, and the codec tables match', () => {
  for (const name of knownTargetTypes) {
    const codec = codecFor(name)!;
    assert.ok(codec.names.includes(name));
    assert.equal(codec.type, codec.names[0]);
  }
  const p = { metadataDevice: '8:1', originDevice: '8:2', blockSize: sectors(16) };
  assert.equal(era.line(p, { ...at(0), type: 'dmkit-era' }).params, era.line(p, at(0)).params);
});

test('parseTable reports the offending line text', () => {
  const bad: TargetLine[] = [{ start: sectors(0), length: sectors(8), type: 'dmkit-era', params: '8:1 8:2 nine' }];
  assert.throws(() => parseTable(bad), (e: unknown) => e instanceof TargetParseError && e.token === 'nine' && e.input === '8:1 8:2 nine');
});

test('parseStatusFor dispatches by either name', () => {
  assert.deepEqual(parseStatusFor('dmkit-era', '8 14/16384 3 58'), {
    metadataBlockSize: 8n,
    metadataUsed: 14n,
    metadataTotal: 16384n,
    currentEra: 3n,
    heldRoot: 58n,
  });
  assert.deepEqual(parseStatusFor('thin-pool', 'Fail'), { fail: true });
  assert.deepEqual(parseStatusFor('dmkit-merge', 'Merge failed'), { problem: 'Merge failed' });
  assert.deepEqual(parseStatusFor('linear', ''), {});
  assert.equal(parseStatusFor('crypt', 'whatever'), null);
  assert.throws(() => parseStatusFor('dmkit-clone', 'garbage'), TargetParseError);
});
