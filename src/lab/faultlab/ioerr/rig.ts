/**
 * The metadata device of an ioerr case: a dm table over one backing ramdisk with the counting injector
 * (dmkit-core) in it, rebuilt from scratch for every case, and switched between tables around teardown.
 */
import * as fs from 'node:fs';
import { DeviceMapper, DmError, type TargetLine } from '../../../dm';
import { sectors } from '../../../units';
import { armMessage, DISARM, type FaultKind, type FaultMode, type InjectorStatus, type Layout, parseInjectorStatus } from './injector';

/** The superblock: metadata block 0, 8 sectors. */
const SB_SECTORS = 8;

const line = (start: number, length: number, type: string, params: string): TargetLine => ({
  start: sectors(BigInt(start)),
  length: sectors(BigInt(length)),
  type,
  params,
});

/** Creates or replaces a device's table (load, suspend, resume). */
export async function setTable(dm: DeviceMapper, name: string, lines: readonly TargetLine[]): Promise<void> {
  if (!(await exists(dm, name))) {
    await dm.create(name, { targets: lines });
    return;
  }
  await dm.load({ name }, lines);
  await dm.suspend({ name });
  await dm.resume({ name });
}

export async function exists(dm: DeviceMapper, name: string): Promise<boolean> {
  try {
    await dm.info({ name });
    return true;
  } catch (e) {
    if (e instanceof DmError && e.code === 'ENXIO') return false;
    throw e;
  }
}

export async function removeIfThere(dm: DeviceMapper, name: string): Promise<void> {
  if (await exists(dm, name)) await dm.remove({ name }, { retry: true });
}

/** Writes zeros over [0, length) of a device with one open and an fsync. */
export function zeroDevice(path: string, length: number): void {
  const fd = fs.openSync(path, 'r+');
  try {
    const buf = Buffer.alloc(Math.min(length, 1 << 20));
    for (let off = 0; off < length; off += buf.length) fs.writeSync(fd, buf, 0, Math.min(buf.length, length - off), off);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export class MetaRig {
  layout: Layout = 'split';
  readonly path: string;

  constructor(
    readonly dm: DeviceMapper,
    readonly backing: string,
    readonly sectorsTotal: number,
    readonly name = 'ioerr-meta',
  ) {
    this.path = `/dev/mapper/${name}`;
  }

  /**
   * A fresh metadata device, the injector unarmed with its counters at 0. All of it is zeroed: a block
   * left valid by an earlier case would hide a write that failed in this one.
   */
  async build(layout: Layout): Promise<void> {
    await removeIfThere(this.dm, this.name);
    zeroDevice(this.backing, this.sectorsTotal * 512);
    this.layout = layout;
    await this.dm.create(this.name, { targets: this.injectorTable() });
  }

  private injectorTable(): TargetLine[] {
    const body = this.sectorsTotal - SB_SECTORS;
    return this.layout === 'split'
      ? [line(0, SB_SECTORS, 'linear', `${this.backing} 0`), line(SB_SECTORS, body, 'dmkit-core', `${this.backing} ${SB_SECTORS}`)]
      : [line(0, this.sectorsTotal, 'dmkit-core', `${this.backing} 0`)];
  }

  private injectorSector(): bigint {
    return this.layout === 'split' ? BigInt(SB_SECTORS) : 0n;
  }

  async status(): Promise<InjectorStatus> {
    const st = await this.dm.status({ name: this.name }, { noflush: true });
    const mine = st.find((s) => s.type === 'dmkit-core');
    if (!mine) throw new Error(`${this.name} has no dmkit-core target (table: ${st.map((s) => s.type).join(', ')})`);
    return parseInjectorStatus(mine.status);
  }

  async arm(kind: FaultKind, passes: number, mode: FaultMode): Promise<void> {
    await this.dm.message({ name: this.name }, sectors(this.injectorSector()), armMessage(kind, passes, mode));
  }

  async disarm(): Promise<void> {
    await this.dm.message({ name: this.name }, sectors(this.injectorSector()), DISARM);
  }

  /**
   * Every write fails from now on, the superblock's included, reads pass: the disk keeps exactly what
   * the failed commit left while the target is torn down (the in-tree era has no fail mode).
   */
  async quiet(): Promise<void> {
    await setTable(this.dm, this.name, [line(0, this.sectorsTotal, 'flakey', `${this.backing} 0 0 1 1 error_writes`)]);
  }

  /** A healthy device over the same blocks, for recovery and the checkers. */
  async healthy(): Promise<void> {
    await setTable(this.dm, this.name, [line(0, this.sectorsTotal, 'linear', `${this.backing} 0`)]);
  }

  async remove(): Promise<void> {
    await removeIfThere(this.dm, this.name);
  }
}
