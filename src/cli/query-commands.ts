/**
 * Commands that report: status, table, info, ls, deps, targets, version, target-version, message, wait.
 * Text output follows dmsetup; `--json` prints one document (conventions in output.ts).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { DevId, DeviceInfo, DeviceMapper, TargetLine, TargetStatus } from '../dm';
import { DmError } from '../dm';
import { inactiveOpt, jsonOpt, nameArg, noflushOpt, targetOpt, uuidOpt, type CommandGroup } from './commands';
import { deviceId, optionalDeviceId, type CommandContext } from './context';
import { usageError } from './errors';
import {
  depsText,
  devJson,
  formatVersion,
  infoJson,
  infoText,
  lsLine,
  replyText,
  statusLineText,
  tableLineText,
  targetVersionJson,
  targetVersionLine,
  versionJson,
  type Json,
} from './output';
import { parseStatusField, parseTableField } from './parsing';
import { parseSectors } from './table-text';
import { blockDeviceName, conciseDevice, lsTree, namesNoDevice, readAheadSectors, resolveDevices } from './compat';
import { renderReport, type Field } from './report';
import { reportOptions, type ReportArgs } from './report-options';

/** One row of `info -c`: the device's info plus what the relationship and read-ahead fields need. */
interface InfoRow {
  readonly info: DeviceInfo;
  readonly readAhead: number | undefined;
  readonly deps: readonly { major: number; minor: number }[];
  readonly depNames: readonly string[];
}

async function infoRows(dm: DeviceMapper, infos: readonly DeviceInfo[]): Promise<InfoRow[]> {
  const list = await dm.list();
  const nameOf = new Map(list.map((d) => [`${d.dev.major}:${d.dev.minor}`, d.name]));
  return Promise.all(
    infos.map(async (info) => {
      const deps = info.flags.activePresent ? await dm.deps({ name: info.name }).catch(() => []) : [];
      const depNames = deps.map((d) => nameOf.get(`${d.major}:${d.minor}`)).filter((n): n is string => n !== undefined);
      return { info, readAhead: readAheadSectors(info.dev), deps, depNames };
    }),
  );
}

const tablesLoaded = (i: DeviceInfo): string =>
  i.flags.activePresent ? (i.flags.inactivePresent ? 'Both' : 'Live') : i.flags.inactivePresent ? 'Inactive' : 'None';

/** dmsetup's info fields: ids, headings and widths as `dmsetup info -c -o help` and its output show them. */
const INFO_FIELDS: readonly Field<InfoRow>[] = [
  { id: 'name', heading: 'Name', width: 16, get: (r) => r.info.name },
  { id: 'uuid', heading: 'UUID', width: 32, get: (r) => r.info.uuid },
  { id: 'read_ahead', heading: 'RAhead', width: 6, numeric: true, get: (r) => r.readAhead ?? '' },
  { id: 'blkdevname', heading: 'BlkDevName', width: 16, get: (r) => blockDeviceName(r.info.dev) },
  {
    id: 'attr',
    heading: 'Stat',
    width: 4,
    get: (r) =>
      (r.info.flags.activePresent ? 'L' : '-') + (r.info.flags.inactivePresent ? 'I' : '-') + (r.info.flags.suspended ? 's' : '-') + (r.info.flags.readOnly ? 'r' : 'w'),
  },
  { id: 'tables_loaded', heading: 'Tables', width: 6, get: (r) => tablesLoaded(r.info) },
  { id: 'suspended', heading: 'Suspended', width: 9, get: (r) => (r.info.flags.suspended ? 'Suspended' : 'Active') },
  { id: 'readonly', heading: 'Read-only', width: 9, get: (r) => (r.info.flags.readOnly ? 'Read-only' : 'Writeable') },
  { id: 'devno', heading: 'DevNo', width: 5, get: (r) => `${r.info.dev.major}:${r.info.dev.minor}` },
  { id: 'major', heading: 'Maj', width: 3, numeric: true, get: (r) => r.info.dev.major },
  { id: 'minor', heading: 'Min', width: 3, numeric: true, get: (r) => r.info.dev.minor },
  { id: 'open', heading: 'Open', width: 4, numeric: true, get: (r) => r.info.openCount },
  { id: 'segments', heading: 'Targ', width: 4, numeric: true, get: (r) => r.info.targetCount },
  { id: 'events', heading: 'Event', width: 6, numeric: true, get: (r) => r.info.eventNr },
  { id: 'device_count', heading: '#Devs', width: 5, numeric: true, get: (r) => r.deps.length },
  { id: 'devs_used', heading: 'DevNamesUsed', width: 16, get: (r) => r.depNames.join(',') },
  { id: 'devnos_used', heading: 'DevNosUsed', width: 16, get: (r) => r.deps.map((d) => `${d.major}:${d.minor}`).join(',') },
  { id: 'blkdevs_used', heading: 'BlkDevNamesUsed', width: 16, get: (r) => r.deps.map((d) => blockDeviceName(d)).join(',') },
];
const INFO_DEFAULT = ['name', 'major', 'minor', 'attr', 'open', 'segments', 'events', 'uuid'];

