/**
 * Per-target commands built on src/targets: `dmkit era|clone|cache|snapshot <verb>`. Tables come from
 * the typed builders, so a bad value is refused (exit 2) before the kernel sees it. `create` sizes the
 * device from a backing device (sysfs, in 512-byte sectors) unless --length is given, and `--dry-run`
 * prints the table line instead of creating anything.
 */
import * as fs from 'node:fs';
import type { Argv } from 'yargs';
import type { DevId, DeviceMapper, TargetLine, TargetStatus } from '../dm';
import {
  cache,
  cacheMessages,
  clone,
  cloneMessages,
  codecFor,
  era,
  eraMessages,
  snapshot,
  snapshotOrigin,
  targetKind,
  type CacheIoMode,
  type SnapshotStore,
  type TargetKind,
} from '../targets';
import { sectors, targetBlocks, type Sectors, type TargetBlocks } from '../units';
import { jsonOpt, nameArg, uuidOpt, type CommandGroup, type Schedule } from './commands';
import { deviceId, type CommandContext } from './context';
import { CliError, ExitCode, usageError } from './errors';
import { toJson, type Json } from './output';
import { parseSectors } from './table-text';
import {
  backup,
  BackupError,
  changedBlocksFromMetadata,
  changedSince,
  createSnapshot,
  EraChangedError,
  eraInvalidateXml,
  familyOf,
  hydrateAndSwap,
  mergeSnapshot,
  rangesIn,
  removeSnapshot,
  restore,
  instantRestore,
  snapshotReport,
  SnapshotError,
  type ChangedBlocks,
  type CloneType,
  type HydrationProgress,
  type MergeProgress,
  type RangeUnit,
  type SnapshotFamily,
  attachCache,
  CacheWorkflowError,
  detachCache,
  type DetachProgress,
} from '../workflows';
import { checkEra } from '../pdata/era-changed';

/** A codec's type names: the in-tree one first, dmkit's second. */
interface Named {
  readonly names: readonly string[];
}

const typeName = (codec: Named, dmkit: boolean): string => (dmkit ? codec.names[1]! : codec.names[0]!);

function parseRegions(text: string, what: string): TargetBlocks {
  if (!/^\d+$/.test(text)) throw usageError(`${what} must be a whole number of regions, got ${JSON.stringify(text)}`);
  return targetBlocks(BigInt(text));
}

interface CreateArgs {
  name: string;
  uuid?: string;
  readonly: boolean;
  dmkit: boolean;
  length?: string;
  dryRun: boolean;
}

/** Options every `<target> create` takes. */
function createOptions(b: Argv, sizeFrom: string): Argv {
  return b
    .positional('name', nameArg)
    .option('uuid', { alias: 'u', type: 'string', requiresArg: true, describe: 'the new device uuid' })
    .option('readonly', { alias: 'r', type: 'boolean', default: false, describe: 'create read-only' })
    .option('dmkit', { type: 'boolean', default: false, describe: "use dmkit's module (dmkit-<type>) instead of the in-tree target" })
    .option('length', { type: 'string', requiresArg: true, describe: `device length in sectors (default: the size of ${sizeFrom})` })
    .option('dry-run', { type: 'boolean', default: false, describe: 'print the table line instead of creating the device' });
}

/** The device length: --length, or the backing device's size. */
async function deviceLength(ctx: CommandContext, a: CreateArgs, sizeFrom: string): Promise<Sectors> {
  if (a.length !== undefined) return parseSectors(a.length, '--length');
  return ctx.runtime.blockDeviceSectors(sizeFrom);
}

async function createDevice(ctx: CommandContext, a: CreateArgs, sizeFrom: string, build: (length: Sectors) => TargetLine): Promise<void> {
  const line = build(await deviceLength(ctx, a, sizeFrom));
  if (a.dryRun) {
    ctx.print(`${line.start} ${line.length} ${line.type} ${line.params}`);
    return;
  }
  await (await ctx.dm()).create(a.name, { uuid: a.uuid, readOnly: a.readonly, targets: [line] });
}

/** The device's first live target of one of these kinds (in-tree or dmkit name). */
async function findTarget(dm: DeviceMapper, id: DevId, kinds: readonly TargetKind[], label: string): Promise<TargetLine> {
  const table = await dm.table(id);
  const found = table.find((t) => {
    const kind = targetKind(t.type);
    return kind !== undefined && kinds.includes(kind);
  });
  if (!found) {
    const what = id.name ?? `uuid ${id.uuid}`;
    throw new CliError(`${what} has no ${label} target (table: ${table.map((t) => t.type).join(', ') || 'none'})`, 'ERR_NO_SUCH_TARGET', ExitCode.NOT_FOUND);
  }
  return found;
}

/** Sends a message to the device's target of that kind, at its start sector. */
async function messageTarget(ctx: CommandContext, id: DevId, kinds: readonly TargetKind[], label: string, text: string): Promise<string | undefined> {
  const dm = await ctx.dm();
  const target = await findTarget(dm, id, kinds, label);
  return dm.message(id, target.start, text);
}

interface ParsedStatus {
  readonly line: TargetStatus;
  readonly parsed: Json;
  readonly parseError?: string;
}

function parseStatusLine(line: TargetStatus): ParsedStatus {
  try {
    const parsed = codecFor(line.type)?.parseStatus(line.status);
    return { line, parsed: parsed === undefined ? null : toJson(parsed) };
  } catch (e) {
    return { line, parsed: null, parseError: e instanceof Error ? e.message : String(e) };
  }
}

async function targetStatuses(dm: DeviceMapper, id: DevId, kinds: readonly TargetKind[], label: string): Promise<ParsedStatus[]> {
  const lines = (await dm.status(id)).filter((t) => {
    const kind = targetKind(t.type);
    return kind !== undefined && kinds.includes(kind);
  });
  if (lines.length === 0) await findTarget(dm, id, kinds, label); // throws the "has no target" error
  return lines.map(parseStatusLine);
}

const fieldText = (v: Json): string => {
  if (v === null) return '-';
  if (Array.isArray(v)) return v.map(fieldText).join(' ') || '-';
  if (typeof v === 'object') return Object.entries(v).map(([k, x]) => `${k}=${fieldText(x)}`).join(' ') || '-';
  return String(v);
};

