/**
 * Issue 12: every public entry point of DeviceMapper and of the target codecs refuses garbage with its
 * documented error type (DmArgumentError / DmError / TargetParamError) before it sizes, encodes or sends
 * anything, never with a TypeError or RangeError from deep inside.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import {
  controlOpenError,
  DeviceMapper,
  DmArgumentError,
  DmError,
  encodeTargets,
  type DevId,
  type Geometry,
  type TargetLine,
} from '../../src/dm';
import * as targets from '../../src/targets';
import { TargetParamError, TargetParseError } from '../../src/targets';
import { sectors } from '../../src/units';
import { errnoError, FakeKernel, reply } from './dm-fakes';

const any = (v: unknown): never => v as never;
const id: DevId = { name: 'dev0' };

function fake(): { dm: DeviceMapper; kernel: FakeKernel } {
  const kernel = new FakeKernel((call) => reply(call, { flags: 0 }));
  return { dm: new DeviceMapper(kernel), kernel };
}

/** Asserts the promise (or call) fails with a DmArgumentError and that nothing reached the kernel. */
async function refused(kernel: FakeKernel, f: () => unknown, code?: string): Promise<void> {
  await assert.rejects(
    async () => f(),
    (e: unknown) => {
      assert.ok(e instanceof DmArgumentError, `expected DmArgumentError, got ${String(e)}`);
      if (code) assert.equal(e.code, code);
      return true;
    },
  );
  assert.equal(kernel.calls.length, 0, 'no ioctl may be issued');
}

