import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { endianness } from 'node:os';
import { describe, test } from 'node:test';
import {
  DeviceMapper,
  diffEvents,
  DmCommand,
  DmEventStream,
  eventBaseline,
  loadNative,
  NativeTransport,
  POLL_SLICE_MS,
  type DmEvent,
  type EventSource,
  type ListedDevice,
} from '../../src/dm';
import { devT, FakeKernel, nameList, reply, type ListEntry } from './dm-fakes';

const d = (name: string, minor: number, eventNr: number, uuid = ''): ListedDevice => ({
  name,
  uuid,
  eventNr,
  dev: { major: 253, minor },
});

describe('diffEvents', () => {
  test('reports devices whose event_nr moved, keyed by dev so renames count', () => {
    const before = eventBaseline([d('a', 0, 1), d('b', 1, 5), d('gone', 2, 0)]);
    const now = [d('a', 0, 1), d('b-renamed', 1, 6, 'U-b'), d('fresh', 3, 0), d('busy', 4, 2)];
    assert.deepEqual(diffEvents(before, now), [
      { name: 'b-renamed', uuid: 'U-b', eventNr: 6, dev: { major: 253, minor: 1 } },
      { name: 'busy', uuid: '', eventNr: 2, dev: { major: 253, minor: 4 } },
    ]);
  });

  test('a wrapped counter is a change too', () => {
    assert.equal(diffEvents(eventBaseline([d('a', 0, 0xffffffff)]), [d('a', 0, 0)]).length, 1);
  });
});

/** A scripted event source: each poll waits for `fire()` or the abort signal. */
class FakeSource implements EventSource {
  readonly log: string[] = [];
  lists: ListedDevice[][] = [];
  listError: Error | undefined;
  private wake: ((readable: boolean) => void) | undefined;
  polls = 0;

  async armPoll(): Promise<void> {
    this.log.push('arm');
  }

  async list(): Promise<ListedDevice[]> {
    this.log.push('list');
    if (this.listError) throw this.listError;
    return this.lists.length > 1 ? this.lists.shift()! : (this.lists[0] ?? []);
  }

  waitReadable(signal: AbortSignal): Promise<boolean> {
    this.log.push('poll');
    this.polls++;
    return new Promise((resolve) => {
      if (signal.aborted) return resolve(false);
      this.wake = resolve;
      signal.addEventListener('abort', () => resolve(false), { once: true });
    });
  }

  fire(): void {
    this.wake?.(true);
  }

  get waiting(): boolean {
    return this.log.at(-1) === 'poll';
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !cond(); i++) await tick();
  assert.ok(cond(), 'condition never became true');
}

describe('DmEventStream', () => {
  test('arms before listing, then yields changes after each wake-up', async () => {
    const src = new FakeSource();
    src.lists = [[d('a', 0, 0), d('b', 1, 0)], [d('a', 0, 1), d('b', 1, 0)], [d('a', 0, 1), d('b', 1, 3)]];
    const stream = new DmEventStream(src);
    await stream.ready;
    assert.deepEqual(src.log, ['arm', 'list']);
    const first = stream.next();
    await until(() => src.waiting);
    src.fire();
    assert.deepEqual((await first).value, { name: 'a', uuid: '', eventNr: 1, dev: { major: 253, minor: 0 } });
    const second = stream.next();
    await until(() => src.polls === 2);
    src.fire();
    assert.equal(((await second).value as DmEvent).name, 'b');
    assert.deepEqual(src.log, ['arm', 'list', 'poll', 'arm', 'list', 'poll', 'arm', 'list']);
    await stream.return();
  });

  test('a wake-up without changes polls again instead of yielding', async () => {
    const src = new FakeSource();
    src.lists = [[d('a', 0, 0)], [d('a', 0, 0)], [d('a', 0, 4)]];
    const stream = new DmEventStream(src);
    const next = stream.next();
    await until(() => src.polls === 1 && src.waiting);
    src.fire();
    await until(() => src.polls === 2 && src.waiting);
    src.fire();
    assert.equal(((await next).value as DmEvent).eventNr, 4);
    await stream.return();
  });

  test('break out of for-await ends a pending poll at once', async () => {
    const src = new FakeSource();
    src.lists = [[d('a', 0, 0)], [d('a', 0, 1)]];
    const stream = new DmEventStream(src);
    const seen: string[] = [];
    const loop = (async () => {
      for await (const e of stream) {
        seen.push(e.name);
        break;
      }
    })();
    await until(() => src.waiting);
    src.fire();
    await loop;
    assert.deepEqual(seen, ['a']);
    assert.equal(stream.done, true);
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
  });

  test('return() while next() waits: both settle promptly, next as done', async () => {
    const src = new FakeSource();
    const stream = new DmEventStream(src);
    const pending = stream.next();
    await until(() => src.waiting);
    assert.deepEqual(await stream.return(), { done: true, value: undefined });
    assert.deepEqual(await pending, { done: true, value: undefined });
  });

  test('an abort signal ends the iteration; an already aborted one never starts it', async () => {
    const src = new FakeSource();
    const ac = new AbortController();
    const stream = new DmEventStream(src, { signal: ac.signal });
    const pending = stream.next();
    await until(() => src.waiting);
    ac.abort();
    assert.deepEqual(await pending, { done: true, value: undefined });
    const idle = new FakeSource();
    const never = new DmEventStream(idle, { signal: AbortSignal.abort() });
    assert.deepEqual(await never.next(), { done: true, value: undefined });
    assert.deepEqual(idle.log, []);
  });

  test('a failing list rejects ready and next once, then the iteration is over', async () => {
    const src = new FakeSource();
    src.listError = new Error('ENXIO: simulated');
    const stream = new DmEventStream(src);
    await assert.rejects(stream.ready, /simulated/);
    await assert.rejects(stream.next(), /simulated/);
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
    assert.equal(stream.done, true);
  });
});

