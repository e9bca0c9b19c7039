import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { endianness, tmpdir } from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import {
  DeviceMapper,
  DeviceNodes,
  DmCommand,
  DmError,
  DmFlag,
  isNodeFor,
  nativeNodeFs,
  parseProcDevices,
  resolveDevDir,
} from '../../src/dm';
import { sectors } from '../../src/units';
import { devT, errnoError, fakeSystem, FakeKernel, FakeNodeFs, nameList, reply, type Call } from './dm-fakes';

const M = '/dev/mapper';
const dev = (minor: number, major = 253): { major: number; minor: number } => ({ major, minor });

describe('/dev root and /proc/devices', () => {
  test('option, then $DM_DEV_DIR, then /dev; relative paths are refused', () => {
    assert.equal(resolveDevDir('/tmp/x/'), '/tmp/x');
    assert.equal(resolveDevDir(undefined, { DM_DEV_DIR: '/srv/dev' }), '/srv/dev');
    assert.equal(resolveDevDir('/opt/dev', { DM_DEV_DIR: '/srv/dev' }), '/opt/dev');
    assert.equal(resolveDevDir(undefined, {}), '/dev');
    assert.equal(resolveDevDir(undefined, { DM_DEV_DIR: '' }), '/dev');
    assert.throws(() => resolveDevDir('dev'), { code: 'ERR_DM_INVALID_ARGUMENT' });
  });

  test('the device-mapper block major comes from the block section only', () => {
    const text = 'Character devices:\n  1 mem\n 10 misc\n253 device-mapper\n\nBlock devices:\n  7 loop\n252 device-mapper\n259 blkext\n';
    assert.equal(parseProcDevices(text), 252);
    assert.equal(parseProcDevices('Character devices:\n  1 mem\n\nBlock devices:\n  7 loop\n'), undefined);
  });
});

