/**
 * Table-line mutations. Each case is one seed: the seed picks the valid line (grammar.ts), then one
 * mutation (sometimes two or three stacked), and says whether the result must be refused whatever the
 * target: a missing device, metadata (or COW, or log) on the device it describes, a group count that
 * does not match its words, an unknown keyword, or a block size outside the target's rule.
 * Other mutations may legitimately be accepted (an appended optional argument, a smaller offset...).
 */
import { prng } from '../types';
import { type DevEnv, type Grammar, type Tok, LINE_SECTORS, int, pick, render, sizeAllowed } from './grammar';

export const MUTATIONS = [
  'drop', // argument count - k
  'dup', // a word given twice
  'append', // argument count + k
  'swap', // two words exchanged
  'num-edge', // a number set to 0, -1, 2^32, 2^64, ..., hex, text or empty
  'long-token', // a 4 KiB+ word of digits or letters
  'block-size', // a block/region/chunk size outside its rule
  'dev-small', // a device too small for the line, or for metadata
  'dev-same', // one device given in two roles
  'dev-missing', // a device that does not exist
  'count-lie', // a group count that says more or fewer words than follow
  'unknown-word', // an unknown feature, policy, store or key
  'core-value', // a negative or oversized optional value
  'length', // the line longer than its devices
  'junk', // odd characters inside a word
] as const;
export type Mutation = (typeof MUTATIONS)[number];

/** Numbers that break parsers: signs, 32/64-bit edges, bases, text, empty. */
export const NUM_EDGES: readonly string[] = [
  '0', '-1', '-0', '+8', '4294967296', '4294967295', '4294967297', '2147483648', '18446744073709551616',
  '18446744073709551617', '18446744073709551615', '9223372036854775808', 'abc', '0x10', '010', '1e3', '8.0', '8k', '', ' ',
];

const BAD_BLOCK_SIZES: readonly string[] = [
  '1', '2', '4', '7', '9', '12', '24', '63', '65', '96', '100', '127', '129', '136', '200', '1000', '3000', '4097',
  '4194304', '8388608', '2147483648', '4294967288', '4294967295', '4294967296',
];

const UNKNOWN_WORDS: readonly string[] = [
  'no_such_feature', 'frobnicate', 'smq2', 'lru', 'writearound', 'X', 'Q', 'hydration', 'discard', '-', '--', '#', '%s%s%s%n',
  'metadata3', 'read_write', 'policy', 'migration', 'zero', '\u00e9t\u00e9',
];

const MISSING_DEVS: readonly string[] = [
  '/dev/nonexistent', '/dev/ram99', '/dev/mapper/fz-none', '253:4000', '0:0', '4095:1048575', '-1:0', '7:', ':7',
  '/dev/null', '/', 'ram99', '/dev/../dev/none',
];

const JUNK: readonly string[] = ['\t', '\\', '\\ ', '"', "'", '\u00ff', '\u2028', '\x7f', '\x01', '%n', ';', '$(x)', '\n'];

export interface TableCase {
  readonly seed: number;
  readonly type: string;
  /** The line's length in sectors (the `length` mutation changes it). */
  readonly length: bigint;
  readonly params: string;
  readonly mutations: readonly Mutation[];
  /** Why the line must be refused, or undefined when acceptance is allowed. */
  readonly mustReject: string | undefined;
  /** The mutated tokens (for unit tests). */
  readonly toks: readonly Tok[];
}

interface Applied {
  toks: Tok[];
  length: bigint;
  must?: string;
}

const isNumeric = (t: Tok): boolean => t.kind === 'num' || t.kind === 'count';
const indexes = (toks: readonly Tok[], pred: (t: Tok) => boolean): number[] => toks.flatMap((t, i) => (pred(t) ? [i] : []));

function longToken(r: () => number): string {
  const n = int(r, 4096, 6144);
  const alphabet = pick(r, ['0123456789', 'abcdefghijklmnopqrstuvwxyz', '9']);
  let s = '';
  while (s.length < n) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
}

