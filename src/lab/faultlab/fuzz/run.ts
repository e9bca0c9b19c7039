/**
 * The fuzz component in the VM: for each wanted, registered target, mutated table lines loaded onto one
 * table-less device (each accepted one cleared again), then mutated messages to the target's live device;
 * the kernel log is read in batches; at the end the sentinel and the live devices must be unharmed.
 */
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../../dm';
import { sh } from '../../../testing';
import { sectors } from '../../../units';
import { caseSeed, type Counters, type LabContext } from '../types';
import { FUZZ_TYPES, grammarFor } from './grammar';
import { Kmsg, splatsIn, tableRefusals } from './kmsg';
import { messageCase, messageGrammarFor, type MessageCase } from './messages';
import { tableCase, type TableCase } from './mutate';
import { upstreamLeniency } from './expect';
import { Rig, type Live } from './rig';

const COMPONENT = 'fuzz';
const BATCH = 100;

export const SCALE = {
  ci: { tables: 500, messages: 200 },
  release: { tables: 100_000, messages: 10_000 },
} as const;

/** Table cases have even seeds, message cases odd ones, so a replayed seed says which it is. */
export const tableSeed = (base: number, type: string, i: number): number => (caseSeed(base, `${COMPONENT}:table:${type}`, i) & ~1) >>> 0;
export const messageSeed = (base: number, type: string, i: number): number => (caseSeed(base, `${COMPONENT}:message:${type}`, i) | 1) >>> 0;

/** What happened to the inputs of one target. */
class Tally {
  rejected = 0;
  accepted = 0;
  apiRefused = 0;
  readonly byErrno = new Map<string, number>();
  readonly acceptedBy = new Map<string, number>();
  upstreamLenient = 0;
  controls = { accepted: 0, rejected: 0 };
  /** Table refusals whose batch showed fewer dm-ioctl log lines than refusals. */
  silent = 0;
  kmsgLost = 0;
  /** Milliseconds spent zeroing scratch, in TABLE_LOAD and in TABLE_CLEAR. */
  readonly ms = { zero: 0, load: 0, clear: 0 };
  readonly slow: Array<[number, string]> = [];

  reject(code: string): void {
    this.rejected++;
    this.byErrno.set(code, (this.byErrno.get(code) ?? 0) + 1);
  }

  accept(kind: string): void {
    this.accepted++;
    this.acceptedBy.set(kind, (this.acceptedBy.get(kind) ?? 0) + 1);
  }

  summary(): string {
    const map = (m: Map<string, number>): string => [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
    const extra = [
      this.upstreamLenient ? `upstream_lenient=${this.upstreamLenient}` : '',
      this.apiRefused ? `api_refused=${this.apiRefused}` : '',
      this.kmsgLost ? `kmsg_lost_batches=${this.kmsgLost}` : '',
      this.silent ? `unlogged=${this.silent}` : '',
    ].filter(Boolean);
    const ms = this.ms.load ? ` ms zero/load/clear ${this.ms.zero.toFixed(0)}/${this.ms.load.toFixed(0)}/${this.ms.clear.toFixed(0)}` : '';
    return `rejected ${this.rejected} [${map(this.byErrno)}] accepted ${this.accepted} [${map(this.acceptedBy)}] controls ok/refused ${this.controls.accepted}/${this.controls.rejected}${extra.length ? ' ' + extra.join(' ') : ''}${ms}`;
  }
}

const short = (s: string, n = 300): string => (s.length > n ? `${JSON.stringify(s.slice(0, n))}... (${s.length} chars)` : JSON.stringify(s));
const describeTable = (c: TableCase): string => `table ${c.length > 0n ? `0 ${c.length}` : ''} ${c.type} ${short(c.params)} [${c.mutations.join('+') || 'valid'}]`;
const describeMessage = (c: MessageCase): string => `message ${short(c.text)}${c.sector !== undefined ? ` at sector ${c.sector}` : ''} [${c.mutation}]`;

function errnoOf(e: unknown): string | undefined {
  return e instanceof DmError && e.errno !== undefined ? e.code : undefined;
}

export class Fuzzer {
  private readonly kmsg = Kmsg.open();
  /** Inputs of the current batch, for a splat's log. */
  private recent: string[] = [];
  private batchRefusals = 0;
  /** Must-refuse acceptances already reported, by target and class; later ones are only counted. */
  private readonly reported = new Map<string, number>();