describe('DeviceNodes', () => {
  const setup = (): { fsx: FakeNodeFs; nodes: DeviceNodes } => {
    const fsx = new FakeNodeFs();
    return { fsx, nodes: new DeviceNodes(fsx, '/dev') };
  };

  test('ensure makes the directory and a block node, then leaves a correct one alone', () => {
    const { fsx, nodes } = setup();
    assert.equal(nodes.ensure('vol', dev(3)), 'created');
    assert.deepEqual(fsx.log, [`mkdir ${M}`, `mknod ${M}/vol 253:3`]);
    assert.equal(nodes.ensure('vol', dev(3)), 'unchanged');
    assert.equal(fsx.log.length, 2);
  });

  test('ensure replaces a block node with the wrong dev and a stale symlink', () => {
    const { fsx, nodes } = setup();
    fsx.put(`${M}/a`, { kind: 'block', dev: dev(9) });
    fsx.put(`${M}/b`, { kind: 'symlink', to: '../dm-7' });
    assert.equal(nodes.ensure('a', dev(1)), 'replaced');
    assert.equal(nodes.ensure('b', dev(2)), 'replaced');
    assert.deepEqual(fsx.stat(`${M}/a`), { kind: 'block', dev: dev(1) });
    assert.deepEqual(fsx.stat(`${M}/b`), { kind: 'block', dev: dev(2) });
  });

  test("udev's symlink to the right dm-N counts as the node", () => {
    const { fsx, nodes } = setup();
    fsx.put('/dev/dm-4', { kind: 'block', dev: dev(4) }).put(`${M}/u`, { kind: 'symlink', to: '../dm-4' });
    assert.equal(nodes.ensure('u', dev(4)), 'unchanged');
    assert.equal(isNodeFor(fsx.stat(`${M}/u`), dev(4)), true);
    assert.equal(isNodeFor(fsx.stat(`${M}/u`), dev(5)), false);
  });

  test('regular files and directories in the way are an error, never deleted', () => {
    const { fsx, nodes } = setup();
    fsx.put(`${M}/f`, { kind: 'other' }).put(`${M}/d`, { kind: 'dir' });
    assert.throws(() => nodes.ensure('f', dev(1)), (e: unknown) => e instanceof DmError && e.code === 'ERR_DM_NODE_CONFLICT');
    assert.throws(() => nodes.ensure('d', dev(1)), { code: 'ERR_DM_NODE_CONFLICT' });
    assert.equal(fsx.stat(`${M}/f`)?.kind, 'other');
  });

  test('control is never made, replaced or deleted', () => {
    const { fsx, nodes } = setup();
    fsx.put(`${M}/control`, { kind: 'char', dev: dev(236, 10) });
    assert.equal(nodes.ensure('control', dev(1)), 'unchanged');
    assert.equal(nodes.remove('control'), false);
    assert.deepEqual(fsx.log, []);
  });

  test('mknod racing another creator: EEXIST with the right node is fine, otherwise it throws', () => {
    const { fsx, nodes } = setup();
    fsx.mkdir(M);
    fsx.failMknod = errnoError('EPERM', 1, 'mknod');
    assert.throws(() => nodes.ensure('p', dev(1)), { code: 'EPERM' });
    const racing = new (class extends FakeNodeFs {
      override mknodBlock(where: string): void {
        this.entries.set(where, { kind: 'block', dev: dev(6) });
        throw errnoError('EEXIST', 17, 'mknod');
      }
    })();
    assert.equal(new DeviceNodes(racing).ensure('r', dev(6)), 'created');
    assert.throws(() => new DeviceNodes(racing).ensure('s', dev(7)), { code: 'EEXIST' });
  });

  test('remove deletes block nodes only', () => {
    const { fsx, nodes } = setup();
    fsx.put(`${M}/b`, { kind: 'block', dev: dev(1) }).put(`${M}/l`, { kind: 'symlink', to: '../dm-1' });
    fsx.put(`${M}/c`, { kind: 'char', dev: dev(1) });
    assert.equal(nodes.remove('b'), true);
    assert.equal(nodes.remove('l'), false);
    assert.equal(nodes.remove('c'), false);
    assert.equal(nodes.remove('missing'), false);
    assert.deepEqual(fsx.log, [`unlink ${M}/b`]);
  });

  test('rename moves a correct node, or makes a fresh one', () => {
    const { fsx, nodes } = setup();
    fsx.put(M, { kind: 'dir' }).put(`${M}/old`, { kind: 'block', dev: dev(2) });
    nodes.rename('old', 'new', dev(2));
    assert.deepEqual(fsx.log, [`rename ${M}/old ${M}/new`]);
    fsx.log.length = 0;
    nodes.rename('gone', 'newer', dev(3));
    assert.deepEqual(fsx.log, [`mknod ${M}/newer 253:3`]);
    fsx.log.length = 0;
    fsx.put(`${M}/wrong`, { kind: 'block', dev: dev(9) });
    nodes.rename('wrong', 'right', dev(4));
    assert.deepEqual(fsx.log, [`unlink ${M}/wrong`, `mknod ${M}/right 253:4`]);
  });

  test('reconcile: creates missing, fixes wrong, deletes stale DM block nodes, keeps everything else', () => {
    const { fsx, nodes } = setup();
    fsx.put(M, { kind: 'dir' }).put(`${M}/control`, { kind: 'char', dev: dev(236, 10) });
    fsx.put(`${M}/ok`, { kind: 'block', dev: dev(1) }).put(`${M}/wrong`, { kind: 'block', dev: dev(9) });
    fsx.put(`${M}/stale`, { kind: 'block', dev: dev(5) }).put(`${M}/loop`, { kind: 'block', dev: dev(0, 7) });
    fsx.put(`${M}/link`, { kind: 'symlink', to: '../dm-8' }).put(`${M}/notes`, { kind: 'other' });
    const devices = [
      { name: 'ok', dev: dev(1) },
      { name: 'wrong', dev: dev(2) },
      { name: 'new', dev: dev(3) },
    ];
    const report = nodes.reconcile(devices);
    assert.deepEqual(report, { created: ['new'], replaced: ['wrong'], removed: ['stale'] });
    assert.deepEqual([...fsx.entries.keys()].sort(), [M, ...['control', 'link', 'loop', 'new', 'notes', 'ok', 'wrong'].map((n) => `${M}/${n}`)]);
    assert.deepEqual(nodes.reconcile(devices), { created: [], replaced: [], removed: [] });
  });

  test('reconcile one name: only that node is made or deleted', () => {
    const { fsx, nodes } = setup();
    fsx.put(`${M}/stale`, { kind: 'block', dev: dev(5) }).put(`${M}/other`, { kind: 'block', dev: dev(6) });
    const devices = [{ name: 'a', dev: dev(1) }];
    assert.deepEqual(nodes.reconcile(devices, 'stale'), { created: [], replaced: [], removed: ['stale'] });
    assert.deepEqual(nodes.reconcile(devices, 'a'), { created: ['a'], replaced: [], removed: [] });
    assert.ok(fsx.entries.has(`${M}/other`));
  });

  test('reconcile without a known DM major deletes nothing', () => {
    const { fsx, nodes } = setup();
    fsx.major = undefined;
    fsx.put(`${M}/stale`, { kind: 'block', dev: dev(5) });
    assert.deepEqual(nodes.reconcile([]).removed, []);
  });
});

