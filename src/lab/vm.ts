/**
 * The VM lab: boots a kernel under QEMU TCG with the host root exported read-only over 9p and a tmpfs
 * overlay in the guest, loads the dmkit modules built for that kernel, runs one command in the checkout
 * and reports its exit status, failing the run on any kernel splat.
 *
 * Guest channels: ttyS0 = kernel console (saved to the run folder); virtio-9p `dmkitrun` = the run
 * folder, where the guest writes the command's stdout and stderr (streamed to ours as they grow), its
 * status and the whole kernel log.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildInitramfs } from './initramfs';
import { Kernel, resolveKernel } from './kernels';
import { prepareModuleTree } from './modules';
import { LAB_DIR, REPO_ROOT } from './paths';
import { shellQuote } from './proc';
import { findSplats, Splat } from './splat';

export interface VmOptions {
  command: readonly string[];
  /** Folder the command runs in (same path in the guest); default: the current folder. */
  cwd?: string;
  memoryMiB?: number;
  cpus?: number;
  /** Hard limit for the whole run, boot included; QEMU is killed when it passes. */
  timeoutSec?: number;
  /** 'debian', 'debug' or a kernel folder (see kernels.ts); default DMKIT_KERNEL or 'debian'. */
  kernel?: string;
  /** Revert switches to build the modules with. */
  reverts?: readonly string[];
  /** Extra kernel command-line words (appended after the lab's own). */
  kernelArgs?: readonly string[];
  /** Extra environment for the command. */
  env?: Record<string, string>;
  /** Where the command's stdout/stderr go; default: ours. */
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
}

/** Exit codes of a lab run that are not the command's own. */
export const VM_EXIT = { TIMEOUT: 124, SPLAT: 125, LAB_FAILURE: 126 } as const;

/** What the guest's stage2 reports when the kernel splatted while booting, before any dmkit code ran. */
const BOOT_SPLAT_STATUS = 123;

/**
 * What stage2 reports when the job outlived its time in the guest: the guest's watchdog stops it a
 * minute before the host would kill QEMU, after sysrq-w put every blocked task's stack in the kernel
 * log (a hang says where it hangs, instead of a killed VM with no log).
 */
const GUEST_TIMEOUT_STATUS = 121;
/** The host's timeout minus boot and shutdown; no watchdog under two minutes. */
function guestTimeout(timeoutSec: number): number {
  return timeoutSec >= 120 ? timeoutSec - 60 : 0;
}

export interface VmResult {
  /** What `npm run vm` exits with: the command's status, or one of VM_EXIT. */
  exitCode: number;
  /** The command's own status, when the guest reported one. */
  commandStatus: number | null;
  timedOut: boolean;
  splats: Splat[];
  kernel: Kernel;
  kernelLog: string;
  runDir: string;
  seconds: number;
  /** Why the lab itself failed, if it did. */
  labError?: string;
}

const KEEP_RUNS = 40;

/** Copies what the guest appends to a file in the run folder to a stream, as it arrives. */
class FileFollower {
  private fd: number | null = null;
  private offset = 0;
  private readonly buf = Buffer.alloc(1 << 16);

  constructor(private readonly file: string, private readonly out: NodeJS.WritableStream) {}

  pump(): void {
    if (this.fd === null) {
      if (!fs.existsSync(this.file)) return;
      this.fd = fs.openSync(this.file, 'r');
    }
    for (;;) {
      const n = fs.readSync(this.fd, this.buf, 0, this.buf.length, this.offset);
      if (n <= 0) return;
      this.offset += n;
      this.out.write(Buffer.from(this.buf.subarray(0, n)));
    }
  }

  finish(): void {
    this.pump();
    if (this.fd !== null) fs.closeSync(this.fd);
  }
}