/** dmkit's own version, from the package.json above this file (src/cli or dist/src/cli). */
export function dmkitVersion(): string {
  for (let dir = __dirname; dirname(dir) !== dir; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'dmkit' && pkg.version) return pkg.version;
    } catch {
      // not here; keep walking up
    }
  }
  return 'unknown';
}

interface DeviceRef {
  readonly name: string;
  readonly uuid: string;
}

/** Every device, by name, skipping ones removed between the listing and the query. */
async function forEachDevice<T>(dm: DeviceMapper, fn: (d: DeviceRef) => Promise<T>): Promise<Array<{ device: DeviceRef; value: T }>> {
  const devices = (await dm.list()).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out: Array<{ device: DeviceRef; value: T }> = [];
  for (const d of devices) {
    try {
      out.push({ device: d, value: await fn(d) });
    } catch (e) {
      if (e instanceof DmError && e.code === 'ENXIO') continue;
      throw e;
    }
  }
  return out;
}

/** The name and uuid of a device addressed by either, for JSON objects. */
async function refOf(dm: DeviceMapper, id: DevId): Promise<DeviceRef> {
  const info = await dm.info(id);
  return { name: info.name, uuid: info.uuid };
}

/** dmsetup hides crypt keys in `table` unless --showkeys; keyring references (':...') are not secret. */
export function maskCryptKey(t: TargetLine): TargetLine {
  if (t.type !== 'crypt') return t;
  const words = t.params.split(' ');
  if (words.length < 2 || words[1]!.startsWith(':')) return t;
  words[1] = '0'.repeat(words[1]!.length);
  return { ...t, params: words.join(' ') };
}

const tableLineJson = (t: TargetLine): Json => ({
  start: t.start.toString(),
  length: t.length.toString(),
  type: t.type,
  params: t.params,
  ...parseTableField(t.type, t.params),
});

const statusLineJson = (t: TargetStatus): Json => ({
  start: t.start.toString(),
  length: t.length.toString(),
  type: t.type,
  status: t.status,
  ...parseStatusField(t.type, t.status),
});

const deviceJson = (d: DeviceRef, extra: { [key: string]: Json }): Json => ({ name: d.name, uuid: d.uuid || null, ...extra });

interface QueryArgs {
  name?: string;
  uuid?: string;
  json: boolean;
  inactive: boolean;
}

type Lines = 'status' | 'table';