function withText(t: Tok, text: string): Tok {
  return { ...t, text } as Tok;
}

function replaceAt(toks: readonly Tok[], i: number, t: Tok): Tok[] {
  const out = [...toks];
  out[i] = t;
  return out;
}

/** Whether a count's new text, as dm_read_arg reads it (u32, wrapping), says other than its group. */
function countLies(t: Extract<Tok, { kind: 'count' }>, text: string): boolean {
  return !/^\d+$/.test(text) || BigInt(text) % (1n << 32n) !== BigInt(t.covers);
}

/**
 * Whether a changed number must be refused: a size outside its rule, or a count that no longer matches.
 * Sizes are read with kstrto* (which takes a leading '+') or dm_read_arg; counts always with dm_read_arg,
 * whose sscanf("%u") wraps instead of failing (4294967297 reads as 1): a count that wraps to the truth is
 * not a lie to the kernel.
 */
function numberMust(t: Tok, text: string): string | undefined {
  if (t.kind === 'num' && t.size && /^[+-]?\d+$/.test(text) && text.length < 40 && !sizeAllowed(t.size, text.replace(/^\+/, ''))) {
    return `${t.field} ${JSON.stringify(text)} breaks its rule`;
  }
  if (t.kind === 'count' && text.trim() !== '' && text.length < 40 && countLies(t, text)) return `${t.field} count ${JSON.stringify(text)} for ${t.covers} words`;
  return undefined;
}

/** Devices whose sharing with another device of the line destroys data. */
function sharingMust(a: Tok, b: Tok): string | undefined {
  if (a.kind !== 'dev' || b.kind !== 'dev') return undefined;
  const roles = new Set([a.role, b.role]);
  if (roles.has('meta') || roles.has('cow') || roles.has('log')) return `${a.role} and ${b.role} on one device`;
  if (roles.has('pool') && roles.has('extorigin')) return 'pool and external origin on one device';
  return undefined;
}

