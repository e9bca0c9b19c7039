import assert from 'node:assert/strict';
import { endianness } from 'node:os';
import { describe, test } from 'node:test';
import {
  DeviceMapper,
  DM_BUFFER_MAX,
  DmArgumentError,
  DmCommand,
  DmError,
  DmFlag,
  DmMalformedReplyError,
  encodeTargets,
} from '../../src/dm';
import { sectors } from '../../src/units';
import { errnoError, FakeKernel, nameList, reply, type Call, type Handler } from './dm-fakes';

const errno = (code: string, n: number): Error => errnoError(code, n);

const noSleep = async (): Promise<void> => undefined;
// Fake replies are written little-endian, like every host dmkit runs on today.
const leOnly = { skip: endianness() !== 'LE' && 'big-endian host' };

describe('DeviceMapper with a fake kernel', leOnly, () => {
  test('version(): header-only request at the minimum interface version', async () => {
    const k = new FakeKernel((c) => reply(c, { version: { major: 4, minor: 48, patch: 0 } }));
    const dm = new DeviceMapper(k);
    assert.deepEqual(await dm.version(), { major: 4, minor: 48, patch: 0 });
    const [call] = k.calls;
    assert.equal(call!.command, DmCommand.VERSION);
    assert.deepEqual(call!.header.version, { major: 4, minor: 0, patch: 0 });
    assert.equal(call!.buffer.length, 312);
    assert.equal(call!.header.dataSize, 312);
    assert.equal(call!.header.dataStart, 312);
    assert.deepEqual(dm.kernelVersion, { major: 4, minor: 48, patch: 0 });
  });

  test('each command sends its own minimum version', async () => {
    const k = new FakeKernel((c) => {
      if (c.command === DmCommand.LIST_VERSIONS || c.command === DmCommand.GET_TARGET_VERSION) {
        const rec = Buffer.alloc(24);
        rec.write('era', 16);
        return reply(c, { payload: rec });
      }
      return reply(c);
    });
    const dm = new DeviceMapper(k);
    const id = { name: 'vol' };
    await dm.targets();
    await dm.message(id, undefined, '@cancel_deferred_remove');
    await dm.setGeometry(id, { cylinders: 1024, heads: 255, sectors: 63, start: sectors(0) });
    await dm.armPoll();
    await dm.targetVersion('era');
    assert.deepEqual(
      k.calls.map((c) => c.header.version.minor),
      [1, 2, 6, 36, 41],
    );
  });

  test('BUFFER_FULL: starts at 16 KiB and doubles', async () => {
    const k = new FakeKernel((c) =>
      c.buffer.length < 64 * 1024
        ? reply(c, { flags: DmFlag.BUFFER_FULL })
        : reply(c, { payload: nameList([{ name: 'a', dev: 0xfd00n, eventNr: 2, uuid: 'U-1' }]) }),
    );
    const dm = new DeviceMapper(k);
    assert.deepEqual(await dm.list(), [{ name: 'a', dev: { major: 253, minor: 0 }, eventNr: 2, uuid: 'U-1' }]);
    assert.deepEqual(
      k.calls.map((c) => [c.buffer.length, c.header.dataSize]),
      [
        [16384, 16384],
        [32768, 32768],
        [65536, 65536],
      ],
    );
  });

  test('BUFFER_FULL: gives up above 32 MiB', async () => {
    const k = new FakeKernel((c) => reply(c, { flags: DmFlag.BUFFER_FULL }));
    const dm = new DeviceMapper(k);
    await assert.rejects(dm.table({ name: 'big' }), (e: unknown) => {
      assert.ok(e instanceof DmError);
      assert.equal(e.code, 'ERR_DM_BUFFER_FULL');
      assert.equal(e.command, 'DM_TABLE_STATUS');
      assert.equal(e.device, 'big');
      return true;
    });
    assert.equal(k.calls.at(-1)!.buffer.length, DM_BUFFER_MAX);
    assert.equal(k.calls.length, 12); // 16 KiB .. 32 MiB
  });

  test('names and uuids are validated before any ioctl', async () => {
    const k = new FakeKernel((c) => reply(c));
    const dm = new DeviceMapper(k);
    const badNames = ['', '.', '..', 'a/b', 'n'.repeat(128), 'x\0y'];
    for (const name of badNames) {
      await assert.rejects(dm.create(name), { name: 'DmArgumentError', code: 'ERR_DM_INVALID_NAME' }, name);
      await assert.rejects(dm.info({ name }), DmArgumentError);
    }
    await assert.rejects(dm.rename({ name: 'ok' }, 'b/ad'), { code: 'ERR_DM_INVALID_NAME' });
    await assert.rejects(dm.rename({ uuid: 'U' } as never, 'new'), /by name, not uuid/);
    await assert.rejects(dm.create('ok', { uuid: 'u'.repeat(129) }), { code: 'ERR_DM_INVALID_UUID' });
    await assert.rejects(dm.info({ uuid: '' }), { code: 'ERR_DM_INVALID_UUID' });
    await assert.rejects(dm.setUuid({ name: 'ok' }, 'u'.repeat(129)), { code: 'ERR_DM_INVALID_UUID' });
    await assert.rejects(dm.info({} as never), { code: 'ERR_DM_INVALID_ARGUMENT' });
    await assert.rejects(dm.info({ name: 'a', uuid: 'b' } as never), { code: 'ERR_DM_INVALID_ARGUMENT' });
    await assert.rejects(dm.load({ name: 'ok' }, []), { code: 'ERR_DM_INVALID_TARGET' });
    await assert.rejects(dm.targetVersion('much-too-long-type'), { code: 'ERR_DM_INVALID_TARGET' });
    assert.equal(k.calls.length, 0);
    await dm.create('n'.repeat(127), { uuid: 'u'.repeat(128) });
    assert.equal(k.calls.length, 1);
  });

  test('kernel errors become DmError with code, errno, command and device', async () => {
    const dm = new DeviceMapper(new FakeKernel(() => errno('ENXIO', 6)));
    await assert.rejects(dm.info({ uuid: 'DMKIT-x' }), (e: unknown) => {
      assert.ok(e instanceof DmError);
      assert.equal(e.code, 'ENXIO');
      assert.equal(e.errno, 6);
      assert.equal(e.command, 'DM_DEV_STATUS');
      assert.equal(e.device, 'uuid:DMKIT-x');
      assert.match(e.message, /DM_DEV_STATUS \(uuid:DMKIT-x\) failed: ENXIO/);
      return true;
    });
  });

  test('info decodes header fields and flags', async () => {
    const k = new FakeKernel((c) =>
      reply(c, {
        flags: DmFlag.SUSPEND | DmFlag.READONLY | DmFlag.ACTIVE_PRESENT | DmFlag.DEFERRED_REMOVE,
        openCount: 2,
        eventNr: 9,
        targetCount: 1,
        dev: 0xfd03n,
        name: 'vol',
        uuid: 'DMKIT-vol',
      }),
    );
    const info = await new DeviceMapper(k).info({ name: 'vol' }, { inactive: true });
    assert.equal(k.calls[0]!.header.flags, DmFlag.QUERY_INACTIVE_TABLE);
    assert.equal(k.calls[0]!.header.name, 'vol');
    assert.deepEqual(info, {
      name: 'vol',
      uuid: 'DMKIT-vol',
      dev: { major: 253, minor: 3 },
      openCount: 2,
      eventNr: 9,
      targetCount: 1,
      flags: {
        suspended: true,
        readOnly: true,
        activePresent: true,
        inactivePresent: false,
        deferredRemove: true,
        internalSuspend: false,
        ueventGenerated: false,
      },
    });
  });

  test('a uuid id goes into the uuid field only', async () => {
    const k = new FakeKernel((c) => reply(c));
    await new DeviceMapper(k).resume({ uuid: 'DMKIT-1' }, { udevCookie: 0x0d4d1234 });
    const h = k.calls[0]!.header;
    assert.equal(h.name, '');
    assert.equal(h.uuid, 'DMKIT-1');
    assert.equal(h.flags & DmFlag.SUSPEND, 0, 'resume = DEV_SUSPEND without SUSPEND');
    assert.equal(h.eventNr, 0x40 << 16, 'no udev sync here: the cookie means nothing (libdm ignores it too); PRIMARY_SOURCE only');
  });

  test('load sends specs, target_count and READONLY', async () => {
    const k = new FakeKernel((c) => reply(c, { flags: DmFlag.INACTIVE_PRESENT }));
    const table = [
      { start: sectors(0), length: sectors(100), type: 'linear', params: '8:16 0' },
      { start: sectors(100), length: sectors(50), type: 'error', params: '' },
    ];
    const info = await new DeviceMapper(k).load({ name: 'vol' }, table, { readOnly: true });
    const c = k.calls[0]!;
    assert.equal(c.command, DmCommand.TABLE_LOAD);
    assert.equal(c.header.targetCount, 2);
    assert.equal(c.header.flags, DmFlag.READONLY);
    assert.ok(c.buffer.subarray(312).equals(encodeTargets(table)));
    assert.equal(info.flags.inactivePresent, true);
  });

  test('suspend, remove and message set the right flags and payloads', async () => {
    const k = new FakeKernel((c) => {
      if (c.command === DmCommand.TARGET_MSG) {
        return reply(c, { flags: DmFlag.DATA_OUT, payload: Buffer.from('3 7\0') });
      }
      if (c.command === DmCommand.DEV_REMOVE) return reply(c, { flags: c.header.flags | DmFlag.UEVENT_GENERATED });
      return reply(c);
    });
    const dm = new DeviceMapper(k);
    await dm.suspend({ name: 'v' }, { noflush: true, nolockfs: true });
    assert.equal(k.calls[0]!.header.flags, DmFlag.SUSPEND | DmFlag.NOFLUSH | DmFlag.SKIP_LOCKFS);
    assert.deepEqual(await dm.remove({ name: 'v' }, { deferred: true }), { deferred: true, ueventGenerated: true });
    assert.equal(k.calls[1]!.header.flags, DmFlag.DEFERRED_REMOVE);
    assert.equal(await dm.message({ name: 'v' }, sectors(8), 'stats'), '3 7');
    const msg = k.calls[2]!.buffer;
    assert.equal(msg.length, 16384);
    assert.equal(msg.readBigUInt64LE(312), 8n);
    assert.equal(msg.toString('latin1', 320, 326), 'stats\0');
  });

  test('message without DATA_OUT resolves undefined', async () => {
    const dm = new DeviceMapper(new FakeKernel((c) => reply(c)));
    assert.equal(await dm.message({ name: 'v' }, undefined, 'checkpoint'), undefined);
  });

  test('table and status decode specs; table sets STATUS_TABLE', async () => {
    const spec = Buffer.alloc(56);
    spec.writeBigUInt64LE(2048n, 8);
    spec.writeUInt32LE(56, 20);
    spec.write('era', 24);
    spec.write('8:1 8:2 128', 40);
    const k = new FakeKernel((c) => reply(c, { payload: spec, targetCount: 1 }));
    const dm = new DeviceMapper(k);
    assert.deepEqual(await dm.table({ name: 'e' }), [{ start: 0n, length: 2048n, type: 'era', params: '8:1 8:2 128' }]);
    assert.deepEqual(await dm.status({ name: 'e' }, { noflush: true }), [
      { start: 0n, length: 2048n, type: 'era', status: '8:1 8:2 128' },
    ]);
    assert.equal(k.calls[0]!.header.flags, DmFlag.STATUS_TABLE);
    assert.equal(k.calls[1]!.header.flags, DmFlag.NOFLUSH);
  });

  test('rename, setUuid and setGeometry carry their strings at data_start', async () => {
    const k = new FakeKernel((c) => reply(c));
    const dm = new DeviceMapper(k);
    await dm.rename({ name: 'old' }, 'new');
    await dm.setUuid({ name: 'new' }, 'DMKIT-9');
    await dm.setGeometry({ name: 'new' }, { cylinders: 100, heads: 16, sectors: 63, start: sectors(0) });
    const text = (i: number): string => {
      const b = k.calls[i]!.buffer;
      return b.toString('latin1', 312, b.indexOf(0, 312));
    };
    assert.deepEqual([text(0), text(1), text(2)], ['new', 'DMKIT-9', '100 16 63 0']);
    assert.equal(k.calls[1]!.header.flags, DmFlag.UUID);
    await assert.rejects(
      dm.setGeometry({ name: 'new' }, { cylinders: 70000, heads: 1, sectors: 1, start: sectors(0) }),
      DmArgumentError,
    );
  });

  test('targetVersion puts the type in the header name', async () => {
    const rec = Buffer.alloc(24);
    rec.writeUInt32LE(1, 4);
    rec.writeUInt32LE(3, 8);
    rec.write('era', 16);
    const k = new FakeKernel((c) => reply(c, { payload: rec }));
    assert.deepEqual(await new DeviceMapper(k).targetVersion('era'), {
      name: 'era',
      version: { major: 1, minor: 3, patch: 0 },
    });
    assert.equal(k.calls[0]!.header.name, 'era');
  });

  test('waitEvent passes event_nr and returns info plus status', async () => {
    const k = new FakeKernel((c) => reply(c, { eventNr: c.header.eventNr + 1, targetCount: 0 }));
    const r = await new DeviceMapper(k).waitEvent({ name: 'v' }, 41);
    assert.equal(k.calls[0]!.header.eventNr, 41);
    assert.equal(r.info.eventNr, 42);
    assert.deepEqual(r.status, []);
  });

  describe('remove --retry', () => {
    test('retries EBUSY at the interval, then succeeds', async () => {
      let busy = 2;
      const k = new FakeKernel((c) => (busy-- > 0 ? errno('EBUSY', 16) : reply(c)));
      const slept: number[] = [];
      const dm = new DeviceMapper(k, { sleep: async (ms) => void slept.push(ms) });
      assert.deepEqual(await dm.remove({ name: 'v' }, { retry: true }), { deferred: false, ueventGenerated: false });
      assert.equal(k.calls.length, 3);
      assert.deepEqual(slept, [200, 200]);
    });

    test('gives up after count attempts; no retry by default', async () => {
      const k = new FakeKernel(() => errno('EBUSY', 16));
      const dm = new DeviceMapper(k, { sleep: noSleep });
      await assert.rejects(dm.remove({ name: 'v' }, { retry: { count: 3 } }), { code: 'EBUSY', errno: 16 });
      assert.equal(k.calls.length, 3);
      await assert.rejects(dm.remove({ name: 'v' }), { code: 'EBUSY' });
      assert.equal(k.calls.length, 4);
      const full = new FakeKernel(() => errno('EBUSY', 16));
      await assert.rejects(new DeviceMapper(full, { sleep: noSleep }).remove({ name: 'v' }, { retry: true }));
      assert.equal(full.calls.length, 25);
    });

    test('other errors are not retried', async () => {
      const k = new FakeKernel(() => errno('ENXIO', 6));
      await assert.rejects(new DeviceMapper(k, { sleep: noSleep }).remove({ name: 'v' }, { retry: true }), {
        code: 'ENXIO',
      });
      assert.equal(k.calls.length, 1);
    });
  });

  test('create with targets loads and resumes, and removes the device if loading fails', async () => {
    const k = new FakeKernel((c) => (c.command === DmCommand.TABLE_LOAD ? errno('EINVAL', 22) : reply(c)));
    const dm = new DeviceMapper(k);
    const targets = [{ start: sectors(0), length: sectors(8), type: 'zero', params: '' }];
    await assert.rejects(dm.create('v', { uuid: 'DMKIT-v', targets }), { code: 'EINVAL', command: 'DM_TABLE_LOAD' });
    assert.deepEqual(
      k.calls.map((c) => c.command),
      [DmCommand.DEV_CREATE, DmCommand.TABLE_LOAD, DmCommand.DEV_REMOVE],
    );
    assert.equal(k.calls[0]!.header.uuid, 'DMKIT-v');
  });

  test('create with a minor asks for a persistent dev', async () => {
    const k = new FakeKernel((c) => reply(c));
    await new DeviceMapper(k).create('v', { minor: 300 });
    assert.equal(k.calls[0]!.header.flags, DmFlag.PERSISTENT_DEV);
    assert.equal(k.calls[0]!.header.dev, 0x10002cn); // 0:300, huge-encoded
  });

  test('list on a pre-4.37 kernel asks each device for event_nr and uuid', async () => {
    const names = Buffer.alloc(24);
    names.writeBigUInt64LE(0xfd00n, 0);
    names.write('old', 12);
    const k = new FakeKernel((c) =>
      c.command === DmCommand.LIST_DEVICES
        ? reply(c, { version: { major: 4, minor: 36, patch: 0 }, payload: names })
        : reply(c, { version: { major: 4, minor: 36, patch: 0 }, eventNr: 5, uuid: 'U', name: 'old' }),
    );
    assert.deepEqual(await new DeviceMapper(k).list(), [
      { name: 'old', dev: { major: 253, minor: 0 }, eventNr: 5, uuid: 'U' },
    ]);
    assert.equal(k.calls[1]!.command, DmCommand.DEV_STATUS);
  });

  test('commands newer than the kernel fail before the ioctl', async () => {
    const k = new FakeKernel((c) => reply(c, { version: { major: 4, minor: 30, patch: 0 } }));
    const dm = new DeviceMapper(k);
    await dm.version();
    await assert.rejects(dm.armPoll(), { code: 'ERR_DM_UNSUPPORTED', command: 'DM_DEV_ARM_POLL' });
    assert.equal(k.calls.length, 1);
  });
});

