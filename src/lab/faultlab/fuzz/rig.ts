/**
 * The fuzzer's devices in the VM: brd ramdisks, scratch devices that only fuzzed lines name, a tiny and a
 * small device, a sentinel (linear over a stamped ramdisk) and one live device per target with messages.
 * At the end every one of them must be as it was: same table and status, data intact, IO working,
 * metadata clean after teardown.
 */
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../../dm';
import { parseStatusFor } from '../../../targets';
import { flushBuffers, ramdisks, runChecker, Scope, stamp, verify, zero, type BlockDevice, type Checker } from '../../../testing';
import { bytes, sectors } from '../../../units';
import type { DevEnv } from './grammar';

const MiB = 1n << 20n;
export const DISK_BYTES = 16n * MiB;
export const DISK_SECTORS = DISK_BYTES / 512n;
export const LIVE_SECTORS = 32768n;
/** Bytes zeroed at the start of each scratch device before a line that may read metadata. */
const ZERO_BYTES = 8192;

/** A live device a message fuzzer talks to, and how to check it afterwards. */
export interface Live {
  readonly type: string;
  readonly name: string;
  /** The device IO goes through (a thin device for the pool). */
  readonly ioName: string;
  readonly length: bigint;
  readonly params: string;
  /** The metadata device and its checker, run after teardown. */
  readonly check?: { readonly checker: Checker; readonly dev: string };
  /** Source data the device must read back where nothing was written (clone). */
  readonly sourceSeed?: number;
}

interface Snapshot {
  table: string;
  status: string;
}

export class Rig {
  readonly scope = new Scope();
  readonly live = new Map<string, Live>();
  env!: DevEnv;
  private disks: BlockDevice[] = [];
  private zeroFds: number[] = [];
  private readonly zeroBuf = Buffer.alloc(ZERO_BYTES);
  private sentinelBefore: Snapshot | undefined;
  private readonly fuzzDevices: string[] = [];
  private readonly removed = new Set<string>();

  constructor(
    readonly dm: DeviceMapper,
    readonly seed: number,
  ) {}

  /** Ramdisks, scratch and sentinel devices; live devices come from addLive. */
  async setup(): Promise<void> {
    // 0-17 as always; 18-20 for the live dmkit-cache.
    this.disks = ramdisks(this.scope, 21, bytes(DISK_BYTES));
    const d = (i: number): string => this.disks[i]!.path;
    await this.create('fz-tiny', 'linear', 8n, `${d(17)} 0`);
    await this.create('fz-small', 'linear', 1024n, `${d(17)} 2048`);
    this.env = {
      scratch: [d(0), d(1), d(2)],
      scratchSectors: DISK_SECTORS,
      tiny: '/dev/mapper/fz-tiny',
      small: '/dev/mapper/fz-small',
      pool: '/dev/mapper/fz-live-pool',
    };
    for (const p of [d(0), d(1), d(2), d(17)]) this.zeroFds.push(fs.openSync(p, 'r+'));
    this.scope.defer('close scratch fds', () => this.zeroFds.forEach((fd) => fs.closeSync(fd)));
    stamp(d(3), { start: sectors(0), length: sectors(LIVE_SECTORS) }, this.seed);
    await this.create('fz-sentinel', 'linear', LIVE_SECTORS, `${d(3)} 0`);
    this.sentinelBefore = await this.snapshot('fz-sentinel');
  }

  /** Zeroes the start of every scratch device (and of the small one), so each case starts unformatted. */
  zeroScratch(): void {
    for (const [i, fd] of this.zeroFds.entries()) {
      // The small device starts 1 MiB into the last ramdisk.
      const at = i === 3 ? 2048 * 512 : 0;
      fs.writeSync(fd, this.zeroBuf, 0, ZERO_BYTES, at);
      fs.fdatasyncSync(fd);
    }
  }

