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
  wipeTable,
} from './compat';
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
      "Signal that udev has processed a cookie's uevent (what udev's notify rule runs)",
      (b) => b.positional('cookie', { type: 'string' }),
      (argv) => {
        const a = argv as unknown as { cookie: string };
        schedule('udevcomplete', async () => {
          udevComplete(a.cookie, cookieSemaphores(), nativeCookieOps());
        });
      },
    )
    .command(
      'udevcomplete_all [age]',
      'Remove udev cookie semaphores left behind (older than AGE minutes); asks unless -y',
      (b) => b.positional('age', { type: 'string' }),
      (argv) => {
        const a = argv as unknown as { age?: string; yes: boolean };
        schedule('udevcomplete_all', async (ctx) => {
          const prefix = '3405 (0xd4d)';
          if (!a.yes) {
            ctx.runtime.stderr(`WARNING: This operation will destroy all semaphores with keys that have a prefix ${prefix}.\n`);
            ctx.write('Do you really want to continue? [y/n]: ');
            const answer = (await ctx.runtime.readStdin()) ?? '';
            if (!/^\s*y/i.test(answer)) {
              ctx.print('', `Semaphores with keys prefixed by ${prefix} NOT destroyed.`);
              return;
            }
          }
          const n = udevCompleteAll(a.age, cookieSemaphores(), nativeCookieOps(), Math.floor(Date.now() / 1000));
          ctx.print(`${n} semaphores with keys prefixed by ${prefix} destroyed.`);
        });
      },
    );