describe('DeviceMapper: the examples of issue 12', () => {
  test('targetVersion(5) and hasTarget(5)', async () => {
    const { dm, kernel } = fake();
    await refused(kernel, () => dm.targetVersion(any(5)), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.hasTarget(any(5)), 'ERR_DM_INVALID_TARGET');
  });

  test('targetVersion({length: 2**32}) fails without allocating', async () => {
    const { dm, kernel } = fake();
    const before = process.memoryUsage().rss;
    await refused(kernel, () => dm.targetVersion(any({ length: 2 ** 32 })), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, [{ start: sectors(0), length: sectors(8), type: any({ length: 2 ** 32 }), params: '' }]));
    // The old code grew to gigabytes before failing; a bounded check moves RSS by nothing like that.
    assert.ok(process.memoryUsage().rss - before < 256 << 20, 'RSS grew by more than 256 MiB');
  });

  test('load with type: undefined, a non-object line or a non-array table', async () => {
    const { dm, kernel } = fake();
    const line = { start: sectors(0), length: sectors(8), type: 'linear', params: '/dev/x 0' };
    await refused(kernel, () => dm.load(id, [{ ...line, type: any(undefined) }]), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, [any(null)]), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, [any(5)]), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, any({ length: 2 ** 32 })), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, [{ ...line, start: any(0) }]), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, [{ ...line, length: sectors(2n ** 64n) }]), 'ERR_DM_INVALID_TARGET');
    await refused(kernel, () => dm.load(id, [line], any({ readOnly: 'yes' })));
    assert.throws(() => encodeTargets([any(undefined)]), DmArgumentError);
  });

  test('message(id, 5, ...): a number where Sectors belong, and other bad messages', async () => {
    const { dm, kernel } = fake();
    await refused(kernel, () => dm.message(id, any(5), 'hello'));
    await refused(kernel, () => dm.message(id, any(-1n), 'hello'));
    await refused(kernel, () => dm.message(id, undefined, any(5)));
    await refused(kernel, () => dm.message(id, undefined, ''));
    await refused(kernel, () => dm.message(any(5), undefined, 'hello'));
  });

  test('info({name: 1n}) and other bad ids', async () => {
    const { dm, kernel } = fake();
    await refused(kernel, () => dm.info(any({ name: 1n })), 'ERR_DM_INVALID_NAME');
    await refused(kernel, () => dm.info(any({ uuid: Symbol('u') })), 'ERR_DM_INVALID_UUID');
    await refused(kernel, () => dm.info(any({ name: 'x'.repeat(2 ** 20) })), 'ERR_DM_INVALID_NAME');
    await refused(kernel, () => dm.info(any(null)));
    await refused(kernel, () => dm.info(id, any(null)));
    await refused(kernel, () => dm.info(id, any({ inactive: 1 })));
  });

  test('waitEvent(id, Symbol())', async () => {
    const { dm, kernel } = fake();
    await refused(kernel, () => dm.waitEvent(id, any(Symbol('e'))));
    await refused(kernel, () => dm.waitEvent(id, any(1n)));
    await refused(kernel, () => dm.waitEvent(id, -1));
  });

  test('setGeometry(id) without a geometry, and bad fields', async () => {
    const { dm, kernel } = fake();
    await refused(kernel, () => (dm.setGeometry as (i: DevId) => Promise<void>)(id));
    await refused(kernel, () => dm.setGeometry(id, any(null)));
    const g: Geometry = { cylinders: 1, heads: 1, sectors: 1, start: sectors(0) };
    await refused(kernel, () => dm.setGeometry(id, { ...g, heads: any(Symbol('h')) }));
    await refused(kernel, () => dm.setGeometry(id, { ...g, start: any(0) }));
  });

  test('events({signal: {}})', () => {
    const kernel = new FakeKernel((call) => reply(call));
    const dm = new DeviceMapper(Object.assign(kernel, { waitReadable: async () => false }));
    assert.throws(() => dm.events(any({ signal: {} })), DmArgumentError);
    assert.throws(() => dm.events(any(5)), DmArgumentError);
    assert.equal(kernel.calls.length, 0);
  });

  test('initialBufferSize: 2**40 and other bad options are refused by the constructor', () => {
    const kernel = new FakeKernel((call) => reply(call));
    for (const options of [
      { initialBufferSize: 2 ** 40 },
      { initialBufferSize: -1 },
      { maxBufferSize: 2 ** 40 },
      { initialBufferSize: 1 << 20, maxBufferSize: 1 << 16 },
      { sleep: 5 },
      { nodes: 'sometimes' },
      { udev: true },
      { udevTimeoutMs: Infinity },
      { devDir: 5 },
      null,
      5,
    ]) {
      assert.throws(() => new DeviceMapper(kernel, any(options)), DmArgumentError, JSON.stringify(options));
    }
    assert.throws(() => new DeviceMapper(any(null)), DmArgumentError);
  });

  test('other methods: options of the wrong shape', async () => {
    const { dm, kernel } = fake();
    await refused(kernel, () => dm.create('d', any({ readOnly: 'no' })));
    await refused(kernel, () => dm.create('d', any({ minor: '5' })));
    await refused(kernel, () => dm.suspend(id, any({ noflush: 1 })));
    await refused(kernel, () => dm.resume(id, any({ udevCookie: Symbol('c') })));
    await refused(kernel, () => dm.resume(id, any({ udevFlags: 1n })));
    await refused(kernel, () => dm.remove(id, any({ retry: 5 })));
    await refused(kernel, () => dm.remove(id, any({ retry: { count: -1 } })));
    await refused(kernel, () => dm.remove(id, any({ deferred: 'yes' })));
    await refused(kernel, () => dm.removeAll(any(null)));
    await refused(kernel, () => dm.rename(id, any(5)));
    await refused(kernel, () => dm.setUuid(id, any({ length: 2 ** 32 })));
    await refused(kernel, () => dm.status(id, any({ noflush: 'x' })));
    await refused(kernel, () => dm.table(id, any([])));
    await refused(kernel, () => dm.deps(any('dev0')));
    assert.throws(() => dm.devicePath(any(5)), DmArgumentError);
  });
});