function newRunDir(): string {
  const runs = path.join(LAB_DIR, 'runs');
  fs.mkdirSync(runs, { recursive: true });
  const old = fs.readdirSync(runs).sort();
  for (const d of old.slice(0, Math.max(0, old.length - KEEP_RUNS))) fs.rmSync(path.join(runs, d), { recursive: true, force: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = path.join(runs, `${stamp}-${process.pid}-${Math.random().toString(36).slice(2, 6)}`);
  fs.mkdirSync(dir);
  return dir;
}

/** Variables handed to the guest command besides those given explicitly. */
function passthroughEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && (/^DMKIT_/.test(k) || k === 'CI' || k === 'NODE_OPTIONS')) env[k] = v;
  }
  return env;
}

function writeJob(dir: string, opts: VmOptions, kernel: Kernel, modDir: string, modules: string[], timeoutSec: number): void {
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  // A larger libuv pool: IO to a suspended device blocks a pool thread until resume, and the resume
  // ioctl itself needs a free one (the torture component has several IO loops in flight).
  const env = { UV_THREADPOOL_SIZE: '16', ...passthroughEnv(), ...opts.env, DMKIT_KERNEL_LABEL: kernel.label };
  const lines = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`);
  lines.push(`exec ${opts.command.map(shellQuote).join(' ')}`);
  fs.writeFileSync(path.join(dir, 'job'), `${lines.join('\n')}\n`);
  const jobEnv = {
    DMKIT_KREL: kernel.release,
    DMKIT_MODROOT: modDir,
    DMKIT_MODULES: modules.join(' '),
    DMKIT_REPO: REPO_ROOT,
    DMKIT_CWD: cwd,
    DMKIT_HUNG_TASK_SECS: kernel.label === 'debug' ? '120' : '60',
    DMKIT_GUEST_TIMEOUT: String(guestTimeout(timeoutSec)),
  };
  fs.writeFileSync(
    path.join(dir, 'job.env'),
    Object.entries(jobEnv).map(([k, v]) => `${k}=${shellQuote(v)}`).join('\n') + '\n',
  );
  fs.copyFileSync(path.join(REPO_ROOT, 'scripts', 'guest', 'stage2'), path.join(dir, 'stage2'));
}

function qemuArgs(kernel: Kernel, initrd: string, dir: string, opts: VmOptions): string[] {
  const append = ['console=ttyS0', 'loglevel=5', 'panic=-1', 'oops=panic', 'mitigations=off', 'nokaslr', 'rcupdate.rcu_expedited=1', ...(opts.kernelArgs ?? [])].join(' ');
  return [
    '-accel', 'tcg,thread=multi', '-cpu', 'max',
    '-m', String(opts.memoryMiB ?? 2048), '-smp', String(opts.cpus ?? 2),
    '-nodefaults', '-no-reboot', '-display', 'none', '-monitor', 'none',
    '-kernel', kernel.image, '-initrd', initrd, '-append', append,
    '-chardev', `file,id=console,path=${path.join(dir, 'console.log')}`, '-serial', 'chardev:console',
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${dir},mount_tag=dmkitrun,security_model=none,multidevs=remap`,
  ];
}

function readIf(file: string): string | null {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
}

function uniqueSplats(...logs: Array<string | null>): Splat[] {
  const seen = new Set<string>();
  const out: Splat[] = [];
  for (const log of logs) {
    for (const s of log ? findSplats(log) : []) {
      if (!seen.has(s.text)) {
        seen.add(s.text);
        out.push(s);
      }
    }
  }
  return out;
}

/**
 * Runs the command in a fresh VM. A kernel that splats while booting, before anything of dmkit ran
 * (seen once on the debug kernel: a KASAN report in an early interrupt), is booted once more; the first
 * run's folder keeps its log, and a second boot splat fails the run like any splat.
 */
export async function runVm(opts: VmOptions): Promise<VmResult> {
  const first = await runVmOnce(opts);
  if (first.commandStatus !== BOOT_SPLAT_STATUS) return first;
  const err = opts.stderr ?? process.stderr;
  err.write(`dmkit-vm: the kernel splatted while booting (log ${first.kernelLog}):\n`);
  for (const s of first.splats.slice(0, 5)) err.write(`  [${s.kind}] ${s.text}\n`);
  err.write('dmkit-vm: booting again\n');
  const second = await runVmOnce(opts);
  return { ...second, seconds: first.seconds + second.seconds };
}

