/**
 * The message grammar of each target with messages, and its mutations. Pure: no kernel here.
 * A case is valid (may succeed or fail by state), or malformed in a way every target must refuse:
 * an unknown verb, a wrong argument count, a number outside its field, an empty message, a sector past
 * the device. Numbers follow the kernel's kstrto* rules (decimal, an optional '+').
 */
import { prng } from '../types';
import { int, pick, U32_MAX } from './grammar';
import { NUM_EDGES } from './mutate';

interface NumArg {
  readonly field: string;
  /** Largest valid value; undefined for a keyword argument (then `words` lists the valid ones). */
  readonly max?: bigint;
  readonly words?: readonly string[];
  /** Valid values the grammar picks from (small, so creates and deletes meet). */
  readonly gen: (r: () => number) => bigint | string;
}

export interface Verb {
  readonly verb: string;
  readonly args: readonly NumArg[];
}

export interface MessageGrammar {
  readonly types: readonly string[];
  readonly verbs: readonly Verb[];
}

const U64_MAX = (1n << 64n) - 1n;
const small = (hi: number) => (r: () => number): bigint => BigInt(int(r, 0, hi));
const arg = (field: string, max: bigint, gen: (r: () => number) => bigint): NumArg => ({ field, max, gen });
const kw = (field: string, words: readonly string[]): NumArg => ({ field, words, gen: (r) => pick(r, words) });
const THIN_ID = (1n << 24n) - 1n;

export const MESSAGE_GRAMMARS: readonly MessageGrammar[] = [
  {
    types: ['era', 'dmkit-era'],
    verbs: [
      { verb: 'checkpoint', args: [] },
      { verb: 'take_metadata_snap', args: [] },
      { verb: 'drop_metadata_snap', args: [] },
    ],
  },
  {
    types: ['clone', 'dmkit-clone'],
    verbs: [
      { verb: 'enable_hydration', args: [] },
      { verb: 'disable_hydration', args: [] },
      { verb: 'hydration_threshold', args: [arg('regions', U32_MAX, small(64))] },
      { verb: 'hydration_batch_size', args: [arg('regions', U32_MAX, small(64))] },
    ],
  },
  {
    types: ['cache'],
    verbs: [
      { verb: 'migration_threshold', args: [arg('sectors', U64_MAX, small(1 << 16))] },
      // Tunables of the old mq policy: the live cache runs `mq`, which takes them and ignores them.
      { verb: 'random_threshold', args: [arg('value', U64_MAX, small(100))] },
      { verb: 'sequential_threshold', args: [arg('value', U64_MAX, small(100))] },
      // Refused (EPERM) unless the cache is in passthrough mode; the live one is writeback.
      { verb: 'invalidate_cblocks', args: [arg('cblock', U64_MAX, small(511))] },
    ],
  },
  {
    types: ['dmkit-cache'],
    verbs: [
      { verb: 'migration_threshold', args: [arg('sectors', U64_MAX, small(1 << 16))] },
      // The old mq tunables: every policy but the cleaner takes them and ignores them (the live one runs dmkit-lru).
      { verb: 'sequential_threshold', args: [arg('value', U64_MAX, small(100))] },
      { verb: 'random_threshold', args: [arg('value', U64_MAX, small(100))] },
      { verb: 'read_promote_adjustment', args: [arg('value', U64_MAX, small(100))] },
      { verb: 'write_promote_adjustment', args: [arg('value', U64_MAX, small(100))] },
      { verb: 'discard_promote_adjustment', args: [arg('value', U64_MAX, small(100))] },
      // Refused (EPERM) unless the cache is in passthrough mode; the live one is writeback.
      { verb: 'invalidate_cblocks', args: [arg('cblock', U64_MAX, small(511))] },
    ],
  },
  {
    types: ['thin-pool'],
    verbs: [
      { verb: 'create_thin', args: [arg('dev id', THIN_ID, small(63))] },
      { verb: 'create_snap', args: [arg('dev id', THIN_ID, small(63)), arg('origin id', THIN_ID, small(63))] },
      { verb: 'delete', args: [arg('dev id', THIN_ID, small(63))] },
      { verb: 'set_transaction_id', args: [arg('current', U64_MAX, small(3)), arg('next', U64_MAX, small(3))] },
      { verb: 'reserve_metadata_snap', args: [] },
      { verb: 'release_metadata_snap', args: [] },
    ],
  },
  {
    types: ['dmkit-core'],
    verbs: [
      { verb: 'ping', args: [] },
      { verb: 'selftest', args: [] },
      // Fault injection (newer dmkit-core): the rig turns it off before the live device's IO check.
      { verb: 'fault', args: [kw('trigger', ['writes', 'flushes']), arg('passes', U64_MAX, small(1000)), kw('action', ['error', 'drop'])] },
      { verb: 'fault', args: [kw('state', ['off'])] },
    ],
  },
];

