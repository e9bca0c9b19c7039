/**
 * P6: listing the blocks changed since an era on a large era metadata, dmkit vs era_invalidate.
 *
 * The metadata is written offline by src/testing/era-image.ts (cached under the bench directory by its
 * parameters; era_check must accept it): by default an origin of 2^24 blocks of 64 KiB (1 TiB), 1000
 * eras of which the last 32 are archived writesets and the older ones digested into the era array.
 * Contenders, in alternating order round by round, each listing the blocks written since `since`:
 *  - era_invalidate --written-since N FILE (a process; it reads with O_DIRECT);
 *  - `dmkit era changed --since N --metadata FILE --format xml` (a process: node start-up included);
 *  - changedRunsFromMetadata + the XML text in this process.
 * Both dmkit contenders read with O_DIRECT too (same IO as era_invalidate) and must print the same XML
 * as era_invalidate (checked before timing). The headline speedup is process against process, wall
 * clock; with /usr/bin/time the CPU seconds (user + system) are reported too, a figure the load of a
 * shared machine does not move much.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { changedRunsFromMetadata, eraInvalidateXml } from '../pdata/era-changed';
import { eraImage, syntheticEra } from '../testing/era-image';
import { median, round, timeMs } from './stats';

export interface P6Options {
  rounds: number;
  /** log2 of the origin's blocks (24: 16 Mi blocks, 1 TiB at 64 KiB). */
  blocksLog2: number;
  eras: number;
  archived: number;
  /** List blocks written in the last `back` eras. */
  back: number;
  dir?: string;
}

const BLOCK_SECTORS = 128;

function metadataFile(o: P6Options): { file: string; nrBlocks: number } {
  const nrBlocks = 2 ** o.blocksLog2;
  const dir = o.dir ?? path.join(os.tmpdir(), 'dmkit-bench');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `p6-${o.blocksLog2}-${o.eras}-${o.archived}.era`);
  if (!fs.existsSync(file)) {
    const spec = syntheticEra({ seed: 6, nrBlocks, currentEra: o.eras, archived: o.archived, runsPerEra: 200, maxRun: 256, blockSizeSectors: BLOCK_SECTORS });
    fs.writeFileSync(`${file}.tmp`, eraImage(spec));
    const check = spawnSync('era_check', [`${file}.tmp`], { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`era_check rejects the generated metadata: ${check.stderr}`);
    fs.renameSync(`${file}.tmp`, file);
  }
  return { file, nrBlocks };
}

const TIME = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/** Runs a contender; with /usr/bin/time, `cpu` collects its user + system seconds. */
function run(cmd: string, args: string[], cpu?: number[]): string {
  const r = TIME ? spawnSync(TIME, ['-f', 'P6CPU %U %S', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 30 }) : spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${r.stderr}`);
  const m = /P6CPU ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  if (cpu && m) cpu.push(Number(m[1]) + Number(m[2]));
  return r.stdout;
}

export async function runP6(o: P6Options): Promise<Record<string, unknown>> {
  const { file, nrBlocks } = metadataFile(o);
  const since = o.eras - o.back;
  const cli = path.join(__dirname, '..', '..', '..', 'bin', 'dmkit');
  const cpu = { tool: [] as number[], cli: [] as number[], api: [] as number[] };
  let timing = false;
  const tool = (): string => run('era_invalidate', ['--written-since', String(since), file], timing ? cpu.tool : undefined);
  const viaCli = (): string => run(process.execPath, [cli, 'era', 'changed', '--since', String(since), '--metadata', file, '--format', 'xml', '--direct'], timing ? cpu.cli : undefined);
  const inProcess = (): string => {
    const c = process.cpuUsage();
    const xml = eraInvalidateXml(changedRunsFromMetadata(file, since, { direct: true }).runs);
    const u = process.cpuUsage(c);
    if (timing) cpu.api.push((u.user + u.system) / 1e6);
    return xml;
  };

  const want = tool();
  if (viaCli() !== want) throw new Error('dmkit era changed --format xml differs from era_invalidate');
  if (inProcess() !== want) throw new Error('changedRunsFromMetadata differs from era_invalidate');

  const times = { tool: [] as number[], cli: [] as number[], api: [] as number[] };
  const contenders: Array<[keyof typeof times, () => unknown]> = [
    ['tool', tool],
    ['cli', viaCli],
    ['api', inProcess],
  ];
  timing = true;
  for (let r = 0; r < o.rounds; r++) {
    const order = r % 2 ? [...contenders].reverse() : contenders;
    for (const [k, fn] of order) times[k].push(await timeMs(() => void fn()));
  }
  const med = { tool: median(times.tool), cli: median(times.cli), api: median(times.api) };
  return {
    bench: 'P6',
    speedup_vs_era_invalidate: round(med.tool / med.cli, 2),
    speedup_in_process: round(med.tool / med.api, 2),
    ...(cpu.tool.length && cpu.cli.length
      ? {
          cpu_speedup_vs_era_invalidate: round(median(cpu.tool) / median(cpu.cli), 2),
          era_invalidate_cpu_s: round(median(cpu.tool), 2),
          dmkit_cli_cpu_s: round(median(cpu.cli), 2),
          dmkit_api_cpu_s: round(median(cpu.api), 2),
        }
      : {}),
    era_invalidate_ms: round(med.tool, 1),
    dmkit_cli_ms: round(med.cli, 1),
    dmkit_api_ms: round(med.api, 1),
    origin_blocks: nrBlocks,
    origin_tib: round((nrBlocks * BLOCK_SECTORS * 512) / 2 ** 40, 3),
    metadata_mib: round(fs.statSync(file).size / 2 ** 20, 1),
    eras: o.eras,
    archived_writesets: o.archived,
    since,
    ranges: (want.match(/\n/g)?.length ?? 2) - 2,
    rounds: o.rounds,
  };
}
