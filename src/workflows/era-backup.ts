/**
 * Era incremental backup, step one: which blocks of a live era device changed since era N.
 *
 * changedSince(dm, device, N):
 *  1. finds the device's era (or dmkit-era) target and its metadata device;
 *  2. sends `take_metadata_snap` (the kernel rolls the era over, commits, and keeps a copy of the
 *     superblock whose writeset tree and era array stay as they were);
 *  3. reads the snapshot's roots from the metadata device with O_DIRECT (src/pdata/era-changed.ts,
 *     era_invalidate's semantics, every block validated) and checks that the superblock names the
 *     held root the status reports;
 *  4. always sends `drop_metadata_snap` (finally), whatever happened in 3.
 * The result is merged end-exclusive runs of era blocks plus the facts needed to turn them into sectors
 * or bytes (`rangesIn`).
 */
import * as fs from 'node:fs';
import type { DevId, DeviceMapper, TargetLine } from '../dm';
import { era, eraMessages, targetKind, type EraInfo } from '../targets';
import { changedBlocksFromMetadata, checkEra, type BlockRange, type ChangedBlocks } from '../pdata/era-changed';
import { bytes, sectors, SECTOR_SIZE, type Bytes, type Sectors, type TargetBlocks } from '../units';

export type EraDm = Pick<DeviceMapper, 'table' | 'status' | 'message' | 'info'>;

export type EraChangedCode =
  | 'ERR_ERA_NO_TARGET'
  | 'ERR_ERA_SNAPSHOT_HELD'
  | 'ERR_ERA_SNAPSHOT_MISMATCH'
  | 'ERR_ERA_STATUS'
  | 'ERR_ERA_METADATA_DEVICE';

export class EraChangedError extends Error {
  constructor(
    message: string,
    readonly code: EraChangedCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'EraChangedError';
  }
}

export interface DeviceChangedBlocks extends ChangedBlocks {
  /** The dm device's name and uuid (null when it has none). */
  readonly name: string;
  readonly uuid: string | null;
  /** The era target's length: the last era block may be partial. */
  readonly length: Sectors;
  /** The metadata device read, and the held snapshot's block. */
  readonly metadataDevice: string;
  readonly heldRoot: bigint;
  /**
   * The era the status reported while the snapshot was held: writes made after the snapshot are in
   * this era or later (a backup's next incremental starts here).
   */
  readonly liveEra: number;
}

export type RangeUnit = 'blocks' | 'sectors' | 'bytes';

/** A range in the chosen unit (end-exclusive). */
export interface UnitRange<T> {
  readonly start: T;
  readonly end: T;
}

/**
 * The ranges in era blocks, sectors or bytes. In sectors and bytes the last range is clipped to
 * `length` when given (the origin's last era block may be partial).
 */
export function rangesIn(r: Pick<ChangedBlocks, 'ranges' | 'blockSize'>, unit: 'blocks', length?: Sectors): UnitRange<TargetBlocks>[];
export function rangesIn(r: Pick<ChangedBlocks, 'ranges' | 'blockSize'>, unit: 'sectors', length?: Sectors): UnitRange<Sectors>[];
export function rangesIn(r: Pick<ChangedBlocks, 'ranges' | 'blockSize'>, unit: 'bytes', length?: Sectors): UnitRange<Bytes>[];
export function rangesIn(r: Pick<ChangedBlocks, 'ranges' | 'blockSize'>, unit: RangeUnit, length?: Sectors): UnitRange<bigint>[];
export function rangesIn(r: Pick<ChangedBlocks, 'ranges' | 'blockSize'>, unit: RangeUnit, length?: Sectors): UnitRange<bigint>[] {
  if (unit === 'blocks') return r.ranges.map((x: BlockRange) => ({ start: x.start, end: x.end }));
  const out: UnitRange<bigint>[] = [];
  for (const x of r.ranges) {
    const s = x.start * r.blockSize;
    let e = x.end * r.blockSize;
    if (length !== undefined && e > length) e = length;
    if (e <= s) continue;
    out.push(unit === 'sectors' ? { start: sectors(s), end: sectors(e) } : { start: bytes(s * SECTOR_SIZE), end: bytes(e * SECTOR_SIZE) });
  }
  return out;
}