  constructor(
    private readonly ctx: LabContext,
    private readonly rig: Rig,
    private readonly dm: DeviceMapper,
  ) {}

  /** Loads one table case; returns 'rejected' | 'accepted' | 'api'. */
  async tableOne(c: TableCase, device: string, t: Tally): Promise<void> {
    let at = performance.now();
    const t0 = at;
    const lap = (k: keyof Tally['ms']): void => {
      const now = performance.now();
      t.ms[k] += now - at;
      at = now;
    };
    if (grammarFor(c.type)!.formats) this.rig.zeroScratch();
    lap('zero');
    this.recent.push(`${c.seed}: ${describeTable(c)}`);
    try {
      await this.dm.load({ name: device }, [{ start: sectors(0), length: sectors(c.length), type: c.type, params: c.params }]);
      lap('load');
    } catch (e) {
      lap('load');
      if (performance.now() - t0 > 250) t.slow.push([performance.now() - t0, describeTable(c).slice(0, 200) + ' ' + (e as Error).message.slice(0, 80)]);
      const code = errnoOf(e);
      if (code === undefined) {
        if (e instanceof DmError) throw e;
        t.apiRefused++;
        return;
      }
      this.batchRefusals++;
      if (c.mutations.length === 0) {
        t.controls.rejected++;
        if (t.controls.rejected <= 3) this.ctx.log(`valid ${describeTable(c)} refused: ${(e as Error).message}`);
      }
      t.reject(code);
      return;
    }
    await this.dm.clear({ name: device });
    lap('clear');
    if (c.mutations.length === 0) {
      t.controls.accepted++;
      return;
    }
    if (c.mustReject === undefined) {
      t.accept(c.mutations.join('+'));
      return;
    }
    const lenient = upstreamLeniency(c);
    if (lenient) {
      t.upstreamLenient++;
      t.accept(`${c.mutations[0]}(upstream)`);
      return;
    }
    t.accept(`${c.mutations[0]}(MUST-REJECT)`);
    if (this.repeated(`${c.type}:${c.mutations[0]}:${c.mustReject.replace(/"[^"]*"|\d+/g, '#')}`)) return;
    this.ctx.fail({
      component: COMPONENT,
      target: c.type,
      seed: c.seed,
      detail: `accepted a line that must be refused (${c.mustReject}): ${describeTable(c)}`,
      log: `table line: 0 ${c.length} ${c.type} ${c.params}\n`,
    });
  }

  /** True (and counted) when a failure of this class was already reported. */
  private repeated(key: string): boolean {
    const n = this.reported.get(key) ?? 0;
    this.reported.set(key, n + 1);
    return n > 0;
  }

  /** Failures of an already reported class that were only counted. */
  repeats(): string[] {
    return [...this.reported].filter(([, n]) => n > 1).map(([k, n]) => `${k} x${n}`);
  }

  async messageOne(c: MessageCase, live: Live, t: Tally): Promise<void> {
    this.recent.push(`${c.seed}: ${describeMessage(c)}`);
    try {
      await this.dm.message({ name: live.name }, c.sector === undefined ? undefined : sectors(c.sector), c.text);
    } catch (e) {
      const code = errnoOf(e);
      if (code === undefined) {
        if (e instanceof DmError) throw e;
        t.apiRefused++;
        return;
      }
      t.reject(code);
      return;
    }
    t.accept(c.mutation);
    if (c.mustReject !== undefined && !this.repeated(`${c.type}:msg:${c.mutation}`)) {
      this.ctx.fail({
        component: COMPONENT,
        target: c.type,
        seed: c.seed,
        detail: `accepted a message that must be refused (${c.mustReject}): ${describeMessage(c)}`,
        log: `message to ${live.name}: ${JSON.stringify(c.text)}\n`,
      });
    }
  }

