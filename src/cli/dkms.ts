/**
 * `dmkit modules`: the dmkit kernel modules through DKMS. `install` registers kmod/ (its dkms.conf) with
 * DKMS, builds for one kernel and installs, so `modprobe dmkit-era` works and DKMS rebuilds the modules
 * for every kernel installed later (AUTOINSTALL). `remove` undoes it; `status` lists what DKMS has.
 *
 * The modules need the private drivers/md headers of linux-source-<series> (the kernel's major.minor):
 * install refuses before anything is registered when that source is missing, and kmod/Makefile refuses a
 * source whose version is not the kernel's. Nothing is ever built against another kernel's headers.
 *
 * The DKMS folders (--dkms-tree, --source-tree, --install-tree), --kernel-build-dir and --no-depmod let a
 * build host prepare modules for another kernel, such as the VM lab's (see test/vm/dkms.test.ts).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CliError, ExitCode } from './errors';

export const DKMS_PACKAGE = 'dmkit';
export const DKMS_MODULES = ['dmkit-core', 'dmkit-era', 'dmkit-clone'] as const;

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program without a shell; injectable so unit tests can fake dkms. */
export type Runner = (program: string, args: readonly string[]) => CommandResult;

export const runProgram: Runner = (program, args) => {
  const r = spawnSync(program, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) return { status: null, stdout: '', stderr: r.error.message };
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
};

export interface DkmsTrees {
  /** DKMS's own tree (default /var/lib/dkms). */
  dkmsTree?: string;
  /** Where registered sources are copied (default /usr/src). */
  sourceTree?: string;
  /** Module tree root (default /lib/modules). */
  installTree?: string;
}

export interface KernelTarget {
  /** `uname -r` of the kernel to build for. */
  release: string;
  /** Its prepared build tree (include/generated/utsrelease.h). */
  buildDir: string;
  /** Its version (VERSION.PATCHLEVEL.SUBLEVEL). */
  version: string;
  /** major.minor */
  series: string;
  /** linux-source tarball of that series. */
  sourceTarball: string;
}

export interface DkmsEntry {
  version: string;
  /** Undefined for a registered (added) source not built for any kernel. */
  kernel?: string;
  arch?: string;
  /** added, built, installed (with any DKMS note after it). */
  state: string;
}

const fail = (message: string, code: string, exit: ExitCode = ExitCode.FAILED): CliError => new CliError(message, code, exit);

/** The package root (the folder holding dmkit's package.json) above `from`. */
export function packageRoot(from = __dirname): string {
  for (let dir = from; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'dmkit') return dir;
    } catch {
      // keep walking up
    }
  }
  throw fail(`cannot find dmkit's package folder above ${from}`, 'ERR_NO_PACKAGE');
}

/** PACKAGE_VERSION of a dkms.conf. */
export function dkmsConfVersion(confText: string): string {
  const m = /^PACKAGE_VERSION="?([^"\s]+)"?\s*$/m.exec(confText);
  if (!m) throw fail('kmod/dkms.conf has no PACKAGE_VERSION', 'ERR_DKMS_CONF');
  return m[1]!;
}

/** The kmod folder with its dkms.conf, and the version DKMS will register. */
export function kmodSource(root = packageRoot()): { dir: string; version: string } {
  const dir = path.join(root, 'kmod');
  const conf = path.join(dir, 'dkms.conf');
  if (!fs.existsSync(conf)) throw fail(`${conf} is missing: this dmkit has no kernel module sources`, 'ERR_DKMS_CONF');
  return { dir, version: dkmsConfVersion(fs.readFileSync(conf, 'utf8')) };
}

/** major.minor of a kernel version or release (6.1 of 6.1.192 or of 6.1.0-57-amd64). */
export function kernelSeries(versionOrRelease: string): string {
  const m = /^(\d+)\.(\d+)/.exec(versionOrRelease);
  if (!m) throw fail(`cannot tell the series of kernel ${versionOrRelease}`, 'ERR_KERNEL_VERSION', ExitCode.USAGE);
  return `${m[1]}.${m[2]}`;
}

/** The linux-source tarball of a series in `srcDir`, if installed. */
export function linuxSourceTarball(series: string, srcDir = '/usr/src'): string | undefined {
  return ['xz', 'bz2'].map((ext) => path.join(srcDir, `linux-source-${series}.tar.${ext}`)).find((f) => fs.existsSync(f));
}

