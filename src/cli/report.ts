/**
 * dmsetup's column reports (`info -c`, `splitname`): fields chosen with -o (`+f` appends to the default),
 * rows sorted with -O (`-f` descending), filtered with -S, printed aligned under headings, or with
 * --noheadings (separator ':' and no alignment, as dmsetup does), --separator S (no alignment) or
 * --nameprefixes (DM_FIELD='value'). Aligned columns are at least their field's width; strings are
 * left-aligned and numbers right-aligned (headings always left), every column padded, the last one too. Rows that -S drops are
 * not printed, and a report without rows prints nothing, not even its headings.
 */
import { usageError } from './errors';

export type Cell = string | number;

export interface Field<T> {
  /** The -o name, e.g. 'name', 'vg_name'. */
  readonly id: string;
  readonly heading: string;
  /** Minimum column width. */
  readonly width: number;
  readonly numeric?: boolean;
  readonly get: (row: T) => Cell;
}

export interface ReportOptions {
  /** -o: comma-separated field ids; '+a,b' adds them to the defaults. */
  readonly fields?: string;
  /** -O: comma-separated sort keys, '-' for descending. */
  readonly sort?: string;
  /** -S: a selection such as `name=vol && open>0`. */
  readonly select?: string;
  readonly headings?: boolean;
  readonly separator?: string;
  readonly namePrefixes?: boolean;
}

function pickFields<T>(all: readonly Field<T>[], defaults: readonly string[], spec: string | undefined): Field<T>[] {
  const byId = new Map(all.map((f) => [f.id, f]));
  let ids: string[];
  if (spec === undefined || spec === '') ids = [...defaults];
  else if (spec.startsWith('+')) ids = [...defaults, ...spec.slice(1).split(',')];
  else ids = spec.split(',');
  return ids.map((id) => {
    const f = byId.get(id.trim());
    if (!f) throw usageError(`unrecognised field: ${id}; known fields: ${all.map((x) => x.id).join(', ')}`);
    return f;
  });
}

