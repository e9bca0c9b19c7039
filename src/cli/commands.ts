/** The glue between yargs and command bodies: yargs only parses; the chosen body runs after parsing. */
import type { Argv, Options, PositionalOptions } from 'yargs';
import type { CommandContext } from './context';

export type Action = (ctx: CommandContext) => Promise<void>;

/** Records the command to run; `verb` is what failure messages name (`dmkit: <verb>: ...`). */
export type Schedule = (verb: string, action: Action) => void;

/** Each command group adds its commands to the parser. */
export type CommandGroup = (y: Argv, schedule: Schedule) => Argv;

export const nameArg: PositionalOptions = { type: 'string', describe: 'device name' };

export const uuidOpt: Options = {
  alias: 'u',
  type: 'string',
  requiresArg: true,
  describe: 'address the device by uuid instead of NAME',
};

export const jsonOpt: Options = { type: 'boolean', default: false, describe: 'print one JSON document (bigints as decimal strings)' };

export const inactiveOpt: Options = { type: 'boolean', default: false, describe: 'query the inactive (loaded, not yet resumed) table' };

export const noflushOpt: Options = { type: 'boolean', default: false, describe: 'do not flush (status: also skip metadata commits)' };

export const targetOpt: Options = { type: 'string', requiresArg: true, describe: 'only targets of this type' };