/** VERSION.PATCHLEVEL.SUBLEVEL of a build tree: from its generated version.h, else `make kernelversion`. */
export function kernelVersionOf(buildDir: string, run: Runner = runProgram): string {
  const header = path.join(buildDir, 'include', 'generated', 'uapi', 'linux', 'version.h');
  if (fs.existsSync(header)) {
    const text = fs.readFileSync(header, 'utf8');
    const field = (name: string): string | undefined => new RegExp(`^#define LINUX_VERSION_${name} (\\d+)$`, 'm').exec(text)?.[1];
    const [a, b, c] = [field('MAJOR'), field('PATCHLEVEL'), field('SUBLEVEL')];
    if (a && b && c) return `${a}.${b}.${c}`;
  }
  const v = run('make', ['-s', '--no-print-directory', '-C', buildDir, 'kernelversion']);
  const version = v.status === 0 ? v.stdout.trim() : '';
  if (!/^\d+\.\d+\.\d+$/.test(version)) throw fail(`cannot read the kernel version of ${buildDir}: ${v.stderr.trim()}`, 'ERR_KERNEL_VERSION');
  return version;
}

/**
 * Resolves the kernel to build for and checks what the build needs: its build tree, and the
 * linux-source tarball of its series. Refuses (changing nothing) when either is missing.
 */
export function resolveKernelTarget(
  opts: { release?: string; buildDir?: string; srcDir?: string },
  run: Runner = runProgram,
): KernelTarget {
  const release = opts.release ?? os.release();
  const buildDir = opts.buildDir ?? `/lib/modules/${release}/build`;
  const uts = path.join(buildDir, 'include', 'generated', 'utsrelease.h');
  if (!fs.existsSync(uts)) {
    throw fail(
      `no prepared build tree for kernel ${release} at ${buildDir}: install linux-headers-${release} (or give --kernel-build-dir)`,
      'ERR_NO_KERNEL_HEADERS',
    );
  }
  const utsRelease = /UTS_RELEASE "([^"]+)"/.exec(fs.readFileSync(uts, 'utf8'))?.[1];
  if (utsRelease !== release) {
    throw fail(`the build tree ${buildDir} is for kernel ${utsRelease ?? '(unknown)'}, not ${release}`, 'ERR_KERNEL_MISMATCH', ExitCode.USAGE);
  }
  const version = kernelVersionOf(buildDir, run);
  const series = kernelSeries(version);
  const sourceTarball = linuxSourceTarball(series, opts.srcDir);
  if (!sourceTarball) {
    throw fail(
      `kernel ${release} is Linux ${version}: dmkit's modules need the private drivers/md headers of ` +
        `linux-source-${series}, and ${opts.srcDir ?? '/usr/src'}/linux-source-${series}.tar.xz is missing. ` +
        `Install it (apt-get install linux-source-${series}); where no linux-source-${series} package exists, ` +
        `dmkit cannot build for this kernel (it never builds against another version's headers)`,
      'ERR_NO_LINUX_SOURCE',
    );
  }
  return { release, buildDir, version, series, sourceTarball };
}

function treeArgs(t: DkmsTrees): string[] {
  const a: string[] = [];
  if (t.dkmsTree) a.push('--dkmstree', t.dkmsTree);
  if (t.sourceTree) a.push('--sourcetree', t.sourceTree);
  if (t.installTree) a.push('--installtree', t.installTree);
  return a;
}

function dkms(run: Runner, args: readonly string[], what: string): string {
  const r = run('dkms', args);
  if (r.status === null) throw fail(`dkms is not available (${r.stderr.trim()}): apt-get install dkms`, 'ERR_NO_DKMS');
  if (r.status !== 0) {
    const out = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-15).join('\n');
    throw fail(`${what} failed (dkms exit ${r.status}):\n${out}`, 'ERR_DKMS');
  }
  return r.stdout;
}