/** Human status: the raw line, then one `key: value` line per parsed field. */
function statusText(s: ParsedStatus): string[] {
  const { line } = s;
  const head = `${line.start} ${line.length} ${line.type} ${line.status}`;
  if (s.parseError !== undefined) return [head, `  (not understood: ${s.parseError})`];
  if (s.parsed === null || typeof s.parsed !== 'object' || Array.isArray(s.parsed)) return [head];
  return [head, ...Object.entries(s.parsed).map(([k, v]) => `  ${k}: ${fieldText(v)}`)];
}

const statusJson = (s: ParsedStatus): Json => ({
  start: s.line.start.toString(),
  length: s.line.length.toString(),
  type: s.line.type,
  status: s.line.status,
  parsed: s.parsed,
  ...(s.parseError === undefined ? {} : { parseError: s.parseError }),
});

/** `<target> status NAME [--json]`: the typed status of that target on the device. */
function statusCommand(y: Argv, schedule: Schedule, group: string, kinds: readonly TargetKind[]): Argv {
  return y.command(
    'status [name]',
    `Show the parsed ${group} status`,
    (b) => b.positional('name', nameArg).option('uuid', uuidOpt).option('json', jsonOpt),
    (argv) => {
      const a = argv as unknown as { name?: string; uuid?: string; json: boolean };
      schedule(`${group} status`, async (ctx) => {
        const id = deviceId(a.name, a.uuid);
        const dm = await ctx.dm();
        const statuses = await targetStatuses(dm, id, kinds, group);
        if (a.json) {
          const info = await dm.info(id);
          ctx.printJson({ name: info.name, uuid: info.uuid || null, targets: statuses.map(statusJson) });
        } else {
          ctx.print(...statuses.flatMap(statusText));
        }
      });
    },
  );
}

// ---- era ----

