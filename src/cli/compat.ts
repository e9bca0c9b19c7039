/**
 * dmsetup habits the CLI shares across commands: devices by -j/-m, read-ahead from sysfs, block device
 * names, the concise table format, `ls --tree`, and the udev cookie semaphores (udevcookies,
 * udevcomplete, udevcomplete_all).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { DmError, loadNative, type DevId, type DevNum, type DeviceMapper, type TargetLine } from '../dm';
import { sectors } from '../units';
import type { CommandContext } from './context';
import { CliError, ExitCode, usageError } from './errors';
import { parseSectors } from './table-text';

/**
 * The devices a command addresses: -j MAJOR -m MINOR (both, as dmsetup insists), -u UUID, or NAMEs.
 * Resolving -j/-m needs the device list, so it takes the open DeviceMapper.
 */
export async function resolveDevices(ctx: CommandContext, names: readonly string[], uuid: string | undefined): Promise<DevId[]> {
  const { major, minor } = ctx.globals;
  if (major !== undefined || minor !== undefined) {
    if (major === undefined || minor === undefined) throw usageError('please give both the major (-j) and the minor (-m) number');
    if (names.length > 0 || uuid !== undefined) throw usageError('give the device by -j/-m, or by NAME or -u UUID, not both');
    const dm = await ctx.dm();
    const found = (await dm.list()).find((d) => d.dev.major === major && d.dev.minor === minor);
    if (!found) throw new DmError(`no device with number ${major}:${minor}`, { code: 'ENXIO', errno: 6, command: 'DM_DEV_STATUS' });
    return [{ name: found.name }];
  }
  if (uuid !== undefined) {
    if (names.length > 0) throw usageError('give the device as NAME or as -u UUID, not both');
    return [{ uuid }];
  }
  return names.map((name) => ({ name }));
}

/** True when the command named no device at all (listing commands then cover every device). */
export const namesNoDevice = (ctx: CommandContext, names: readonly string[], uuid: string | undefined): boolean =>
  names.length === 0 && uuid === undefined && ctx.globals.major === undefined && ctx.globals.minor === undefined;

const sysDev = (dev: DevNum): string => `/sys/dev/block/${dev.major}:${dev.minor}`;