async function runVmOnce(opts: VmOptions): Promise<VmResult> {
  const started = Date.now();
  if (!opts.command.length) throw new Error('runVm: no command');
  const kernel = resolveKernel(opts.kernel);
  const tree = prepareModuleTree(kernel, opts.reverts);
  const initrd = buildInitramfs(kernel);
  const dir = newRunDir();
  const timeoutSec = opts.timeoutSec ?? 900;
  writeJob(dir, opts, kernel, tree.dir, tree.modules, timeoutSec);

  const child = spawn('qemu-system-x86_64', qemuArgs(kernel, initrd, dir, opts), {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const streams = [
    new FileFollower(path.join(dir, 'stdout'), opts.stdout ?? process.stdout),
    new FileFollower(path.join(dir, 'stderr'), opts.stderr ?? process.stderr),
  ];
  const poll = setInterval(() => streams.forEach((f) => f.pump()), 100);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutSec * 1000);
  const onSignal = (): void => void child.kill('SIGKILL');
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const qemuStatus = await new Promise<number | null>((resolve) => {
    child.on('error', () => resolve(null));
    child.on('exit', (code) => resolve(code));
  });
  clearTimeout(timer);
  clearInterval(poll);
  streams.forEach((f) => f.finish());
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);

  const dmesg = readIf(path.join(dir, 'dmesg.log'));
  const consoleLog = readIf(path.join(dir, 'console.log'));
  const kernelLog = path.join(dir, 'kernel.log');
  fs.writeFileSync(kernelLog, dmesg ?? consoleLog ?? '');
  const splats = uniqueSplats(dmesg, consoleLog);
  const statusText = readIf(path.join(dir, 'status'));
  const commandStatus = statusText === null ? null : Number.parseInt(statusText.trim(), 10);

  let exitCode: number;
  let labError: string | undefined;
  if (timedOut) {
    exitCode = VM_EXIT.TIMEOUT;
    labError = `timed out after ${timeoutSec} s`;
  } else if (commandStatus === null || Number.isNaN(commandStatus)) {
    exitCode = VM_EXIT.LAB_FAILURE;
    labError = qemuStatus === null ? 'qemu-system-x86_64 could not run' : `the guest stopped without a status (qemu exit ${qemuStatus})`;
  } else if (commandStatus === GUEST_TIMEOUT_STATUS) {
    exitCode = VM_EXIT.TIMEOUT;
    labError = `the job ran past ${guestTimeout(timeoutSec)} s and was stopped in the guest; the blocked tasks' stacks (sysrq-w) are in the kernel log`;
  } else if (commandStatus === BOOT_SPLAT_STATUS && !splats.length) {
    exitCode = VM_EXIT.LAB_FAILURE;
    labError = 'the guest saw a boot splat that the host does not find in the kernel log';
  } else {
    exitCode = commandStatus;
  }
  if (splats.length) exitCode = VM_EXIT.SPLAT;
  return {
    exitCode,
    commandStatus: Number.isNaN(commandStatus) ? null : commandStatus,
    timedOut,
    splats,
    kernel,
    kernelLog,
    runDir: dir,
    seconds: (Date.now() - started) / 1000,
    ...(labError ? { labError } : {}),
  };
}

/** One or a few lines for a person: what ran where, and why it failed if it did. */
export function describeResult(r: VmResult): string {
  const rel = path.relative(process.cwd(), r.kernelLog) || r.kernelLog;
  const lines = [`dmkit-vm: ${r.kernel.label} kernel ${r.kernel.release}, exit ${r.exitCode}, ${r.seconds.toFixed(1)} s, kernel log ${rel}`];
  if (r.labError) lines.push(`dmkit-vm: ${r.labError}`);
  if (r.splats.length) {
    lines.push(`dmkit-vm: FAIL: the kernel log has ${r.splats.length} splat line(s):`);
    for (const s of r.splats.slice(0, 20)) lines.push(`  [${s.kind}] ${s.text}`);
  }
  return lines.join('\n');
}