export function messageGrammarFor(type: string): MessageGrammar | undefined {
  return MESSAGE_GRAMMARS.find((g) => g.types.includes(type));
}

export const MESSAGE_MUTATIONS = [
  'valid', // a valid message (may still fail by state: drop without take, delete of a missing id)
  'case', // a valid verb in mixed case (the kernel compares without case)
  'unknown-verb',
  'argc', // a valid verb with arguments dropped or added
  'num-edge', // a number set to 0, -1, 2^32, 2^64, hex, text, ...
  'long-token', // a 4 KiB+ verb or argument
  'empty', // only blanks (the API refuses '' itself)
  'core', // an '@' message to dm core
  'sector', // a valid message addressed past the end of the device
  'junk', // odd characters inside the verb
] as const;
export type MessageMutation = (typeof MESSAGE_MUTATIONS)[number];

export interface MessageCase {
  readonly seed: number;
  readonly type: string;
  readonly text: string;
  /** The sector the message addresses (undefined: 0). */
  readonly sector?: bigint;
  readonly mutation: MessageMutation;
  readonly mustReject: string | undefined;
}

export interface MessageEnv {
  /** Length of the live device in sectors. */
  readonly length: bigint;
  /** Thin ids that have an open thin device (deleting one must be refused). */
  readonly openThinIds: readonly bigint[];
}

const UNKNOWN_VERBS = ['frobnicate', 'checkpoint2', 'create', 'delete_all', 'hydrate', 'invalidate', 'resize', 'ping!', 'x', '0', '-1', 'set_transaction', 'status'];
const CORE = ['@stats_list', '@stats_print 0', '@stats_create', '@stats_create - /0', '@stats_create x y', '@stats_delete 99999', '@stats_delete -1', '@frobnicate', '@', '@cancel_deferred_remove'];

/** kstrto* accepts decimal digits after an optional '+' and rejects overflow. */
export function numberAllowed(text: string, max: bigint): boolean {
  const m = /^\+?(\d+)$/.exec(text);
  return m !== null && BigInt(m[1]!) <= max;
}

function mixedCase(r: () => number, s: string): string {
  const out = [...s].map((c) => (r() < 0.5 ? c.toUpperCase() : c.toLowerCase())).join('');
  return out === s ? s.toUpperCase() : out;
}

function longToken(r: () => number): string {
  const n = int(r, 4096, 6144);
  const alphabet = pick(r, ['0123456789', 'abcdefghijklmnopqrstuvwxyz']);
  let s = alphabet === '0123456789' ? '1' : '';
  while (s.length < n) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
}

/** Refusal of a valid message whose effect would hurt a live device (delete of an open thin). */
function stateMust(type: string, words: readonly string[], env: MessageEnv): string | undefined {
  if (type !== 'thin-pool' || words.length !== 2 || words[0]!.toLowerCase() !== 'delete') return undefined;
  const id = /^\+?(\d+)$/.exec(words[1]!);
  if (id && env.openThinIds.includes(BigInt(id[1]!))) return `thin ${id[1]} is open`;
  return undefined;
}

