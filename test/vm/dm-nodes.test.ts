/**
 * /dev/mapper nodes and device events against the real kernel, as root in the VM lab (no udev runs
 * there, so dmkit owns /dev/mapper): nodes follow create, rename and remove with the right dev, mode
 * and owner; mknodes() repairs missing nodes and deletes stale ones only; events() reports a rename
 * within seconds and stops at once when asked.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeDev, DeviceMapper, loadNative, type DevNum, type DmEvent, type TargetLine } from '../../src/dm';
import { sectors } from '../../src/units';

const PREFIX = 'dmkit-nodes-';
const ERROR_TABLE: TargetLine[] = [{ start: sectors(0), length: sectors(2048), type: 'error', params: '' }];

function nodeDev(p: string): DevNum & { mode: number; uid: number; gid: number } {
  const st = fs.lstatSync(p, { bigint: true });
  assert.ok(st.isBlockDevice(), `${p} is a block device node`);
  return { ...decodeDev(st.rdev), mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid) };
}

const exists = (p: string): boolean => fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;

async function removeLeftovers(dm: DeviceMapper): Promise<void> {
  for (const d of await dm.list()) {
    if (d.name.startsWith(PREFIX)) await dm.remove({ name: d.name }, { retry: true }).catch(() => undefined);
  }
}

/** The first event the stream yields, or a failure after `ms`. */
async function firstEvent(stream: AsyncIterator<DmEvent>, ms: number): Promise<DmEvent> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no event within ${ms} ms`)), ms);
  });
  try {
    const r = await Promise.race([stream.next(), timeout]);
    assert.equal(r.done, false);
    return r.value as DmEvent;
  } finally {
    clearTimeout(timer);
  }
}

describe('/dev/mapper nodes without udev', () => {
  const dm = DeviceMapper.open({ warn: (m) => assert.fail(`unexpected warning: ${m}`) });
  before(() => removeLeftovers(dm));
  after(async () => {
    await removeLeftovers(dm);
    await dm.close();
  });

  test('udev is not running in the lab, so dmkit makes the nodes', () => {
    assert.equal(fs.existsSync('/run/udev/control'), false);
    assert.equal(dm.udevSyncActive, false);
  });

  test('create, rename and remove keep the node in step (block, right dev, 0660, root:disk as Debian libdm)', async () => {
    const a = `${PREFIX}a`;
    const b = `${PREFIX}b`;
    try {
      const info = await dm.create(a, { targets: ERROR_TABLE });
      assert.deepEqual(nodeDev(`/dev/mapper/${a}`), { ...info.dev, mode: 0o660, uid: 0, gid: 6 });
      await dm.rename({ name: a }, b);
      assert.equal(exists(`/dev/mapper/${a}`), false, 'old name gone');
      assert.deepEqual(nodeDev(`/dev/mapper/${b}`), { ...info.dev, mode: 0o660, uid: 0, gid: 6 });
      const fd = fs.openSync(`/dev/mapper/${b}`, 'r');
      fs.closeSync(fd); // the node really reaches the device
      await dm.remove({ name: b });
      assert.equal(exists(`/dev/mapper/${b}`), false, 'node deleted with the device');
    } finally {
      for (const n of [a, b]) await dm.remove({ name: n }).catch(() => undefined);
    }
  });

  test('mknodes makes missing nodes, deletes stale DM nodes, leaves control and other files', async () => {
    const c = `${PREFIX}c`;
    const stale = `/dev/mapper/${PREFIX}stale`;
    const keep = `/dev/mapper/${PREFIX}keep`;
    try {
      const info = await dm.create(c, { targets: ERROR_TABLE });
      fs.unlinkSync(`/dev/mapper/${c}`);
      const unused = Math.max(...(await dm.list()).map((d) => d.dev.minor)) + 100;
      loadNative().sysMknod(stale, fs.constants.S_IFBLK | 0o600, info.dev.major, unused);
      fs.writeFileSync(keep, 'not a node');
      const report = await dm.mknodes();
      assert.ok(report.created.includes(c), `created: ${report.created.join(',')}`);
      assert.ok(report.removed.includes(`${PREFIX}stale`), `removed: ${report.removed.join(',')}`);
      assert.deepEqual(nodeDev(`/dev/mapper/${c}`).minor, info.dev.minor);
      assert.equal(exists(stale), false);
      assert.equal(fs.readFileSync(keep, 'utf8'), 'not a node');
      assert.ok(fs.lstatSync('/dev/mapper/control').isCharacterDevice(), 'control untouched');
      assert.deepEqual(await dm.mknodes(), { created: [], replaced: [], removed: [] }, 'nothing left to do');
    } finally {
      fs.rmSync(keep, { force: true });
      fs.rmSync(stale, { force: true });
      await dm.remove({ name: c }).catch(() => undefined);
    }
  });

  test('devDir puts the nodes under another /dev root', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-devdir-'));
    const other = DeviceMapper.open({ devDir: root });
    const d = `${PREFIX}d`;
    try {
      const info = await other.create(d, { targets: ERROR_TABLE });
      assert.equal(other.devicePath(d), path.join(root, 'mapper', d));
      assert.equal(nodeDev(other.devicePath(d)).minor, info.dev.minor);
      assert.equal(exists(`/dev/mapper/${d}`), false, 'nothing under the real /dev');
      await other.remove({ name: d });
      assert.deepEqual(fs.readdirSync(path.join(root, 'mapper')), []);
    } finally {
      await other.remove({ name: d }).catch(() => undefined);
      await other.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('device events', () => {
  const dm = DeviceMapper.open();
  const watcher = DeviceMapper.open();
  before(() => removeLeftovers(dm));
  after(async () => {
    await removeLeftovers(dm);
    await watcher.close();
    await dm.close();
  });

  test('a rename is reported under the new name within seconds; return() stops at once', async () => {
    const e = `${PREFIX}ev`;
    const e2 = `${PREFIX}ev2`;
    const stream = watcher.events();
    try {
      const info = await dm.create(e, { targets: ERROR_TABLE });
      await stream.ready;
      const next = firstEvent(stream, 5000);
      await dm.rename({ name: e }, e2);
      const event = await next;
      assert.equal(event.name, e2);
      assert.deepEqual(event.dev, info.dev);
      assert.ok(event.eventNr > info.eventNr, `event_nr ${event.eventNr} > ${info.eventNr}`);
      const pending = stream.next();
      const started = Date.now();
      await stream.return();
      assert.deepEqual(await pending, { done: true, value: undefined });
      assert.ok(Date.now() - started < 500, `stopped in ${Date.now() - started} ms`);
    } finally {
      await stream.return();
      for (const n of [e, e2]) await dm.remove({ name: n }).catch(() => undefined);
    }
  });

  test('break out of for-await ends the iteration; a new one can start', async () => {
    const f = `${PREFIX}brk`;
    try {
      await dm.create(f, { targets: ERROR_TABLE });
      const stream = watcher.events();
      await stream.ready;
      setTimeout(() => void dm.rename({ name: f }, `${f}2`), 50);
      const names: string[] = [];
      for await (const ev of stream) {
        names.push(ev.name);
        break;
      }
      assert.deepEqual(names, [`${f}2`]);
      assert.equal(stream.done, true);
      const again = watcher.events();
      await again.ready;
      await again.return();
    } finally {
      for (const n of [f, `${f}2`]) await dm.remove({ name: n }).catch(() => undefined);
    }
  });

  test('waitEvent still waits for one device', async () => {
    const w = `${PREFIX}wait`;
    try {
      // By uuid: the wait must find the device even if the rename gets to the kernel first.
      const info = await dm.create(w, { uuid: `DMKIT-${w}`, targets: ERROR_TABLE });
      const waited = watcher.waitEvent({ uuid: `DMKIT-${w}` }, info.eventNr);
      await dm.rename({ name: w }, `${w}2`);
      const r = await waited;
      assert.ok(r.info.eventNr > info.eventNr);
    } finally {
      for (const n of [w, `${w}2`]) await dm.remove({ name: n }).catch(() => undefined);
    }
  });

  test('close() ends a waiting iteration promptly', async () => {
    const own = DeviceMapper.open();
    const stream = own.events();
    await stream.ready;
    const pending = stream.next();
    const started = Date.now();
    await own.close();
    assert.deepEqual(await pending, { done: true, value: undefined });
    assert.ok(Date.now() - started < 500, `closed in ${Date.now() - started} ms`);
  });
});