const eraCommands = (y: Argv, schedule: Schedule): Argv => {
  y = y
    .command(
      'create <name>',
      'Create an era device over ORIGIN (length: the origin size)',
      (b) =>
        createOptions(b, '--origin')
          .option('metadata', { type: 'string', demandOption: true, requiresArg: true, describe: 'metadata device' })
          .option('origin', { type: 'string', demandOption: true, requiresArg: true, describe: 'origin device' })
          .option('block-size', { type: 'string', demandOption: true, requiresArg: true, describe: 'tracking block size in sectors (a multiple of 8)' }),
      (argv) => {
        const a = argv as unknown as CreateArgs & { metadata: string; origin: string; blockSize: string };
        schedule('era create', (ctx) =>
          createDevice(ctx, a, a.origin, (length) =>
            era.line(
              { metadataDevice: a.metadata, originDevice: a.origin, blockSize: parseSectors(a.blockSize, '--block-size') },
              { start: sectors(0), length, type: typeName(era, a.dmkit) },
            ),
          ),
        );
      },
    )
    .command(
      'checkpoint [name]',
      'Start a new era; prints the era now current (read back from the status, as the kernel docs advise)',
      (b) => b.positional('name', nameArg).option('uuid', uuidOpt).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name?: string; uuid?: string; json: boolean };
        schedule('era checkpoint', async (ctx) => {
          const id = deviceId(a.name, a.uuid);
          await messageTarget(ctx, id, ['era'], 'era', eraMessages.checkpoint());
          const [s] = await targetStatuses(await ctx.dm(), id, ['era'], 'era');
          const current = s && s.parsed !== null && typeof s.parsed === 'object' && !Array.isArray(s.parsed) ? (s.parsed.currentEra ?? null) : null;
          if (a.json) ctx.printJson({ ...(await nameAndUuid(ctx, id)), currentEra: current });
          else if (current !== null) ctx.print(`era ${fieldText(current)}`);
        });
      },
    )
    .command(
      'metadata-snap <name> <action>',
      'Take or drop the metadata snapshot that era_invalidate --metadata-snapshot reads (take|drop)',
      (b) => b.positional('name', nameArg).positional('action', { type: 'string', choices: ['take', 'drop'] }),
      (argv) => {
        const a = argv as unknown as { name: string; action: 'take' | 'drop' };
        schedule('era metadata-snap', async (ctx) => {
          const text = a.action === 'take' ? eraMessages.takeMetadataSnap() : eraMessages.dropMetadataSnap();
          await messageTarget(ctx, { name: a.name }, ['era'], 'era', text);
        });
      },
    );
  y = y.command(
    'changed [name]',
    'List the blocks written since an era (era_invalidate --written-since): of a live device (its metadata snapshot is taken, read and dropped) or of a metadata file or device (--metadata)',
    (b) =>
      b
        .positional('name', nameArg)
        .option('uuid', uuidOpt)
        .option('since', { type: 'string', demandOption: true, requiresArg: true, describe: 'list blocks written in this era or later' })
        .option('metadata', { type: 'string', requiresArg: true, describe: 'read this era metadata file or device instead of a live device (offline)' })
        .option('metadata-snapshot', { type: 'boolean', default: false, describe: "with --metadata: read the held metadata snapshot's roots" })
        .option('direct', { type: 'boolean', default: false, describe: 'with --metadata: read a file with O_DIRECT (block devices always are)' })
        .option('include-current', { type: 'boolean', default: false, describe: "with --metadata: also list the superblock's current writeset (era_invalidate leaves it out)" })
        .option('format', { type: 'string', choices: ['json', 'xml', 'ranges'], default: 'ranges', describe: "xml: era_invalidate's output, byte for byte; ranges: START END per line (end-exclusive)" })
        .option('units', { type: 'string', choices: ['blocks', 'sectors', 'bytes'], default: 'blocks', describe: 'units of the ranges (xml is always in era blocks)' })
        .option('json', { type: 'boolean', default: false, describe: 'same as --format json' }),
    (argv) => {
      const a = argv as unknown as {
        name?: string;
        uuid?: string;
        since: string;
        metadata?: string;
        metadataSnapshot: boolean;
        includeCurrent: boolean;
        direct: boolean;
        format: 'json' | 'xml' | 'ranges';
        units: RangeUnit;
        json: boolean;
      };
      schedule('era changed', async (ctx) => {
        if (!/^\d+$/.test(a.since)) throw usageError(`--since must be a whole era number, got ${JSON.stringify(a.since)}`);
        const since = checkEra(Number(a.since), '--since');
        const format = a.json ? 'json' : a.format;
        if (format === 'xml' && a.units !== 'blocks') throw usageError('--format xml is always in era blocks (as era_invalidate prints); drop --units');
        let r: ChangedBlocks & { name?: string; uuid?: string | null; length?: Sectors };
        if (a.metadata !== undefined) {
          if (a.name !== undefined || a.uuid !== undefined) throw usageError('give a device name or --metadata FILE, not both');
          const direct = a.direct || fs.statSync(a.metadata).isBlockDevice();
          r = changedBlocksFromMetadata(a.metadata, since, { snapshot: a.metadataSnapshot, includeCurrent: a.includeCurrent, direct });
        } else {
          if (a.metadataSnapshot || a.includeCurrent || a.direct) throw usageError('--metadata-snapshot, --include-current and --direct go with --metadata FILE (a live device is always read through a fresh snapshot)');
          try {
            r = await changedSince(await ctx.dm(), deviceId(a.name, a.uuid), since);
          } catch (e) {
            if (e instanceof EraChangedError && e.code === 'ERR_ERA_NO_TARGET') throw new CliError(e.message, 'ERR_NO_SUCH_TARGET', ExitCode.NOT_FOUND);
            if (e instanceof EraChangedError && e.code === 'ERR_ERA_SNAPSHOT_HELD') throw new CliError(e.message, e.code, ExitCode.BUSY);
            throw e;
          }
        }
        if (format === 'xml') {
          ctx.write(eraInvalidateXml(r.ranges.flatMap((x) => [Number(x.start), Number(x.end)])));
          return;
        }
        const ranges = rangesIn(r, a.units, r.length);
        if (format === 'ranges') {
          ctx.write(ranges.map((x) => `${x.start} ${x.end}\n`).join(''));
          return;
        }
        ctx.printJson({
          ...(r.name !== undefined ? { name: r.name, uuid: r.uuid } : { metadata: a.metadata }),
          metadataUuid: r.metadataUuid,
          roots: r.roots,
          blockSize: r.blockSize,
          nrBlocks: r.nrBlocks,
          currentEra: r.currentEra,
          sinceEra: r.sinceEra,
          changedBlocks: r.changed,
          units: a.units,
          ranges: ranges.map((x) => ({ start: x.start, end: x.end })),
        });
      });
    },
  );
  y = y
    .command(
      'backup [name]',
      'Back up an era device: all of it, or with --since N the blocks written in era N or later, into an image file (or onto a device); an interrupted backup continues when run again',
      (b) =>
        b
          .positional('name', nameArg)
          .option('uuid', uuidOpt)
          .option('since', { type: 'string', requiresArg: true, describe: 'an incremental backup of the blocks written in this era or later (the previous backup\'s until era); omitted: a full backup' })
          .option('to', { type: 'string', demandOption: true, requiresArg: true, describe: 'the backup image file, or a block device to write it to' })
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name?: string; uuid?: string; since?: string; to: string; json: boolean };
        schedule('era backup', async (ctx) => {
          if (a.since !== undefined && !/^\d+$/.test(a.since)) throw usageError(`--since must be a whole era number, got ${JSON.stringify(a.since)}`);
          const since = a.since === undefined ? undefined : checkEra(Number(a.since), '--since');
          const dm = await ctx.dm();
          const r = await withProgress(ctx, a.json, 'backup', (signal, onProgress) =>
            backup(dm, deviceId(a.name, a.uuid), { to: a.to, signal, onProgress, ...(since !== undefined ? { since } : {}) }).catch((e: unknown) => {
              throw backupCliError(e);
            }),
          );
          const h = r.header;
          const summary = { file: r.file, full: h.full, sinceEra: h.sinceEra, untilEra: h.untilEra, identity: h.identity, pieces: h.pieces.length, bytes: h.dataBytes, blockSize: h.blockSize, nrBlocks: h.nrBlocks, length: h.length, engine: r.copy.engine, resumed: r.resumed, resumedChunks: r.copy.resumedChunks };
          if (a.json) ctx.printJson(toJson(summary));
          else ctx.print(`${r.file}: ${h.full ? 'full' : `incremental since era ${h.sinceEra}`} backup of ${h.identity}, ${h.dataBytes} bytes in ${h.pieces.length} pieces${r.resumed ? ' (resumed)' : ''}; next incremental: --since ${h.untilEra}`);
        });
      },
    )
    .command(
      'restore <images..>',
      'Restore a chain of backup images (a full one, then incrementals in order) onto the last argument, a device (or file); every checksum is verified before anything is written',
      (b) =>
        b
          .positional('images', { type: 'string', array: true, describe: 'backup images, then the destination' })
          .option('verify', { type: 'boolean', default: true, describe: 'verify every checksum before writing (--no-verify: only while applying)' })
          .option('instant', { type: 'boolean', default: false, describe: 'usable at once: a dmkit-clone device NAME over the full image (source) and DEST, the incrementals written through it, hydration in the background' })
          .option('name', { type: 'string', requiresArg: true, describe: 'with --instant: the clone device to create' })
          .option('metadata', { type: 'string', requiresArg: true, describe: 'with --instant: the clone metadata device (its superblock is zeroed)' })
          .option('region-size', { type: 'string', default: '128', requiresArg: true, describe: 'with --instant: clone region size in sectors' })
          .option('follow', { type: 'boolean', default: true, describe: 'with --instant: follow hydration and swap to linear (--no-follow: return once usable)' })
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { images: string[]; verify: boolean; instant: boolean; name?: string; metadata?: string; regionSize: string; follow: boolean; json: boolean };
        schedule('era restore', async (ctx) => {
          if (a.images.length < 2) throw usageError('usage: dmkit era restore IMAGE... DEST');
          const files = a.images.slice(0, -1);
          const dest = a.images[a.images.length - 1]!;
          if (a.instant) {
            if (a.name === undefined || a.metadata === undefined) throw usageError('--instant needs --name NAME and --metadata DEV');
            const dm = await ctx.dm();
            const r = await withProgress(ctx, a.json, 'verify', (signal, onProgress) =>
              instantRestore(dm, files, dest, { name: a.name!, metadata: a.metadata!, regionSize: parseSectors(a.regionSize, '--region-size'), verify: a.verify, follow: a.follow, signal, onProgress }).catch((e: unknown) => {
                throw backupCliError(e);
              }),
            );
            const last = r.images[r.images.length - 1]!;
            if (!a.json) ctx.print(`${r.device}: usable now (${last.identity} up to era ${last.untilEra}); hydrating ${dest} from ${r.loop} in the background`);
            if (r.hydration) await r.hydration.done;
            if (a.json) ctx.printJson(toJson({ device: r.device, loop: r.loop, destination: dest, images: files, verifiedBytes: r.verifiedBytes, incrementalBytes: r.incrementalBytes, identity: last.identity, untilEra: last.untilEra, hydrated: a.follow }));
            else if (a.follow) ctx.print(`${r.device}: hydrated; now a linear mapping of ${dest}`);
            return;
          }
          const r = await withProgress(ctx, a.json, 'restore', (signal, onProgress) =>
            restore(files, dest, { verify: a.verify, signal, onProgress }).catch((e: unknown) => {
              throw backupCliError(e);
            }),
          );
          const last = r.images[r.images.length - 1]!;
          if (a.json) ctx.printJson(toJson({ destination: dest, images: files, bytes: r.bytes, verifiedBytes: r.verifiedBytes, identity: last.identity, untilEra: last.untilEra }));
          else ctx.print(`${dest}: restored ${files.length} image(s) of ${last.identity} up to era ${last.untilEra} (${r.bytes} bytes written, ${r.verifiedBytes} verified first)`);
        });
      },
    );
  return statusCommand(y, schedule, 'era', ['era']);
};

