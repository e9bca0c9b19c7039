/**
 * P5: control-plane round trips. N cycles of create, load, resume, status, remove of a linear device
 * through the dmkit API in this one process, against the same five steps as five `dmsetup` processes.
 * Contenders alternate order round by round; the result is the ratio of per-cycle medians.
 */
import { execFileSync } from 'node:child_process';
import { DeviceMapper } from '../dm';
import { ramdisks, Scope } from '../testing';
import { bytes, sectors } from '../units';
import { median, round, timeMs } from './stats';

export interface P5Options {
  cycles: number;
  rounds: number;
}

const DMSETUP_FLAGS = ['--noudevsync', '--noudevrules'];

function dmsetup(...args: string[]): void {
  execFileSync('dmsetup', [...DMSETUP_FLAGS, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

export async function runP5(opts: P5Options): Promise<Record<string, unknown>> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  try {
    const [ram] = ramdisks(scope, 1, bytes(8n << 20n));
    const length = sectors(ram!.sectors);
    const table = { start: sectors(0), length, type: 'linear', params: `${ram!.path} 0` };
    const tableText = `0 ${length} linear ${ram!.path} 0`;

    const viaApi = async (i: number): Promise<void> => {
      const id = { name: `p5-api-${i}` };
      await dm.create(id.name);
      await dm.load(id, [table]);
      await dm.resume(id);
      await dm.status(id);
      await dm.remove(id);
    };
    const viaDmsetup = (i: number): void => {
      const name = `p5-dmsetup-${i}`;
      dmsetup('create', name, '--notable');
      dmsetup('load', name, '--table', tableText);
      dmsetup('resume', name);
      dmsetup('status', name);
      dmsetup('remove', name);
    };

    // Warm-up: page in node, the addon and dmsetup before anything is timed.
    await viaApi(-1);
    viaDmsetup(-1);

    const api: number[] = [];
    const tool: number[] = [];
    for (let r = 0; r < opts.rounds; r++) {
      const runApi = async (): Promise<void> => {
        api.push((await timeMs(async () => { for (let i = 0; i < opts.cycles; i++) await viaApi(i); })) / opts.cycles);
      };
      const runTool = async (): Promise<void> => {
        tool.push((await timeMs(() => { for (let i = 0; i < opts.cycles; i++) viaDmsetup(i); })) / opts.cycles);
      };
      if (r % 2) {
        await runTool();
        await runApi();
      } else {
        await runApi();
        await runTool();
      }
    }
    const apiMs = median(api);
    const toolMs = median(tool);
    return {
      bench: 'P5',
      cycles: opts.cycles,
      rounds: opts.rounds,
      steps_per_cycle: 5,
      api_ms_per_cycle: round(apiMs),
      dmsetup_ms_per_cycle: round(toolMs),
      speedup_vs_dmsetup: round(toolMs / apiMs, 2),
    };
  } finally {
    await dm.close();
    scope.close();
  }
}