  /** A device without a table for the fuzzed lines of one type. */
  async fuzzDevice(type: string): Promise<string> {
    const name = `fz-t-${type}`;
    await this.dm.create(name);
    this.fuzzDevices.push(name);
    return name;
  }

  /** Creates the live device of `type` (if it has one); returns it. */
  async addLive(type: string): Promise<Live | undefined> {
    const d = (i: number): string => this.disks[i]!.path;
    let live: Live;
    switch (type) {
      case 'era':
      case 'dmkit-era': {
        const [m, o] = type === 'era' ? [4, 5] : [6, 7];
        zero(d(m), bytes(1n * MiB));
        live = { type, name: `fz-live-${type}`, ioName: `fz-live-${type}`, length: LIVE_SECTORS, params: `${d(m)} ${d(o)} 128`, check: { checker: 'era_check', dev: d(m) } };
        break;
      }
      case 'clone':
      case 'dmkit-clone': {
        zero(d(8), bytes(1n * MiB));
        stamp(d(10), { start: sectors(0), length: sectors(LIVE_SECTORS) }, this.seed + 1);
        live = { type, name: `fz-live-${type}`, ioName: `fz-live-${type}`, length: LIVE_SECTORS, params: `${d(8)} ${d(9)} ${d(10)} 8 1 no_hydration`, sourceSeed: this.seed + 1 };
        break;
      }
      case 'cache':
        zero(d(11), bytes(1n * MiB));
        live = { type, name: 'fz-live-cache', ioName: 'fz-live-cache', length: LIVE_SECTORS, params: `${d(11)} ${d(12)} ${d(13)} 64 1 writeback mq 0`, check: { checker: 'cache_check', dev: d(11) } };
        break;
      case 'dmkit-cache':
        zero(d(18), bytes(1n * MiB));
        live = { type, name: 'fz-live-dmkit-cache', ioName: 'fz-live-dmkit-cache', length: LIVE_SECTORS, params: `${d(18)} ${d(19)} ${d(20)} 64 1 writeback dmkit-lru 0`, check: { checker: 'cache_check', dev: d(18) } };
        break;
      case 'thin-pool':
        if (this.live.has('thin-pool')) return this.live.get('thin-pool');
        zero(d(14), bytes(1n * MiB));
        live = { type, name: 'fz-live-pool', ioName: 'fz-live-thin', length: DISK_SECTORS, params: `${d(14)} ${d(15)} 128 0`, check: { checker: 'thin_check', dev: d(14) } };
        break;
      case 'dmkit-core':
        live = { type, name: 'fz-live-core', ioName: 'fz-live-core', length: LIVE_SECTORS, params: `${d(16)} 0` };
        break;
      default:
        return undefined;
    }
    await this.create(live.name, type, live.length, live.params);
    if (type === 'thin-pool') {
      await this.dm.message({ name: live.name }, undefined, 'create_thin 0');
      await this.create('fz-live-thin', 'thin', LIVE_SECTORS, '/dev/mapper/fz-live-pool 0');
    }
    this.live.set(type, live);
    return live;
  }

  private async create(name: string, type: string, length: bigint, params: string): Promise<void> {
    await this.dm.create(name, { targets: [{ start: sectors(0), length: sectors(length), type, params }] });
  }

