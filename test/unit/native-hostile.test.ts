/**
 * Hostile callers of the addon (issue 12): each case aborted, segfaulted, hung or wrote where it must
 * not before the fix. Each runs in a child process (child-run.ts): a crash or a hang fails its test and
 * shows the child's output. The child prints one line, `RESULT <json>`, which the test checks.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { describeChild, runChild } from './child-run';

/** Prelude for every child: the addon as `a`, and `report` to print the result and exit. */
const PRELUDE = `
const a = require(process.env.DMKIT_ADDON);
const fs = require('node:fs');
const report = (v) => { process.stdout.write('RESULT ' + JSON.stringify(v) + '\\n'); process.exit(0); };
const errInfo = (e) => (e && typeof e === 'object') ? { name: e.constructor.name, code: e.code, message: String(e.message) } : { thrown: String(e) };
const attempt = (f) => { try { return { value: String(f()) }; } catch (e) { return { error: errInfo(e) }; } };
const settle = (p) => Promise.resolve(p).then((v) => ({ value: v && typeof v === 'object' ? Object.keys(v) : v }), (e) => ({ error: errInfo(e) }));
`;

function run(body: string, timeoutMs = 20_000): unknown {
  const r = runChild(PRELUDE + body, { timeoutMs });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  assert.ok(r.status === 0 && !r.signal && line, describeChild(r));
  return JSON.parse(line.slice('RESULT '.length)) as unknown;
}