function compareCells(a: Cell, b: Cell): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  const x = String(a);
  const y = String(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Renders the report; '' when no row is left. */
export function renderReport<T>(rows: readonly T[], all: readonly Field<T>[], defaults: readonly string[], o: ReportOptions): string {
  const fields = pickFields(all, defaults, o.fields);
  let kept = o.select ? rows.filter(compileSelection(o.select, all)) : [...rows];
  if (o.sort) {
    const keys = o.sort.split(',').map((k) => {
      const desc = k.startsWith('-');
      const id = k.replace(/^[-+]/, '');
      const f = all.find((x) => x.id === id);
      if (!f) throw usageError(`unrecognised sort field: ${id}`);
      return { f, desc };
    });
    kept = kept.sort((a, b) => {
      for (const { f, desc } of keys) {
        const c = compareCells(f.get(a), f.get(b));
        if (c !== 0) return desc ? -c : c;
      }
      return 0;
    });
  }
  if (kept.length === 0) return '';
  const headings = o.headings ?? true;
  const aligned = o.separator === undefined && headings && !o.namePrefixes;
  const sep = o.separator ?? (headings ? ' ' : ':');
  const cells = kept.map((r) => fields.map((f) => String(f.get(r))));
  const lines: string[] = [];
  if (aligned) {
    const widths = fields.map((f, i) => Math.max(f.width, f.heading.length, ...cells.map((c) => c[i]!.length)));
    const pad = (text: string, i: number): string => (fields[i]!.numeric ? text.padStart(widths[i]!) : text.padEnd(widths[i]!));
    // Headings are left-aligned whatever the field holds; number cells are right-aligned.
    lines.push(fields.map((f, i) => f.heading.padEnd(widths[i]!)).join(sep));
    for (const row of cells) lines.push(row.map(pad).join(sep));
  } else {
    if (headings) lines.push(fields.map((f) => f.heading).join(sep));
    for (const row of cells) {
      lines.push(
        o.namePrefixes ? row.map((c, i) => `DM_${fields[i]!.id.toUpperCase()}='${c}'`).join(sep) : row.join(sep),
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

// ---- -S selection: comparisons joined by && / || (also 'and' / 'or'), '!' and parentheses ----

type Pred<T> = (row: T) => boolean;

const TOKEN = /\s*(\(|\)|&&|\|\||!(?!=|~)|=~|!~|!=|<=|>=|=|<|>|"[^"]*"|'[^']*'|[^\s()&|!=<>~"']+)/y;

export function compileSelection<T>(text: string, all: readonly Field<T>[]): Pred<T> {
  const tokens: string[] = [];
  TOKEN.lastIndex = 0;
  let at = 0;
  while (at < text.length) {
    if (/^\s*$/.test(text.slice(at))) break;
    TOKEN.lastIndex = at;
    const m = TOKEN.exec(text);
    if (!m) throw usageError(`selection: cannot parse ${JSON.stringify(text.slice(at))}`);
    tokens.push(m[1]!);
    at = TOKEN.lastIndex;
  }
  let i = 0;
  const peek = (): string | undefined => tokens[i];
  const take = (): string => {
    const t = tokens[i++];
    if (t === undefined) throw usageError(`selection: ${JSON.stringify(text)} ends early`);
    return t;
  };
  const unquote = (t: string): string => (/^(["']).*\1$/.test(t) ? t.slice(1, -1) : t);
  const expr = (): Pred<T> => {
    let left = term();
    while (peek() === '||' || peek() === 'or') {
      take();
      const l = left;
      const r = term();
      left = (row) => l(row) || r(row);
    }
    return left;
  };
  const term = (): Pred<T> => {
    let left = factor();
    while (peek() === '&&' || peek() === 'and') {
      take();
      const l = left;
      const r = factor();
      left = (row) => l(row) && r(row);
    }
    return left;
  };
  const factor = (): Pred<T> => {
    const t = take();
    if (t === '!') {
      const p = factor();
      return (row) => !p(row);
    }
    if (t === '(') {
      const p = expr();
      if (take() !== ')') throw usageError(`selection: missing ')' in ${JSON.stringify(text)}`);
      return p;
    }
    const f = all.find((x) => x.id === t);
    if (!f) throw usageError(`selection: unrecognised field ${JSON.stringify(t)}`);
    const op = take();
    const raw = unquote(take());
    return comparison(f, op, raw, text);
  };
  const p = expr();
  if (i !== tokens.length) throw usageError(`selection: unexpected ${JSON.stringify(tokens[i])} in ${JSON.stringify(text)}`);
  return p;
}

function comparison<T>(f: Field<T>, op: string, raw: string, text: string): Pred<T> {
  if (op === '=~' || op === '!~') {
    let re: RegExp;
    try {
      re = new RegExp(raw);
    } catch {
      throw usageError(`selection: bad regular expression ${JSON.stringify(raw)}`);
    }
    return op === '=~' ? (row) => re.test(String(f.get(row))) : (row) => !re.test(String(f.get(row)));
  }
  const cmp = (row: T): number => {
    const v = f.get(row);
    if (f.numeric) {
      if (!/^-?\d+$/.test(raw)) throw usageError(`selection: ${f.id} needs a number, got ${JSON.stringify(raw)}`);
      return Number(v) - Number(raw);
    }
    return compareCells(String(v), raw);
  };
  if (f.numeric && !/^-?\d+$/.test(raw)) throw usageError(`selection: ${f.id} needs a number, got ${JSON.stringify(raw)}`);
  switch (op) {
    case '=':
      return (row) => cmp(row) === 0;
    case '!=':
      return (row) => cmp(row) !== 0;
    case '<':
      return (row) => cmp(row) < 0;
    case '<=':
      return (row) => cmp(row) <= 0;
    case '>':
      return (row) => cmp(row) > 0;
    case '>=':
      return (row) => cmp(row) >= 0;
    default:
      throw usageError(`selection: unknown operator ${JSON.stringify(op)} in ${JSON.stringify(text)}`);
  }
}

// ---- splitname ----

export interface SplitName {
  readonly subsystem: string;
  readonly vg: string;
  readonly lv: string;
  readonly layer: string;
}

/** One component of an LVM dm name: up to the first lone '-', with '--' standing for '-'. */
function unquote(text: string): { part: string; rest: string } {
  let part = '';
  let i = 0;
  for (; i < text.length; i++) {
    const c = text[i]!;
    if (c === '-' && i + 1 < text.length) {
      if (text[i + 1] === '-') i++;
      else break;
    }
    part += text[i]!;
  }
  return { part, rest: i < text.length ? text.slice(i + 1) : '' };
}

/** dmsetup splitname: VG-LV-LAYER for subsystem LVM (the default); other subsystems split nothing. */
export function splitName(name: string, subsystem = 'LVM'): SplitName {
  if (subsystem !== 'LVM') return { subsystem, vg: '', lv: '', layer: '' };
  const vg = unquote(name);
  const lv = unquote(vg.rest);
  const layer = unquote(lv.rest);
  return { subsystem, vg: vg.part, lv: lv.part, layer: layer.part };
}

export const SPLITNAME_FIELDS: readonly Field<SplitName>[] = [
  { id: 'subsystem', heading: 'Subsys', width: 6, get: (s) => s.subsystem },
  { id: 'vg_name', heading: 'VG', width: 4, get: (s) => s.vg },
  { id: 'lv_name', heading: 'LV', width: 4, get: (s) => s.lv },
  { id: 'lv_layer', heading: 'LVLayer', width: 7, get: (s) => s.layer },
];
export const SPLITNAME_DEFAULT = ['vg_name', 'lv_name', 'lv_layer'];