/** The device's read-ahead in sectors (sysfs bdi/read_ahead_kb x 2), or undefined when sysfs lacks it. */
export function readAheadSectors(dev: DevNum): number | undefined {
  try {
    const kb = readFileSync(`${sysDev(dev)}/bdi/read_ahead_kb`, 'utf8').trim();
    return /^\d+$/.test(kb) ? Number(kb) * 2 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * --readahead: 'auto' leaves the kernel's choice, 'none' sets 0, N sets N sectors, +N raises it to at
 * least N. Checked up front by parseReadAhead; applied through sysfs after create/resume.
 */
export type ReadAhead = { kind: 'auto' } | { kind: 'set' | 'atLeast'; sectors: number };

export function parseReadAhead(text: string | undefined): ReadAhead | undefined {
  if (text === undefined) return undefined;
  if (text === 'auto') return { kind: 'auto' };
  if (text === 'none') return { kind: 'set', sectors: 0 };
  const m = /^(\+?)(\d+)$/.exec(text);
  if (!m || Number(m[2]) > 0x7fffffff) throw usageError(`--readahead must be auto, none, N or +N sectors, got ${JSON.stringify(text)}`);
  return { kind: m[1] ? 'atLeast' : 'set', sectors: Number(m[2]) };
}

export function applyReadAhead(ctx: CommandContext, name: string, dev: DevNum, ra: ReadAhead | undefined): void {
  if (!ra || ra.kind === 'auto') return;
  const current = readAheadSectors(dev);
  const want = ra.kind === 'atLeast' && current !== undefined ? Math.max(current, ra.sectors) : ra.sectors;
  try {
    writeFileSync(`${sysDev(dev)}/bdi/read_ahead_kb`, `${Math.ceil(want / 2)}\n`);
    ctx.verbose(`${name} (${dev.major}:${dev.minor}): read ahead is ${want}`);
  } catch (e) {
    ctx.warn(`${name}: could not set read-ahead: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The kernel's name for a block device (dm-0, ram1), or maj:min when sysfs cannot tell. */
export function blockDeviceName(dev: DevNum): string {
  try {
    const m = /^DEVNAME=(.*)$/m.exec(readFileSync(`${sysDev(dev)}/uevent`, 'utf8'));
    if (m) return m[1]!;
  } catch {
    // no sysfs entry (a fake, or a device gone meanwhile)
  }
  return `${dev.major}:${dev.minor}`;
}

// ---- the concise format: name,uuid,minor,flags,table[,table]... per device, ';' between devices ----

const escapeConcise = (text: string): string => text.replace(/[\\,;]/g, (c) => `\\${c}`);

export function conciseDevice(name: string, uuid: string, minor: number, readOnly: boolean, lines: readonly string[]): string {
  return [escapeConcise(name), escapeConcise(uuid), String(minor), readOnly ? 'ro' : 'rw', ...lines.map(escapeConcise)].join(',');
}

/** Splits on `sep` where it is not escaped by a backslash, and drops the escapes. */
function splitEscaped(text: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '\\' && i + 1 < text.length) {
      cur += c + text[i + 1]!;
      i++;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  out.push(cur);
  return out;
}

const unescape = (text: string): string => text.replace(/\\(.)/g, '$1');

export interface ConciseSpec {
  readonly name: string;
  readonly uuid: string | undefined;
  readonly minor: number | undefined;
  readonly readOnly: boolean;
  readonly targets: TargetLine[];
}

/** Parses `create --concise` input: `name,uuid,minor,flags,table[,table]...[;next device]`. */
export function parseConcise(text: string): ConciseSpec[] {
  const specs: ConciseSpec[] = [];
  for (const raw of splitEscaped(text.trim(), ';')) {
    if (raw.trim() === '') continue;
    const parts = splitEscaped(raw, ',');
    if (parts.length < 5) throw usageError(`concise device ${JSON.stringify(raw)}: expected name,uuid,minor,flags,table[,table...]`);
    const [name, uuid, minor, flags, ...lines] = parts.map(unescape) as [string, string, string, string, ...string[]];
    if (flags !== 'ro' && flags !== 'rw') throw usageError(`concise device ${JSON.stringify(name)}: flags must be ro or rw, got ${JSON.stringify(flags)}`);
    if (minor !== '' && !/^\d+$/.test(minor)) throw usageError(`concise device ${JSON.stringify(name)}: bad minor ${JSON.stringify(minor)}`);
    const targets = lines.map((line, i) => {
      const m = /^\s*(\S+)\s+(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!m) throw usageError(`concise device ${JSON.stringify(name)} table line ${i + 1}: expected "start length type [params...]"`);
      return { start: parseSectors(m[1]!, 'start'), length: parseSectors(m[2]!, 'length'), type: m[3]!, params: (m[4] ?? '').trim() };
    });
    specs.push({ name, uuid: uuid === '' ? undefined : uuid, minor: minor === '' ? undefined : Number(minor), readOnly: flags === 'ro', targets });
  }
  if (specs.length === 0) throw usageError('create --concise: no device given');
  return specs;
}

// ---- ls --tree ----

interface TreeDevice {
  readonly name: string;
  readonly dev: DevNum;
  readonly deps: readonly DevNum[];
}

/**
 * dmsetup ls --tree: each device not used by another at the top, what it uses below it. A used dm device
 * shows as `└─NAME (maj:min)` (no space after the branch) with its own children indented by three more
 * columns; other devices as `└─ (maj:min)`.
 */
export function lsTree(devices: readonly TreeDevice[], ascii: boolean): string[] {
  const byDev = new Map(devices.map((d) => [`${d.dev.major}:${d.dev.minor}`, d]));
  const used = new Set(devices.flatMap((d) => d.deps.map((x) => `${x.major}:${x.minor}`)));
  const [branch, last, pipe] = ascii ? ['|-', '`-', '|'] : ['├─', '└─', '│'];
  const lines: string[] = [];
  const walk = (d: TreeDevice, prefix: string): void => {
    d.deps.forEach((x, i) => {
      const isLast = i === d.deps.length - 1;
      const child = byDev.get(`${x.major}:${x.minor}`);
      lines.push(`${prefix}${isLast ? last : branch}${child ? child.name : ''} (${x.major}:${x.minor})`);
      if (child) walk(child, `${prefix}${isLast ? '   ' : `${pipe}  `}`);
    });
  };
  for (const d of devices) {
    if (used.has(`${d.dev.major}:${d.dev.minor}`)) continue;
    lines.push(`${d.name} (${d.dev.major}:${d.dev.minor})`);
    walk(d, ' ');
  }
  return lines;
}

// ---- udev cookies: SysV semaphores whose key has 0x0D4D in its upper half ----

const COOKIE_MAGIC = 0x0d4d;

export interface CookieSemaphore {
  readonly key: number;
  readonly id: number;
  readonly otime: number;
  readonly ctime: number;
}

/** The udev cookie semaphores in /proc/sysvipc/sem. */
export function cookieSemaphores(procText = readFileSync('/proc/sysvipc/sem', 'utf8')): CookieSemaphore[] {
  const lines = procText.trim().split('\n');
  const head = (lines.shift() ?? '').trim().split(/\s+/);
  const col = (name: string): number => head.indexOf(name);
  const out: CookieSemaphore[] = [];
  for (const line of lines) {
    const f = line.trim().split(/\s+/);
    const key = Number(f[col('key')]) >>> 0;
    if (key >>> 16 !== COOKIE_MAGIC) continue;
    out.push({ key, id: Number(f[col('semid')]), otime: Number(f[col('otime')]), ctime: Number(f[col('ctime')]) });
  }
  return out;
}

const cookieOf = (key: number): string => `0x${(key >>> 0).toString(16)}`;

function timeText(seconds: number): string {
  // dmsetup prints ctime(3) without its newline, for a never-operated semaphore too (the epoch).
  const d = new Date(seconds * 1000);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return `${days[d.getDay()]} ${months[d.getMonth()]} ${String(d.getDate()).padStart(2)} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())} ${d.getFullYear()}`;
}

export function udevcookiesText(sems: readonly CookieSemaphore[], value: (id: number) => number): string[] {
  const lines = ['Cookie       Semid      Value      Last semop time           Last change time'];
  for (const s of sems) {
    lines.push(`${cookieOf(s.key).padEnd(12)} ${String(s.id).padEnd(10)} ${String(value(s.id)).padEnd(10)} ${timeText(s.otime).padEnd(25)} ${timeText(s.ctime)}`);
  }
  return lines;
}

/** The semaphore operations the udev verbs need, from the addon (fakes in tests). */
export interface CookieOps {
  semGetValue(id: number): number;
  semAdd(id: number, delta: number): void;
  semRemove(id: number): void;
}

export const nativeCookieOps = (): CookieOps => loadNative();

/**
 * A cookie as dmsetup reads one (strtoul, base 0): decimal, 0x hex or 0 octal, not 0, at most 32 bits.
 * Anything else is undefined.
 */
export function parseCookie(text: string): number | undefined {
  const m = /^\s*\+?(?:0x([0-9a-f]+)|(0[0-7]*)|([1-9][0-9]*))$/i.exec(text);
  if (!m) return undefined;
  const n = m[1] !== undefined ? parseInt(m[1], 16) : m[2] !== undefined ? parseInt(m[2], 8) : Number(m[3]);
  return Number.isSafeInteger(n) && n > 0 && n <= 0xffffffff ? n : undefined;
}

/**
 * udevcomplete COOKIE: the notify rule's decrement, as dmsetup does it. The cookie's upper half may
 * carry udev flags and is replaced by the magic; a cookie whose lower half is 0 carries flags only and
 * is done at once. With udev sync off (`syncActive` false: --noudevsync, $DM_DISABLE_UDEV, or udev not
 * running) there is nothing to signal, and nothing is touched. Returns whether a semaphore was
 * decremented.
 */
export function udevComplete(cookieText: string, sems: readonly CookieSemaphore[], ops: CookieOps, syncActive = true): boolean {
  const n = parseCookie(cookieText);
  if (n === undefined) throw usageError(`udevcomplete: bad cookie ${JSON.stringify(cookieText)} (a number: decimal, 0x hex or 0 octal, not 0)`);
  if ((n & 0xffff) === 0 || !syncActive) return false;
  const key = ((COOKIE_MAGIC << 16) | (n & 0xffff)) >>> 0;
  const sem = sems.find((s) => s.key === key);
  if (!sem) throw new CliError(`udevcomplete: no semaphore for cookie ${cookieOf(key)}`, 'ENOENT', ExitCode.FAILED);
  try {
    ops.semAdd(sem.id, -1);
  } catch (e) {
    if ((e as { code?: unknown } | null)?.code === 'EAGAIN') {
      throw new CliError(`udevcomplete: cookie ${cookieOf(key)} (semid ${sem.id}) is already at 0: incorrect semaphore state`, 'EAGAIN', ExitCode.FAILED);
    }
    throw e;
  }
  return true;
}

/** Whether udev sync is on, as libdm decides it: not --noudevsync, no $DM_DISABLE_UDEV, and udev running. */
export function udevSyncActive(noudevsync: boolean, env: Readonly<Record<string, string | undefined>>, udevRunning: () => boolean): boolean {
  return !noudevsync && env.DM_DISABLE_UDEV === undefined && udevRunning();
}

/** The age argument of udevcomplete_all in minutes, read as dmsetup's sscanf("%u") reads it. */
export function parseAgeMinutes(ageText: string | undefined): number {
  if (ageText === undefined) return 0;
  const m = /^\s*\+?(\d+)/.exec(ageText);
  if (!m || Number(m[1]) > 0xffffffff) throw usageError(`udevcomplete_all: bad age ${JSON.stringify(ageText)} (whole minutes)`);
  return Number(m[1]);
}

/**
 * udevcomplete_all [AGE_MIN]: removes the cookie semaphores neither changed nor operated on in the last
 * AGE_MIN minutes (default 0: all). Returns how many were removed and how many were skipped.
 */
export function udevCompleteAll(
  ageText: string | undefined,
  sems: readonly CookieSemaphore[],
  ops: CookieOps,
  nowSeconds: number,
): { removed: number; skipped: number } {
  const age = parseAgeMinutes(ageText);
  let removed = 0;
  let skipped = 0;
  for (const s of sems) {
    if (s.ctime + age * 60 > nowSeconds || s.otime + age * 60 > nowSeconds) {
      skipped++;
      continue;
    }
    ops.semRemove(s.id);
    removed++;
  }
  return { removed, skipped };
}

/**
 * dmsetup's yes/no prompt over the whole of stdin: the last y or n on a line counts once that line
 * ends; input that ends first is a no. `newline` says whether dmsetup adds a line break after the
 * prompt (when the input did not end with one).
 */
export function yesNoAnswer(input: string): { yes: boolean; newline: boolean } {
  let answer = '';
  for (const ch of input) {
    const c = ch.toLowerCase();
    if (c === 'y' || c === 'n') answer = c;
    if (c === '\n' && answer) return { yes: answer === 'y', newline: false };
  }
  return { yes: false, newline: true };
}

/** udevcomplete_all's lines: dmsetup's warning (stderr) and its closing line. */
export const udevCompleteAllWarning = (age: number): string =>
  `WARNING: This operation will destroy all semaphores ${age ? `older than ${age} minutes ` : ''}with keys that have a prefix 3405 (0xd4d).`;
export const udevCompleteAllDone = (r: { removed: number; skipped: number }): string =>
  `${r.removed} semaphores with keys prefixed by 3405 (0xd4d) destroyed. ${r.skipped} skipped.`;

/** wipe_table: an error table of the live table's size, made live (dmsetup wipe_table). */
export async function wipeTable(dm: DeviceMapper, id: DevId): Promise<void> {
  const table = await dm.table(id);
  const size = table.reduce((sum, t) => sum + t.length, 0n);
  if (size === 0n) throw new CliError('wipe_table: the device has no live table', 'ENXIO', ExitCode.NOT_FOUND);
  await dm.load(id, [{ start: sectors(0), length: sectors(size), type: 'error', params: '' }]);
  await dm.resume(id);
}
