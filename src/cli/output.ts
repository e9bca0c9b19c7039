/**
 * What dmkit prints: dmsetup-like text for people, stable JSON objects for programs.
 *
 * JSON conventions (`--json`):
 *  - Every bigint (sectors, byte counts, block counts, and anything a target parser returns as bigint)
 *    is a decimal string, always, so 64-bit values never lose precision. Every JS number (event numbers,
 *    open counts, major/minor, version parts) is a JSON number.
 *  - A device has `name` and `uuid` (null when it has none).
 *  - A command about one device prints that device's object; the same command over all devices prints
 *    `{ "devices": [ ... ] }` holding the same objects.
 *  - Target lines are `{ start, length, type, params }` (table) or `{ start, length, type, status }`
 *    (status), with `parsed` (the typed parse, or null for a type dmkit has no parser for, or when parsing
 *    failed) and, only when parsing failed, `parseError`. The raw text is always there.
 *  - One JSON document per run, pretty-printed with two spaces and a trailing newline.
 */
import type { DevNum, DeviceInfo, DmVersion, TargetLine, TargetStatus, TargetVersion } from '../dm';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Makes a value JSON-safe under the conventions above (bigint to decimal string, undefined dropped). */
export function toJson(value: unknown): Json {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))) as Json;
}

export const renderJson = (value: unknown): string => `${JSON.stringify(toJson(value), null, 2)}\n`;

// ---- JSON objects ----

export const devJson = (d: DevNum): Json => ({ major: d.major, minor: d.minor });

export function infoJson(info: DeviceInfo): { [key: string]: Json } {
  return {
    name: info.name,
    uuid: info.uuid || null,
    dev: devJson(info.dev),
    state: info.flags.suspended ? 'SUSPENDED' : 'ACTIVE',
    suspended: info.flags.suspended,
    readOnly: info.flags.readOnly,
    tables: { live: info.flags.activePresent, inactive: info.flags.inactivePresent },
    openCount: info.openCount,
    eventNr: info.eventNr,
    targetCount: info.targetCount,
    deferredRemove: info.flags.deferredRemove,
    internalSuspend: info.flags.internalSuspend,
  };
}

export const versionJson = (v: DmVersion): Json => ({ major: v.major, minor: v.minor, patch: v.patch });

export const targetVersionJson = (t: TargetVersion): Json => ({
  name: t.name,
  version: versionJson(t.version),
});

// ---- dmsetup-style text ----

export const formatVersion = (v: DmVersion): string => `${v.major}.${v.minor}.${v.patch}`;

/** dmsetup targets / target-version: `%-16s v%d.%d.%d`. */
export const targetVersionLine = (t: TargetVersion): string => `${t.name.padEnd(16)} v${formatVersion(t.version)}`;

/**
 * One table or status line as dmsetup prints it: `start length type params`. dmsetup keeps the space
 * before empty params (`0 8 error `), and so does dmkit.
 */
export const targetLineText = (start: bigint, length: bigint, type: string, rest: string): string =>
  `${start} ${length} ${type} ${rest}`;

export const tableLineText = (t: TargetLine): string => targetLineText(t.start, t.length, t.type, t.params);
export const statusLineText = (t: TargetStatus): string => targetLineText(t.start, t.length, t.type, t.status);

function tablesPresent(info: DeviceInfo): string {
  const { activePresent: live, inactivePresent: inactive } = info.flags;
  if (live && inactive) return 'LIVE & INACTIVE';
  if (live) return 'LIVE';
  if (inactive) return 'INACTIVE';
  return 'None';
}

/** dmsetup info's long form (without Read Ahead, which needs the block device node). */
export function infoText(info: DeviceInfo, readAhead?: number): string {
  const state =
    (info.flags.suspended ? 'SUSPENDED' : 'ACTIVE') +
    (info.flags.readOnly ? ' (READ-ONLY)' : '') +
    (info.flags.deferredRemove ? ' (DEFERRED REMOVE)' : '');
  const lines = [
    `Name:              ${info.name}`,
    `State:             ${state}`,
    ...(readAhead === undefined ? [] : [`Read Ahead:        ${readAhead}`]),
    `Tables present:    ${tablesPresent(info)}`,
    `Open count:        ${info.openCount}`,
    `Event number:      ${info.eventNr}`,
    `Major, minor:      ${info.dev.major}, ${info.dev.minor}`,
    `Number of targets: ${info.targetCount}`,
  ];
  if (info.uuid) lines.push(`UUID: ${info.uuid}`);
  return lines.join('\n');
}

/** dmsetup deps: `N dependencies\t: (maj, min) ...`. */
export const depsText = (deps: readonly DevNum[]): string =>
  `${deps.length} dependencies\t:${deps.map((d) => ` (${d.major}, ${d.minor})`).join('')}`;

/** dmsetup ls: `name\t(maj:min)`. */
export const lsLine = (name: string, dev: DevNum): string => `${name}\t(${dev.major}:${dev.minor})`;

/** Adds the newline dmsetup adds after a message reply unless the reply has one. */
export const replyText = (reply: string): string => (reply === '' || reply.endsWith('\n') ? reply : `${reply}\n`);
