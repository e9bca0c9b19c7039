/**
 * `npm run vm -- [options] CMD [ARGS...]`: run CMD in the VM lab, stream its output, exit with its status
 * (124 timeout, 125 kernel splat, 126 the lab failed).
 */
import { describeResult, runVm, VM_EXIT, VmOptions } from './vm';

const USAGE = `usage: npm run vm -- [--mem MiB] [--cpus N] [--timeout S] [--kernel debian|debug|DIR] [--revert FIX[,FIX]] [--append 'WORDS'] CMD [ARGS...]
Runs CMD as root in a QEMU VM with the dmkit modules loaded, in the current folder.
Exit status: CMD's, or ${VM_EXIT.TIMEOUT} (timeout), ${VM_EXIT.SPLAT} (kernel splat), ${VM_EXIT.LAB_FAILURE} (the lab failed).
Environment: DMKIT_KERNEL (default kernel), DMKIT_LAB_DIR (cache folder).`;

function positiveInt(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (!v || !Number.isInteger(n) || n <= 0) throw new Error(`${flag} needs a positive whole number`);
  return n;
}

export function parseVmArgs(argv: readonly string[]): VmOptions {
  const opts: { -readonly [K in keyof VmOptions]: VmOptions[K] } = { command: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('--')) break;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string | undefined => inline ?? argv[++i];
    switch (flag) {
      case '--mem': opts.memoryMiB = positiveInt(flag, value()); break;
      case '--cpus': opts.cpus = positiveInt(flag, value()); break;
      case '--timeout': opts.timeoutSec = positiveInt(flag, value()); break;
      case '--kernel': opts.kernel = value() ?? ''; break;
      case '--revert': opts.reverts = (value() ?? '').split(',').filter(Boolean); break;
      case '--append': opts.kernelArgs = (value() ?? '').split(/\s+/).filter(Boolean); break;
      case '--help': throw new Error(USAGE);
      default: throw new Error(`unknown option ${flag}\n${USAGE}`);
    }
  }
  opts.command = argv.slice(i);
  if (!opts.command.length) throw new Error(USAGE);
  return opts;
}

async function main(): Promise<void> {
  let opts: VmOptions;
  try {
    opts = parseVmArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  try {
    const r = await runVm(opts);
    console.error(describeResult(r));
    process.exit(r.exitCode);
  } catch (e) {
    console.error(`dmkit-vm: ${(e as Error).message}`);
    process.exit(VM_EXIT.LAB_FAILURE);
  }
}

if (require.main === module) void main();
