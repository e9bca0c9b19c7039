/**
 * `npm run bench -- <id> [--cycles N] [--rounds N]`: runs a benchmark (in the VM lab unless this host has
 * device-mapper and root). Its last line is one JSON object with the benchmark's ratios.
 */
import * as fs from 'node:fs';
import { describeResult, runVm } from '../lab/vm';
import { runP1 } from './p1';
import { runP2 } from './p2';
import { runP3 } from './p3';
import { runP4 } from './p4';
import { runP5 } from './p5';
import { runP6 } from './p6';
import { runP7 } from './p7';

type Bench = (args: Map<string, number>) => Promise<Record<string, unknown>>;

const BENCHES: Record<string, Bench> = {
  P1: (a) =>
    runP1({
      rounds: a.get('rounds') ?? 5,
      ios: a.get('ios') ?? 4096,
      ios1: a.get('ios1') ?? 256,
      seqMib: a.get('seq-mib') ?? 16,
      quick: a.has('quick'),
    }),
  P2: (a) =>
    runP2({
      rounds: a.get('rounds') ?? 3,
      mb: a.get('mb') ?? 256,
      region: a.get('region') ?? 128,
      threshold: a.get('threshold') ?? 16,
      batch: a.get('batch') ?? 16,
      fioSeconds: a.get('fio-seconds') ?? 1,
    }),
  P3: (a) => runP3({ rounds: a.get('rounds') ?? 5, mib4k: a.get('mib-4k') ?? 4, mib64k: a.get('mib-64k') ?? 16 }),
  P4: (a) =>
    runP4({
      rounds: a.get('rounds') ?? 3,
      ios: a.get('ios') ?? 20000,
      warmupIos: a.get('warmup-ios') ?? 40000,
      delayMs: a.get('delay-ms') ?? 5,
      originMib: a.get('origin-mib') ?? 256,
      cacheMib: a.get('cache-mib') ?? 32,
    }),
  P5: (a) => runP5({ cycles: a.get('cycles') ?? 40, rounds: a.get('rounds') ?? 5 }),
  P6: (a) =>
    runP6({
      rounds: a.get('rounds') ?? 5,
      blocksLog2: a.get('blocks-log2') ?? 24,
      eras: a.get('eras') ?? 1000,
      archived: a.get('archived') ?? 32,
      back: a.get('back') ?? 100,
    }),
  P7: (a) => runP7({ rounds: a.get('rounds') ?? 5, mib: a.get('mib') ?? 256, percent: a.get('percent') ?? 20 }),
};

/** Benchmarks that read files only: they run on the host, never in the VM lab. */
const HOST_ONLY = new Set(['P6']);

function parse(argv: readonly string[]): { id: string; here: boolean; numbers: Map<string, number> } {
  const numbers = new Map<string, number>();
  let id = '';
  let here = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--here') here = true;
    else if (a.startsWith('--')) {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${a} needs a positive whole number`);
      numbers.set(a.slice(2), n);
    } else id = a.toUpperCase();
  }
  if (!BENCHES[id]) throw new Error(`usage: npm run bench -- <id> [--cycles N] [--rounds N]; ids: ${Object.keys(BENCHES).join(', ')}`);
  return { id, here, numbers };
}

function hostHasDeviceMapper(): boolean {
  return process.getuid?.() === 0 && fs.existsSync('/sys/class/misc/device-mapper');
}

async function main(): Promise<void> {
  const { id, here, numbers } = parse(process.argv.slice(2));
  if (here || HOST_ONLY.has(id) || hostHasDeviceMapper()) {
    const result = await BENCHES[id]!(numbers);
    console.log(JSON.stringify(result));
    return;
  }
  const r = await runVm({ command: [process.execPath, __filename, '--here', ...process.argv.slice(2)], timeoutSec: 1800 });
  console.error(describeResult(r));
  process.exit(r.exitCode);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`bench: ${(e as Error).message}`);
    process.exit(2);
  });
}
