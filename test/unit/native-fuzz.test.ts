/**
 * Fuzzes every addon export with a fixed seed (native-fuzz-cases.ts makes the inputs). Each batch of
 * cases runs in a child process that announces each case before running it, so a crash or a hang names
 * the input that caused it. Beyond "no crash", every error must be typed: an Error with a string `code`
 * (ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE or an errno name), or the fuzz's own exception propagated from
 * a hostile getter.
 *
 * Against the ASan+UBSan build (npm run build -- --sanitize):
 *   DMKIT_ADDON_OVERRIDE=$PWD/build/sanitize/build/Release/dmkit.node \
 *   LD_PRELOAD=$(g++ -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
 *   node --test dist/test/unit/native-fuzz.test.js
 * DMKIT_FUZZ_SEED and DMKIT_FUZZ_SCALE (a factor on the case counts) change the run.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { describeChild, runChild } from './child-run';
import { batchSeed, FUZZED_EXPORTS, generateBatch, type FuzzedExport } from './native-fuzz-cases';

const SEED = Number(process.env.DMKIT_FUZZ_SEED ?? 0x12d1c);
const SCALE = Number(process.env.DMKIT_FUZZ_SCALE ?? 1);
const BATCH = 1000;

/** Cases per export: more where the input space is larger. */
const CASES: Record<FuzzedExport, number> = {
  addonVersion: 1000,
  dmControlOpen: 200,
  dmControlClose: 2000,
  dmIoctl: 3000,
  sysMknod: 2000,
  semCreate: 2000,
  semSetValue: 2000,
  semGetValue: 2000,
  semAdd: 2000,
  semWaitZero: 2000,
  semRemove: 2000,
  eventfdOpen: 1000,
  eventfdSignal: 2000,
  pollReadable: 2000,
  logIndex: 3500,
  replayImage: 3500,
  imageDigest: 1500,
  copyRanges: 1500,
  crc32c: 500,
  copyEngine: 200,
};

/** The child: sets up its context, runs cases [from, to) of one batch, reports counts and bad errors. */
const CHILD = String.raw`
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const cases = require(process.env.DMKIT_FUZZ_CASES);
const a = require(process.env.DMKIT_ADDON);
const [name, seed, from, to] = JSON.parse(process.env.DMKIT_FUZZ_BATCH);
const dir = process.cwd();
const announce = (i) => fs.writeSync(1, 'CASE ' + i + '\n');

fs.writeFileSync(path.join(dir, 'regular'), 'regular file contents');
execFileSync('mkfifo', [path.join(dir, 'fifo')]);
const pipeRead = fs.openSync(path.join(dir, 'fifo'), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
const closedFd = fs.openSync('/dev/null', 'r'); fs.closeSync(closedFd);
const log = cases.sampleLog(6, 42);
const semKey = 0x7d000000 + (process.pid & 0xffffff);
let sem; try { sem = a.semCreate(semKey); } catch { sem = -1; }
const ctx = {
  devNull: fs.openSync('/dev/null', 'r+'),
  eventfd: a.eventfdOpen(),
  cancelFd: a.eventfdOpen(),
  regularFd: fs.openSync(path.join(dir, 'regular'), 'r+'),
  pipeRead,
  pipeWrite: fs.openSync(path.join(dir, 'fifo'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK),
  closedFd,
  spareFd: () => fs.openSync('/dev/null', 'r'),
  sem,
  dir,
  fifo: path.join(dir, 'fifo'),
  log,
  table: a.logIndex(log).table,
  copySource: path.join(dir, 'copy-source'),
};
fs.writeFileSync(ctx.copySource, Buffer.alloc(65536, 0x5a));
const made = new Set(); // semaphores semCreate made: removed at once
const bad = [];
const counts = { ok: 0, threw: 0, rejected: 0, unsettled: 0 };
const typed = (e) => (e instanceof Error && (e.message === cases.HOSTILE || typeof e.code === 'string'));
const describe = (e) => (e instanceof Error ? e.constructor.name + ' ' + JSON.stringify(e.code) + ' ' + e.message : typeof e + ' ' + String(e));
const within = (p, ms) => new Promise((resolve) => {
  const t = setTimeout(() => resolve('unsettled'), ms);
  p.then(() => { clearTimeout(t); resolve('ok'); }, (e) => { clearTimeout(t); resolve({ e }); });
});

(async () => {
  const list = cases.generateBatch(name, seed, to);
  for (let i = from; i < to; i++) {
    announce(i);
    let result;
    try {
      result = a[name](...list[i].args(ctx));
    } catch (e) {
      counts.threw++;
      if (!typed(e)) bad.push({ i, desc: list[i].desc, error: describe(e) });
      continue;
    }
    if (name === 'semCreate' && typeof result === 'number') { a.semRemove(result); }
    if ((name === 'eventfdOpen' || name === 'dmControlOpen') && typeof result === 'number') fs.closeSync(result);
    // copyRanges returns { promise, cancel }: the promise is what settles.
    if (name === 'copyRanges' && result && typeof result.cancel === 'function') {
      if (list[i].desc.endsWith('+ cancel()')) result.cancel();
      result = result.promise;
    }
    if (result && typeof result.then === 'function') {
      const r = await within(result, name === 'pollReadable' || name === 'semWaitZero' ? 20 : 2000);
      if (r === 'unsettled') counts.unsettled++;
      else if (r === 'ok') counts.ok++;
      else { counts.rejected++; if (!typed(r.e)) bad.push({ i, desc: list[i].desc, error: describe(r.e) }); }
    } else counts.ok++;
    // Keep the cancel eventfd quiet and the pipe drained, so each case starts from the same state.
    try { fs.readSync(ctx.cancelFd, Buffer.alloc(8)); } catch {}
    try { fs.readSync(ctx.pipeRead, Buffer.alloc(1 << 16)); } catch {}
  }
  if (sem >= 0) try { a.semRemove(sem); } catch {}
  fs.writeSync(1, 'DONE ' + JSON.stringify({ counts, bad: bad.slice(0, 10), badCount: bad.length }) + '\n');
  process.exit(0);
})();
`;

