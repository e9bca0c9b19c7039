/**
 * The dmkit command line: a yargs parser built around an injectable runtime. yargs only parses and
 * picks the command; the command body runs afterwards, so every failure, from parsing or from the
 * kernel, ends in one place that prints one line and returns an exit status. Nothing throws out.
 */
import yargs, { type Argv } from 'yargs';
import type { Action, CommandGroup, Schedule } from './commands';
import { CommandContext, NOT_ROOT, type GlobalOptions } from './context';
import { compatCommands } from './compat-commands';
import { deviceCommands } from './device-commands';
import { checkTargetType, validateName, validateUuid } from '../dm';
import { errorCode, errorJson, EXIT_CODE_HELP, exitCodeFor, formatError, isExpectedError, usageError, ExitCode } from './errors';
import { dmkitVersion, queryCommands } from './query-commands';
import type { Runtime } from './runtime';
import { targetCommands } from './target-commands';
import { packageCommands } from './package-commands';

const JSON_HELP = `JSON (--json): one document per run. Bigints (sectors, counts) are decimal strings;
other numbers are numbers; uuid is null when unset. One device gives its object, all devices
give {"devices": [...]}. status/table lines carry "parsed" (null for a type without a parser)
and, when parsing failed, "parseError" beside the raw text.`;

const GROUPS: readonly CommandGroup[] = [deviceCommands, queryCommands, compatCommands, targetCommands, packageCommands];

/** The parser alone (no side effects): `schedule` receives the chosen command's body. */
export function buildParser(schedule: Schedule): Argv {
  let y: Argv = yargs()
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
    // dmsetup's global options: accepted before or after any verb.
    .option('noudevsync', { type: 'boolean', default: false, describe: 'do not synchronise with udev (dmkit makes /dev/mapper nodes)' })
    .option('noudevrules', { type: 'boolean', default: false, describe: 'tell the udev rules to leave the device alone' })
    .option('verifyudev', { type: 'boolean', default: false, describe: 'check udev made the nodes (dmkit always makes missing /dev/mapper nodes itself when udev does not)' })
    .option('udevcookie', { type: 'string', requiresArg: true, describe: "count resume/remove/rename on this udev cookie's semaphore, without waiting (the caller waits)" })
    .option('verbose', { alias: 'v', type: 'count', describe: 'say more on stderr' })
    .option('yes', { alias: 'y', type: 'boolean', default: false, describe: 'answer yes to questions (udevcomplete_all asks one)' })
    .option('major', { alias: 'j', type: 'string', requiresArg: true, describe: 'the device by major number (with -m)' })
    .option('minor', { alias: 'm', type: 'string', requiresArg: true, describe: 'the device by minor number (with -j); create: ask for it' })
    .option('readahead', { type: 'string', requiresArg: true, describe: 'create/resume: read-ahead in sectors, +N (at least N), auto or none' })
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
  const loadByUuid =
    (argv.uuid !== undefined && ['load', 'reload'].includes(String((argv._ as unknown[])[0]))) || argv.concise === true;
  for (const key of ['name', 'new']) {
    const v = argv[key];
    if (typeof v === 'string' && !(key === 'name' && loadByUuid)) validateName(v);
  }
  for (const key of ['uuid', 'setuuid']) {
    const v = argv[key];
    if (typeof v === 'string') validateUuid(v);
  }
  for (const v of Array.isArray(argv.names) ? argv.names : []) validateName(String(v));
  const types = argv.types;
  if (Array.isArray(types)) for (const t of types) checkTargetType(String(t), 'target-version');
}

function integerOption(text: unknown, what: string, max: number): number | undefined {
  if (text === undefined) return undefined;
  const s = String(text);
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n > max) throw usageError(`${what} must be a whole number 0..${max}, got ${JSON.stringify(s)}`);
  return n;
}