describe('nativeNodeFs on a temporary directory', () => {
  test('lstat kinds, symlink targets, device numbers and missing entries', () => {
    const dir = fs.mkdtempSync(path.join(tmpdir(), 'dmkit-nodes-'));
    try {
      const nfs = nativeNodeFs({ sysMknod: () => undefined }, '/nonexistent');
      fs.writeFileSync(path.join(dir, 'file'), '');
      fs.symlinkSync('/dev/null', path.join(dir, 'null'));
      fs.symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'dangling'));
      assert.deepEqual(nfs.stat(path.join(dir, 'file')), { kind: 'other' });
      assert.deepEqual(nfs.stat(dir), { kind: 'dir' });
      assert.deepEqual(nfs.stat(path.join(dir, 'null')), { kind: 'symlink', target: { kind: 'char', dev: { major: 1, minor: 3 } } });
      assert.deepEqual(nfs.stat(path.join(dir, 'dangling')), { kind: 'symlink', target: undefined });
      assert.equal(nfs.stat(path.join(dir, 'missing')), undefined);
      assert.deepEqual(nfs.readdir(path.join(dir, 'missing')), []);
      assert.deepEqual(nfs.readdir(dir).sort(), ['dangling', 'file', 'null']);
      nfs.mkdir(path.join(dir, 'mapper'));
      nfs.rename(path.join(dir, 'file'), path.join(dir, 'mapper', 'moved'));
      nfs.unlink(path.join(dir, 'mapper', 'moved'));
      assert.deepEqual(nfs.readdir(path.join(dir, 'mapper')), []);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('mknodBlock asks the addon for S_IFBLK | 0660 with the major and minor', () => {
    const calls: unknown[][] = [];
    const nfs = nativeNodeFs({
      sysMknod: (...args) => {
        calls.push(args);
        throw errnoError('EPERM', 1, 'mknod');
      },
    });
    assert.throws(() => nfs.mknodBlock('/x/mapper/v', dev(258, 253)), { code: 'EPERM' });
    assert.deepEqual(calls, [['/x/mapper/v', fs.constants.S_IFBLK | 0o660, 253, 258]]);
  });
});

const leOnly = { skip: endianness() !== 'LE' && 'big-endian host' };

describe('DeviceMapper keeps /dev/mapper in step without udev', leOnly, () => {
  /** A kernel with devices by name: vol is 253:3 (renamed devices keep their dev). */
  const kernel = (devices: Map<string, bigint> = new Map([['vol', devT(253, 3)]])): FakeKernel =>
    new FakeKernel((c: Call) => {
      const { name, uuid } = c.header;
      if (c.command === DmCommand.LIST_DEVICES) {
        return reply(c, { payload: nameList([...devices].map(([n, d]) => ({ name: n, dev: d, eventNr: 0 }))) });
      }
      if (c.command === DmCommand.DEV_RENAME) {
        const target = c.buffer.toString('utf8', 312, c.buffer.indexOf(0, 312));
        devices.set(target, devices.get(name)!);
        devices.delete(name);
        return reply(c);
      }
      const n = uuid ? 'vol' : name;
      if (c.command === DmCommand.DEV_REMOVE) devices.delete(n);
      return reply(c, { name: n, dev: devices.get(n) ?? devT(253, 3), flags: c.header.flags | DmFlag.UEVENT_GENERATED });
    });

  const table = [{ start: sectors(0), length: sectors(8), type: 'error', params: '' }];

  test('create with a table makes the node; rename moves it; remove deletes it', async () => {
    const system = fakeSystem();
    const dm = new DeviceMapper(kernel(), { system, devDir: '/dev' });
    await dm.create('vol', { targets: table });
    assert.deepEqual(system.nodeFs.stat(`${M}/vol`), { kind: 'block', dev: dev(3) });
    await dm.rename({ name: 'vol' }, 'vol2');
    assert.equal(system.nodeFs.stat(`${M}/vol`), undefined);
    assert.deepEqual(system.nodeFs.stat(`${M}/vol2`), { kind: 'block', dev: dev(3) });
    await dm.remove({ name: 'vol2' });
    assert.equal(system.nodeFs.stat(`${M}/vol2`), undefined);
    assert.equal(dm.devicePath('vol'), `${M}/vol`);
  });

  test('create without a table makes no node (nodes come with resume, as libdm does)', async () => {
    const system = fakeSystem();
    await new DeviceMapper(kernel(), { system }).create('vol');
    assert.deepEqual(system.nodeFs.log, []);
  });

  test('remove by uuid finds the name first; a deferred remove keeps the node', async () => {
    const system = fakeSystem();
    system.nodeFs.put(`${M}/vol`, { kind: 'block', dev: dev(3) });
    const k = kernel();
    const dm = new DeviceMapper(k, { system });
    k.calls.length = 0;
    await dm.remove({ uuid: 'U-vol' });
    assert.deepEqual(k.calls.map((c) => c.command), [DmCommand.DEV_STATUS, DmCommand.DEV_REMOVE]);
    assert.equal(system.nodeFs.stat(`${M}/vol`), undefined);
    system.nodeFs.put(`${M}/busy`, { kind: 'block', dev: dev(4) });
    const deferred = new FakeKernel((c) => reply(c, { flags: DmFlag.DEFERRED_REMOVE }));
    await new DeviceMapper(deferred, { system }).remove({ name: 'busy' }, { deferred: true });
    assert.ok(system.nodeFs.stat(`${M}/busy`));
  });

  test('DM_DEV_DIR moves the tree; nodes: off and a running udev leave it alone', async () => {
    const saved = process.env['DM_DEV_DIR'];
    process.env['DM_DEV_DIR'] = '/tmp/devroot';
    try {
      const system = fakeSystem();
      await new DeviceMapper(kernel(), { system }).resume({ name: 'vol' });
      assert.deepEqual(system.nodeFs.log, ['mkdir /tmp/devroot/mapper', 'mknod /tmp/devroot/mapper/vol 253:3']);
    } finally {
      if (saved === undefined) delete process.env['DM_DEV_DIR'];
      else process.env['DM_DEV_DIR'] = saved;
    }
    const off = fakeSystem();
    await new DeviceMapper(kernel(), { system: off, nodes: 'off' }).resume({ name: 'vol' });
    const udev = fakeSystem();
    udev.udevRunning = true;
    await new DeviceMapper(kernel(), { system: udev }).resume({ name: 'vol' });
    assert.deepEqual([...off.nodeFs.log, ...udev.nodeFs.log], []);
  });

  test('a node that cannot be made is a warning; the resume still succeeds', async () => {
    const system = fakeSystem();
    system.nodeFs.failMknod = errnoError('EROFS', 30, 'mknod');
    const warnings: string[] = [];
    const info = await new DeviceMapper(kernel(), { system, warn: (m) => warnings.push(m) }).resume({ name: 'vol' });
    assert.equal(info.name, 'vol');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^resume vol: \/dev\/mapper not updated: EROFS/);
  });

  test('mknodes reconciles with the kernel list, whatever the modes', async () => {
    const system = fakeSystem();
    system.nodeFs.put(`${M}/stale`, { kind: 'block', dev: dev(7) });
    const dm = new DeviceMapper(kernel(new Map([['a', devT(253, 1)], ['b', devT(253, 2)]])), { system, nodes: 'off' });
    assert.deepEqual(await dm.mknodes(), { created: ['a', 'b'], replaced: [], removed: ['stale'] });
    assert.deepEqual(await dm.mknodes('a'), { created: [], replaced: [], removed: [] });
    await assert.rejects(dm.mknodes('x/y'), { code: 'ERR_DM_INVALID_NAME' });
  });

  test('without a system nothing is touched and mknodes is unsupported', async () => {
    const dm = new DeviceMapper(kernel());
    await dm.create('vol', { targets: table });
    await assert.rejects(dm.mknodes(), { code: 'ERR_DM_UNSUPPORTED' });
    assert.equal(dm.nodes, undefined);
    assert.equal(dm.udevSyncActive, false);
  });
});