/** The /dev path of a block device given as MAJ:MIN (as tables show them) or as a path. */
export function blockDevicePath(dev: string): string {
  if (!/^\d+:\d+$/.test(dev)) return dev;
  const link = `/dev/block/${dev}`;
  if (fs.existsSync(link)) return link;
  try {
    const name = /^DEVNAME=(.+)$/m.exec(fs.readFileSync(`/sys/dev/block/${dev}/uevent`, 'utf8'))?.[1];
    if (name && fs.existsSync(`/dev/${name}`)) return `/dev/${name}`;
  } catch {
    // fall through to the error below
  }
  throw new EraChangedError(`no device node for the metadata device ${dev}`, 'ERR_ERA_METADATA_DEVICE');
}

async function eraTarget(dm: EraDm, id: DevId): Promise<TargetLine> {
  const table = await dm.table(id);
  const lines = table.filter((t) => targetKind(t.type) === 'era');
  const what = id.name ?? `uuid ${id.uuid}`;
  if (lines.length !== 1) {
    throw new EraChangedError(`${what} has ${lines.length ? 'several era targets' : 'no era target'} (table: ${table.map((t) => t.type).join(', ') || 'none'})`, 'ERR_ERA_NO_TARGET');
  }
  return lines[0]!;
}

async function eraStatus(dm: EraDm, id: DevId, at: TargetLine): Promise<EraInfo> {
  const line = (await dm.status(id)).find((s) => s.start === at.start && targetKind(s.type) === 'era');
  if (!line) throw new EraChangedError('the era target vanished from the status', 'ERR_ERA_STATUS');
  const st = era.parseStatus(line.status);
  if (!('currentEra' in st)) throw new EraChangedError(`the era target reports: ${line.status}`, 'ERR_ERA_STATUS');
  return st;
}

export interface ChangedSinceOptions {
  /** Reads the metadata; default: changedBlocksFromMetadata on the device with O_DIRECT. */
  readonly read?: (metadataDevice: string, sinceEra: number) => ChangedBlocks;
}

/** Blocks of the live era device `id` written since era `sinceEra` (see the file comment). */
export async function changedSince(dm: EraDm, id: DevId, sinceEra: number, opts: ChangedSinceOptions = {}): Promise<DeviceChangedBlocks> {
  const since = checkEra(sinceEra, 'since era');
  const target = await eraTarget(dm, id);
  const params = era.parse(target.params);
  const metadataDevice = blockDevicePath(params.metadataDevice);
  const before = await eraStatus(dm, id, target);
  if (before.heldRoot !== null) {
    throw new EraChangedError(`a metadata snapshot is already held (block ${before.heldRoot}); drop it first (dmkit era metadata-snap NAME drop)`, 'ERR_ERA_SNAPSHOT_HELD');
  }
  await dm.message(id, target.start, eraMessages.takeMetadataSnap());
  let failure: unknown;
  try {
    const held = await eraStatus(dm, id, target);
    if (held.heldRoot === null) throw new EraChangedError('take_metadata_snap succeeded but the status shows no held root', 'ERR_ERA_STATUS');
    const read = opts.read ?? ((dev: string, n: number) => changedBlocksFromMetadata(dev, n, { snapshot: true, direct: true }));
    const result = read(metadataDevice, since);
    if (BigInt(result.rootsBlock) !== held.heldRoot) {
      throw new EraChangedError(`the metadata names snapshot block ${result.rootsBlock}, the status ${held.heldRoot}`, 'ERR_ERA_SNAPSHOT_MISMATCH');
    }
    const info = await dm.info(id);
    return { ...result, name: info.name, uuid: info.uuid || null, length: target.length, metadataDevice, heldRoot: held.heldRoot, liveEra: Number(held.currentEra) };
  } catch (e) {
    failure = e;
    throw e;
  } finally {
    try {
      await dm.message(id, target.start, eraMessages.dropMetadataSnap());
    } catch (e) {
      // The first failure is the one to report; the snapshot left held is named on it.
      if (failure === undefined) throw e;
      if (failure instanceof Error) Object.assign(failure, { dropError: e });
    }
  }
}

export {
  changedBlocksFromMetadata,
  eraInvalidateXml,
  EraSnapshotMissing,
  type BlockRange,
  type ChangedBlocks,
  type ChangedOptions,
} from '../pdata/era-changed';
export { MetadataDamage } from '../pdata/reader';
export { MetadataFileError } from '../pdata/block-file';
