/**
 * dmsetup verbs that have no API method of their own: splitname, wipe_table, and the udev cookie verbs
 * (udevcookies, udevcomplete, udevcomplete_all) that udev's rules and switching users call.
 */
import { nameArg, uuidOpt, type CommandGroup } from './commands';
import {
  cookieSemaphores,
  nativeCookieOps,
  resolveDevices,
  udevComplete,
  udevCompleteAll,
  udevcookiesText,
  udevCompleteAllDone,
  udevCompleteAllWarning,
  udevSyncActive,
  yesNoAnswer,
  parseAgeMinutes,
  parseCookie,
  wipeTable,
} from './compat';
import { existsSync } from 'node:fs';
import { UDEV_CONTROL_PATH } from '../dm/udev';
import { usageError } from './errors';
import { renderReport, splitName, SPLITNAME_DEFAULT, SPLITNAME_FIELDS } from './report';
import { reportOptions, type ReportArgs } from './report-options';

export const compatCommands: CommandGroup = (y, schedule) =>
  y
    .command(
      'splitname <device> [subsystem]',
      'Split an LVM device name into VG, LV and layer (-o, -O, -S, --noheadings, --separator, --nameprefixes)',
      (b) => reportOptions(b.positional('device', { type: 'string' }).positional('subsystem', { type: 'string' })),
      (argv) => {
        const a = argv as unknown as ReportArgs & { device: string; subsystem?: string };
        schedule('splitname', async (ctx) => {
          ctx.write(renderReport([splitName(a.device, a.subsystem ?? 'LVM')], SPLITNAME_FIELDS, SPLITNAME_DEFAULT, a.report));
        });
      },
    )
    .command(
      'wipe_table [names..]',
      'Replace the table with an error target of the same size and make it live',
      (b) => b.positional('names', { ...nameArg, array: true }).option('uuid', uuidOpt),
      (argv) => {
        const a = argv as unknown as { names?: string[]; uuid?: string };
        schedule('wipe_table', async (ctx) => {
          const ids = await resolveDevices(ctx, a.names ?? [], a.uuid);
          if (ids.length === 0) throw usageError('which device? give NAME, -u UUID or -j/-m');
          const dm = await ctx.dm();
          for (const id of ids) await wipeTable(dm, id);
        });
      },
    )
    .command(
      'udevcookies',
      'List the udev cookie semaphores',
      (b) => b,
      () => {
        schedule('udevcookies', async (ctx) => {
          const ops = nativeCookieOps();
          ctx.print(...udevcookiesText(cookieSemaphores(), (id) => ops.semGetValue(id)));
        });
      },
    )
    .command(
      'udevcomplete <cookie>',
      "Signal that udev has processed a cookie's uevent (what udev's notify rule runs; nothing without udev sync)",
      (b) => b.positional('cookie', { type: 'string' }),
      (argv) => {
        const a = argv as unknown as { cookie: string };
        schedule('udevcomplete', async (ctx) => {
          const sync = udevSyncActive(ctx.globals.noudevsync, ctx.runtime.env, () => existsSync(UDEV_CONTROL_PATH));
          if (parseCookie(a.cookie) === undefined || !sync) {
            udevComplete(a.cookie, [], nativeCookieOps(), sync);
            return;
          }
          udevComplete(a.cookie, cookieSemaphores(), nativeCookieOps(), sync);
        });
      },
    )
    .command(
      'udevcomplete_all [age]',
      'Remove udev cookie semaphores left behind (untouched for AGE minutes); asks unless -y',
      (b) => b.positional('age', { type: 'string' }),
      (argv) => {
        const a = argv as unknown as { age?: string; yes: boolean };
        schedule('udevcomplete_all', async (ctx) => {
          const age = parseAgeMinutes(a.age);
          if (!a.yes) {
            ctx.runtime.stderr(`${udevCompleteAllWarning(age)}\n`);
            ctx.write('Do you really want to continue? [y/n]: ');
            const answer = yesNoAnswer((await ctx.runtime.readStdin()) ?? '');
            if (answer.newline) ctx.write('\n');
            if (!answer.yes) {
              ctx.print('Semaphores with keys prefixed by 3405 (0xd4d) NOT destroyed.');
              return;
            }
          }
          ctx.print(udevCompleteAllDone(udevCompleteAll(a.age, cookieSemaphores(), nativeCookieOps(), Math.floor(Date.now() / 1000))));
        });
      },
    );
