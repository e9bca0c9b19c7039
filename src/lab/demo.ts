/**
 * `npm run demo`, the main job: an end-to-end scenario through the dmkit API. On a host with
 * device-mapper and root it runs here; anywhere else it boots the VM lab and runs there.
 *
 * Scenario: two ramdisks become an in-tree era device (changed-block tracking); a third carries a
 * dmkit-core device. Stamped data goes through both, era checkpoints split it into eras, a metadata
 * snapshot lets era_invalidate list what changed, every byte is read back and era_check signs off.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper, TargetLine } from '../dm';
import { assertClean, flushBuffers, ramdisks, Scope, stamp, verify, zero } from '../testing';
import { bytes, Sectors, sectors } from '../units';
import { describeResult, runVm } from './vm';

const MiB = 1n << 20n;
const ERA_BLOCK = sectors(128); // 64 KiB

function section(title: string): void {
  console.log(`\n== ${title}`);
}

function show(label: string, value: string | number | bigint): void {
  console.log(`   ${label.padEnd(28)} ${value}`);
}

function line(length: Sectors, type: string, params: string): TargetLine {
  return { start: sectors(0), length, type, params };
}

async function eraStatus(dm: DeviceMapper, name: string): Promise<{ era: number; heldRoot: string; used: string }> {
  const [st] = await dm.status({ name });
  const f = st!.status.trim().split(/\s+/);
  return { used: f[1]!, era: Number(f[2]), heldRoot: f[3]! };
}

async function scenario(): Promise<void> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  const created = new Set<string>();
  const create = async (name: string, target: TargetLine): Promise<void> => {
    await dm.create(name, { targets: [target] });
    created.add(name);
  };
  const remove = async (name: string): Promise<void> => {
    await dm.remove({ name }, { retry: true });
    created.delete(name);
  };
  try {
    section('device-mapper');
    const v = await dm.version();
    show('ioctl interface', `${v.major}.${v.minor}.${v.patch}`);

    section('ramdisks (brd)');
    const [meta, origin, scratch] = ramdisks(scope, 3, bytes(64n * MiB));
    for (const d of [meta!, origin!, scratch!]) show(d.path, `${d.size / MiB} MiB`);
    zero(meta!.path, bytes(4096));

    section('in-tree era over the origin; dmkit-core over the scratch disk');
    const devPath = async (name: string): Promise<string> => {
      const info = await dm.info({ name });
      return `/dev/dm-${info.dev.minor}`;
    };
    await create('demo-era', line(origin!.sectors, 'era', `${meta!.path} ${origin!.path} ${ERA_BLOCK}`));
    await create('demo-core', line(scratch!.sectors, 'dmkit-core', `${scratch!.path} 0`));
    const eraDev = await devPath('demo-era');
    const coreDev = await devPath('demo-core');
    show('demo-era', `${eraDev}  era, ${ERA_BLOCK} sector blocks`);
    show('demo-core', `${coreDev}  dmkit-core`);
    for (const t of await dm.targets()) {
      if (['era', 'dmkit-core', 'linear'].includes(t.name)) show(`target ${t.name}`, `v${t.version.major}.${t.version.minor}.${t.version.patch}`);
    }

    section('IO through era, split by checkpoints');
    const blocksOf = (list: number[]) => list.map((b) => ({ start: sectors(BigInt(b) * ERA_BLOCK), length: ERA_BLOCK }));
    const first = [0, 1, 2, 3];
    const second = [2, 5, 9];
    for (const e of blocksOf(first)) stamp(eraDev, e, 1);
    await dm.message({ name: 'demo-era' }, undefined, 'checkpoint');
    const since = (await eraStatus(dm, 'demo-era')).era;
    show('wrote blocks, then checkpoint', `${first.join(', ')} -> now era ${since}`);
    for (const e of blocksOf(second)) stamp(eraDev, e, 2);
    show(`wrote blocks in era ${since}`, second.join(', '));

    section('what changed since that era (metadata snapshot + era_invalidate)');
    await dm.message({ name: 'demo-era' }, undefined, 'take_metadata_snap');
    const st = await eraStatus(dm, 'demo-era');
    show('status', `era ${st.era}, metadata ${st.used} blocks, held root ${st.heldRoot}`);
    const inv = spawnSync('era_invalidate', ['--metadata-snapshot', '--written-since', String(since), meta!.path], { encoding: 'utf8' });
    if (inv.status !== 0) throw new Error(`era_invalidate failed: ${inv.stderr}`);
    const changed = [...inv.stdout.matchAll(/block="(\d+)"/g)].map((m) => Number(m[1]));
    await dm.message({ name: 'demo-era' }, undefined, 'drop_metadata_snap');
    show('changed blocks reported', changed.join(', '));
    if (changed.join() !== second.join()) throw new Error(`era reported ${changed.join(',')}, expected ${second.join(',')}`);

    section('dmkit-core: data, self-test and status');
    const coreExt = { start: sectors(0), length: sectors(8192) };
    stamp(coreDev, coreExt, 3);
    show('ping', (await dm.message({ name: 'demo-core' }, undefined, 'ping')) ?? '(no reply)');
    show('selftest', (await dm.message({ name: 'demo-core' }, undefined, 'selftest')) ?? '(no reply)');
    const [coreStatus] = await dm.status({ name: 'demo-core' });
    show('status', coreStatus!.status);

    section('read back every stamped sector, tear down, check metadata');
    await remove('demo-era');
    await remove('demo-core');
    flushBuffers(origin!.path);
    flushBuffers(scratch!.path);
    let bad = 0;
    for (const e of blocksOf(first.filter((b) => !second.includes(b)))) bad += verify(origin!.path, e, 1).length;
    for (const e of blocksOf(second)) bad += verify(origin!.path, e, 2).length;
    bad += verify(scratch!.path, coreExt, 3).length;
    show('mismatched sectors', bad);
    if (bad) throw new Error('data read back differs from what was written');
    assertClean('era_check', meta!.path);
    show('era_check', 'clean');
    console.log('\ndemo: OK');
  } finally {
    for (const name of created) await remove(name).catch(() => undefined);
    await dm.close();
    scope.close();
  }
}

function hostHasDeviceMapper(): boolean {
  return process.getuid?.() === 0 && (fs.existsSync('/dev/mapper/control') || fs.existsSync('/sys/class/misc/device-mapper'));
}

async function main(): Promise<void> {
  if (process.argv.includes('--here') || hostHasDeviceMapper()) {
    await scenario();
    return;
  }
  console.log('demo: this host has no device-mapper (or is not root): running the scenario in the VM lab');
  const r = await runVm({ command: [process.execPath, __filename, '--here'], timeoutSec: 600 });
  console.error(describeResult(r));
  process.exit(r.exitCode);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`demo: FAILED: ${(e as Error).message}`);
    process.exit(1);
  });
}
