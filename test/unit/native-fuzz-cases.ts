/**
 * Inputs for the addon fuzz test (native-fuzz.test.ts): for each export, a deterministic list of argument
 * lists from a seed. Loaded both by the test (to name the input that crashed a child) and by the children
 * (to run the inputs). No side effects at load time.
 *
 * A case is a description plus a function that builds its arguments against a Context (fds, paths and a
 * semaphore owned by the child): values such as detached buffers, Proxies and throwing getters must be
 * made fresh for each call. Integer fds and semaphore ids are only ever ones the child owns or ones that
 * cannot be valid (negative, fractional, above INT_MAX): the fuzz must not close, signal or remove
 * anything of another process on a shared machine.
 */
import { prng } from '../../src/testing/random';

export interface Context {
  devNull: number;
  eventfd: number;
  cancelFd: number;
  regularFd: number;
  pipeRead: number;
  pipeWrite: number;
  closedFd: number;
  /** Fresh /dev/null fds the child may close (dmControlClose). */
  spareFd: () => number;
  sem: number;
  dir: string;
  fifo: string;
  log: Buffer;
  table: Float64Array;
  /** A 64 KiB regular file for copyRanges to read. */
  copySource: string;
}

export interface FuzzCase {
  desc: string;
  args: (ctx: Context) => unknown[];
}

/** Thrown by the hostile getters and traps; the fuzz accepts it propagating as it is. */
export const HOSTILE = 'dmkit-fuzz-hostile';

export const FUZZED_EXPORTS = [
  'addonVersion',
  'dmControlOpen',
  'dmControlClose',
  'dmIoctl',
  'sysMknod',
  'semCreate',
  'semSetValue',
  'semGetValue',
  'semAdd',
  'semWaitZero',
  'semRemove',
  'eventfdOpen',
  'eventfdSignal',
  'pollReadable',
  'logIndex',
  'replayImage',
  'imageDigest',
  'copyRanges',
  'crc32c',
  'copyEngine',
] as const;
export type FuzzedExport = (typeof FUZZED_EXPORTS)[number];

type Rng = () => number;

/** The shared seeded PRNG (mulberry32, src/testing/random.ts): the same sequence everywhere for one seed. */
export const rngFrom: (seed: number) => Rng = prng;