describe(`addon fuzz (seed 0x${SEED.toString(16)}, a child process per batch of ${BATCH})`, () => {
  for (const name of FUZZED_EXPORTS) {
    const total = Math.max(1, Math.round(CASES[name] * SCALE));
    test(`${name}: ${total} inputs, no crash, only typed errors`, () => {
      const tally = { ok: 0, threw: 0, rejected: 0, unsettled: 0 };
      for (let batch = 0; batch * BATCH < total; batch++) {
        const count = Math.min(BATCH, total - batch * BATCH);
        const seed = batchSeed(SEED, name, batch);
        const dir = mkdtempSync(join(tmpdir(), 'dmkit-fuzz-'));
        try {
          const r = runChild(CHILD, {
            timeoutMs: 60_000,
            cwd: dir,
            env: { DMKIT_FUZZ_CASES: join(__dirname, 'native-fuzz-cases.js'), DMKIT_FUZZ_BATCH: JSON.stringify([name, seed, 0, count]) },
          });
          const lines = r.stdout.trim().split('\n');
          const done = lines.find((l) => l.startsWith('DONE '));
          if (!done || r.status !== 0 || r.signal) {
            const last = lines.filter((l) => l.startsWith('CASE ')).pop();
            const at = last ? Number(last.slice(5)) : -1;
            const input = at >= 0 ? generateBatch(name, seed, at + 1)[at]!.desc : '(before the first case)';
            assert.fail(`batch ${batch} (seed ${seed}) case ${at}: ${input}\n${describeChild(r)}`);
          }
          const report = JSON.parse(done.slice(5)) as { counts: typeof tally; bad: { i: number; desc: string; error: string }[]; badCount: number };
          for (const k of Object.keys(tally) as (keyof typeof tally)[]) tally[k] += report.counts[k];
          assert.equal(report.badCount, 0, `untyped errors in batch ${batch} (seed ${seed}):\n${report.bad.map((b) => `case ${b.i}: ${b.desc} -> ${b.error}`).join('\n')}`);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
      assert.equal(tally.ok + tally.threw + tally.rejected + tally.unsettled, total);
    });
  }
});