/** Backup errors as CLI errors: bad images and chains exit 1 with their code; the rest as they are. */
function backupCliError(e: unknown): unknown {
  if (e instanceof BackupError) return new CliError(e.message, e.code, e.code === 'ERR_BACKUP_ARGS' ? ExitCode.USAGE : ExitCode.FAILED);
  if (e instanceof EraChangedError && e.code === 'ERR_ERA_NO_TARGET') return new CliError(e.message, 'ERR_NO_SUCH_TARGET', ExitCode.NOT_FOUND);
  if (e instanceof EraChangedError && e.code === 'ERR_ERA_SNAPSHOT_HELD') return new CliError(e.message, e.code, ExitCode.BUSY);
  return e;
}

/** Runs a copy with a progress bar on a TTY (a line a second otherwise; nothing with --json); SIGINT cancels it. */
async function withProgress<T>(ctx: CommandContext, json: boolean, what: string, run: (signal: AbortSignal, onProgress: (done: bigint, total: bigint) => void) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new CliError(`${what} interrupted; run the same command again to continue`, 'ERR_INTERRUPTED', ExitCode.FAILED));
  process.once('SIGINT', onSignal);
  const tty = process.stderr.isTTY === true && !json;
  let last = 0;
  let shown = false;
  const onProgress = (done: bigint, total: bigint): void => {
    if (json) return;
    const pct = total > 0n ? Number((done * 1000n) / total) / 10 : 100;
    if (tty) {
      const width = 30;
      const filled = total > 0n ? Number((done * BigInt(width)) / total) : width;
      ctx.runtime.stderr(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${what}: ${done}/${total} bytes (${pct.toFixed(1)}%)\x1b[K`);
      shown = true;
    } else if (Date.now() - last >= 1000) {
      last = Date.now();
      ctx.runtime.stderr(`${what}: ${done}/${total} bytes (${pct.toFixed(1)}%)\n`);
    }
  };
  try {
    return await run(abort.signal, onProgress);
  } finally {
    if (shown) ctx.runtime.stderr('\n');
    process.removeListener('SIGINT', onSignal);
  }
}

async function nameAndUuid(ctx: CommandContext, id: DevId): Promise<{ name: string; uuid: string | null }> {
  const info = await (await ctx.dm()).info(id);
  return { name: info.name, uuid: info.uuid || null };
}

// ---- clone ----

const HYDRATION_ACTIONS = ['enable', 'disable', 'threshold', 'batch-size'] as const;

const cloneCommands = (y: Argv, schedule: Schedule): Argv => {
  y = y
    .command(
      'create <name>',
      'Create a clone device: DEST becomes a copy of SOURCE, hydrated in the background (length: the source size)',
      (b) =>
        createOptions(b, '--source')
          .option('metadata', { type: 'string', demandOption: true, requiresArg: true, describe: 'metadata device' })
          .option('dest', { type: 'string', demandOption: true, requiresArg: true, describe: 'destination device' })
          .option('source', { type: 'string', demandOption: true, requiresArg: true, describe: 'source device' })
          .option('region-size', { type: 'string', demandOption: true, requiresArg: true, describe: 'region size in sectors (a power of 2, 8..2097152)' })
          .option('hydration', { type: 'boolean', default: true, describe: 'hydrate in the background (--no-hydration: start with it off)' })
          .option('discard-passdown', { type: 'boolean', default: true, describe: 'pass discards to the destination' })
          .option('hydration-threshold', { type: 'string', requiresArg: true, describe: 'regions hydrating at once' })
          .option('batch-size', { type: 'string', requiresArg: true, describe: 'regions batched into one copy' }),
      (argv) => {
        const a = argv as unknown as CreateArgs & {
          metadata: string;
          dest: string;
          source: string;
          regionSize: string;
          hydration: boolean;
          discardPassdown: boolean;
          hydrationThreshold?: string;
          batchSize?: string;
        };
        schedule('clone create', (ctx) =>
          createDevice(ctx, a, a.source, (length) =>
            clone.line(
              {
                metadataDevice: a.metadata,
                destinationDevice: a.dest,
                sourceDevice: a.source,
                regionSize: parseSectors(a.regionSize, '--region-size'),
                noHydration: !a.hydration,
                noDiscardPassdown: !a.discardPassdown,
                hydrationThreshold: a.hydrationThreshold === undefined ? null : parseRegions(a.hydrationThreshold, '--hydration-threshold'),
                hydrationBatchSize: a.batchSize === undefined ? null : parseRegions(a.batchSize, '--batch-size'),
              },
              { start: sectors(0), length, type: typeName(clone, a.dmkit) },
            ),
          ),
        );
      },
    )
    .command(
      'hydration <name> <action> [value]',
      'Control background hydration: enable | disable | threshold N | batch-size N (N in regions)',
      (b) =>
        b
          .positional('name', nameArg)
          .positional('action', { type: 'string', choices: HYDRATION_ACTIONS })
          .positional('value', { type: 'string', describe: 'regions, for threshold and batch-size' }),
      (argv) => {
        const a = argv as unknown as { name: string; action: (typeof HYDRATION_ACTIONS)[number]; value?: string };
        schedule('clone hydration', async (ctx) => {
          const needsValue = a.action === 'threshold' || a.action === 'batch-size';
          if (needsValue !== (a.value !== undefined)) {
            throw usageError(needsValue ? `hydration ${a.action} needs a number of regions` : `hydration ${a.action} takes no value`);
          }
          const text =
            a.action === 'enable'
              ? cloneMessages.enableHydration()
              : a.action === 'disable'
                ? cloneMessages.disableHydration()
                : a.action === 'threshold'
                  ? cloneMessages.hydrationThreshold(parseRegions(a.value!, 'threshold'))
                  : cloneMessages.hydrationBatchSize(parseRegions(a.value!, 'batch-size'));
          await messageTarget(ctx, { name: a.name }, ['clone'], 'clone', text);
        });
      },
    );
  y = y.command(
    'hydrate <source> <dest>',
    'Make DEST a copy of SOURCE while device NAME is in use (a clone hydrating in the background), then swap NAME to linear on DEST',
    (b) =>
      b
        .positional('source', { type: 'string', describe: 'source device (read only)' })
        .positional('dest', { type: 'string', describe: 'destination device (overwritten)' })
        .option('name', { type: 'string', demandOption: true, requiresArg: true, describe: 'the dm device to create and swap' })
        .option('metadata', { type: 'string', requiresArg: true, describe: 'clone metadata device (required unless --attach; it must outlive a reboot)' })
        .option('region-size', { type: 'string', default: '8', requiresArg: true, describe: 'region size in sectors (a power of 2, 8..2097152)' })
        .option('hydration-threshold', { type: 'string', requiresArg: true, describe: 'regions hydrating at once' })
        .option('batch-size', { type: 'string', requiresArg: true, describe: 'regions batched into one copy' })
        .option('reuse-metadata', { type: 'boolean', default: false, describe: 'keep the metadata (resume an earlier clone) instead of zeroing its superblock' })
        .option('attach', { type: 'boolean', default: false, describe: 'follow and swap an existing clone device NAME instead of creating one' })
        .option('dmkit', { type: 'boolean', describe: "use dmkit's module (dmkit-clone)" })
        .option('in-tree', { type: 'boolean', describe: 'use the in-tree clone target' })
        .conflicts('dmkit', 'in-tree')
        .option('json', jsonOpt),
    (argv) => {
      const a = argv as unknown as HydrateArgs;
      schedule('clone hydrate', (ctx) => hydrateCommand(ctx, a));
    },
  );
  return statusCommand(y, schedule, 'clone', ['clone']);
};

interface HydrateArgs {
  source: string;
  dest: string;
  name: string;
  metadata?: string;
  regionSize: string;
  hydrationThreshold?: string;
  batchSize?: string;
  reuseMetadata: boolean;
  attach: boolean;
  dmkit?: boolean;
  inTree?: boolean;
  json: boolean;
}

/** dmkit-clone when asked or (by default) when the kernel has it; the in-tree clone otherwise. */
async function pickCloneType(dm: DeviceMapper, a: HydrateArgs): Promise<CloneType> {
  if (a.dmkit) return 'dmkit-clone';
  if (a.inTree) return 'clone';
  try {
    await dm.targetVersion('dmkit-clone');
    return 'dmkit-clone';
  } catch {
    return 'clone';
  }
}

const mb = (bytesPerSecond: number): string => (bytesPerSecond / 1e6).toFixed(1);

function progressText(p: HydrationProgress): string {
  const pct = p.total > 0n ? Number((p.hydrated * 1000n) / p.total) / 10 : 100;
  return `${p.hydrated}/${p.total} regions (${pct.toFixed(1)}%), ${mb(p.bytesPerSecond)} MB/s`;
}

function progressBar(p: HydrationProgress, width = 30): string {
  const filled = p.total > 0n ? Number((p.hydrated * BigInt(width)) / p.total) : width;
  return `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${progressText(p)}\x1b[K`;
}

async function hydrateCommand(ctx: CommandContext, a: HydrateArgs): Promise<void> {
  const dm = await ctx.dm();
  const regionSize = parseSectors(a.regionSize, '--region-size');
  const type = await pickCloneType(dm, a);
  // Hydration state must survive a crash, or writes made before the swap would be lost: no volatile default.
  if (!a.attach && a.metadata === undefined) throw usageError('--metadata is required (a device that outlives a reboot)');
  const abort = new AbortController();
  const onSignal = (): void => abort.abort(new CliError(`stopped following; ${a.name} keeps hydrating (resume with --attach)`, 'ERR_INTERRUPTED', ExitCode.FAILED));
  process.once('SIGINT', onSignal);
  const tty = process.stderr.isTTY === true;
  try {
    const run = hydrateAndSwap(dm, {
      name: a.name,
      source: a.source,
      destination: a.dest,
      metadata: a.metadata ?? '',
      regionSize,
      type,
      create: !a.attach,
      reuseMetadata: a.reuseMetadata,
      hydrationThreshold: a.hydrationThreshold === undefined ? undefined : parseRegions(a.hydrationThreshold, '--hydration-threshold'),
      batchSize: a.batchSize === undefined ? undefined : parseRegions(a.batchSize, '--batch-size'),
      signal: abort.signal,
      deviceSectors: (p) => ctx.runtime.blockDeviceSectors(p),
    });
    let lastLine = 0;
    const shown = (async () => {
      for await (const p of run.progress) {
        if (tty) ctx.runtime.stderr(progressBar(p));
        else if (Date.now() - lastLine >= 1000 || p.hydrated === p.total) {
          lastLine = Date.now();
          ctx.runtime.stderr(`${a.name}: ${progressText(p)}\n`);
        }
      }
      if (tty) ctx.runtime.stderr('\n');
    })();
    const result = await run.done;
    await shown;
    const summary = {
      name: a.name,
      type,
      source: a.source,
      destination: a.dest,
      regions: result.regions,
      bytes: result.bytes,
      seconds: Math.round(result.seconds * 1000) / 1000,
      bytesPerSecond: Math.round(result.bytesPerSecond),
      table: `${result.table.start} ${result.table.length} ${result.table.type} ${result.table.params}`,
    };
    if (a.json) ctx.printJson(toJson(summary));
    else ctx.print(`${a.name}: ${result.regions} regions hydrated in ${summary.seconds} s (${mb(result.bytesPerSecond)} MB/s); now ${summary.table}`);
  } finally {
    process.removeListener('SIGINT', onSignal);
  }
}

// ---- cache ----

function cleanBar(p: DetachProgress, width = 30): string {
  const done = p.total - p.dirty;
  const filled = p.total > 0n ? Number((done * BigInt(width)) / p.total) : width;
  const pct = p.total > 0n ? Number((done * 1000n) / p.total) / 10 : 100;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${p.total} dirty blocks written back (${pct.toFixed(1)}%)`;
}

async function cacheStep<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    if (!(e instanceof CacheWorkflowError)) throw e;
    const exit = e.code === 'ERR_CACHE_NOT_LINEAR' || e.code === 'ERR_CACHE_NOT_CACHE' ? ExitCode.USAGE : ExitCode.FAILED;
    throw new CliError(e.message, e.code, exit);
  }
}

const IO_MODES: readonly CacheIoMode[] = ['writeback', 'writethrough', 'passthrough'];

const cacheCommands = (y: Argv, schedule: Schedule): Argv => {
  y = y
    .command(
      'create <name>',
      'Create a cache device: CACHE (fast) in front of ORIGIN (length: the origin size)',
      (b) =>
        createOptions(b, '--origin')
          .option('metadata', { type: 'string', demandOption: true, requiresArg: true, describe: 'metadata device' })
          .option('cache', { type: 'string', demandOption: true, requiresArg: true, describe: 'fast cache device' })
          .option('origin', { type: 'string', demandOption: true, requiresArg: true, describe: 'slow origin device' })
          .option('block-size', { type: 'string', demandOption: true, requiresArg: true, describe: 'cache block size in sectors (a multiple of 64)' })
          .option('mode', { type: 'string', choices: IO_MODES, describe: 'io mode (kernel default: writeback)' })
          .option('policy', { type: 'string', requiresArg: true, describe: 'smq, mq, cleaner or default' })
          .option('metadata2', { type: 'boolean', default: false, describe: 'use the version 2 metadata format' })
          .option('discard-passdown', { type: 'boolean', default: true, describe: 'pass discards to the origin' })
          .option('migration-threshold', { type: 'string', requiresArg: true, describe: 'sectors of migration IO in flight' }),
      (argv) => {
        const a = argv as unknown as CreateArgs & {
          metadata: string;
          cache: string;
          origin: string;
          blockSize: string;
          mode?: CacheIoMode;
          policy?: string;
          metadata2: boolean;
          discardPassdown: boolean;
          migrationThreshold?: string;
        };
        schedule('cache create', (ctx) =>
          createDevice(ctx, a, a.origin, (length) =>
            cache.line(
              {
                metadataDevice: a.metadata,
                cacheDevice: a.cache,
                originDevice: a.origin,
                blockSize: parseSectors(a.blockSize, '--block-size'),
                ioMode: a.mode ?? null,
                metadata2: a.metadata2,
                noDiscardPassdown: !a.discardPassdown,
                policy: a.policy,
                migrationThreshold: a.migrationThreshold === undefined ? null : parseSectors(a.migrationThreshold, '--migration-threshold'),
              },
              { start: sectors(0), length, type: typeName(cache, a.dmkit) },
            ),
          ),
        );
      },
    )
    .command(
      'attach <name>',
      'Put a cache in front of NAME, a linear device over its origin: the same device, now a cache (fresh metadata)',
      (b) =>
        b
          .positional('name', nameArg)
          .option('metadata', { type: 'string', demandOption: true, requiresArg: true, describe: 'metadata device (its superblock is zeroed)' })
          .option('cache', { type: 'string', demandOption: true, requiresArg: true, describe: 'fast cache device' })
          .option('block-size', { type: 'string', demandOption: true, requiresArg: true, describe: 'cache block size in sectors (a multiple of 64)' })
          .option('mode', { type: 'string', choices: IO_MODES, default: 'writeback', describe: 'io mode' })
          .option('policy', { type: 'string', requiresArg: true, describe: 'cache policy (default: default)' })
          .option('metadata2', { type: 'boolean', default: false, describe: 'use the version 2 metadata format' })
          .option('dmkit', { type: 'boolean', describe: 'use dmkit-cache (default when the kernel has it)' })
          .option('in-tree', { type: 'boolean', describe: 'use the in-tree cache target' })
          .conflicts('dmkit', 'in-tree')
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name: string; metadata: string; cache: string; blockSize: string; mode: CacheIoMode; policy?: string; metadata2: boolean; dmkit?: boolean; inTree?: boolean; json: boolean };
        schedule('cache attach', async (ctx) => {
          const blockSize = parseSectors(a.blockSize, '--block-size');
          // Checked before root or the control device: a bad block size is a usage error.
          cache.normalize({ metadataDevice: a.metadata, cacheDevice: a.cache, originDevice: '0:0', blockSize, ioMode: a.mode, policy: a.policy });
          const dm = await ctx.dm();
          const type = a.inTree ? 'cache' : a.dmkit ? 'dmkit-cache' : await dm.targetVersion('dmkit-cache').then(() => 'dmkit-cache' as const, () => 'cache' as const);
          const r = await cacheStep(() =>
            attachCache(dm, { name: a.name, metadata: a.metadata, cacheDevice: a.cache, blockSize, type, ioMode: a.mode, policy: a.policy, metadata2: a.metadata2 }),
          );
          const table = `${r.table.start} ${r.table.length} ${r.table.type} ${r.table.params}`;
          if (a.json) ctx.printJson({ name: r.name, origin: r.origin, table });
          else ctx.print(`${r.name}: cache attached in front of ${r.origin}; now ${table}`);
        });
      },
    )
    .command(
      'detach <name>',
      'Take the cache away from NAME: the cleaner writes every dirty block back (progress bar), then NAME becomes linear on its origin',
      (b) =>
        b
          .positional('name', nameArg)
          .option('timeout', { type: 'string', requiresArg: true, describe: 'give up after this many seconds (the cleaner goes on)' })
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name: string; timeout?: string; json: boolean };
        schedule('cache detach', async (ctx) => {
          if (a.timeout !== undefined && !/^\d+$/.test(a.timeout)) throw usageError(`--timeout must be a whole number of seconds, got ${JSON.stringify(a.timeout)}`);
          const dm = await ctx.dm();
          const tty = process.stderr.isTTY === true;
          let lastLine = 0;
          const r = await cacheStep(() =>
            detachCache(dm, {
              name: a.name,
              ...(a.timeout !== undefined ? { timeoutMs: Number(a.timeout) * 1000 } : {}),
              onProgress: (p) => {
                if (tty) ctx.runtime.stderr(`\r${cleanBar(p)}\x1b[K`);
                else if (Date.now() - lastLine >= 1000 || p.dirty === 0n) {
                  lastLine = Date.now();
                  ctx.runtime.stderr(`${a.name}: ${cleanBar(p)}\n`);
                }
              },
            }),
          );
          if (tty) ctx.runtime.stderr('\n');
          const table = `${r.table.start} ${r.table.length} ${r.table.type} ${r.table.params}`;
          const seconds = Math.round(r.seconds * 1000) / 1000;
          if (a.json) ctx.printJson({ name: r.name, origin: r.origin, flushed: r.flushed.toString(), seconds, table });
          else ctx.print(`${r.name}: ${r.flushed} dirty blocks written back in ${seconds} s; now ${table}`);
        });
      },
    )
    .command(
      'migration-threshold <name> <sectors>',
      'Change how much migration IO may be in flight',
      (b) => b.positional('name', nameArg).positional('sectors', { type: 'string' }),
      (argv) => {
        const a = argv as unknown as { name: string; sectors: string };
        schedule('cache migration-threshold', async (ctx) => {
          const text = cacheMessages.migrationThreshold(parseSectors(a.sectors, 'sectors'));
          await messageTarget(ctx, { name: a.name }, ['cache'], 'cache', text);
        });
      },
    );
  return statusCommand(y, schedule, 'cache', ['cache']);
};