/** status and table share their shape: one device's lines, or every device's lines prefixed by name. */
function linesCommand(kind: Lines): CommandGroup {
  const describe =
    kind === 'status'
      ? 'Show target status lines (all devices when NAME is omitted)'
      : 'Show table lines (all devices when NAME is omitted)';
  return (y, schedule) =>
    y.command(
      `${kind} [name]`,
      describe,
      (b) => {
        const c = b
          .positional('name', nameArg)
          .option('uuid', uuidOpt)
          .option('target', targetOpt)
          .option('inactive', inactiveOpt)
          .option('json', jsonOpt);
        return kind === 'status'
          ? c.option('noflush', noflushOpt)
          : c
              .option('showkeys', { type: 'boolean', default: false, describe: 'show crypt keys' })
              .option('concise', { type: 'boolean', default: false, describe: 'name,uuid,minor,ro|rw,line[,line]... per device, ";" between' });
      },
      (argv) => {
        const a = argv as unknown as QueryArgs & { target?: string; noflush?: boolean; showkeys?: boolean; concise?: boolean };
        schedule(kind, async (ctx) => {
          const id = namesNoDevice(ctx, a.name === undefined ? [] : [a.name], a.uuid)
            ? undefined
            : (await resolveDevices(ctx, a.name === undefined ? [] : [a.name], a.uuid))[0];
          const dm = await ctx.dm();
          if (a.concise) {
            const ids: DevId[] = id ? [id] : (await dm.list()).sort((x, z) => (x.name < z.name ? -1 : x.name > z.name ? 1 : 0)).map((d) => ({ name: d.name }));
            const parts: string[] = [];
            for (const dev of ids) {
              const info = await dm.info(dev, { inactive: a.inactive });
              const lines = (await dm.table(dev, { inactive: a.inactive })).map((t) => tableLineText(a.showkeys ? t : maskCryptKey(t)));
              parts.push(conciseDevice(info.name, info.uuid, info.dev.minor, info.flags.readOnly, lines));
            }
            if (parts.length > 0) ctx.print(parts.join(';'));
            return;
          }
          const read = async (dev: DevId): Promise<Array<{ text: string; json: Json }>> => {
            const lines =
              kind === 'status'
                ? (await dm.status(dev, { inactive: a.inactive, noflush: a.noflush })).map((t) => ({
                    type: t.type,
                    text: statusLineText(t),
                    json: statusLineJson(t),
                  }))
                : (await dm.table(dev, { inactive: a.inactive }))
                    .map((t) => (a.showkeys ? t : maskCryptKey(t)))
                    .map((t) => ({ type: t.type, text: tableLineText(t), json: tableLineJson(t) }));
            return lines.filter((l) => a.target === undefined || l.type === a.target);
          };
          if (id) {
            const lines = await read(id);
            if (a.json) ctx.printJson(deviceJson(await refOf(dm, id), { targets: lines.map((l) => l.json) }));
            else ctx.print(...lines.map((l) => l.text));
            return;
          }
          const all = await forEachDevice(dm, (d) => read({ name: d.name }));
          // With --target, dmsetup shows only the devices that have such a target.
          const shown = a.target === undefined ? all : all.filter((r) => r.value.length > 0);
          if (a.json) {
            ctx.printJson({ devices: shown.map((r) => deviceJson(r.device, { targets: r.value.map((l) => l.json) })) });
          } else if (all.length === 0) {
            ctx.print('No devices found');
          } else {
            ctx.print(...shown.flatMap((r) => r.value.map((l) => `${r.device.name}: ${l.text}`)));
          }
        });
      },
    );
}

async function printTargetVersions(ctx: CommandContext, types: readonly string[], json: boolean): Promise<void> {
  const dm = await ctx.dm();
  const versions = [];
  for (const type of types) versions.push(await dm.targetVersion(type));
  if (json) ctx.printJson(versions.length === 1 ? targetVersionJson(versions[0]!) : { targets: versions.map(targetVersionJson) });
  else ctx.print(...versions.map(targetVersionLine));
}

/** `wait` and `message` take `-u UUID` in place of NAME, so their positionals are sorted out here. */
function splitDevice(args: string[], uuid: string | undefined): { id: DevId; rest: string[] } {
  if (uuid !== undefined) return { id: deviceId(undefined, uuid), rest: args };
  const [name, ...rest] = args;
  return { id: deviceId(name, undefined), rest };
}