  private async snapshot(name: string): Promise<Snapshot> {
    const table = (await this.dm.table({ name })).map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`).join('\n');
    const status = (await this.dm.status({ name })).map((t) => `${t.start} ${t.length} ${t.type} ${t.status}`).join('\n');
    return { table, status };
  }

  /** Problems with the sentinel: table, status or data changed. */
  async checkSentinel(): Promise<string[]> {
    const now = await this.snapshot('fz-sentinel');
    const out: string[] = [];
    if (now.table !== this.sentinelBefore?.table) out.push(`sentinel table changed: ${JSON.stringify(this.sentinelBefore?.table)} -> ${JSON.stringify(now.table)}`);
    if (now.status !== this.sentinelBefore?.status) out.push(`sentinel status changed: ${JSON.stringify(this.sentinelBefore?.status)} -> ${JSON.stringify(now.status)}`);
    const path = this.dm.devicePath('fz-sentinel');
    flushBuffers(path);
    const bad = verify(path, { start: sectors(0), length: sectors(LIVE_SECTORS) }, this.seed, 4);
    if (bad.length) out.push(`sentinel data: ${bad.map((b) => `sector ${b.sector}: ${b.found}`).join(', ')}`);
    return out;
  }

  /** Problems with a live device: status in fail/error, a written block not read back, source data wrong. */
  async checkLive(l: Live): Promise<string[]> {
    const out: string[] = [];
    if (l.type === 'dmkit-core') await this.dm.message({ name: l.name }, undefined, 'fault off').catch(() => undefined);
    const [st] = await this.dm.status({ name: l.name });
    const parsed = st ? parseStatusFor(l.type, st.status) : null;
    if (!st || (parsed && ('fail' in parsed || 'error' in parsed))) out.push(`${l.name} status ${JSON.stringify(st?.status)}`);
    const path = this.dm.devicePath(l.ioName);
    const ext = { start: sectors(4096), length: sectors(128) };
    stamp(path, ext, this.seed + 7);
    flushBuffers(path);
    const bad = verify(path, ext, this.seed + 7, 4);
    if (bad.length) out.push(`${l.ioName} IO: ${bad.map((b) => `sector ${b.sector}: ${b.found}`).join(', ')}`);
    if (l.sourceSeed !== undefined) {
      const src = verify(path, { start: sectors(8192), length: sectors(256) }, l.sourceSeed, 4);
      if (src.length) out.push(`${l.ioName} source data: ${src.map((b) => `sector ${b.sector}: ${b.found}`).join(', ')}`);
    }
    return out;
  }

  /** Removes a live device (and the thin on a pool), runs its checker; a clone is reopened and read back. */
  async teardownLive(l: Live): Promise<string[]> {
    const out: string[] = [];
    if (l.type === 'era' || l.type === 'dmkit-era') await this.dm.message({ name: l.name }, undefined, 'drop_metadata_snap').catch(() => undefined);
    if (l.type === 'thin-pool') await this.dm.message({ name: l.name }, undefined, 'release_metadata_snap').catch(() => undefined);
    if (l.ioName !== l.name) await this.remove(l.ioName);
    await this.remove(l.name);
    if (l.check) {
      const r = runChecker(l.check.checker, l.check.dev);
      if (!r.ok) out.push(`${l.check.checker} ${l.check.dev} exited ${r.status}: ${r.output.slice(0, 2000)}`);
    }
    if (l.type === 'clone' || l.type === 'dmkit-clone') {
      try {
        this.removed.delete(l.name);
        await this.create(l.name, l.type, l.length, l.params);
        out.push(...(await this.checkLive(l)));
      } catch (e) {
        out.push(`${l.name} does not reopen: ${(e as Error).message}`);
      } finally {
        await this.remove(l.name);
      }
    }
    return out;
  }

  async remove(name: string): Promise<void> {
    if (this.removed.has(name)) return;
    try {
      await this.dm.remove({ name }, { retry: true });
      this.removed.add(name);
    } catch (e) {
      if (e instanceof DmError && e.code === 'ENXIO') this.removed.add(name);
      else throw e;
    }
  }

  /** Removes everything this rig made (fuzz devices, live devices, sentinel), then the ramdisks. */
  async close(): Promise<void> {
    const names = [...this.fuzzDevices, 'fz-live-thin', ...[...this.live.values()].map((l) => l.name), 'fz-sentinel', 'fz-small', 'fz-tiny'];
    const errors: string[] = [];
    for (const n of names) await this.remove(n).catch((e: Error) => errors.push(`${n}: ${e.message}`));
    try {
      this.scope.close();
    } catch (e) {
      errors.push((e as Error).message);
    }
    if (errors.length) throw new Error(`fuzz teardown: ${errors.join('; ')}`);
  }
}
