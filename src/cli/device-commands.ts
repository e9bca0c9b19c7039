/**
 * Commands that change devices, with dmsetup's names and habits: create, load/reload, suspend, resume,
 * remove, remove_all, clear, rename, setgeometry, mknodes. They print nothing on success (mknodes --json
 * prints what it changed).
 */
import { chmodSync, chownSync, existsSync } from 'node:fs';
import type { DevId, DeviceInfo, DeviceMapper, TargetLine } from '../dm';
import { applyReadAhead, parseConcise, parseReadAhead, readAheadSectors, resolveDevices, type ReadAhead } from './compat';
import { infoText } from './output';
import { sectors } from '../units';
import type { CommandGroup } from './commands';
import { jsonOpt, nameArg, uuidOpt } from './commands';
import { deviceId, type CommandContext } from './context';
import { CliError, ExitCode, usageError } from './errors';
import { parseSectors, parseTable } from './table-text';

interface TableSourceArgs {
  table?: string[];
  tableFile?: string;
  file?: string;
}

/** Reads the table from exactly one of --table (repeatable, multi-line), --table-file, FILE, or stdin. */
export async function readTable(ctx: CommandContext, a: TableSourceArgs): Promise<TargetLine[]> {
  const given = [a.table !== undefined, a.tableFile !== undefined, a.file !== undefined].filter(Boolean).length;
  if (given > 1) throw usageError(`give the table once: --table, --table-file or a file argument`);
  if (a.table !== undefined) return parseTable(a.table.join('\n'), '--table');
  // yargs hands a bare '-' positional over as ''.
  const path = a.tableFile ?? (a.file === '' ? '-' : a.file);
  if (path !== undefined && path !== '-') return parseTable(await ctx.runtime.readFile(path), path);
  return parseTable(await ctx.stdinText(), 'stdin');
}

const tableOpts = {
  table: { type: 'string', array: true, requiresArg: true, describe: 'table text, one or more lines (repeatable)' },
  'table-file': { type: 'string', requiresArg: true, describe: 'read the table from this file (- for stdin)' },
} as const;

/** Sum of the live table's lengths: the size an error table must have to replace it. */
async function liveSize(dm: DeviceMapper, id: DevId): Promise<bigint> {
  const table = await dm.table(id);
  return table.reduce((sum, t) => sum + t.length, 0n);
}

/**
 * `remove --force`, as dmsetup does it: swap in an error table of the same size so pending IO fails
 * instead of hanging, then remove. A failure here is reported but does not stop the removal attempt.
 */
export async function replaceWithError(ctx: CommandContext, dm: DeviceMapper, id: DevId, verb: string): Promise<void> {
  try {
    const size = await liveSize(dm, id);
    if (size === 0n) return;
    await dm.load(id, [{ start: sectors(0), length: sectors(size), type: 'error', params: '' }]);
    try {
      await dm.resume(id);
    } catch (e) {
      await dm.clear(id).catch(() => undefined);
      throw e;
    }
  } catch (e) {
    ctx.warn(`${verb}: could not load an error table first: ${e instanceof Error ? e.message : String(e)}`);
  }
}

interface NodeOwnership {
  readonly uid: number | undefined;
  readonly gid: number | undefined;
  readonly mode: number | undefined;
}

/** -U/-G/-M: checked up front, applied to /dev/mapper/NAME once it exists. */
function nodeOwnership(uid: string | undefined, gid: string | undefined, mode: string | undefined): NodeOwnership {
  if (mode !== undefined && !/^[0-7]{1,4}$/.test(mode)) throw usageError(`--mode must be octal, got ${JSON.stringify(mode)}`);
  return {
    uid: uid === undefined ? undefined : parseU32(uid, '--uid'),
    gid: gid === undefined ? undefined : parseU32(gid, '--gid'),
    mode: mode === undefined ? undefined : parseInt(mode, 8),
  };
}