describe('DeviceMapper.open() without a control node', () => {
  test('an errno error from opening control becomes a DmError with ERR_DM_NO_CONTROL', () => {
    for (const [code, n] of [['ENOENT', 2], ['ENODEV', 19], ['ENXIO', 6]] as const) {
      const e = controlOpenError(errnoError(code, n, 'open'));
      assert.ok(e instanceof DmError);
      assert.equal(e.code, 'ERR_DM_NO_CONTROL');
      assert.equal(e.errno, n);
      assert.match(e.message, /dm_mod/);
    }
    const denied = controlOpenError(errnoError('EACCES', 13, 'open'));
    assert.ok(denied instanceof DmError);
    assert.equal(denied.code, 'EACCES');
  });

  test('for real, with /dev/mapper and sysfs hidden in a private mount namespace (root only)', (t) => {
    if (process.getuid?.() !== 0 || spawnSync('unshare', ['--version']).status !== 0) {
      t.skip('needs root and unshare');
      return;
    }
    const script = `
      const { DeviceMapper } = require(${JSON.stringify(require.resolve('../../src/dm'))});
      try { DeviceMapper.open(); console.log('opened'); }
      catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, isDmError: e instanceof require(${JSON.stringify(require.resolve('../../src/dm'))}).DmError })); }`;
    const r = spawnSync(
      'unshare',
      ['-m', 'sh', '-c', 'mount -t tmpfs none /dev/mapper 2>/dev/null || { mkdir -p /dev/mapper && mount -t tmpfs none /dev/mapper; }; mount -t tmpfs none /sys/class/misc && exec "$0" -e "$1"', process.execPath, script],
      { encoding: 'utf8', timeout: 20_000 },
    );
    if (r.status !== 0 || !r.stdout.trim()) {
      t.skip(`could not set up the namespace: ${r.stderr.trim().split('\n')[0] ?? ''}`);
      return;
    }
    assert.deepEqual(JSON.parse(r.stdout.trim()), { name: 'DmError', code: 'ERR_DM_NO_CONTROL', isDmError: true });
  });
});

describe('target codecs: undefined, numbers, arrays and objects of the wrong shape', () => {
  const garbage: unknown[] = [undefined, null, 5, 'text', [], [1], 5n, Symbol('s'), () => 1, { length: 2 ** 32 }];
  const codecs = (Object.entries(targets) as [string, unknown][]).filter(
    (e): e is [string, targets.TargetCodec<unknown, unknown, unknown>] =>
      typeof e[1] === 'object' && e[1] !== null && typeof (e[1] as { normalize?: unknown }).normalize === 'function',
  );
  const typed = (e: unknown): boolean => e instanceof TargetParamError || e instanceof TargetParseError;

  test(`${codecs.length} codecs: normalize, format, line, parse, parseStatus`, () => {
    assert.ok(codecs.length >= 10);
    for (const [name, codec] of codecs) {
      for (const v of garbage) {
        for (const [what, call] of [
          ['normalize', () => codec.normalize(v)],
          ['format', () => codec.format(v)],
          ['line', () => codec.line(v, { start: sectors(0), length: sectors(8) })],
          ['line placement', () => codec.line({}, any(v))],
          ['parse', () => codec.parse(any(v))],
          ['parseStatus', () => codec.parseStatus(any(v))],
        ] as const) {
          try {
            call();
          } catch (e) {
            assert.ok(typed(e), `${name}.${what}(${typeof v}): ${String(e)}`);
            continue;
          }
          // Only a string can parse (a one-word table is valid for some targets); nothing else is valid here.
          assert.ok(typeof v === 'string' && what.startsWith('parse'), `${name}.${what} accepted ${typeof v}`);
        }
      }
    }
  });

  test('parseTable, snapshotMergeDone and cache policyArgs', () => {
    for (const v of garbage) {
      if (Array.isArray(v) && v.length === 0) continue; // an empty table parses to []
      assert.throws(() => targets.parseTable(any(v)), TargetParamError, String(v));
      if (typeof v !== 'object' || v === null) assert.throws(() => targets.snapshotMergeDone(any(v)), TargetParamError);
    }
    assert.throws(() => targets.parseTable([any(null)]), TargetParamError);
    const line: TargetLine = { start: sectors(0), length: sectors(8), type: 'linear', params: '8:0 0' };
    assert.equal(targets.parseTable([line]).length, 1);
    const base = { metadataDevice: '/dev/m', cacheDevice: '/dev/c', originDevice: '/dev/o', blockSize: sectors(64) };
    for (const [what, policyArgs] of [['5', 5], ['[null]', [null]], ['[5]', [5]], ['array-like', { length: 2 ** 32 }], ['100000 args', Array(100_000).fill({ key: 'a', value: 'b' })]] as const) {
      assert.throws(() => targets.cache.normalize(any({ ...base, policyArgs })), TargetParamError, what);
    }
  });
});
