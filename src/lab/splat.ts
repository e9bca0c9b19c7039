/**
 * Kernel-log splat detection. Any line matching one of these patterns fails a VM run, even when the
 * command passed: an oops, BUG, WARNING, KASAN/UBSAN report, lockdep report or hung task is a real bug in
 * the code under test, never noise.
 */
export interface Splat {
  line: number;
  kind: string;
  text: string;
}

const PATTERNS: ReadonlyArray<readonly [string, RegExp]> = [
  ['oops', /\bOops\b|general protection fault/],
  ['bug', /(?:^|\] )BUG[: ]|kernel BUG at/],
  ['warning', /(?:^|\] )WARNING:|------------\[ cut here \]------------/],
  ['kasan', /\bKASAN\b/],
  ['ubsan', /\bUBSAN\b/],
  ['lockdep', /possible (?:circular|recursive) locking|inconsistent lock state|DEBUG_LOCKS_WARN_ON|lock held when returning to user space|suspicious RCU usage/],
  ['hung-task', /INFO: task .* blocked for more than|hung_task|soft lockup|rcu_\w+ (?:self-)?detected stall|RCU Stall/i],
  ['corruption', /list_(?:add|del) corruption|refcount_t: (?:underflow|overflow|saturated)|slab[- ]corruption/i],
  ['panic', /Kernel panic/],
  ['kmemleak', /kmemleak: \d+ new suspected memory leaks|unreferenced object 0x/],
];

/** Strips the `[  12.345678]` timestamp and an optional `[ T123]`/`[ C1]` caller id from a log line. */
function body(line: string): string {
  return line.replace(/^<\d+>/, '').replace(/^\[\s*\d+\.\d+\]\s?/, '').replace(/^\[\s*[TC]\d+\]\s?/, '');
}

export function findSplats(log: string): Splat[] {
  const found: Splat[] = [];
  log.split('\n').forEach((raw, i) => {
    const text = body(raw.replace(/\r$/, ''));
    for (const [kind, re] of PATTERNS) {
      if (re.test(text)) {
        found.push({ line: i + 1, kind, text: text.trim() });
        break;
      }
    }
  });
  return found;
}
