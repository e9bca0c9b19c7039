/**
 * The typed API against the real kernel, with dmsetup as the oracle: for devices of the in-tree targets
 * (linear, flakey, era, cache, snapshot, thin-pool/thin) what DeviceMapper reports equals what dmsetup
 * reports; a thin-pool low-water-mark event arrives; bad input gives typed errors and leaves nothing behind.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceMapper, DmArgumentError, DmError, TargetLine } from '../../src/dm';
import { BlockDevice, ramdisks, Scope, stamp, zero } from '../../src/testing';
import { bytes, Sectors, sectors } from '../../src/units';
import { dmsetup, dmsetupStatus } from '../../src/testing/dmsetup';

const MiB = 1n << 20n;

function line(length: Sectors, type: string, params: string): TargetLine {
  return { start: sectors(0), length, type, params };
}

function formatLines(lines: ReadonlyArray<{ start: bigint; length: bigint; type: string; params?: string; status?: string }>): string {
  return lines.map((l) => `${l.start} ${l.length} ${l.type} ${l.params ?? l.status ?? ''}`.trim()).join('\n');
}

describe('DeviceMapper against dmsetup', () => {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  const names: string[] = [];
  let disks: BlockDevice[] = [];
  const devNum = async (name: string): Promise<string> => {
    const i = await dm.info({ name });
    return `${i.dev.major}:${i.dev.minor}`;
  };
  const create = async (name: string, ...targets: TargetLine[]): Promise<void> => {
    await dm.create(name, { targets });
    names.push(name);
  };

  before(async () => {
    disks = ramdisks(scope, 10, bytes(32n * MiB));
    for (const d of disks) zero(d.path, bytes(64n * 1024n));
    const [lin, eraMeta, eraOrigin, cacheMeta, cacheFast, cacheOrigin, snapOrigin, snapCow, poolMeta, poolData] = disks as [
      BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice, BlockDevice,
    ];
    const half = sectors(lin.sectors / 2n);
    await create('api-linear', line(half, 'linear', `${lin.path} 0`), { start: half, length: half, type: 'linear', params: `${lin.path} ${half}` });
    await create('api-flakey', line(lin.sectors, 'flakey', `${lin.path} 0 60 0 1 drop_writes`));
    await create('api-era', line(eraOrigin.sectors, 'era', `${eraMeta.path} ${eraOrigin.path} 128`));
    await create('api-cache', line(cacheOrigin.sectors, 'cache', `${cacheMeta.path} ${cacheFast.path} ${cacheOrigin.path} 64 1 writethrough smq 0`));
    await create('api-origin', line(snapOrigin.sectors, 'snapshot-origin', snapOrigin.path));
    await create('api-snap', line(snapOrigin.sectors, 'snapshot', `${snapOrigin.path} ${snapCow.path} P 16`));
    await create('api-pool', line(poolData.sectors, 'thin-pool', `${poolMeta.path} ${poolData.path} 128 16 0`));
    await dm.message({ name: 'api-pool' }, undefined, 'create_thin 0');
    await create('api-thin', line(sectors(64n * MiB / 512n), 'thin', `${await devNum('api-pool')} 0`));
  });

  after(async () => {
    for (const name of names.reverse()) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    await dm.close();
    scope.close();
  });

  test('version, targets and the device list agree', async () => {
    const v = await dm.version();
    assert.match(dmsetup('version'), new RegExp(`Driver version:\\s+${v.major}\\.${v.minor}\\.${v.patch}`));
    const targets = (await dm.targets()).map((t) => `${t.name} v${t.version.major}.${t.version.minor}.${t.version.patch}`).sort();
    const oracle = dmsetup('targets').trim().split('\n').map((l) => l.trim().split(/\s+/).join(' ')).sort();
    assert.deepEqual(targets, oracle);
    const listed = (await dm.list()).map((d) => `${d.name} (${d.dev.major}:${d.dev.minor})`).sort();
    const ls = dmsetup('ls').trim().split('\n').map((l) => l.trim().split(/\s+/).join(' ')).sort();
    assert.deepEqual(listed, ls);
  });

  test('table, status, info and deps of every device agree', async () => {
    for (const name of names) {
      const table = dmsetup('table', name).trim().split('\n').map((l) => l.trim()).join('\n');
      assert.equal(formatLines(await dm.table({ name })), table, `table of ${name}`);
      const status = formatLines(await dm.status({ name }));
      const oracle = dmsetup('status', name).trim().split('\n').map((l) => l.trim()).join('\n');
      // Era and cache report live counters; compare all but the fields that IO could move.
      assert.equal(status.split(/\s+/).length, oracle.split(/\s+/).length, `status of ${name}:\n${status}\n${oracle}`);
      if (!/ (era|cache|thin-pool) /.test(status)) assert.equal(status, oracle, `status of ${name}`);

      const info = await dm.info({ name });
      const [open, events, attr, major, minor] = dmsetup('info', '-c', '--noheadings', '-o', 'open,events,attr,major,minor', '--separator', ' ', name).trim().split(/\s+/);
      assert.equal(`${info.openCount} ${info.eventNr} ${info.dev.major} ${info.dev.minor}`, `${open} ${events} ${major} ${minor}`, `info of ${name}`);
      assert.equal(info.flags.suspended, attr![2] === 's', `suspended flag of ${name}`);
      assert.equal(info.flags.readOnly, attr![1] === 'r', `read-only flag of ${name}`);

      const deps = (await dm.deps({ name })).map((d) => `(${d.major}, ${d.minor})`).sort();
      const oracleDeps = (dmsetup('deps', name).match(/\(\d+, \d+\)/g) ?? []).sort();
      assert.deepEqual(deps, oracleDeps, `deps of ${name}`);
    }
  });

  test('suspend and resume show in the flags of both', async () => {
    await dm.suspend({ name: 'api-linear' });
    assert.equal((await dm.info({ name: 'api-linear' })).flags.suspended, true);
    assert.match(dmsetup('info', 'api-linear'), /State:\s+SUSPENDED/);
    await dm.resume({ name: 'api-linear' });
    assert.match(dmsetup('info', 'api-linear'), /State:\s+ACTIVE/);
  });

  test('a thin-pool low-water-mark event arrives through the event iterator', async () => {
    const pool = { name: 'api-pool' };
    const before = await dm.info(pool);
    const watcher = DeviceMapper.open();
    const stream = watcher.events();
    try {
      await stream.ready;
      // 32 MiB of 64 KiB blocks = 512 blocks; the low water mark is 16 free blocks. Fill past it.
      const thin = `/dev/dm-${(await dm.info({ name: 'api-thin' })).dev.minor}`;
      stamp(thin, { start: sectors(0), length: sectors((512n - 8n) * 128n) }, 5);
      let timer: NodeJS.Timeout | undefined;
      const seen = (async () => {
        for await (const ev of stream) if (ev.name === pool.name) return ev;
        throw new Error('event stream ended');
      })();
      const ev = await Promise.race([
        seen,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('no pool event within 60 s')), 60_000);
        }),
      ]).finally(() => clearTimeout(timer));
      assert.ok(ev.eventNr > before.eventNr, `event nr ${before.eventNr} -> ${ev.eventNr}`);
    } finally {
      await watcher.close();
    }
    const fields = (await dm.status(pool))[0]!.status.split(/\s+/);
    const [used, total] = fields[2]!.split('/').map(Number);
    assert.ok(total! - used! < 16, `free data blocks ${total! - used!} are below the low water mark`);
  });

  test('waitEvent returns once the device event counter moves', async () => {
    const before = await dm.info({ name: 'api-linear' });
    const wait = dm.waitEvent({ name: 'api-linear' }, before.eventNr);
    await dm.rename({ name: 'api-linear' }, 'api-linear-2');
    await dm.rename({ name: 'api-linear-2' }, 'api-linear');
    const result = await wait;
    assert.ok(result.info.eventNr > before.eventNr);
  });

  test('message replies come back (DM_DATA_OUT)', async () => {
    const reply = await dm.message({ name: 'api-linear' }, undefined, '@stats_list');
    assert.equal(reply ?? '', dmsetup('message', 'api-linear', '0', '@stats_list').trim());
  });
});

describe('bad input through the API', () => {
  const dm = DeviceMapper.open();
  after(() => dm.close());

  const leftovers = (): string => dmsetup('ls').trim();

  test('oversize and malformed names are refused before any ioctl', async () => {
    const before = leftovers();
    await assert.rejects(dm.create('x'.repeat(128)), (e: unknown) => e instanceof DmArgumentError && e.code === 'ERR_DM_INVALID_NAME');
    await assert.rejects(dm.create('a/b'), DmArgumentError);
    await assert.rejects(dm.create(''), DmArgumentError);
    await assert.rejects(dm.create('ok', { uuid: 'u'.repeat(129) }), DmArgumentError);
    assert.equal(leftovers(), before);
  });

  test('a malformed table or a missing device fails with EINVAL and leaves no device', async () => {
    const before = leftovers();
    for (const params of ['/dev/ram0', '/dev/ram0 zero', '/dev/does-not-exist 0']) {
      await assert.rejects(dm.create('api-bad', { targets: [line(sectors(8), 'linear', params)] }), (e: unknown) => {
        return e instanceof DmError && ['EINVAL', 'ENODEV', 'ENXIO'].includes(e.code);
      }, `linear ${params}`);
      assert.notEqual(dmsetupStatus('info', 'api-bad').status, 0, `no half-made device after linear ${params}`);
    }
    await assert.rejects(dm.create('api-bad', { targets: [line(sectors(8), 'no-such-target', '')] }), DmError);
    assert.equal(leftovers(), before);
  });

  test('wrong argument types give typed errors, not crashes', async () => {
    const loose = dm as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    await assert.rejects(loose['create']!.call(dm, 42), (e: unknown) => e instanceof TypeError || e instanceof RangeError);
    await assert.rejects(loose['status']!.call(dm, { name: 7 }), (e: unknown) => e instanceof TypeError || e instanceof RangeError);
    await assert.rejects(loose['load']!.call(dm, { name: 'x' }, [{ start: -1n, length: 8n, type: 'linear', params: '' }]), (e: unknown) => e instanceof TypeError || e instanceof RangeError);
    await assert.rejects(dm.status({ name: 'api-missing' }), (e: unknown) => e instanceof DmError && e.code === 'ENXIO');
  });
});
