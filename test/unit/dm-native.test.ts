import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import {
  buildRequest,
  DmError,
  loadNative,
  MIN_INTERFACE_VERSION,
  NativeTransport,
  type DmNativeBinding,
} from '../../src/dm';

describe('native dmIoctl argument checks (no device-mapper needed)', () => {
  const native = loadNative();
  // /dev/null accepts the fd checks; every case below must fail before reaching ioctl().
  const fd = openSync('/dev/null', 'r+');
  after(() => closeSync(fd));
  const request = (): Buffer => buildRequest({ version: MIN_INTERFACE_VERSION[0] }, Buffer.alloc(0), 0);
  const call = (...args: unknown[]): unknown => (native.dmIoctl as (...a: unknown[]) => unknown)(...args);

  test('short buffer -> RangeError', () => {
    assert.throws(() => native.dmIoctl(fd, 0, Buffer.alloc(311)), RangeError);
    assert.throws(() => native.dmIoctl(fd, 0, Buffer.alloc(0)), RangeError);
  });

  test('data_size outside 312..length -> RangeError', () => {
    const b = request();
    b.writeUInt32LE(313, 12);
    assert.throws(() => native.dmIoctl(fd, 0, b), /data_size 313/);
    b.writeUInt32LE(100, 12);
    assert.throws(() => native.dmIoctl(fd, 0, b), RangeError);
  });

  test('command outside 0..17 -> RangeError', () => {
    for (const nr of [18, -1, 1.5, 2 ** 40, Number.NaN]) {
      assert.throws(() => native.dmIoctl(fd, nr, request()), RangeError, String(nr));
    }
  });

  test('wrong types -> TypeError, never a crash', () => {
    assert.throws(() => call(fd, '0', request()), TypeError);
    assert.throws(() => call(fd, 0, 'buffer'), TypeError);
    assert.throws(() => call(fd, 0, new ArrayBuffer(400)), TypeError);
    assert.throws(() => call('3', 0, request()), TypeError);
    assert.throws(() => call(), TypeError);
    assert.throws(() => call(-1, 0, request()), RangeError);
    assert.throws(() => call(null), TypeError);
    assert.throws(() => (native.dmControlClose as (...a: unknown[]) => unknown)('x'), TypeError);
  });

  test('a failing ioctl rejects like a Node fs error', async () => {
    await assert.rejects(native.dmIoctl(fd, 0, request()), (e: unknown) => {
      const err = e as Error & { code: string; errno: number; syscall: string };
      assert.equal(err.code, 'ENOTTY');
      assert.equal(err.errno, 25);
      assert.equal(err.syscall, 'ioctl');
      assert.match(err.message, /^ENOTTY: .*ioctl DM_VERSION$/);
      return true;
    });
  });

  test('opening control either works or fails with an errno-shaped error', async () => {
    let opened: number | undefined;
    try {
      opened = native.dmControlOpen();
    } catch (e) {
      const err = e as Error & { code: unknown; errno: unknown; syscall: unknown };
      assert.equal(typeof err.code, 'string');
      assert.equal(typeof err.errno, 'number');
      assert.equal(typeof err.syscall, 'string');
    }
    if (opened !== undefined) native.dmControlClose(opened);
  });
});

describe('NativeTransport lifecycle', () => {
  function fakeBinding(): DmNativeBinding & { closed: number[]; finish: () => void } {
    let finish = (): void => undefined;
    const closed: number[] = [];
    return {
      closed,
      finish: () => finish(),
      dmControlOpen: () => 42,
      dmControlClose: (fd) => void closed.push(fd),
      dmIoctl: (_fd, _nr, buffer) => new Promise<Buffer>((resolve) => (finish = () => resolve(buffer))),
    };
  }

  test('close waits for in-flight ioctls, then refuses new ones', async () => {
    const binding = fakeBinding();
    const t = NativeTransport.open(binding);
    assert.equal(t.fd, 42);
    const inFlight = t.ioctl(0, Buffer.alloc(312));
    const closing = t.close();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(binding.closed, [], 'fd stays open while an ioctl runs');
    binding.finish();
    await inFlight;
    await closing;
    assert.deepEqual(binding.closed, [42]);
    const closedError = (e: unknown): boolean => e instanceof DmError && e.code === 'ERR_DM_CLOSED';
    await assert.rejects(t.ioctl(0, Buffer.alloc(312)), closedError);
    await t.close();
    assert.deepEqual(binding.closed, [42], 'close is idempotent');
  });
});
