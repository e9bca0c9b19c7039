/**
 * dmsetup's table text: one target per line, `start length type params...`, in 512-byte sectors.
 * Blank lines and lines starting with '#' are skipped, as dmsetup does; params are the rest of the line
 * with the surrounding whitespace trimmed.
 */
import { checkTargetType, type TargetLine } from '../dm';
import { sectors, type Sectors } from '../units';
import { usageError } from './errors';

const LINE = /^(\S+)\s+(\S+)\s+(\S+)(?:\s+(.*))?$/;
const DECIMAL = /^\d+$/;
/** dm_target_spec.sector_start/length are u64. */
const U64_MAX = (1n << 64n) - 1n;

/** A u64 decimal count of sectors from the command line or a table (no sign, no suffix). */
export function parseSectors(text: string, what: string): Sectors {
  if (!DECIMAL.test(text)) throw usageError(`${what} must be a whole number of sectors, got ${JSON.stringify(text)}`);
  const n = BigInt(text);
  if (n > U64_MAX) throw usageError(`${what} ${text} does not fit in 64 bits`);
  return sectors(n);
}

/** A target type the kernel can be asked for: 1..15 bytes (DmArgumentError, exit 2, before any ioctl). */
function checkType(type: string, where: string): string {
  checkTargetType(type, where);
  return type;
}

/** Parses table text; `source` names where it came from for error messages (`--table`, a file, stdin). */
export function parseTable(text: string, source: string): TargetLine[] {
  const targets: TargetLine[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `${source} line ${i + 1}`;
    const m = LINE.exec(line);
    if (!m) throw usageError(`${where}: expected "start length type [params...]", got ${JSON.stringify(line)}`);
    targets.push({
      start: parseSectors(m[1]!, `${where}: start`),
      length: parseSectors(m[2]!, `${where}: length`),
      type: checkType(m[3]!, where),
      params: m[4] ?? '',
    });
  });
  if (targets.length === 0) throw usageError(`${source}: the table has no targets`);
  return targets;
}

/** Table text as dmsetup prints and reads it. */
export const formatTable = (targets: readonly TargetLine[]): string =>
  targets.map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`.trimEnd()).join('\n');