function globalsOf(argv: Record<string, unknown>, env: Readonly<Record<string, string | undefined>>): GlobalOptions {
  const major = integerOption(argv.major, '--major', 0xfff);
  const minor = integerOption(argv.minor, '--minor', 0xfffff);
  return {
    noudevsync: argv.noudevsync === true,
    noudevrules: argv.noudevrules === true,
    udevcookie: integerOption(argv.udevcookie ?? env.DM_UDEV_COOKIE, '--udevcookie', 0xffffffff),
    verbose: typeof argv.verbose === 'number' ? argv.verbose : 0,
    major,
    minor,
  };
}

/** Global options that take a value as the next word (`--udevcookie 5 info`: the verb is info). */
const GLOBAL_VALUE_OPTIONS = new Set(['--udevcookie', '-j', '--major', '-m', '--minor', '--readahead']);

/** Where the verb is: the first word that is neither an option nor a global option's value (-1: none). */
function verbIndex(args: readonly string[]): number {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return -1;
    if (!a.startsWith('-') || a === '-') return i;
    if (GLOBAL_VALUE_OPTIONS.has(a)) i++;
  }
  return -1;
}

/** The command named in error messages: the verb, or '' when there is none. */
const verbOf = (args: readonly string[]): string => {
  const i = verbIndex(args);
  return i < 0 ? '' : args[i]!;
};

const isJsonOption = (a: string): boolean => /^--(no-)?json(=.*)?$/.test(a);

/**
 * `dmkit --json VERB ...` is `dmkit VERB ... --json`: --json belongs to the commands that print
 * documents, so one given before the verb moves to the end of the command's own options (before a
 * `--`). The command then takes it as if typed after it, or refuses it (exit 2) if it has no --json.
 */
export function moveLeadingJson(args: readonly string[], isVerb: (word: string) => boolean = () => true): string[] {
  const verb = verbIndex(args);
  if (verb < 0) return [...args];
  const leading = args.slice(0, verb);
  const json = leading.filter(isJsonOption);
  if (json.length === 0) return [...args];
  const rest = [...leading.filter((a) => !isJsonOption(a)), ...args.slice(verb)];
  // An unknown verb is the error to report; the JSON form of it still comes from wantsJson(given args).
  if (!isVerb(args[verb]!)) return rest;
  const end = rest.indexOf('--');
  return end < 0 ? [...rest, ...json] : [...rest.slice(0, end), ...json, ...rest.slice(end)];
}

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

/** Options whose value may start with '-' (`-O -name` sorts descending), as getopt lets dmsetup take them. */
const DASH_VALUE_OPTIONS = new Set(['-O', '--sort', '-S', '--select', '-o', '--separator']);

/** `-O -name` becomes `-O=-name`, which yargs reads as a value rather than as an option. */
function joinDashValues(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const next = args[i + 1];
    if (DASH_VALUE_OPTIONS.has(a) && next !== undefined && next.startsWith('-') && next !== '--') {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

let verbs: ReadonlySet<string> | undefined;

/** The top-level command names (and aliases) the parser knows. */
function isKnownVerb(word: string): boolean {
  if (!verbs) {
    const internal = (buildParser(() => undefined) as unknown as { getInternalMethods(): { getCommandInstance(): { getCommands(): string[] } } })
      .getInternalMethods()
      .getCommandInstance();
    verbs = new Set(internal.getCommands());
  }
  return verbs.has(word);
}

/** Runs one command line to completion; resolves with the exit status. */
export async function runCli(givenArgs: readonly string[], runtime: Runtime): Promise<ExitCode> {
  const args = joinDashValues(moveLeadingJson(givenArgs, isKnownVerb));
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
    return report(runtime, verbOf(args), e, givenArgs);
  }
  if (helpText) runtime.stdout(`${helpText}\n`);
  if (!chosen) return ExitCode.OK;
  let ctx = new CommandContext(runtime, givenArgs);
  try {
    // Names, uuids and target types are checked before the control node is opened or root is checked.
    if (parsed) {
      preflight(parsed);
      ctx = new CommandContext(runtime, givenArgs, globalsOf(parsed, runtime.env));
    }
    await chosen.action(ctx);
    return ExitCode.OK;
  } catch (e) {
    return report(runtime, chosen.verb, e, givenArgs);
  } finally {
    await ctx.close().catch(() => undefined);
  }
}
