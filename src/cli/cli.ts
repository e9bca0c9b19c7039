/**
 * The dmkit command line: a yargs parser built around an injectable runtime. yargs only parses and
 * picks the command; the command body runs afterwards, so every failure, from parsing or from the
 * kernel, ends in one place that prints one line and returns an exit status. Nothing throws out.
 */
import yargs, { type Argv } from 'yargs';
import type { Action, CommandGroup, Schedule } from './commands';
import { CommandContext, NOT_ROOT } from './context';
import { deviceCommands } from './device-commands';
import { errorCode, EXIT_CODE_HELP, ExitCode, exitCodeFor, formatError, isExpectedError, usageError } from './errors';
import { dmkitVersion, queryCommands } from './query-commands';
import type { Runtime } from './runtime';
import { targetCommands } from './target-commands';
import { packageCommands } from './package-commands';

const JSON_HELP = `JSON (--json): one document per run. Bigints (sectors, counts) are decimal strings;
other numbers are numbers; uuid is null when unset. One device gives its object, all devices
give {"devices": [...]}. status/table lines carry "parsed" (null for a type without a parser)
and, when parsing failed, "parseError" beside the raw text.`;

const GROUPS: readonly CommandGroup[] = [deviceCommands, queryCommands, targetCommands, packageCommands];

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
      throw err ?? usageError(msg);
    })
    .epilogue(`${EXIT_CODE_HELP}\n\n${JSON_HELP}`);
  for (const group of GROUPS) y = group(y, schedule);
  return y;
}

/** The first word that is not an option: the command named in error messages. */
const verbOf = (args: readonly string[]): string => args.find((a) => !a.startsWith('-')) ?? '';

function report(runtime: Runtime, verb: string, e: unknown): ExitCode {
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
  try {
    const parser = buildParser((verb, action) => {
      chosen = { verb, action };
    });
    parser.parse([...args], {}, (_err: Error | undefined, _argv: unknown, output: string) => {
      helpText = output;
    });
  } catch (e) {
    const code = report(runtime, verbOf(args), e);
    if (code === ExitCode.USAGE) runtime.stderr(`Run 'dmkit --help' for usage.\n`);
    return code;
  }
  if (helpText) runtime.stdout(`${helpText}\n`);
  if (!chosen) return ExitCode.OK;
  const ctx = new CommandContext(runtime, args);
  try {
    await chosen.action(ctx);
    return ExitCode.OK;
  } catch (e) {
    return report(runtime, chosen.verb, e);
  } finally {
    await ctx.close().catch(() => undefined);
  }
}