const leOnly = { skip: endianness() !== 'LE' && 'big-endian host' };

describe('DeviceMapper.events', leOnly, () => {
  /** A kernel whose device list the test edits; waitReadable wakes when `fire` is called. */
  function pollingKernel(devices: ListEntry[]) {
    let wake: ((readable: boolean) => void) | undefined;
    const k = Object.assign(
      new FakeKernel((c) => (c.command === DmCommand.LIST_DEVICES ? reply(c, { payload: nameList(devices) }) : reply(c))),
      {
        waitReadable: (signal: AbortSignal): Promise<boolean> =>
          new Promise<boolean>((resolve) => {
            wake = resolve;
            signal.addEventListener('abort', () => resolve(false), { once: true });
          }),
        fire: () => wake?.(true),
        waiting: () => wake !== undefined,
      },
    );
    return k;
  }

  test('ARM_POLL then LIST_DEVICES; a rename shows up under the new name', async () => {
    const devices: ListEntry[] = [{ name: 'vol', dev: devT(253, 0), eventNr: 0, uuid: 'U' }];
    const k = pollingKernel(devices);
    const dm = new DeviceMapper(k);
    const stream = dm.events();
    await stream.ready;
    assert.deepEqual(k.calls.map((c) => c.command), [DmCommand.DEV_ARM_POLL, DmCommand.LIST_DEVICES]);
    const next = stream.next();
    await until(() => k.waiting());
    devices[0] = { name: 'vol-new', dev: devT(253, 0), eventNr: 1, uuid: 'U' };
    k.fire();
    assert.deepEqual((await next).value, { name: 'vol-new', uuid: 'U', eventNr: 1, dev: { major: 253, minor: 0 } });
    await stream.return();
  });

  test('one iteration at a time; a new one after the old ended; close() ends a running one', async () => {
    const dm = new DeviceMapper(pollingKernel([]));
    const first = dm.events();
    assert.throws(() => dm.events(), { code: 'ERR_DM_BUSY' });
    await first.return();
    const second = dm.events();
    const pending = second.next();
    await dm.close();
    assert.deepEqual(await pending, { done: true, value: undefined });
  });

  test('a transport that cannot poll: ERR_DM_UNSUPPORTED', () => {
    const dm = new DeviceMapper(new FakeKernel((c) => reply(c)));
    assert.throws(() => dm.events(), { code: 'ERR_DM_UNSUPPORTED' });
  });
});

describe('NativeTransport.waitReadable over real eventfds', () => {
  const native = loadNative();
  /** The "control fd" is an eventfd the test can make readable; closing it really closes it. */
  function transport(): { t: NativeTransport; control: number; closed: number[] } {
    const control = native.eventfdOpen();
    const closed: number[] = [];
    const t = NativeTransport.open({
      dmControlOpen: () => control,
      dmControlClose: (fd) => {
        closed.push(fd);
        closeSync(fd);
      },
      dmIoctl: async (_fd, _nr, b) => b,
      eventfdOpen: native.eventfdOpen,
      eventfdSignal: native.eventfdSignal,
      pollReadable: native.pollReadable,
    });
    return { t, control, closed };
  }

  test('true when the control fd becomes readable', async () => {
    const { t, control } = transport();
    const waiting = t.waitReadable(new AbortController().signal);
    setTimeout(() => native.eventfdSignal(control), 20);
    assert.equal(await waiting, true);
    await t.close();
  });

  test('false at once when the signal aborts', async () => {
    const { t } = transport();
    const ac = new AbortController();
    const started = Date.now();
    const waiting = t.waitReadable(ac.signal);
    setTimeout(() => ac.abort(), 20);
    assert.equal(await waiting, false);
    assert.ok(Date.now() - started < POLL_SLICE_MS - 100, 'cancelled through the eventfd, not by a slice running out');
    assert.equal(await t.waitReadable(ac.signal), false, 'an aborted signal does not poll at all');
    await t.close();
  });

  test('close() cancels a pending wait, then closes the fd', async () => {
    const { t, control, closed } = transport();
    const started = Date.now();
    const waiting = t.waitReadable(new AbortController().signal);
    await new Promise((r) => setTimeout(r, 20));
    await t.close();
    assert.equal(await waiting, false);
    assert.deepEqual(closed, [control]);
    assert.ok(Date.now() - started < POLL_SLICE_MS - 100, 'cancelled, not timed out');
    await assert.rejects(t.waitReadable(new AbortController().signal), { code: 'ERR_DM_CLOSED' });
  });

  test('a binding without poll functions: ERR_DM_UNSUPPORTED', async () => {
    const fd = openSync('/dev/null', 'r');
    const t = NativeTransport.open({ dmControlOpen: () => fd, dmControlClose: closeSync, dmIoctl: async (_f, _n, b) => b });
    await assert.rejects(t.waitReadable(new AbortController().signal), { code: 'ERR_DM_UNSUPPORTED' });
    await t.close();
  });
});