function mutateOnce(m: Mutation, r: () => number, a: Applied, env: DevEnv): Applied | undefined {
  const { toks } = a;
  const any = (): number => Math.floor(r() * toks.length);
  if (toks.length === 0 && m !== 'append' && m !== 'length') return undefined;
  switch (m) {
    case 'drop': {
      if (toks.length === 0) return undefined;
      const out = [...toks];
      const k = Math.min(out.length, int(r, 1, 3));
      for (let j = 0; j < k; j++) out.splice(Math.floor(r() * out.length), 1);
      return { ...a, toks: out, must: undefined };
    }
    case 'dup': {
      if (toks.length === 0) return undefined;
      const i = any();
      const out = [...toks];
      out.splice(i, 0, toks[i]!);
      return { ...a, toks: out, must: undefined };
    }
    case 'append': {
      const k = int(r, 1, 4);
      const extra = Array.from({ length: k }, (): Tok => ({ kind: 'word', field: 'extra', text: pick(r, ['0', '1', '8', 'x', ...NUM_EDGES.filter(Boolean)]) }));
      return { ...a, toks: [...toks, ...extra], must: undefined };
    }
    case 'swap': {
      if (toks.length < 2) return undefined;
      const i = any();
      let j = any();
      if (i === j) j = (i + 1) % toks.length;
      if (toks[i]!.text === toks[j]!.text) return undefined;
      const out = [...toks];
      out[i] = toks[j]!;
      out[j] = toks[i]!;
      return { ...a, toks: out, must: undefined };
    }
    case 'num-edge': {
      const idx = indexes(toks, isNumeric);
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      const text = pick(r, NUM_EDGES);
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, text)), must: numberMust(toks[i]!, text) };
    }
    case 'long-token': {
      const i = any();
      const t = toks[i]!;
      const text = longToken(r);
      // dm_get_device falls back to name_to_dev_t, which reads an all-hex word as a dev_t with wrapping,
      // so a long hex word may name a real device: only other words must fail.
      const must = t.kind === 'dev' && !/^[0-9a-fA-F]+$/.test(text) ? 'a 4 KiB device name does not exist' : undefined;
      return { ...a, toks: replaceAt(toks, i, withText(t, text)), must };
    }
    case 'block-size': {
      const idx = indexes(toks, (t) => t.kind === 'num' && t.size !== undefined);
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      const text = pick(r, BAD_BLOCK_SIZES);
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, text)), must: numberMust(toks[i]!, text) };
    }
    case 'dev-small': {
      const idx = indexes(toks, (t) => t.kind === 'dev');
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, pick(r, [env.tiny, env.small]))), must: undefined };
    }
    case 'dev-same': {
      const idx = indexes(toks, (t) => t.kind === 'dev');
      if (idx.length < 2) return undefined;
      const i = pick(r, idx);
      const j = pick(r, idx.filter((x) => x !== i));
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, toks[j]!.text)), must: sharingMust(toks[i]!, toks[j]!) };
    }
    case 'dev-missing': {
      const idx = indexes(toks, (t) => t.kind === 'dev');
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      const text = pick(r, MISSING_DEVS);
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, text)), must: `device ${JSON.stringify(text)} does not exist` };
    }
    case 'count-lie': {
      const idx = indexes(toks, (t) => t.kind === 'count');
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      const t = toks[i] as Extract<Tok, { kind: 'count' }>;
      const d = pick(r, [1, 1, 2, 3, 7]) * (r() < 0.5 && t.covers > 0 ? -1 : 1);
      const said = Math.max(0, t.covers + d) === t.covers ? t.covers + 1 : Math.max(0, t.covers + d);
      return { ...a, toks: replaceAt(toks, i, withText(t, `${said}`)), must: `${t.field} count says ${said}, gives ${t.covers}` };
    }
    case 'unknown-word': {
      const idx = indexes(toks, (t) => t.kind === 'word');
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      const text = pick(r, UNKNOWN_WORDS);
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, text)), must: `unknown ${(toks[i] as { field: string }).field} ${JSON.stringify(text)}` };
    }
    case 'core-value': {
      const idx = indexes(toks, (t) => t.kind === 'num' && t.size === undefined);
      if (!idx.length) return undefined;
      const i = pick(r, idx);
      const text = pick(r, ['-1', '-4096', '-9223372036854775808', '4294967295', '4294967296', '18446744073709551615', '99999999999999999999']);
      return { ...a, toks: replaceAt(toks, i, withText(toks[i]!, text)), must: undefined };
    }
    case 'length':
      return { ...a, length: env.scratchSectors + BigInt(pick(r, [1, 8, 4096, 1 << 20])), must: undefined };
    case 'junk': {
      const i = any();
      const t = toks[i]!;
      const at = Math.floor(r() * (t.text.length + 1));
      const text = t.text.slice(0, at) + pick(r, JUNK) + t.text.slice(at);
      return { ...a, toks: replaceAt(toks, i, withText(t, text)), must: undefined };
    }
  }
}

/** The valid (unmutated) line of a case seed: for controls and unit tests. */
export function validLine(g: Grammar, seed: number, env: DevEnv): Tok[] {
  return g.line(prng(seed), env);
}

/**
 * The case of `seed`: about 2% stay valid (controls), 80% take one mutation, the rest two or three
 * stacked (then nothing is known to be must-refuse).
 */
export function tableCase(g: Grammar, type: string, seed: number, env: DevEnv): TableCase {
  const r = prng(seed);
  let a: Applied = { toks: g.line(r, env), length: g.length };
  const mutations: Mutation[] = [];
  const roll = r();
  const want = roll < 0.02 ? 0 : roll < 0.82 ? 1 : int(r, 2, 3);
  for (let tries = 0; mutations.length < want && tries < 40; tries++) {
    const m = pick(r, MUTATIONS);
    const next = mutateOnce(m, r, a, env);
    if (!next) continue;
    a = next;
    mutations.push(m);
  }
  const mustReject = mutations.length === 1 ? a.must : undefined;
  return { seed, type, length: a.length, params: render(a.toks), mutations, mustReject, toks: a.toks };
}

export { LINE_SECTORS };