export function messageCase(g: MessageGrammar, type: string, seed: number, env: MessageEnv): MessageCase {
  const r = prng(seed);
  const mutation = pick(r, MESSAGE_MUTATIONS);
  const v = pick(r, g.verbs);
  const words = [v.verb, ...v.args.map((a) => `${a.gen(r)}`)];
  const base = { seed, type, mutation };
  switch (mutation) {
    case 'valid':
      return { ...base, text: words.join(' '), mustReject: stateMust(type, words, env) };
    case 'case': {
      const w = [mixedCase(r, words[0]!), ...words.slice(1)];
      return { ...base, text: w.join(' '), mustReject: stateMust(type, w, env) };
    }
    case 'unknown-verb': {
      const verb = pick(r, UNKNOWN_VERBS);
      return { ...base, text: [verb, ...words.slice(1)].join(' '), mustReject: `unknown verb ${JSON.stringify(verb)}` };
    }
    case 'argc': {
      const w = [...words];
      if (w.length > 1 && r() < 0.5) w.splice(int(r, 1, w.length - 1), 1);
      else for (let k = int(r, 1, 3); k > 0; k--) w.push(pick(r, ['0', '1', '7', 'x', 'checkpoint']));
      return { ...base, text: w.join(' '), mustReject: `${v.verb} takes ${v.args.length} argument(s), given ${w.length - 1}` };
    }
    case 'num-edge': {
      if (v.args.length === 0) return { ...base, text: `${words[0]} ${pick(r, NUM_EDGES.filter((e) => e.trim()))}`, mustReject: `${v.verb} takes no argument` };
      const i = int(r, 0, v.args.length - 1);
      const text = pick(r, NUM_EDGES);
      const w = [...words];
      w[i + 1] = text;
      const field = v.args[i]!;
      // An empty number drops the word: the count is then wrong. A keyword takes no number at all.
      const ok = field.max !== undefined ? numberAllowed(text, field.max) : (field.words ?? []).includes(text.toLowerCase());
      const must = ok ? stateMust(type, w, env) : `${v.verb} ${field.field} ${JSON.stringify(text)} is not ${field.max !== undefined ? `a number below ${field.max + 1n}` : (field.words ?? []).join('|')}`;
      return { ...base, text: w.join(' '), mustReject: must };
    }
    case 'long-token': {
      const w = [...words];
      const i = int(r, 0, w.length - 1);
      w[i] = longToken(r);
      return { ...base, text: w.join(' '), mustReject: i === 0 ? 'a 4 KiB verb' : `a 4 KiB ${v.args[i - 1]!.field}` };
    }
    case 'empty':
      return { ...base, text: pick(r, [' ', '\t', '  \n ', '\n']), mustReject: 'an empty message' };
    case 'core': {
      const text = pick(r, CORE);
      const must = text === '@frobnicate' || text === '@' ? `unknown core message ${text}` : undefined;
      return { ...base, text, mustReject: must };
    }
    case 'sector': {
      const sector = env.length + BigInt(pick(r, [0, 1, 4096])) + (r() < 0.3 ? (1n << 63n) : 0n);
      return { ...base, text: words.join(' '), sector, mustReject: `sector ${sector} is past the device (${env.length} sectors)` };
    }
    case 'junk': {
      const at = int(r, 1, words[0]!.length - 1);
      const junk = pick(r, ['#', '%n', '\u00e9', '\x01', '-', '.', ' ', '\t', '\x7f', '\\']);
      const w = [...words];
      w[0] = words[0]!.slice(0, at) + junk + words[0]!.slice(at);
      // A backslash escapes the next character (dm_split_args), so the verb may survive it.
      return { ...base, text: w.join(' '), mustReject: junk === '\\' ? undefined : `verb ${JSON.stringify(w[0])}` };
    }
  }
}