/** The seed of one batch: the fixed base seed mixed with the export's name and the batch number. */
export function batchSeed(base: number, name: string, batch: number): number {
  let h = (base ^ 0x9e3779b9) >>> 0;
  for (const ch of `${name}#${batch}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

interface Gen {
  desc: string;
  make: (ctx: Context) => unknown;
}
const g = (desc: string, make: (ctx: Context) => unknown): Gen => ({ desc, make });
const constant = (desc: string, v: unknown): Gen => g(desc, () => v);

function pick<T>(rng: Rng, list: readonly T[]): T {
  return list[Math.floor(rng() * list.length)]!;
}
function int(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}
function bytes(rng: Rng, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rng() * 256);
  return b;
}
function detached(n: number): Uint8Array {
  const ab = new ArrayBuffer(n);
  const view = new Uint8Array(ab);
  structuredClone(ab, { transfer: [ab] });
  return view;
}
const throwHostile = (): never => {
  throw new Error(HOSTILE);
};

/** Numbers a checked integer argument must refuse or accept without harm. */
function hostileNumber(rng: Rng): Gen {
  const n = pick(rng, [
    0, -0, 1, -1, 0.5, -0.5, NaN, Infinity, -Infinity, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 53,
    2 ** 53 + 2, -(2 ** 53), 1e308, -1e308, Number.MIN_VALUE, 17, 18, 255, 65535, 32767, 32768, -32768,
  ]);
  return constant(String(Object.is(n, -0) ? '-0' : n), n);
}

/** Any value at all, weighted towards the ones that broke addons before. */
function anyValue(rng: Rng): Gen {
  switch (int(rng, 0, 22)) {
    case 0: return constant('undefined', undefined);
    case 1: return constant('null', null);
    case 2: return constant(String(rng() < 0.5), rng() < 0.5);
    case 3: case 4: return hostileNumber(rng);
    case 5: { const b = pick(rng, [0n, 1n, -1n, 2n ** 64n]); return constant(`${b}n`, b); }
    case 6: { const s = pick(rng, ['', 'a', '\0', 'x\0y', 'é', '/', '..', 'a'.repeat(5000)]); return constant(`string(${s.length})`, s); }
    case 7: return g('Symbol()', () => Symbol('fuzz'));
    case 8: return g('{}', () => ({}));
    case 9: return g('[1,2,3]', () => [1, 2, 3]);
    case 10: return g('function', () => () => 1);
    case 11: { const n = int(rng, 0, 700); const seed = int(rng, 0, 1e9); return g(`Buffer(${n} random)`, () => bytes(rngFrom(seed), n)); }
    case 12: { const n = int(rng, 0, 700); return g(`DataView(${n})`, () => new DataView(new ArrayBuffer(n))); }
    case 13: { const n = int(rng, 0, 200); const v = rng() * 1e6; return g(`Float64Array(${n}) of ${v}`, () => new Float64Array(n).fill(v)); }
    case 14: { const n = int(rng, 0, 200); const v = int(rng, 0, 10); return g(`Uint32Array(${n}) of ${v}`, () => new Uint32Array(n).fill(v)); }
    case 15: { const n = int(rng, 0, 200); return g(`Uint16Array(${n})`, () => new Uint16Array(n)); }
    case 16: { const n = int(rng, 0, 700); return g(`ArrayBuffer(${n})`, () => new ArrayBuffer(n)); }
    case 17: { const n = int(rng, 1, 700); return g(`detached Uint8Array(${n})`, () => detached(n)); }
    case 18: return g('Proxy(every trap throws)', () => new Proxy({}, { get: throwHostile, has: throwHostile, ownKeys: throwHostile, getOwnPropertyDescriptor: throwHostile, getPrototypeOf: throwHostile }));
    case 19: return g('{valueOf, toString, toPrimitive throw}', () => ({ valueOf: throwHostile, toString: throwHostile, [Symbol.toPrimitive]: throwHostile }));
    case 20: { const n = int(rng, 1, 700); const off = int(rng, 0, n - 1); return g(`Buffer view at ${off} of ${n}`, () => Buffer.alloc(n).subarray(off)); }
    case 21: { const n = int(rng, 0, 700); return g(`SharedArrayBuffer Uint8Array(${n})`, () => new Uint8Array(new SharedArrayBuffer(n))); }
    default: return g('Int8Array(8)', () => new Int8Array(8));
  }
}

/** A valid value with probability p, else any value. */
function mostly(rng: Rng, p: number, valid: () => Gen): Gen {
  return rng() < p ? valid() : anyValue(rng);
}

function fdArg(rng: Rng): Gen {
  return mostly(rng, 0.6, () =>
    pick(rng, [
      g('devNull fd', (c) => c.devNull),
      g('eventfd', (c) => c.eventfd),
      g('cancel eventfd', (c) => c.cancelFd),
      g('regular file fd', (c) => c.regularFd),
      g('pipe read fd', (c) => c.pipeRead),
      g('pipe write fd', (c) => c.pipeWrite),
      g('closed fd', (c) => c.closedFd),
      constant('fd 999999', 999999),
      constant('fd 2**31-1', 2 ** 31 - 1),
    ]),
  );
}

function ownFdsOnly(x: Gen): Gen {
  return g(x.desc, (c) => {
    const v = x.make(c);
    const risky = typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 2 ** 31 && v !== 999999 && v !== c.closedFd;
    return risky ? c.spareFd() : v;
  });
}

function semIdArg(rng: Rng): Gen {
  return mostly(rng, 0.6, () => pick(rng, [g('own semaphore', (c) => c.sem), constant('-1', -1), constant('2**31', 2 ** 31), constant('1.5', 1.5)]));
}

function smallInt(rng: Rng, lo: number, hi: number): Gen {
  return mostly(rng, 0.6, () => { const n = int(rng, lo, hi); return constant(String(n), n); });
}

/** A DM ioctl buffer: header with a random data_size, flags and command-shaped noise. */
function ioctlBuffer(rng: Rng): Gen {
  return mostly(rng, 0.7, () => {
    const n = pick(rng, [0, 100, 311, 312, 313, 400, 4096]);
    const dataSize = pick(rng, [0, 311, 312, n, n + 1, 0xffffffff, int(rng, 0, 5000)]);
    const flags = int(rng, 0, 0xffff);
    const seed = int(rng, 0, 1e9);
    return g(`ioctl buffer(${n}, data_size ${dataSize}, flags ${flags})`, () => {
      const b = bytes(rngFrom(seed), n);
      if (n >= 32) {
        b.writeUInt32LE(4, 0);
        b.writeUInt32LE(dataSize >>> 0, 12);
        b.writeUInt32LE(flags, 28);
      }
      return b;
    });
  });
}

/** A log in dm-log-writes' layout (512-byte blocks) with `count` entries, for mutation. */
export function sampleLog(count: number, seed: number): Buffer {
  const rng = rngFrom(seed);
  const blocks: Buffer[] = [];
  const sb = Buffer.alloc(512);
  sb.writeBigUInt64LE(0x6a736677736872n, 0);
  sb.writeBigUInt64LE(1n, 8);
  sb.writeBigUInt64LE(BigInt(count), 16);
  sb.writeUInt32LE(512, 24);
  blocks.push(sb);
  for (let i = 0; i < count; i++) {
    const h = Buffer.alloc(512);
    const kind = int(rng, 0, 3); // data, discard, mark, flush
    const nr = kind === 0 || kind === 1 ? int(rng, 1, 4) : 0;
    const flags = [0, 4, 8, 1][kind]!;
    h.writeBigUInt64LE(BigInt(int(rng, 0, 30)), 0);
    h.writeBigUInt64LE(BigInt(nr), 8);
    h.writeBigUInt64LE(BigInt(flags), 16);
    if (kind === 2) {
      h.write(`mark-${i}`, 32);
      h.writeBigUInt64LE(BigInt(`mark-${i}`.length), 24);
    }
    blocks.push(h);
    if (kind === 0) blocks.push(bytes(rng, nr * 512));
  }
  return Buffer.concat(blocks);
}

function logArg(rng: Rng): Gen {
  return mostly(rng, 0.7, () => {
    const count = int(rng, 0, 12);
    const seed = int(rng, 0, 1e9);
    const flips = int(rng, 0, 4);
    const cut = rng() < 0.2;
    const mutSeed = int(rng, 0, 1e9);
    return g(`log(${count} entries, seed ${seed}, ${flips} byte flips${cut ? ', truncated' : ''})`, () => {
      let log = sampleLog(count, seed);
      const m = rngFrom(mutSeed);
      for (let i = 0; i < flips; i++) {
        const at = pick(m, [0, 8, 16, 17, 24, 25, 512, 520, 528, 536, 1024 + int(m, 0, 32), int(m, 0, log.length - 1)]);
        if (at < log.length) log[at] = int(m, 0, 255);
      }
      if (cut) log = log.subarray(0, int(m, 0, log.length));
      return log;
    });
  });
}

/** replayImage options: each field valid (against the context's log) or hostile; sometimes a getter that
 * detaches another field's buffer, or throws. */
function replayOptions(rng: Rng): Gen {
  const fields: Record<string, Gen> = {};
  const entries = 6; // sampleLog(6, ...) in the context
  fields.log = mostly(rng, 0.8, () => g('ctx log', (c) => Buffer.from(c.log)));
  fields.table = mostly(rng, 0.8, () =>
    rng() < 0.8
      ? g('ctx table', (c) => Float64Array.from(c.table))
      : (() => { const i = int(rng, 0, 23); const v = pick(rng, [-1, 0.5, NaN, 2 ** 53, 1e6, 512 * 40]); return g(`ctx table with [${i}] = ${v}`, (c) => { const t = Float64Array.from(c.table); t[i] = v; return t; }); })(),
  );
  const length = pick(rng, [0, 512, 4096, 16384, 16385, 2 ** 53 - 1, 2 ** 40]);
  fields.length = mostly(rng, 0.8, () => constant(String(length), length));
  fields.base = mostly(rng, 0.7, () => (rng() < 0.5 ? constant('null', null) : g(`Buffer(length ${length})`, () => (length <= 16385 ? Buffer.alloc(length, 9) : Buffer.alloc(16)))));
  fields.apply = mostly(rng, 0.8, () => {
    const n = int(rng, 0, 12);
    const list = Array.from({ length: n }, () => int(rng, 0, entries + 1));
    return g(`apply [${list.join(',')}]`, () => Uint32Array.from(list));
  });
  if (rng() < 0.3) fields.torn = mostly(rng, 0.7, () => { const e = int(rng, 0, entries); const s = int(rng, 0, 4); return g(`torn {entry ${e}, sector ${s}}`, () => ({ entry: e, sector: s })); });
  if (rng() < 0.3) {
    fields.out = mostly(rng, 0.7, () =>
      pick(rng, [
        g('out: a file', (c) => `${c.dir}/out-file`),
        g('out: a FIFO', (c) => c.fifo),
        g('out: the directory', (c) => c.dir),
        g('out: /dev/null', () => '/dev/null'),
        g('out: missing dir', (c) => `${c.dir}/no/such`),
      ]),
    );
  }
  if (rng() < 0.3) fields.digestOnly = mostly(rng, 0.7, () => constant('digestOnly true', true));
  const names = Object.keys(fields);
  const trick = rng() < 0.25 ? int(rng, 0, 2) : -1; // 0: getter detaches log, 1: detaches table, 2: throws
  const trickAt = pick(rng, names);
  const desc = `{${names.map((k) => `${k}: ${fields[k]!.desc}`).join(', ')}}${trick >= 0 ? ` + getter on ${trickAt} that ${['detaches log', 'detaches table', 'throws'][trick]}` : ''}`;
  return g(desc, (c) => {
    const o: Record<string, unknown> = {};
    for (const k of names) o[k] = fields[k]!.make(c);
    const made = { ...o };
    if (trick >= 0) {
      const value = o[trickAt];
      Object.defineProperty(o, trickAt, {
        enumerable: true,
        get() {
          const victim = trick === 0 ? made.log : trick === 1 ? made.table : undefined;
          if (trick === 2) throwHostile();
          const ab = (victim as { buffer?: unknown } | undefined)?.buffer;
          if (ab instanceof ArrayBuffer && ab.byteLength > 0) {
            try { structuredClone(ab, { transfer: [ab] }); } catch { /* a pooled or non-transferable buffer */ }
          }
          return value;
        },
      });
    }
    return o;
  });
}

/** copyRanges options: each field valid or hostile, sometimes a getter that detaches ranges or throws,
 * sometimes an onProgress that throws or cancels. */
function copyOptions(rng: Rng): Gen {
  const fields: Record<string, Gen> = {};
  const path = (): Gen =>
    pick(rng, [
      g('the copy source', (c) => c.copySource),
      g('a new file', (c) => `${c.dir}/copy-out`),
      g('a FIFO', (c) => c.fifo),
      g('the directory', (c) => c.dir),
      g('/dev/null', () => '/dev/null'),
      g('/dev/zero', () => '/dev/zero'),
      g('the 21-byte regular file', (c) => `${c.dir}/regular`),
      g('missing dir', (c) => `${c.dir}/no/such`),
    ]);
  fields.source = mostly(rng, 0.85, () => (rng() < 0.7 ? g('the copy source', (c) => c.copySource) : path()));
  if (rng() < 0.7) fields.dest = mostly(rng, 0.85, () => (rng() < 0.6 ? g('a new file', (c) => `${c.dir}/copy-out`) : path()));
  fields.ranges = mostly(rng, 0.85, () => {
    const n = int(rng, 0, 6);
    const list: number[] = [];
    for (let i = 0; i < n; i++) {
      const unit = rng() < 0.8 ? 512 : 1;
      list.push(pick(rng, [int(rng, 0, 140) * unit, -512, 2 ** 53, 0.5, NaN]), pick(rng, [int(rng, 0, 140) * unit, 0, 2 ** 53 - 512, -1]), int(rng, 0, 300) * unit);
    }
    if (rng() < 0.1) list.pop();
    return g(`ranges [${list.join(',')}]`, () => Float64Array.from(list));
  });
  if (rng() < 0.3) fields.chunkBytes = mostly(rng, 0.7, () => constant('chunk', pick(rng, [4096, 8192, 65536, 6000, 0, 2 ** 30])));
  if (rng() < 0.3) fields.queueDepth = mostly(rng, 0.7, () => constant('depth', pick(rng, [1, 2, 64, 128, 129, 0])));
  if (rng() < 0.3) fields.engine = mostly(rng, 0.7, () => constant('engine', pick(rng, ['auto', 'io_uring', 'threads', 'spdk'])));
  if (rng() < 0.2) fields.journal = mostly(rng, 0.7, () => pick(rng, [g('journal file', (c) => `${c.dir}/journal`), g('journal FIFO', (c) => c.fifo), g('journal dir', (c) => c.dir)]));
  if (rng() < 0.3) fields.checksums = mostly(rng, 0.7, () => constant('true', true));
  if (rng() < 0.3) fields.direct = mostly(rng, 0.7, () => constant('false', false));
  if (rng() < 0.2) fields.uringAsync = mostly(rng, 0.7, () => constant('false', false));
  if (rng() < 0.2) fields.uringRings = mostly(rng, 0.7, () => constant('rings', pick(rng, [0, 1, 2, 4, 5, 1.5, -1])));
  if (rng() < 0.1) fields.interruptAfterChunks = mostly(rng, 0.7, () => constant('interrupt', pick(rng, [0, 1, 3])));
  if (rng() < 0.3) fields.onProgress = mostly(rng, 0.7, () => pick(rng, [g('noop', () => () => undefined), g('throws', () => throwHostile)]));
  const names = Object.keys(fields);
  const trick = rng() < 0.2 ? int(rng, 0, 1) : -1; // 0: a getter detaches ranges, 1: throws
  const trickAt = pick(rng, names);
  const cancel = rng() < 0.2;
  const desc = `{${names.map((k) => `${k}: ${fields[k]!.desc}`).join(', ')}}${trick >= 0 ? ` + getter on ${trickAt} that ${['detaches ranges', 'throws'][trick]}` : ''}${cancel ? ' + cancel()' : ''}`;
  return g(desc, (c) => {
    const o: Record<string, unknown> = {};
    for (const k of names) o[k] = fields[k]!.make(c);
    const made = { ...o };
    if (trick >= 0) {
      const value = o[trickAt];
      Object.defineProperty(o, trickAt, {
        enumerable: true,
        get() {
          if (trick === 1) throwHostile();
          const ab = (made.ranges as { buffer?: unknown } | undefined)?.buffer;
          if (ab instanceof ArrayBuffer && ab.byteLength > 0) {
            try { structuredClone(ab, { transfer: [ab] }); } catch { /* not transferable */ }
          }
          return value;
        },
      });
    }
    return o;
  });
}

function argsFor(name: FuzzedExport, rng: Rng): Gen[] {
  const extra = (): Gen[] => (rng() < 0.15 ? [anyValue(rng)] : []);
  switch (name) {
    case 'addonVersion':
    case 'dmControlOpen':
    case 'eventfdOpen':
      return Array.from({ length: int(rng, 0, 2) }, () => anyValue(rng));
    case 'dmControlClose':
      // An integer that could name an open fd of the child (its stdout, say) closes a spare fd instead.
      return [ownFdsOnly(mostly(rng, 0.5, () => pick(rng, [g('spare /dev/null fd', (c) => c.spareFd()), g('closed fd', (c) => c.closedFd), constant('fd 999999', 999999)]))), ...extra()];
    case 'dmIoctl':
      return [fdArg(rng), smallInt(rng, 0, 17), ioctlBuffer(rng), ...extra()];
    case 'sysMknod': {
      const n = int(rng, 0, 1e6);
      const path = mostly(rng, 0.6, () => pick(rng, [g(`dir/node-${n}`, (c) => `${c.dir}/node-${n}`), constant(`rel-${n}`, `rel-${n}`), g('existing file', (c) => `${c.dir}/regular`)]));
      const mode = mostly(rng, 0.6, () => { const m = pick(rng, [0o020600, 0o060600, 0o100600, 0o010600, 0o060000 | 0o7777, 0o170000, 0o060600 | 0o1000000]); return constant(`0o${m.toString(8)}`, m); });
      return [path, mode, smallInt(rng, 0, 300), smallInt(rng, 0, 1 << 20), ...extra()];
    }
    case 'semCreate':
      return [mostly(rng, 0.6, () => { const k = int(rng, 1, 0xffffffff); return constant(`key 0x${k.toString(16)}`, k); }), ...extra()];
    case 'semSetValue':
      return [semIdArg(rng), smallInt(rng, -2, 40000), ...extra()];
    case 'semGetValue':
    case 'semRemove':
      return [name === 'semRemove' ? mostly(rng, 0.6, () => pick(rng, [constant('-1', -1), constant('2**31', 2 ** 31), constant('1.5', 1.5)])) : semIdArg(rng), ...extra()];
    case 'semAdd':
      return [semIdArg(rng), smallInt(rng, -40000, 40000), ...extra()];
    case 'semWaitZero':
      return [semIdArg(rng), smallInt(rng, 0, 50), ...extra()];
    case 'eventfdSignal':
      return [fdArg(rng), ...extra()];
    case 'pollReadable':
      return [fdArg(rng), fdArg(rng), mostly(rng, 0.6, () => pick(rng, [constant('0', 0), constant('5', 5), constant('2**31-1', 2 ** 31 - 1)])), ...extra()];
    case 'logIndex':
      return [logArg(rng), ...extra()];
    case 'replayImage':
      return [replayOptions(rng), ...extra()];
    case 'copyRanges':
      return [copyOptions(rng), ...extra()];
    case 'crc32c':
      return [mostly(rng, 0.5, () => { const n = int(rng, 0, 5000); const seed = int(rng, 0, 1e9); return g(`Buffer(${n})`, () => bytes(rngFrom(seed), n)); }), ...extra()];
    case 'copyEngine':
      return Array.from({ length: int(rng, 0, 2) }, () => anyValue(rng));
    case 'imageDigest':
      return [mostly(rng, 0.5, () => { const n = int(rng, 0, 5000); const seed = int(rng, 0, 1e9); return g(`Buffer(${n})`, () => bytes(rngFrom(seed), n)); }), ...extra()];
  }
}

/** The cases of one batch, in order. */
export function generateBatch(name: FuzzedExport, seed: number, count: number): FuzzCase[] {
  const rng = rngFrom(seed);
  const cases: FuzzCase[] = [];
  for (let i = 0; i < count; i++) {
    const gens = argsFor(name, rng);
    cases.push({ desc: `${name}(${gens.map((x) => x.desc).join(', ')})`, args: (c) => gens.map((x) => x.make(c)) });
  }
  return cases;
}
