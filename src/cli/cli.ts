/**
 * The dmkit command line: a yargs parser built around an injectable runtime. yargs only parses and
 * picks the command; the command body runs afterwards, so every failure, from parsing or from the
 * kernel, ends in one place that prints one line and returns an exit status. Nothing throws out.
 */
import yargs, { type Argv } from 'yargs';
import type { Action, CommandGroup, Schedule } from './commands';
import { CommandContext, NOT_ROOT } from './context';
import { deviceCommands } from './device-commands';
import { checkTargetType, validateName, validateUuid } from '../dm';
import { errorCode, errorJson, EXIT_CODE_HELP, exitCodeFor, formatError, isExpectedError, usageError, ExitCode } from './errors';
import { dmkitVersion, queryCommands } from './query-commands';
import type { Runtime } from './runtime';
import { targetCommands } from './target-commands';

const JSON_HELP = `JSON (--json): one document per run. Bigints (sectors, counts) are decimal strings;
other numbers are numbers; uuid is null when unset. One device gives its object, all devices
give {"devices": [...]}. status/table lines carry "parsed" (null for a type without a parser)
and, when parsing failed, "parseError" beside the raw text.`;

const GROUPS: readonly CommandGroup[] = [deviceCommands, queryCommands, targetCommands];

/** The parser alone (no side effects): `schedule` receives the chosen command's body. */
export function buildParser(schedule: Schedule): Argv {
  let y = yargs()
    .scriptName('dmkit')
    .usage('$0 <command> [options]\n\nA dmsetup replacement for device-mapper targets, with --json.\nDevices are named by NAME or -u UUID; tables are dmsetup text, "start length type params", in 512-byte sectors.')
    .parserConfiguration({
      'parse-numbers': false,
      'parse-positional-numbers': false,
      'greedy-arrays': false,
      'dot-notation': false,
    })
    .strict()
    .demandCommand(1, 'give a command (dmkit --help lists them)')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(dmkitVersion())
    .wrap(100)
    .exitProcess(false)
    .fail((msg, err) => {
      // yargs' own parse errors (an option missing its value, say) are usage errors like any other.
      throw err === undefined || err === null || err.name === 'YError' ? usageError(`${err?.message ?? msg}; see dmkit --help`) : err;
    })
    .epilogue(`${EXIT_CODE_HELP}\n\n${JSON_HELP}`);
  for (const group of GROUPS) y = group(y, schedule);
  return y;
}

/**
 * The argument checks every command shares, run on the parsed command line before the command body:
 * device names (NAME, NEW_NAME, --name), uuids (-u, --setuuid, create's --uuid) and target types. `load -u
 * UUID FILE` takes its file in the NAME position, so a name there is checked by the command itself.
 */
function preflight(argv: Record<string, unknown>): void {
  const loadByUuid = argv.uuid !== undefined && ['load', 'reload'].includes(String((argv._ as unknown[])[0]));
  for (const key of ['name', 'new']) {
    const v = argv[key];
    if (typeof v === 'string' && !(key === 'name' && loadByUuid)) validateName(v);
  }
  for (const key of ['uuid', 'setuuid']) {
    const v = argv[key];
    if (typeof v === 'string') validateUuid(v);
  }
  const types = argv.types;
  if (Array.isArray(types)) for (const t of types) checkTargetType(String(t), 'target-version');
}

/** The first word that is not an option: the command named in error messages. */
const verbOf = (args: readonly string[]): string => args.find((a) => !a.startsWith('-')) ?? '';

/** --json among the options (not after a `--`): errors are then also a JSON document on stdout. */
function wantsJson(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((a) => a === '--json' || a === '--json=true');
}

function report(runtime: Runtime, verb: string, e: unknown, args: readonly string[] = []): ExitCode {
  if (wantsJson(args)) runtime.stdout(errorJson(verb, e));
  if (errorCode(e) === NOT_ROOT) {
    runtime.stderr(`dmkit: ${(e as Error).message}\n`);
  } else {
    runtime.stderr(`${formatError(verb, e)}\n`);
    if (!isExpectedError(e) && runtime.env.DMKIT_DEBUG && e instanceof Error && e.stack) runtime.stderr(`${e.stack}\n`);
  }
  return exitCodeFor(e);
}

/** Runs one command line to completion; resolves with the exit status. */
export async function runCli(args: readonly string[], runtime: Runtime): Promise<ExitCode> {
  let chosen: { verb: string; action: Action } | undefined;
  let helpText = '';
  let parsed: Record<string, unknown> | undefined;
  try {
    const parser = buildParser((verb, action) => {
      chosen = { verb, action };
    });
    parser.parse([...args], {}, (_err: Error | undefined, argv: unknown, output: string) => {
      helpText = output;
      parsed = argv as Record<string, unknown>;
    });
  } catch (e) {
    return report(runtime, verbOf(args), e, args);
  }
  if (helpText) runtime.stdout(`${helpText}\n`);
  if (!chosen) return ExitCode.OK;
  const ctx = new CommandContext(runtime, args);
  try {
    // Names, uuids and target types are checked before the control node is opened or root is checked.
    if (parsed) preflight(parsed);
    await chosen.action(ctx);
    return ExitCode.OK;
  } catch (e) {
    return report(runtime, chosen.verb, e, args);
  } finally {
    await ctx.close().catch(() => undefined);
  }
}
