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
          : c.option('showkeys', { type: 'boolean', default: false, describe: 'show crypt keys' });
      },
      (argv) => {
        const a = argv as unknown as QueryArgs & { target?: string; noflush?: boolean; showkeys?: boolean };
        schedule(kind, async (ctx) => {
          const id = optionalDeviceId(a.name, a.uuid);
          const dm = await ctx.dm();
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
      'info [name]',
      'Show device state (all devices when NAME is omitted)',
      (b) => b.positional('name', nameArg).option('uuid', uuidOpt).option('inactive', inactiveOpt).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as QueryArgs;
        schedule('info', async (ctx) => {
          const id = optionalDeviceId(a.name, a.uuid);
          const dm = await ctx.dm();
          if (id) {
            const info = await dm.info(id, { inactive: a.inactive });
            if (a.json) ctx.printJson(infoJson(info));
            else ctx.print(infoText(info));
            return;
          }
          const all = await forEachDevice(dm, (d) => dm.info({ name: d.name }, { inactive: a.inactive }));
          const infos: DeviceInfo[] = all.map((r) => r.value);
          if (a.json) ctx.printJson({ devices: infos.map(infoJson) });
          else if (infos.length === 0) ctx.print('No devices found');
          else ctx.print(...infos.map((i) => `${infoText(i)}\n`));
        });
      },
    )
    .command(
      'ls',
      'List devices: name (major:minor)',
      (b) => b.option('target', targetOpt).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { target?: string; json: boolean };
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
          } else {
            ctx.print(...devices.map((d) => lsLine(d.name, d.dev)));
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