// ---- snapshot ----

/** `--chunk`: sectors, or a size with a unit (4k, 64K, 1M: bytes, a whole number of sectors). */
export function parseChunk(text: string): Sectors {
  if (/^\d+$/.test(text)) return parseSectors(text, '--chunk');
  const m = /^(\d+)([kKmM])(?:i?[bB])?$/.exec(text);
  if (!m) throw usageError(`--chunk must be sectors or a size such as 4k or 64k, got ${JSON.stringify(text)}`);
  const b = BigInt(m[1]!) * (m[2]!.toLowerCase() === 'k' ? 1024n : 1024n * 1024n);
  return sectors(b / 512n);
}

/** A workflow refusal as a CLI error: no such snapshot is NOT_FOUND, bad combinations USAGE, others FAILED. */
function snapshotFailure(e: unknown): unknown {
  if (!(e instanceof SnapshotError)) return e;
  const exit =
    e.code === 'ERR_SNAPSHOT_NO_TARGET' || e.code === 'ERR_SNAPSHOT_NO_ORIGIN'
      ? ExitCode.NOT_FOUND
      : e.code.includes('INVALID')
        ? ExitCode.USAGE
        : e.code === 'ERR_SNAPSHOT_MERGING'
          ? ExitCode.BUSY
          : ExitCode.FAILED;
  return new CliError(e.message, e.code, exit);
}