/** What dmsetup does after a create: node ownership and mode (when the node exists), and read-ahead. */
function afterCreate(ctx: CommandContext, info: DeviceInfo, node: NodeOwnership, readAhead: ReadAhead | undefined): void {
  if (node.uid !== undefined || node.gid !== undefined || node.mode !== undefined) {
    const path = `${ctx.runtime.env.DM_DEV_DIR ?? '/dev'}/mapper/${info.name}`;
    try {
      if (existsSync(path)) {
        if (node.uid !== undefined || node.gid !== undefined) chownSync(path, node.uid ?? -1, node.gid ?? -1);
        if (node.mode !== undefined) chmodSync(path, node.mode);
      }
    } catch (e) {
      ctx.warn(`${info.name}: could not set the node's owner or mode: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  if (info.flags.activePresent) applyReadAhead(ctx, info.name, info.dev, readAhead);
}

/**
 * -v: dmsetup prints the device's `info` block after create, load, suspend, resume and clear (on
 * stdout, with the blank line that ends each block), read after the command took effect.
 */
async function showVerbose(ctx: CommandContext, dm: DeviceMapper, id: DevId): Promise<void> {
  if (ctx.globals.verbose === 0) return;
  const info = await dm.info(id);
  ctx.print(`${infoText(info, readAheadSectors(info.dev))}\n`);
}

/** NAMEs, -u UUID or -j/-m: at least one device. */
async function devicesOf(ctx: CommandContext, names: readonly string[] | undefined, uuid: string | undefined): Promise<DevId[]> {
  const ids = await resolveDevices(ctx, names ?? [], uuid);
  if (ids.length === 0) throw usageError('which device? give NAME, -u UUID or -j MAJOR -m MINOR');
  return ids;
}

function parseU32(text: string, what: string, max = 0xffffffff): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw usageError(`${what} must be a whole number 0..${max}, got ${JSON.stringify(text)}`);
  return Number(text);
}

export const deviceCommands: CommandGroup = (y, schedule) =>
  y
    .command(
      'create [name] [file]',
      'Create a device, load its table and resume it (table from --table, --table-file, FILE or stdin)',
      (b) =>
        b
          .positional('name', nameArg)
          .positional('file', { type: 'string', describe: 'table file (- for stdin)' })
          .options(tableOpts)
          .option('uuid', { alias: 'u', type: 'string', requiresArg: true, describe: 'the new device uuid' })
          .option('readonly', { alias: 'r', type: 'boolean', default: false, describe: 'create read-only' })
          .option('notable', { alias: 'n', type: 'boolean', default: false, describe: 'create without a table' })
          .option('concise', { type: 'boolean', default: false, describe: 'devices as name,uuid,minor,ro|rw,line[,line]...;... (argument or stdin)' })
          .option('uid', { alias: 'U', type: 'string', requiresArg: true, describe: 'owner of the /dev/mapper node' })
          .option('gid', { alias: 'G', type: 'string', requiresArg: true, describe: 'group of the /dev/mapper node' })
          .option('mode', { alias: 'M', type: 'string', requiresArg: true, describe: 'octal mode of the /dev/mapper node' })
          .example('$0 create vol --table "0 2048 linear /dev/ram0 0"', '')
          .example('printf "0 8 zero\\n8 8 error\\n" | $0 create vol', ''),
      (argv) => {
        const a = argv as unknown as TableSourceArgs & {
          name?: string;
          uuid?: string;
          readonly: boolean;
          notable: boolean;
          concise: boolean;
          uid?: string;
          gid?: string;
          mode?: string;
          readahead?: string;
        };
        schedule('create', async (ctx) => {
          const { major, minor } = ctx.globals;
          const node = nodeOwnership(a.uid, a.gid, a.mode);
          const readAhead = parseReadAhead(a.readahead);
          if (a.concise) {
            if (a.table !== undefined || a.tableFile !== undefined || a.file !== undefined || a.notable) {
              throw usageError('--concise takes its devices as one argument or on stdin, without --table or --notable');
            }
            const specs = parseConcise(a.name ?? (await ctx.stdinText()));
            const dm = await ctx.dm();
            for (const s of specs) {
              const info = await dm.create(s.name, { uuid: s.uuid, readOnly: s.readOnly, minor: s.minor, targets: s.targets });
              afterCreate(ctx, info, node, readAhead);
            }
            return;
          }
          if (a.name === undefined) throw usageError('create needs a device NAME (or --concise)');
          if (major !== undefined && minor === undefined) throw usageError('please give both the major (-j) and the minor (-m) number');
          const opts = { uuid: a.uuid, readOnly: a.readonly, minor };
          if (a.notable) {
            if (a.table !== undefined || a.tableFile !== undefined || a.file !== undefined) {
              throw usageError('--notable and a table exclude each other');
            }
            const dm = await ctx.dm();
            await dm.create(a.name, opts);
            await showVerbose(ctx, dm, { name: a.name });
            return;
          }
          const targets = await readTable(ctx, a);
          const dm = await ctx.dm();
          const info = await dm.create(a.name, { ...opts, targets });
          afterCreate(ctx, info, node, readAhead);
          await showVerbose(ctx, dm, { name: info.name });
        });
      },
    )
    .command(
      ['load [name] [file]', 'reload'],
      'Load a table into the inactive slot (resume to make it live)',
      (b) =>
        b
          .positional('name', nameArg)
          .positional('file', { type: 'string', describe: 'table file (- for stdin)' })
          .options(tableOpts)
          .option('uuid', uuidOpt)
          .option('readonly', { alias: 'r', type: 'boolean', default: false, describe: 'load read-only' }),
      (argv) => {
        const a = argv as unknown as TableSourceArgs & { name?: string; uuid?: string; readonly: boolean };
        const verb = String((argv._ as unknown[])[0] ?? 'load');
        schedule(verb, async (ctx) => {
          // dmsetup load -u UUID FILE: with a uuid, the only positional is the table file.
          const src = a.uuid !== undefined && a.name !== undefined && a.file === undefined ? { ...a, file: a.name, name: undefined } : a;
          const id = deviceId(src.name, a.uuid);
          const targets = await readTable(ctx, src);
          const dm = await ctx.dm();
          await dm.load(id, targets, { readOnly: a.readonly });
          await showVerbose(ctx, dm, id);
        });
      },
    )
    .command(
      'suspend [names..]',
      'Suspend devices (flushing and freezing their filesystems unless told not to)',
      (b) =>
        b
          .positional('names', { ...nameArg, array: true })
          .option('uuid', uuidOpt)
          .option('noflush', { type: 'boolean', default: false, describe: 'do not flush queued IO' })
          .option('nolockfs', { type: 'boolean', default: false, describe: 'do not freeze the filesystem' }),
      (argv) => {
        const a = argv as unknown as { names?: string[]; uuid?: string; noflush: boolean; nolockfs: boolean };
        schedule('suspend', async (ctx) => {
          const ids = await devicesOf(ctx, a.names, a.uuid);
          const dm = await ctx.dm();
          // One device after the other, stopping at the first failure, as dmsetup does.
          for (const id of ids) {
            await dm.suspend(id, { noflush: a.noflush, nolockfs: a.nolockfs });
            await showVerbose(ctx, dm, id);
          }
        });
      },
    )
    .command(
      'resume [names..]',
      'Resume devices, making loaded tables live',
      (b) =>
        b
          .positional('names', { ...nameArg, array: true })
          .option('uuid', uuidOpt)
          .option('noflush', { type: 'boolean', default: false, describe: 'swapping in a table: do not flush queued IO' })
          .option('nolockfs', { type: 'boolean', default: false, describe: 'swapping in a table: do not freeze the filesystem' }),
      (argv) => {
        const a = argv as unknown as { names?: string[]; uuid?: string; noflush: boolean; nolockfs: boolean; readahead?: string };
        schedule('resume', async (ctx) => {
          const readAhead = parseReadAhead(a.readahead);
          const ids = await devicesOf(ctx, a.names, a.uuid);
          const dm = await ctx.dm();
          for (const id of ids) {
            const info = await dm.resume(id, { noflush: a.noflush, nolockfs: a.nolockfs, ...ctx.udevOptions() });
            applyReadAhead(ctx, info.name, info.dev, readAhead);
            await showVerbose(ctx, dm, id);
          }
        });
      },
    )
    .command(
      'remove [names..]',
      'Remove devices',
      (b) =>
        b
          .positional('names', { ...nameArg, array: true })
          .option('uuid', uuidOpt)
          .option('retry', { type: 'boolean', default: false, describe: 'retry while busy (25 x 200 ms)' })
          .option('deferred', { type: 'boolean', default: false, describe: 'if open, remove on last close' })
          .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'load an error table first so IO fails instead of hanging' }),
      (argv) => {
        const a = argv as unknown as { names?: string[]; uuid?: string; retry: boolean; deferred: boolean; force: boolean };
        schedule('remove', async (ctx) => {
          const ids = await devicesOf(ctx, a.names, a.uuid);
          const dm = await ctx.dm();
          for (const id of ids) {
            if (a.force) await replaceWithError(ctx, dm, id, 'remove');
            const r = await dm.remove(id, { retry: a.retry, deferred: a.deferred, ...ctx.udevOptions() });
            if (r.deferred) ctx.warn(`remove: ${id.name ?? id.uuid} is open; it will be removed on last close`);
          }
        });
      },
    )
    .command(
      'remove_all',
      'Remove every device that is not open',
      (b) =>
        b
          .option('deferred', { type: 'boolean', default: false, describe: 'schedule open devices for removal on last close' })
          .option('force', { alias: 'f', type: 'boolean', default: false, describe: 'replace remaining tables with error targets and try again' }),
      (argv) => {
        const a = argv as unknown as { deferred: boolean; force: boolean };
        schedule('remove_all', async (ctx) => {
          const dm = await ctx.dm();
          await dm.removeAll({ deferred: a.deferred });
          if (!a.force) return;
          let left = await dm.list();
          if (left.length === 0) return;
          for (const d of left) await replaceWithError(ctx, dm, { name: d.name }, 'remove_all');
          await dm.removeAll({ deferred: a.deferred });
          left = await dm.list();
          if (left.length > 0) {
            throw new CliError(`unable to remove ${left.length} device(s): ${left.map((d) => d.name).join(', ')}`, 'EBUSY', ExitCode.BUSY);
          }
        });
      },
    )
    .command(
      'clear [name]',
      'Drop the inactive table',
      (b) => b.positional('name', nameArg).option('uuid', uuidOpt),
      (argv) => {
        const a = argv as unknown as { name?: string; uuid?: string };
        schedule('clear', async (ctx) => {
          const id = deviceId(a.name, a.uuid);
          const dm = await ctx.dm();
          await dm.clear(id);
          await showVerbose(ctx, dm, id);
        });
      },
    )
    .command(
      'rename <name> [new]',
      'Rename a device, or give it a uuid with --setuuid UUID',
      (b) =>
        b
          .positional('name', nameArg)
          .positional('new', { type: 'string', describe: 'new name' })
          .option('setuuid', { type: 'string', requiresArg: true, describe: 'set this uuid (only on a device without one)' }),
      (argv) => {
        const a = argv as unknown as { name: string; new?: string; setuuid?: string };
        schedule('rename', async (ctx) => {
          if ((a.new === undefined) === (a.setuuid === undefined)) {
            throw usageError('give either NEW_NAME or --setuuid UUID');
          }
          const dm = await ctx.dm();
          if (a.setuuid !== undefined) await dm.setUuid({ name: a.name }, a.setuuid, ctx.udevOptions());
          else await dm.rename({ name: a.name }, a.new!, ctx.udevOptions());
        });
      },
    )
    .command(
      'setgeometry [args..]',
      'Set the reported geometry: setgeometry NAME CYLINDERS HEADS SECTORS START (or -u UUID CYL HEADS SECTORS START)',
      (b) => b.positional('args', { type: 'string', array: true }).option('uuid', uuidOpt),
      (argv) => {
        const a = argv as unknown as { args?: string[]; uuid?: string };
        schedule('setgeometry', async (ctx) => {
          const args = [...(a.args ?? [])];
          const name = a.uuid === undefined ? args.shift() : undefined;
          if (args.length !== 4) throw usageError('expected NAME CYLINDERS HEADS SECTORS START');
          const [c, h, s, start] = args as [string, string, string, string];
          const geometry = {
            cylinders: parseU32(c, 'cylinders', 0xffff),
            heads: parseU32(h, 'heads', 0xff),
            sectors: parseU32(s, 'sectors per track', 0xff),
            start: parseSectors(start, 'start'),
          };
          await (await ctx.dm()).setGeometry(deviceId(name, a.uuid), geometry);
        });
      },
    )
    .command(
      'mknodes [name]',
      'Make /dev/mapper/NAME nodes for every device (or NAME) and drop stale ones',
      (b) => b.positional('name', nameArg).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name?: string; json: boolean };
        schedule('mknodes', async (ctx) => {
          const report = await (await ctx.dm()).mknodes(a.name);
          if (a.json) ctx.printJson(report);
        });
      },
    );