describe('addon: a DataView where a Buffer is expected is a TypeError, not an abort', () => {
  for (const [name, call] of [
    ['dmIoctl', `a.dmIoctl(0, 0, new DataView(new ArrayBuffer(400)))`],
    ['logIndex', `a.logIndex(new DataView(new ArrayBuffer(64)))`],
    ['imageDigest', `a.imageDigest(new DataView(new ArrayBuffer(64)))`],
    ['replayImage log', `a.replayImage({ log: new DataView(new ArrayBuffer(64)), table: new Float64Array(0), base: null, length: 0, apply: new Uint32Array(0) })`],
    ['replayImage base', `a.replayImage({ log: Buffer.alloc(64), table: new Float64Array(0), base: new DataView(new ArrayBuffer(64)), length: 64, apply: new Uint32Array(0) })`],
    ['copyRanges ranges', `a.copyRanges({ source: '/dev/null', ranges: new DataView(new ArrayBuffer(24)) })`],
    ['crc32c', `a.crc32c(new DataView(new ArrayBuffer(64)))`],
  ] as const) {
    test(name, () => {
      const got = run(`report(attempt(() => ${call}));`) as { error?: { name: string; code: string } };
      assert.deepEqual(got.error && { name: got.error.name, code: got.error.code }, { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    });
  }
});

describe('addon: replayImage options that throw while read propagate their exception', () => {
  const ok = `{ log: Buffer.alloc(1024), table: new Float64Array(0), base: null, length: 512, apply: new Uint32Array(0) }`;
  for (const [name, opts] of [
    ['a getter on log throwing a number', `{ get log() { throw 1; } }`],
    ['a getter on digestOnly throwing an Error', `{ ...${ok}, get digestOnly() { throw new Error('from getter'); } }`],
    ['a getter on torn.sector', `{ ...${ok}, torn: { entry: 0, get sector() { throw new Error('from getter'); } } }`],
    ['a Proxy whose get trap throws', `new Proxy({}, { get() { throw new Error('from trap'); } })`],
  ] as const) {
    test(name, () => {
      const got = run(`report(attempt(() => a.replayImage(${opts})));`) as { error?: { thrown?: string; message?: string } };
      assert.ok(got.error, JSON.stringify(got));
      assert.ok(got.error.thrown === '1' || /from (getter|trap)/.test(got.error.message ?? ''), JSON.stringify(got));
    });
  }
});

describe('addon: buffers detached while the options are read', () => {
  // A 64 MiB log in its own ArrayBuffer (mmap'd by the allocator, so freeing it unmaps it). A getter read
  // after `log`/`table` transfers their memory away and lets it be collected before the worker runs.
  const setup = `
    const MiB = 1 << 20;
    const log = Buffer.from(new ArrayBuffer(64 * MiB));
    const table = new Float64Array(new ArrayBuffer(32));
    table.set([0, 65536, 0, 0]); // one 32 MiB data entry at sector 0, its data at log byte 0
    const opts = { log, table, base: null, length: 32 * MiB, apply: Uint32Array.of(0), digestOnly: true };
    const detach = (ab) => { structuredClone(ab, { transfer: [ab] }); globalThis.gc(); };
  `;
  test('log detached by a getter: a typed error (the worker copied nothing freed)', async () => {
    const got = run(`${setup}
      Object.defineProperty(opts, 'digestOnly', { get() { detach(log.buffer); globalThis.gc(); return true; } });
      let p; try { p = a.replayImage(opts); } catch (e) { report({ error: errInfo(e) }); }
      settle(p).then(report);`) as { error?: { code: string } };
    assert.equal(got.error?.code, 'EINVAL', JSON.stringify(got));
  });
  test('log detached after replayImage returned: the worker still reads its own copy', () => {
    const got = run(`${setup}
      log.fill(7, 0, 1024);
      const expect = a.imageDigest(Buffer.concat([Buffer.alloc(1024, 7), Buffer.alloc(32 * MiB - 1024)]));
      const p = a.replayImage(opts);
      detach(log.buffer);
      for (let i = 0; i < 4; i++) Buffer.alloc(64 * MiB, 1); // reuse the freed pages if anything would
      p.then((r) => report({ same: r.digest === expect }), (e) => report({ error: errInfo(e) }));`) as { same?: boolean };
    assert.equal(got.same, true, JSON.stringify(got));
  });
  test('table detached by a getter: a typed error on the JS thread', () => {
    const got = run(`${setup}
      Object.defineProperty(opts, 'digestOnly', { get() { detach(table.buffer); return true; } });
      report(attempt(() => a.replayImage(opts)));`) as { error?: { name: string } };
    assert.equal(got.error?.name, 'RangeError', JSON.stringify(got));
  });
});

describe('addon: file descriptors and paths that are not what they claim', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dmkit-hostile-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('replayImage out naming a FIFO fails instead of never settling', () => {
    const fifo = join(dir, 'fifo');
    const got = run(`
      require('node:child_process').execFileSync('mkfifo', [${JSON.stringify(fifo)}]);
      settle(a.replayImage({ log: Buffer.alloc(1024), table: new Float64Array(0), base: null, length: 512,
        apply: new Uint32Array(0), out: ${JSON.stringify(fifo)} })).then(report);`, 15_000) as { error?: { code: string } };
    assert.ok(got.error && ['EINVAL', 'ENXIO'].includes(got.error.code), JSON.stringify(got));
  });

  test('eventfdSignal on a regular file: EINVAL and the file is untouched', () => {
    const file = join(dir, 'regular');
    const got = run(`
      fs.writeFileSync(${JSON.stringify(file)}, 'sixteen bytes!!!');
      const fd = fs.openSync(${JSON.stringify(file)}, 'r+');
      const r = attempt(() => a.eventfdSignal(fd));
      report({ ...r, content: fs.readFileSync(${JSON.stringify(file)}, 'utf8') });`) as { error?: { code: string }; content: string };
    assert.equal(got.error?.code, 'EINVAL', JSON.stringify(got));
    assert.equal(got.content, 'sixteen bytes!!!');
  });

  test('eventfdSignal on a full pipe returns at once with EINVAL', () => {
    const got = run(`
      const { execFileSync } = require('node:child_process');
      execFileSync('mkfifo', [${JSON.stringify(join(dir, 'pipe'))}]);
      const rd = fs.openSync(${JSON.stringify(join(dir, 'pipe'))}, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const wr = fs.openSync(${JSON.stringify(join(dir, 'pipe'))}, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      try { for (;;) fs.writeSync(wr, Buffer.alloc(65536)); } catch {}
      // The write end is blocking again, as an unsuspecting caller's fd would be.
      const blocking = fs.openSync(${JSON.stringify(join(dir, 'pipe'))}, 'w');
      report(attempt(() => a.eventfdSignal(blocking)));`, 15_000) as { error?: { code: string } };
    assert.equal(got.error?.code, 'EINVAL', JSON.stringify(got));
  });

  test('eventfdSignal still signals an eventfd, and a closed fd is EBADF', () => {
    const got = run(`
      const e = a.eventfdOpen();
      a.eventfdSignal(e);
      const b = Buffer.alloc(8); fs.readSync(e, b);
      fs.closeSync(e);
      report({ count: Number(b.readBigUInt64LE()), closed: attempt(() => a.eventfdSignal(e)).error?.code });`) as { count: number; closed: string };
    assert.deepEqual(got, { count: 1, closed: 'EBADF' });
  });

  test('pollReadable on a closed fd rejects with EBADF (either side)', () => {
    const got = run(`
      const e = a.eventfdOpen();
      Promise.all([settle(a.pollReadable(e, 999999, 1000)), settle(a.pollReadable(999999, e, 1000))])
        .then(([x, y]) => report([x.error?.code ?? x.value, y.error?.code ?? y.value]));`) as string[];
    assert.deepEqual(got, ['EBADF', 'EBADF']);
  });

  test('long pollReadable waits leave the libuv pool to fs', () => {
    // Eight waits of up to an hour: more than the pool's four threads. readFile must still finish; the
    // waits are then cancelled and must each report it.
    const got = run(`
      const cancel = a.eventfdOpen(), watched = a.eventfdOpen();
      const waits = Array.from({ length: 8 }, () => a.pollReadable(watched, cancel, 3600 * 1000));
      fs.readFile(__filename === '[eval]' ? '/proc/self/status' : __filename, (err, data) => {
        a.eventfdSignal(cancel);
        Promise.all(waits).then((outcomes) => report({ read: !err && data.length > 0, outcomes: [...new Set(outcomes)] }));
      });`, 15_000);
    assert.deepEqual(got, { read: true, outcomes: ['cancelled'] });
  });

  test('long semWaitZero waits leave the libuv pool to fs', () => {
    // Eight waits of up to an hour on a semaphore at 1, more than the pool's four threads. readFile must
    // finish while they wait. A 5 s guard zeroes the semaphore in any case (so the old code, which waited
    // on the pool, fails here rather than hangs and leaves nothing behind); the waits must then see zero.
    const got = run(`
      let id;
      for (let i = 0; id === undefined; i++) {
        try { id = a.semCreate(0x7e570000 + ((process.pid * 7 + i) & 0xffff)); } catch (e) { if (e.code !== 'EEXIST' || i > 64) throw e; }
      }
      a.semSetValue(id, 1);
      let released = false;
      const release = () => { if (!released) { released = true; a.semSetValue(id, 0); } };
      const guard = setTimeout(release, 5000);
      const waits = Array.from({ length: 8 }, () => a.semWaitZero(id, 3600 * 1000));
      fs.readFile(__filename === '[eval]' ? '/proc/self/status' : __filename, (err, data) => {
        const readWhileWaiting = !released && !err && data.length > 0;
        release();
        clearTimeout(guard);
        Promise.all(waits).then((outcomes) => {
          a.semRemove(id);
          report({ readWhileWaiting, outcomes: [...new Set(outcomes)] });
        });
      });`, 15_000);
    assert.deepEqual(got, { readWhileWaiting: true, outcomes: [true] });
  });
});

describe('addon: copyRanges given what it must refuse (typed errors, nothing written, no hang)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dmkit-hostile-copy-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const src = JSON.stringify(join(dir, 'src'));
  const setup = `fs.writeFileSync(${src}, Buffer.alloc(1 << 20, 7));`;

  const cases: ReadonlyArray<readonly [string, string, string]> = [
    ['a FIFO as the source', `{ source: FIFO, dest: DIR + '/out', ranges: Float64Array.of(0, 4096, 0) }`, 'EINVAL'],
    ['a FIFO as the destination', `{ source: ${src}, dest: FIFO, ranges: Float64Array.of(0, 4096, 0) }`, 'EINVAL'],
    ['a character device as the source', `{ source: '/dev/zero', dest: DIR + '/out', ranges: Float64Array.of(0, 4096, 0) }`, 'EINVAL'],
    ['a character device as the destination', `{ source: ${src}, dest: '/dev/null', ranges: Float64Array.of(0, 4096, 0) }`, 'EINVAL'],
    ['a directory as the source', `{ source: DIR, dest: DIR + '/out', ranges: Float64Array.of(0, 4096, 0) }`, 'EINVAL'],
    ['a directory as the destination', `{ source: ${src}, dest: DIR, ranges: Float64Array.of(0, 4096, 0) }`, 'EISDIR'],
    ['a range past the end of the source (a lying size)', `{ source: ${src}, dest: DIR + '/out', ranges: Float64Array.of(0, 2 << 20, 0) }`, 'EINVAL'],
    ['the source as its own destination', `{ source: ${src}, dest: ${src}, ranges: Float64Array.of(0, 4096, 4096) }`, 'EINVAL'],
    ['a negative length', `{ source: ${src}, ranges: Float64Array.of(0, -512, 0) }`, 'ERR_OUT_OF_RANGE'],
    ['an unaligned offset', `{ source: ${src}, ranges: Float64Array.of(100, 512, 0) }`, 'ERR_OUT_OF_RANGE'],
    ['a length past 2^53', `{ source: ${src}, ranges: Float64Array.of(0, 2 ** 53, 0) }`, 'ERR_OUT_OF_RANGE'],
    ['half a triple', `{ source: ${src}, ranges: Float64Array.of(0, 512) }`, 'ERR_OUT_OF_RANGE'],
    ['a detached ranges array', `{ source: ${src}, ranges: (() => { const r = Float64Array.of(0, 512, 0); structuredClone(r.buffer, { transfer: [r.buffer] }); return r; })() }`, 'ERR_INVALID_ARG_TYPE'],
    ['a number as the source', `{ source: 3, ranges: Float64Array.of(0, 512, 0) }`, 'ERR_INVALID_ARG_TYPE'],
    ['an unknown engine', `{ source: ${src}, ranges: Float64Array.of(0, 512, 0), engine: 'spdk' }`, 'ERR_OUT_OF_RANGE'],
    ['a chunk size that is not a multiple of 4096', `{ source: ${src}, ranges: Float64Array.of(0, 512, 0), chunkBytes: 6000 }`, 'ERR_OUT_OF_RANGE'],
    ['nine io_uring rings', `{ source: ${src}, ranges: Float64Array.of(0, 512, 0), uringRings: 9 }`, 'ERR_OUT_OF_RANGE'],
    ['rings as a string', `{ source: ${src}, ranges: Float64Array.of(0, 512, 0), uringRings: '2' }`, 'ERR_INVALID_ARG_TYPE'],
  ];
  // One child runs every case in turn (a crash or hang names no case, but the child's output does).
  test(`refused inputs: ${cases.map((c) => c[0]).join('; ')}`, () => {
    const body = `const FIFO = ${JSON.stringify(join(dir, 'fifo'))}, DIR = ${JSON.stringify(dir)};
      require('node:child_process').execFileSync('mkfifo', [FIFO]);
      ${setup}
      const run1 = (o) => settle(Promise.resolve().then(() => a.copyRanges(o).promise)).then((r) => r.error ? r.error.code : 'resolved');
      (async () => { const out = []; for (const o of [${cases.map((c) => `() => (${c[1]})`).join(',\n')}]) out.push(await run1(o())); report(out); })();`;
    const got = run(body, 15_000) as string[];
    cases.forEach(([name, , code], i) => {
      const ok = got[i] === code || (name === 'a FIFO as the destination' && got[i] === 'ENXIO');
      assert.ok(ok, `${name}: ${got[i]}, expected ${code}`);
    });
    assert.equal(existsSync(join(dir, 'out')), false, 'a refused copy created its destination');
  });

  test('a getter throwing while the options are read propagates', () => {
    const got = run(`report(attempt(() => a.copyRanges({ source: '/dev/null', get ranges() { throw new Error('from getter'); } })));`) as { error?: { message: string } };
    assert.match(got.error?.message ?? '', /from getter/);
  });

  test('ranges detached by a later getter: a TypeError, the worker never sees freed memory', () => {
    const got = run(`${setup}
      const ranges = new Float64Array(new ArrayBuffer(1 << 20)); ranges.set([0, 4096, 0]);
      const o = { source: ${src}, ranges: ranges.subarray(0, 3) };
      Object.defineProperty(o, 'onProgress', { get() { structuredClone(ranges.buffer, { transfer: [ranges.buffer] }); globalThis.gc?.(); return undefined; } });
      report(attempt(() => a.copyRanges(o)));`) as { error?: { code: string } };
    assert.equal(got.error?.code, 'ERR_INVALID_ARG_TYPE', JSON.stringify(got));
  });

  test('a progress callback that throws stops the copy and rejects with what it threw', () => {
    const got = run(`${setup}
      const h = a.copyRanges({ source: ${src}, dest: ${JSON.stringify(join(dir, 'progress-out'))}, ranges: Float64Array.of(0, 1 << 20, 0), chunkBytes: 4096, queueDepth: 1,
        onProgress() { throw new Error('from progress'); } });
      settle(h.promise).then(report);`) as { error?: { message: string } };
    assert.match(got.error?.message ?? '', /from progress/);
  });

  test('cancel() before the first chunk: ABORT_ERR, and cancel after settling is harmless', () => {
    const got = run(`${setup}
      const h = a.copyRanges({ source: ${src}, ranges: Float64Array.of(0, 1 << 20, 0) });
      h.cancel();
      settle(h.promise).then((r) => { h.cancel(); h.cancel.call(null, 1, 2); report(r); });`) as { error?: { code: string } };
    assert.equal(got.error?.code, 'ABORT_ERR', JSON.stringify(got));
  });
});
