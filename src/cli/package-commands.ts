/**
 * Commands about dmkit itself rather than devices: `completion` (yargs' bash/zsh completion script) and
 * `modules install|remove|status` (the kernel modules through DKMS, see dkms.ts).
 */
import type { Argv, Options } from 'yargs';
import { jsonOpt, type CommandGroup, type Schedule } from './commands';
import type { CommandContext } from './context';
import { CliError, ExitCode } from './errors';
import { DKMS_MODULES, dkmsStatus, modulesInstall, modulesRemove, type DkmsEntry, type DkmsTrees } from './dkms';

const pathOpt = (describe: string): Options => ({ type: 'string', requiresArg: true, describe });

function treeOptions(b: Argv): Argv {
  return b
    .option('dkms-tree', pathOpt('DKMS tree (default /var/lib/dkms)'))
    .option('source-tree', pathOpt('where DKMS keeps registered sources (default /usr/src)'))
    .option('install-tree', pathOpt('module tree root (default /lib/modules)'));
}

interface TreeArgs {
  dkmsTree?: string;
  sourceTree?: string;
  installTree?: string;
  json: boolean;
}

const trees = (a: TreeArgs): DkmsTrees => ({
  ...(a.dkmsTree ? { dkmsTree: a.dkmsTree } : {}),
  ...(a.sourceTree ? { sourceTree: a.sourceTree } : {}),
  ...(a.installTree ? { installTree: a.installTree } : {}),
});

function needRoot(ctx: CommandContext, what: string): void {
  if (ctx.runtime.uid !== 0) throw new CliError(`${what} needs root (DKMS writes /var/lib/dkms, /usr/src and /lib/modules); try sudo dmkit ${ctx.args.join(' ')}`, 'ERR_NOT_ROOT', ExitCode.NOT_PERMITTED);
}

const entryLine = (e: DkmsEntry): string => `dmkit/${e.version}${e.kernel ? `, ${e.kernel}, ${e.arch}` : ''}: ${e.state}`;
const entryJson = (e: DkmsEntry): Record<string, string | null> => ({ version: e.version, kernel: e.kernel ?? null, arch: e.arch ?? null, state: e.state });

const modulesCommands = (y: Argv, schedule: Schedule): Argv =>
  y
    .command(
      'install',
      'Register kmod/ with DKMS, build for a kernel (default: the running one) and install (modprobe dmkit-era then works, and DKMS rebuilds for new kernels)',
      (b) =>
        treeOptions(b)
          .option('kernel', pathOpt('kernel release to build for (default: uname -r)'))
          .option('kernel-build-dir', pathOpt('that kernel\'s build tree (default /lib/modules/<release>/build)'))
          .option('build-only', { type: 'boolean', default: false, describe: 'register and build, do not install' })
          .option('depmod', { type: 'boolean', default: true, describe: 'run depmod after installing (--no-depmod: the caller updates the module index)' })
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as TreeArgs & { kernel?: string; kernelBuildDir?: string; buildOnly: boolean; depmod: boolean };
        schedule('modules install', async (ctx) => {
          needRoot(ctx, 'modules install');
          const r = modulesInstall({
            ...trees(a),
            ...(a.kernel ? { release: a.kernel } : {}),
            ...(a.kernelBuildDir ? { buildDir: a.kernelBuildDir } : {}),
            buildOnly: a.buildOnly,
            noDepmod: !a.depmod,
          });
          if (a.json) {
            ctx.printJson({ version: r.version, kernel: r.kernel.release, kernelVersion: r.kernel.version, linuxSource: r.kernel.sourceTarball, steps: r.steps, modules: [...DKMS_MODULES], dkms: r.entries.map(entryJson) });
          } else {
            ctx.print(
              `dmkit ${r.version} for ${r.kernel.release} (Linux ${r.kernel.version}, headers from ${r.kernel.sourceTarball}): ${r.steps.length ? r.steps.join(', ') : 'already done'}`,
              ...r.entries.map(entryLine),
            );
          }
        });
      },
    )
    .command(
      'remove',
      'Uninstall the DKMS modules for one kernel (--kernel) or every kernel, and unregister',
      (b) =>
        treeOptions(b)
          .option('kernel', pathOpt('only this kernel release (default: all, and the registration)'))
          .option('depmod', { type: 'boolean', default: true, describe: 'run depmod after removing (--no-depmod skips it)' })
          .option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as TreeArgs & { kernel?: string; depmod: boolean };
        schedule('modules remove', async (ctx) => {
          needRoot(ctx, 'modules remove');
          const r = modulesRemove({ ...trees(a), ...(a.kernel ? { release: a.kernel } : {}), noDepmod: !a.depmod });
          if (a.json) ctx.printJson({ removed: r.removed.map(entryJson), dkms: r.entries.map(entryJson) });
          else ctx.print(r.removed.length ? `removed ${r.removed.map(entryLine).join('; ')}` : 'nothing registered with DKMS', ...r.entries.map(entryLine));
        });
      },
    )
    .command(
      'status',
      'What DKMS has of dmkit: registered versions, and per kernel built or installed',
      (b) => treeOptions(b).option('json', jsonOpt),
      (argv) => {
        const a = argv as unknown as TreeArgs;
        schedule('modules status', async (ctx) => {
          const entries = dkmsStatus(trees(a));
          if (a.json) ctx.printJson({ modules: [...DKMS_MODULES], dkms: entries.map(entryJson) });
          else ctx.print(...(entries.length ? entries.map(entryLine) : ['dmkit is not registered with DKMS (dmkit modules install)']));
        });
      },
    )
    .demandCommand(1, 'which modules command? (dmkit modules --help lists them)');

export const packageCommands: CommandGroup = (y, schedule) =>
  y
    .completion('completion', 'Print a bash/zsh completion script (dmkit completion >> ~/.bashrc)')
    .command('modules', 'The dmkit kernel modules through DKMS (install, remove, status)', (b) => modulesCommands(b, schedule), () => undefined);