  /** Reads the kernel log since the last batch: splats fail at once; table refusals must each have logged. */
  checkLog(type: string, t: Tally | undefined): void {
    const refusals = this.batchRefusals;
    const inputs = this.recent;
    this.batchRefusals = 0;
    this.recent = [];
    if (!this.kmsg) return;
    const { lines, lost } = this.kmsg.read();
    const splats = splatsIn(lines);
    if (splats.length) {
      this.ctx.fail({
        component: COMPONENT,
        target: type,
        seed: this.ctx.seed,
        detail: `kernel splat during ${type} fuzzing: ${splats[0]!.text}`,
        log: `inputs of this batch (seed: input):\n${inputs.join('\n')}\n\nkernel log:\n${lines.join('\n')}\n`,
      });
    }
    if (!t) return;
    if (lost) {
      t.kmsgLost++;
      return;
    }
    const logged = tableRefusals(lines);
    if (logged < refusals) t.silent += refusals - logged;
  }

  async tables(type: string, n: number, only?: number): Promise<Tally> {
    const g = grammarFor(type)!;
    const device = await this.rig.fuzzDevice(type);
    const t = new Tally();
    const started = Date.now();
    this.checkLog(type, undefined);
    const seeds = only !== undefined ? [only] : Array.from({ length: n }, (_, i) => tableSeed(this.ctx.seed, type, i));
    for (const [i, seed] of seeds.entries()) {
      const c = tableCase(g, type, seed, this.rig.env);
      if (only !== undefined) this.ctx.log(`replay ${seed}: ${describeTable(c)}${c.mustReject ? ` (must refuse: ${c.mustReject})` : ''}`);
      await this.tableOne(c, device, t);
      if ((i + 1) % BATCH === 0 || i + 1 === seeds.length) this.checkLog(type, t);
    }
    if (t.silent > 0) {
      this.ctx.fail({ component: COMPONENT, target: type, seed: this.ctx.seed, detail: `${t.silent} refused table loads left no dm-ioctl line in the kernel log` });
    }
    this.ctx.log(`${type} tables: ${t.summary()} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const [ms, d] of t.slow.sort((a, b) => b[0] - a[0]).slice(0, 5)) this.ctx.log(`slow ${ms.toFixed(0)} ms: ${d}`);
    return t;
  }

  async messages(type: string, live: Live, n: number, only?: number): Promise<Tally> {
    const g = messageGrammarFor(type)!;
    const t = new Tally();
    const started = Date.now();
    this.checkLog(type, undefined);
    const env = { length: live.length, openThinIds: type === 'thin-pool' ? [0n] : [] };
    const seeds = only !== undefined ? [only] : Array.from({ length: n }, (_, i) => messageSeed(this.ctx.seed, type, i));
    for (const [i, seed] of seeds.entries()) {
      const c = messageCase(g, type, seed, env);
      if (only !== undefined) this.ctx.log(`replay ${seed}: ${describeMessage(c)}${c.mustReject ? ` (must refuse: ${c.mustReject})` : ''}`);
      await this.messageOne(c, live, t);
      if ((i + 1) % BATCH === 0 || i + 1 === seeds.length) this.checkLog(type, undefined);
    }
    this.ctx.log(`${type} messages: ${t.summary()} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return t;
  }

  close(): void {
    this.kmsg?.close();
  }
}

/** Target types that are both wanted and registered (loading their modules on the way). */
async function availableTypes(ctx: LabContext, dm: DeviceMapper): Promise<string[]> {
  const out: string[] = [];
  for (const type of FUZZ_TYPES) {
    if (!ctx.wants(type)) continue;
    try {
      await dm.targetVersion(type);
      out.push(type);
    } catch (e) {
      if (!(e instanceof DmError)) throw e;
      ctx.log(`${type}: not registered in this kernel (${e.code}), skipped`);
    }
  }
  return out;
}

const MODPROBE = '/proc/sys/kernel/modprobe';

/**
 * A device word such as "8" or "0:0" makes dm_get_device ask for module block-major-M-N, and every such
 * request_module spawns modprobe (a second or two under TCG). With the target and policy modules loaded
 * first, autoloading is switched off while the lines are fuzzed (an empty modprobe path makes
 * request_module fail at once); the refusal is the same, only faster.
 */
async function withoutAutoload<T>(ctx: LabContext, fn: () => Promise<T>): Promise<T> {
  let saved: string | undefined;
  try {
    saved = fs.readFileSync(MODPROBE, 'utf8');
    fs.writeFileSync(MODPROBE, '\n');
  } catch (e) {
    ctx.log(`cannot switch module autoloading off (${(e as Error).message}): device words that look like numbers will be slow`);
  }
  try {
    return await fn();
  } finally {
    if (saved !== undefined) fs.writeFileSync(MODPROBE, saved);
  }
}

export async function runFuzz(ctx: LabContext, only?: { seed: number }): Promise<Partial<Counters>> {
  const dm = DeviceMapper.open();
  const types = await availableTypes(ctx, dm);
  // Cache policies load on first use; the cleaner and smq (mq, default) policies must be there already.
  if (types.includes('cache')) for (const m of ['dm-cache-smq', 'dm-cache-cleaner']) sh('modprobe', m);
  return withoutAutoload(ctx, () => fuzzTypes(ctx, dm, types, only));
}

async function fuzzTypes(ctx: LabContext, dm: DeviceMapper, types: readonly string[], only?: { seed: number }): Promise<Partial<Counters>> {
  const rig = new Rig(dm, ctx.seed);
  const scale = SCALE[ctx.scale];
  let malformed = 0;
  let upstream = 0;
  const started = Date.now();
  await rig.setup();
  const fuzzer = new Fuzzer(ctx, rig, dm);
  try {
    // Live devices first: the thin grammar points at the live pool.
    if (types.includes('thin') && !types.includes('thin-pool')) await rig.addLive('thin-pool');
    for (const type of types) await rig.addLive(type);
    const replayTable = only !== undefined && (only.seed & 1) === 0 ? only.seed : undefined;
    const replayMessage = only !== undefined && (only.seed & 1) === 1 ? only.seed : undefined;
    if (only === undefined || replayTable !== undefined) {
      for (const type of types) {
        const t = await fuzzer.tables(type, scale.tables, replayTable);
        malformed += t.rejected;
        upstream += t.upstreamLenient;
      }
    }
    if (only === undefined || replayMessage !== undefined) {
      for (const type of types) {
        const live = rig.live.get(type);
        if (live && messageGrammarFor(type)) malformed += (await fuzzer.messages(type, live, scale.messages, replayMessage)).rejected;
      }
    }
    await verifyDevices(ctx, rig, fuzzer, types);
    for (const r of fuzzer.repeats()) ctx.log(`also (not reported again): ${r}`);
  } finally {
    fuzzer.close();
    await rig.close();
    await dm.close();
  }
  ctx.log(`malformed inputs refused: ${malformed} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return { malformed_inputs: malformed, known_upstream: upstream };
}

/** The sentinel and every live device must be unharmed; metadata must check clean after teardown. */
async function verifyDevices(ctx: LabContext, rig: Rig, fuzzer: Fuzzer, types: readonly string[]): Promise<void> {
  const fail = (target: string, detail: string): void => ctx.fail({ component: COMPONENT, target, seed: ctx.seed, detail });
  for (const p of await rig.checkSentinel()) fail('linear', p);
  for (const live of rig.live.values()) {
    for (const p of await rig.checkLive(live)) fail(live.type, p);
    for (const p of await rig.teardownLive(live)) fail(live.type, p);
  }
  fuzzer.checkLog(types.join(','), undefined);
}