export const queryCommands: CommandGroup = (y, schedule) => {
  y = linesCommand('status')(y, schedule);
  y = linesCommand('table')(y, schedule);
  return y
    .command(
      'info [names..]',
      'Show device state (all devices when NAME is omitted); -c for columns',
      (b) =>
        reportOptions(
          b.positional('names', { ...nameArg, array: true }).option('uuid', uuidOpt).option('inactive', inactiveOpt).option('json', jsonOpt),
        ),
      (argv) => {
        const a = argv as unknown as Omit<QueryArgs, 'name'> & ReportArgs & { names?: string[]; o?: string };
        schedule('info', async (ctx) => {
          const names = a.names ?? [];
          const all = namesNoDevice(ctx, names, a.uuid);
          const ids = all ? [] : await resolveDevices(ctx, names, a.uuid);
          const dm = await ctx.dm();
          const infos: DeviceInfo[] = all
            ? (await forEachDevice(dm, (d) => dm.info({ name: d.name }, { inactive: a.inactive }))).map((r) => r.value)
            : await Promise.all(ids.map((id) => dm.info(id, { inactive: a.inactive })));
          if (a.json) {
            ctx.printJson(all ? { devices: infos.map(infoJson) } : infos.length === 1 ? infoJson(infos[0]!) : { devices: infos.map(infoJson) });
          } else if (a.columns || a.o !== undefined) {
            ctx.write(renderReport(await infoRows(dm, infos), INFO_FIELDS, INFO_DEFAULT, a.report));
          } else if (infos.length === 0) {
            ctx.print('No devices found');
          } else {
            // dmsetup ends each device's block with an empty line, the last one too.
            ctx.print(...infos.map((i) => `${infoText(i, readAheadSectors(i.dev))}\n`));
          }
        });
      },
    )
    .command(
      'ls',
      'List devices: name (major:minor); --tree, -o devname|blkdevname|devno (and ascii for --tree)',
      (b) =>
        b
          .option('target', targetOpt)
          .option('json', jsonOpt)
          .option('tree', { type: 'boolean', default: false, describe: 'show what each device uses, as a tree' })
          .option('o', { type: 'string', requiresArg: true, describe: 'devname, blkdevname or devno; with --tree also ascii' }),
      (argv) => {
        const a = argv as unknown as { target?: string; json: boolean; tree: boolean; o?: string };
        schedule('ls', async (ctx) => {
          const dm = await ctx.dm();
          let devices = (await dm.list()).sort((x, z) => (x.name < z.name ? -1 : x.name > z.name ? 1 : 0));
          if (a.target !== undefined) {
            const withType = await forEachDevice(dm, async (d) => (await dm.table({ name: d.name })).some((t) => t.type === a.target));
            const keep = new Set(withType.filter((r) => r.value).map((r) => r.device.name));
            devices = devices.filter((d) => keep.has(d.name));
          }
          if (a.json) {
            ctx.printJson({
              devices: devices.map((d) => ({ name: d.name, uuid: d.uuid || null, dev: devJson(d.dev), eventNr: d.eventNr })),
            });
          } else if (devices.length === 0) {
            ctx.print('No devices found');
          } else if (a.tree) {
            const withDeps = await Promise.all(devices.map(async (d) => ({ ...d, deps: await dm.deps({ name: d.name }).catch(() => []) })));
            ctx.print(...lsTree(withDeps, (a.o ?? '').split(',').includes('ascii')));
          } else {
            const how = a.o ?? 'devno';
            if (!['devno', 'devname', 'blkdevname'].includes(how)) throw usageError(`ls -o takes devno, devname or blkdevname, got ${JSON.stringify(how)}`);
            ctx.print(
              ...devices.map((d) =>
                how === 'devname'
                  ? `${d.name}\t(${d.name})`
                  : how === 'blkdevname'
                    ? `${d.name}\t(${blockDeviceName(d.dev)})`
                    : a.target !== undefined
                      ? `${d.name}\t(${d.dev.major}, ${d.dev.minor})` // dmsetup's --target listing prints "maj, min"
                      : lsLine(d.name, d.dev),
              ),
            );
          }
        });
      },
    )
    .command(
      'deps [name]',
      'Show the devices a device depends on (all devices when NAME is omitted)',
      (b) => b.positional('name', nameArg).option('uuid', uuidOpt).option('inactive', inactiveOpt).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as QueryArgs;
        schedule('deps', async (ctx) => {
          const id = optionalDeviceId(a.name, a.uuid);
          const dm = await ctx.dm();
          if (id) {
            const deps = await dm.deps(id, { inactive: a.inactive });
            if (a.json) ctx.printJson(deviceJson(await refOf(dm, id), { deps: deps.map(devJson) }));
            else ctx.print(depsText(deps));
            return;
          }
          const all = await forEachDevice(dm, (d) => dm.deps({ name: d.name }, { inactive: a.inactive }));
          if (a.json) ctx.printJson({ devices: all.map((r) => deviceJson(r.device, { deps: r.value.map(devJson) })) });
          else if (all.length === 0) ctx.print('No devices found');
          else ctx.print(...all.map((r) => `${r.device.name}: ${depsText(r.value)}`));
        });
      },
    )
    .command(
      'targets',
      'List the registered target types and their versions',
      (b) => b.option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { json: boolean };
        schedule('targets', async (ctx) => {
          const targets = await (await ctx.dm()).targets();
          if (a.json) ctx.printJson({ targets: targets.map(targetVersionJson) });
          else ctx.print(...targets.map(targetVersionLine));
        });
      },
    )
    .command(
      'target-version <types..>',
      'Show the version of target types (the kernel loads their modules if needed)',
      (b) => b.positional('types', { type: 'string', array: true }).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { types: string[]; json: boolean };
        schedule('target-version', (ctx) => printTargetVersions(ctx, a.types, a.json));
      },
    )
    .command(
      'version',
      "Show dmkit's and the kernel driver's versions",
      (b) => b.option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { json: boolean };
        schedule('version', async (ctx) => {
          const driver = await (await ctx.dm()).version();
          if (a.json) ctx.printJson({ dmkit: dmkitVersion(), driver: versionJson(driver) });
          else ctx.print(`dmkit version:     ${dmkitVersion()}`, `Driver version:    ${formatVersion(driver)}`);
        });
      },
    )
    .command(
      'message [args..]',
      'Send a target message: message NAME SECTOR MSG... (or -u UUID SECTOR MSG...)',
      (b) => b.positional('args', { type: 'string', array: true }).option('uuid', uuidOpt).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { args?: string[]; uuid?: string; json: boolean };
        schedule('message', async (ctx) => {
          const { id, rest } = splitDevice(a.args ?? [], a.uuid);
          const [sectorText, ...words] = rest;
          if (sectorText === undefined || words.length === 0) throw usageError('expected NAME SECTOR MESSAGE...');
          const sector = parseSectors(sectorText, 'sector');
          const text = words.join(' ');
          const dm = await ctx.dm();
          const reply = await dm.message(id, sector, text);
          if (a.json) {
            ctx.printJson(deviceJson(await refOf(dm, id), { sector: sector.toString(), message: text, reply: reply ?? null }));
          } else if (reply !== undefined) {
            ctx.write(replyText(reply));
          }
        });
      },
    )
    .command(
      'wait [args..]',
      'Wait until the event number differs from EVENT_NR (default 0): wait NAME [EVENT_NR]',
      (b) =>
        b
          .positional('args', { type: 'string', array: true })
          .option('uuid', uuidOpt)
          .option('noflush', noflushOpt)
          .option('inactive', inactiveOpt)
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { args?: string[]; uuid?: string; json: boolean; noflush: boolean; inactive: boolean };
        schedule('wait', async (ctx) => {
          const { id, rest } = splitDevice(a.args ?? [], a.uuid);
          if (rest.length > 1) throw usageError('expected NAME [EVENT_NR]');
          const nrText = rest[0] ?? '0';
          if (!/^\d+$/.test(nrText) || Number(nrText) > 0xffffffff) {
            throw usageError(`EVENT_NR must be a whole number 0..4294967295, got ${JSON.stringify(nrText)}`);
          }
          const r = await (await ctx.dm()).waitEvent(id, Number(nrText), { noflush: a.noflush, inactive: a.inactive });
          if (a.json) ctx.printJson({ ...infoJson(r.info), targets: r.status.map(statusLineJson) });
        });
      },
    );
};