describe('malformed kernel replies raise DmMalformedReplyError', leOnly, () => {
  const withDataStart = (c: Call, at: number): Buffer => {
    const b = reply(c, { payload: Buffer.alloc(8) });
    b.writeUInt32LE(at, 16);
    return b;
  };
  const runaway = Buffer.from('0100000000000000ffff000041414141', 'hex');
  const cases: Array<[string, Handler, (dm: DeviceMapper) => Promise<unknown>]> = [
    ['truncated header', () => Buffer.alloc(100), (dm) => dm.version()],
    ['empty reply', () => Buffer.alloc(0), (dm) => dm.info({ name: 'v' })],
    ['data_size beyond the buffer', (c) => reply(c).fill(0xff, 12, 16), (dm) => dm.info({ name: 'v' })],
    ['wrong interface major', (c) => reply(c, { version: { major: 0, minor: 0, patch: 0 } }), (dm) => dm.version()],
    ['name without NUL', (c) => reply(c).fill(0x41, 48, 176), (dm) => dm.info({ name: 'v' })],
    [
      'target_count larger than the payload',
      (c) => reply(c, { targetCount: 4, payload: Buffer.alloc(48) }),
      (dm) => dm.status({ name: 'v' }),
    ],
    ['data_start beyond data_size', (c) => withDataStart(c, 9000), (dm) => dm.list()],
    ['data_start inside the header', (c) => withDataStart(c, 16), (dm) => dm.list()],
    ['name list running off the end', (c) => reply(c, { payload: runaway }), (dm) => dm.list()],
    [
      'deps count larger than the payload',
      (c) => reply(c, { payload: Buffer.from([9, 0, 0, 0, 0, 0, 0, 0]) }),
      (dm) => dm.deps({ name: 'v' }),
    ],
    [
      'message reply without NUL',
      (c) => reply(c, { flags: DmFlag.DATA_OUT, payload: Buffer.from('abc') }),
      (dm) => dm.message({ name: 'v' }, undefined, 'x'),
    ],
    ['no version record', (c) => reply(c, { payload: Buffer.alloc(0) }), (dm) => dm.targetVersion('era')],
  ];
  for (const [what, handler, run] of cases) {
    test(what, async () => {
      const dm = new DeviceMapper(new FakeKernel(handler));
      await assert.rejects(run(dm), (e: unknown) => {
        assert.ok(e instanceof DmMalformedReplyError, String(e));
        assert.equal(e.code, 'ERR_DM_MALFORMED_REPLY');
        assert.match(e.command, /^DM_/);
        return true;
      });
    });
  }
});
