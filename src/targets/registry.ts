/** Name-to-codec lookup for generic callers (the CLI's --json), covering in-tree and dmkit names. */
import type { TargetLine } from '../dm/payload';
import type { Sectors } from '../units';
import { cache } from './cache';
import { clone } from './clone';
import { checkObject } from './codec';
import { TargetParamError } from './errors';
import { era } from './era';
import { flakey } from './flakey';
import { linear } from './linear';
import { logWrites } from './log-writes';
import { snapshot } from './snapshot';
import { snapshotMerge } from './snapshot-merge';
import { snapshotOrigin } from './snapshot-origin';
import { thin } from './thin';
import { thinPool } from './thin-pool';

const CODECS = {
  linear,
  flakey,
  'log-writes': logWrites,
  era,
  clone,
  cache,
  'snapshot-origin': snapshotOrigin,
  snapshot,
  'snapshot-merge': snapshotMerge,
  'thin-pool': thinPool,
  thin,
} as const;

type Codecs = typeof CODECS;
/** A target by its in-tree name. */
export type TargetKind = keyof Codecs;
export type AnyTargetCodec = Codecs[TargetKind];
export type ParamsOf<K extends TargetKind> = ReturnType<Codecs[K]['parse']>;
export type StatusOf<K extends TargetKind> = ReturnType<Codecs[K]['parseStatus']>;
export type AnyTargetParams = ParamsOf<TargetKind>;
export type AnyTargetStatus = StatusOf<TargetKind>;

const KINDS = new Map<string, TargetKind>(
  (Object.keys(CODECS) as TargetKind[]).flatMap((kind) => CODECS[kind].names.map((name) => [name, kind] as const)),
);

/** Every type name with a codec, in-tree and dmkit. */
export const knownTargetTypes: readonly string[] = Object.freeze([...KINDS.keys()]);

/** The in-tree kind behind a type name ('dmkit-era' -> 'era'), or undefined for other targets. */
export function targetKind(type: string): TargetKind | undefined {
  return KINDS.get(type);
}

export function codecFor<K extends TargetKind>(type: K): Codecs[K];
export function codecFor(type: string): AnyTargetCodec | undefined;
export function codecFor(type: string): AnyTargetCodec | undefined {
  const kind = KINDS.get(type);
  return kind === undefined ? undefined : CODECS[kind];
}

interface LineBase {
  readonly start: Sectors;
  readonly length: Sectors;
  /** The type name as loaded (may be a dmkit name). */
  readonly type: string;
  /** The params string as given. */
  readonly text: string;
}

export type ParsedTargetLine = { [K in TargetKind]: LineBase & { readonly kind: K; readonly params: ParamsOf<K> } }[TargetKind];
/** A line of a target this module has no codec for (crypt, error, ...): kept as text. */
export type ForeignTargetLine = LineBase & { readonly kind: null; readonly params: null };

/** Parses every line of a table; lines of unknown targets pass through with params null. */
export function parseTable(lines: readonly TargetLine[]): (ParsedTargetLine | ForeignTargetLine)[] {
  if (!Array.isArray(lines)) throw new TargetParamError('ERR_TARGET_BAD_VALUE', 'table', 'lines', 'must be an array of target lines');
  return lines.map((line: unknown, i) => {
    checkObject('table', `lines[${i}]`, line);
    return parseLine(line as TargetLine);
  });
}

function parseLine(line: TargetLine): ParsedTargetLine | ForeignTargetLine {
  const base = { start: line.start, length: line.length, type: line.type, text: line.params };
  const kind = KINDS.get(line.type);
  if (kind === undefined) return { ...base, kind: null, params: null };
  return { ...base, kind, params: CODECS[kind].parse(line.params) } as ParsedTargetLine;
}

/** Parses an INFO status for a type name; null when the type has no codec. */
export function parseStatusFor(type: string, text: string): AnyTargetStatus | null {
  const codec = codecFor(type);
  return codec === undefined ? null : codec.parseStatus(text);
}