/** Parses `dkms status` lines: "dmkit/0.1.0, 6.1.0-57-amd64, x86_64: installed" or "dmkit/0.1.0: added". */
export function parseDkmsStatus(text: string, pkg = DKMS_PACKAGE): DkmsEntry[] {
  const out: DkmsEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^([^/,:\s]+)[/,]\s*([^,:\s]+)(?:,\s*([^,:\s]+),\s*([^,:\s]+))?:\s*(.+)$/.exec(line.trim());
    if (!m || m[1] !== pkg) continue;
    out.push({ version: m[2]!, ...(m[3] ? { kernel: m[3], arch: m[4]! } : {}), state: m[5]!.trim() });
  }
  return out;
}

export function dkmsStatus(trees: DkmsTrees, run: Runner = runProgram): DkmsEntry[] {
  return parseDkmsStatus(dkms(run, ['status', '-m', DKMS_PACKAGE, ...treeArgs(trees)], 'dkms status'));
}

export interface InstallOptions extends DkmsTrees {
  release?: string;
  buildDir?: string;
  /** Register and build only (for another machine or a later install). */
  buildOnly?: boolean;
  /** Skip depmod after installing (the caller updates the module index itself). */
  noDepmod?: boolean;
  /** The kmod folder to register (default: this package's). */
  kmodDir?: string;
  /** Where linux-source tarballs live (default /usr/src). */
  srcDir?: string;
}

export interface InstallReport {
  kernel: KernelTarget;
  version: string;
  /** What this run did: added, built, installed (steps already done are not repeated). */
  steps: string[];
  entries: DkmsEntry[];
}

/** dkms add (unless registered), build (unless built), install (unless installed or buildOnly). */
export function modulesInstall(opts: InstallOptions, run: Runner = runProgram): InstallReport {
  const kernel = resolveKernelTarget({ release: opts.release, buildDir: opts.buildDir, srcDir: opts.srcDir }, run);
  const src = opts.kmodDir ? { dir: opts.kmodDir, version: dkmsConfVersion(fs.readFileSync(path.join(opts.kmodDir, 'dkms.conf'), 'utf8')) } : kmodSource();
  const trees = treeArgs(opts);
  const mv = ['-m', DKMS_PACKAGE, '-v', src.version];
  const kver = ['-k', kernel.release, '--kernelsourcedir', kernel.buildDir];
  const steps: string[] = [];
  const state = (): string | undefined => {
    const entries = dkmsStatus(opts, run).filter((e) => e.version === src.version);
    return entries.find((e) => e.kernel === kernel.release)?.state ?? (entries.length ? 'added' : undefined);
  };
  let now = state();
  if (now === undefined) {
    dkms(run, ['add', src.dir, ...trees], `registering ${src.dir} with DKMS`);
    steps.push('added');
    now = 'added';
  }
  if (now.startsWith('added')) {
    dkms(run, ['build', ...mv, ...kver, ...trees], `building dmkit ${src.version} for ${kernel.release}`);
    steps.push('built');
    now = 'built';
  }
  if (!opts.buildOnly && !now.startsWith('installed')) {
    dkms(run, ['install', ...mv, ...kver, ...trees, ...(opts.noDepmod ? ['--no-depmod'] : [])], `installing dmkit ${src.version} for ${kernel.release}`);
    steps.push('installed');
  }
  return { kernel, version: src.version, steps, entries: dkmsStatus(opts, run) };
}

export interface RemoveOptions extends DkmsTrees {
  /** One kernel; default: every kernel (and the registration). */
  release?: string;
  noDepmod?: boolean;
}

/** dkms remove for one kernel or all of them; a no-op (reported) when nothing is registered. */
export function modulesRemove(opts: RemoveOptions, run: Runner = runProgram): { removed: DkmsEntry[]; entries: DkmsEntry[] } {
  const before = dkmsStatus(opts, run);
  const versions = [...new Set(before.map((e) => e.version))];
  const removed: DkmsEntry[] = [];
  for (const v of versions) {
    const mine = before.filter((e) => e.version === v && (opts.release === undefined || e.kernel === opts.release));
    if (!mine.length) continue;
    const which = opts.release ? ['-k', opts.release] : ['--all'];
    dkms(run, ['remove', '-m', DKMS_PACKAGE, '-v', v, ...which, ...treeArgs(opts), ...(opts.noDepmod ? ['--no-depmod'] : [])], `removing dmkit ${v}`);
    removed.push(...mine);
  }
  return { removed, entries: dkmsStatus(opts, run) };
}