async function snapshotStep<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (e) {
    throw snapshotFailure(e);
  }
}

/** --dmkit / --in-tree; otherwise the origin's own family, else dmkit's when the kernel has it. */
async function pickSnapshotFamily(dm: DeviceMapper, origin: string, a: { dmkit?: boolean; inTree?: boolean }): Promise<SnapshotFamily> {
  if (a.dmkit) return 'dmkit';
  if (a.inTree) return 'in-tree';
  const table = await dm.table({ name: origin });
  const own = table.length === 1 ? familyOf(table[0]!.type) : undefined;
  if (own) return own;
  try {
    await dm.targetVersion('dmkit-snapshot');
    return 'dmkit';
  } catch {
    return 'in-tree';
  }
}

interface SnapCreateArgs {
  origin: string;
  name?: string;
  cow: string;
  chunk: string;
  transient?: boolean;
  overflow?: boolean;
  dmkit?: boolean;
  inTree?: boolean;
  discardZeroesCow: boolean;
  discardPassdownOrigin: boolean;
  uuid?: string;
  json: boolean;
}

function mergeBar(p: MergeProgress, width = 30): string {
  const done = p.total > 0n ? p.total - p.remaining : 0n;
  const filled = p.total > 0n ? Number((done * BigInt(width)) / p.total) : width;
  const pct = p.total > 0n ? Number((done * 1000n) / p.total) / 10 : 100;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${p.total} sectors merged (${pct.toFixed(1)}%)`;
}

const snapshotCommands = (y: Argv, schedule: Schedule): Argv =>
  y
    .command(
      'create <origin>',
      'Snapshot the dm volume ORIGIN (the first snapshot moves its table to ORIGIN-real and makes ORIGIN an origin)',
      (b) =>
        b
          .positional('origin', { type: 'string', describe: 'the dm device to snapshot' })
          .option('cow', { type: 'string', demandOption: true, requiresArg: true, describe: 'copy-on-write (exception store) device' })
          .option('chunk', { alias: 'chunk-size', type: 'string', demandOption: true, requiresArg: true, describe: 'chunk size: sectors, or 4k, 64k, ... (a power of 2)' })
          .option('name', { type: 'string', requiresArg: true, describe: 'the snapshot device (default ORIGIN-snapN)' })
          .option('transient', { type: 'boolean', describe: 'no on-disk metadata (N): lost at deactivation, cannot merge' })
          .option('overflow', { type: 'boolean', describe: 'persistent, reporting "Overflow" when the COW fills (PO)' })
          .conflicts('transient', 'overflow')
          .option('dmkit', { type: 'boolean', describe: "use dmkit's modules (dmkit-origin, dmkit-snapshot)" })
          .option('in-tree', { type: 'boolean', describe: 'use the in-tree snapshot targets' })
          .conflicts('dmkit', 'in-tree')
          .option('discard-zeroes-cow', { type: 'boolean', default: false, describe: 'discards to the snapshot zero its COW chunks' })
          .option('discard-passdown-origin', { type: 'boolean', default: false, describe: 'also pass discards to the origin (needs --discard-zeroes-cow)' })
          .option('uuid', { alias: 'u', type: 'string', requiresArg: true, describe: 'the snapshot device uuid' })
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as SnapCreateArgs;
        schedule('snapshot create', async (ctx) => {
          const chunkSize = parseChunk(a.chunk);
          const store: SnapshotStore = a.transient === true ? 'N' : a.overflow === true ? 'PO' : 'P';
          // Checked before root or the control device: a bad chunk size or feature mix is a usage error.
          snapshot.normalize({ origin: '0:0', cow: a.cow, store, chunkSize, discardZeroesCow: a.discardZeroesCow, discardPassdownOrigin: a.discardPassdownOrigin });
          const dm = await ctx.dm();
          const family = await pickSnapshotFamily(dm, a.origin, a);
          const r = await snapshotStep(() =>
            createSnapshot(dm, {
              origin: a.origin,
              name: a.name,
              cow: a.cow,
              chunkSize,
              store,
              family,
              discardZeroesCow: a.discardZeroesCow,
              discardPassdownOrigin: a.discardPassdownOrigin,
              uuid: a.uuid,
            }),
          );
          const table = `${r.table.start} ${r.table.length} ${r.table.type} ${r.table.params}`;
          if (a.json) ctx.printJson({ name: r.name, origin: r.origin, real: r.realName, table, formedOrigin: r.formedOrigin });
          else ctx.print(`${r.name}: snapshot of ${r.origin} (${table})${r.formedOrigin ? `; ${r.origin}'s table moved to ${r.realName}` : ''}`);
        });
      },
    )
    .command(
      'merge <name>',
      'Merge snapshot NAME back into its origin (progress bar until merged), then restore the plain origin',
      (b) => b.positional('name', nameArg).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name: string; json: boolean };
        schedule('snapshot merge', async (ctx) => {
          const dm = await ctx.dm();
          const tty = process.stderr.isTTY === true;
          let lastLine = 0;
          const r = await snapshotStep(() =>
            mergeSnapshot(dm, {
              name: a.name,
              onProgress: (p) => {
                if (tty) ctx.runtime.stderr(`\r${mergeBar(p)}\x1b[K`);
                else if (Date.now() - lastLine >= 1000 || p.remaining === 0n) {
                  lastLine = Date.now();
                  ctx.runtime.stderr(`${a.name}: ${mergeBar(p)}\n`);
                }
              },
            }),
          );
          if (tty) ctx.runtime.stderr('\n');
          const table = r.originTable.map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`).join('; ');
          const seconds = Math.round(r.seconds * 1000) / 1000;
          if (a.json) ctx.printJson({ name: r.name, origin: r.origin, merged: r.merged.toString(), seconds, originTable: table });
          else ctx.print(`${r.name}: ${r.merged} sectors merged into ${r.origin} in ${seconds} s; ${r.origin} is now ${table}`);
        });
      },
    )
    .command(
      'remove <name>',
      'Remove snapshot NAME (the last one gives its origin its former table back)',
      (b) => b.positional('name', nameArg).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name: string; json: boolean };
        schedule('snapshot remove', async (ctx) => {
          const r = await snapshotStep(async () => removeSnapshot(await ctx.dm(), a.name));
          const table = r.originTable.map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`).join('; ');
          if (a.json) ctx.printJson({ name: r.name, origin: r.origin ?? null, originTable: table });
          else ctx.print(r.origin === undefined ? `${r.name} removed (no origin device found)` : `${r.name} removed; ${r.origin} is ${table}`);
        });
      },
    )
    .command(
      'status <name>',
      'Show a snapshot, origin or merging origin: state, allocated / metadata sectors',
      (b) => b.positional('name', nameArg).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as { name: string; json: boolean };
        schedule('snapshot status', async (ctx) => {
          const r = await snapshotStep(async () => snapshotReport(await ctx.dm(), a.name));
          if (a.json) {
            ctx.printJson(toJson(r));
            return;
          }
          const lines = [`${r.name}: ${r.type} ${r.state}`];
          if (r.allocated !== null) lines.push(`  allocated: ${r.allocated} of ${r.total} sectors`, `  metadata: ${r.metadata} sectors`);
          if (r.origin !== undefined) lines.push(`  origin: ${r.origin ?? '-'}`);
          if (r.snapshots !== undefined) lines.push(`  snapshots: ${r.snapshots.join(' ') || '-'}`);
          ctx.print(...lines);
        });
      },
    )
    .command(
      'origin <name>',
      'Create a bare origin device over ORIGIN (low level; `snapshot create` does this for you)',
      (b) => createOptions(b, '--origin').option('origin', { type: 'string', demandOption: true, requiresArg: true, describe: 'origin device' }),
      (argv) => {
        const a = argv as unknown as CreateArgs & { origin: string };
        schedule('snapshot origin', (ctx) =>
          createDevice(ctx, a, a.origin, (length) =>
            snapshotOrigin.line({ origin: a.origin }, { start: sectors(0), length, type: typeName(snapshotOrigin, a.dmkit) }),
          ),
        );
      },
    );

const group = (name: string, describe: string, add: (y: Argv, s: Schedule) => Argv): CommandGroup => (y, schedule) =>
  y.command(name, describe, (b) => add(b, schedule).demandCommand(1, `which ${name} command? (dmkit ${name} --help lists them)`), () => undefined);

export const targetCommands: CommandGroup = (y, schedule) => {
  for (const g of [
    group('era', 'dm-era: changed-block tracking (create, checkpoint, metadata-snap, changed, status)', eraCommands),
    group('clone', 'dm-clone: instant restore with background hydration (create, hydrate, hydration, status)', cloneCommands),
    group('cache', 'dm-cache: a fast device in front of a slow one (create, attach, detach, migration-threshold, status)', cacheCommands),
    group('snapshot', 'dm-snapshot: copy-on-write snapshots (create, merge, remove, status, origin)', snapshotCommands),
  ]) {
    y = g(y, schedule);
  }
  return y;
};
