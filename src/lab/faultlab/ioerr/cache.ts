/**
 * ioerr for dmkit-cache (issue 16): a seeded writeback workload on a cache of 16 blocks over a 128-block
 * origin, so writes promote, dirty, evict (write back, demote) and reads promote too: rounds of 4 KiB
 * direct writes, a direct read of a whole block and a flush (fdatasync). The n-th metadata write or
 * flush fails; the cache must go read-only or fail (status), the flush whose commit failed must fail,
 * and after the metadata device is healthy again: cache_check passes on the metadata as the failure left
 * it, and the cache re-created over it reads back every write a flush acknowledged before the failure
 * (or a later write), never anything else.
 *
 * Only the error families run: a dropped metadata write (a device that lies) while the data devices
 * keep every write is no power cut for a cache, whose committed mappings would then name cache blocks
 * reused since; the crash component's job.
 */
import * as fs from 'node:fs';
import { DeviceMapper, type TargetLine } from '../../../dm';
import { cache as cacheCodec, type CacheInfo } from '../../../targets';
import { patternBuffer, readDirect, runChecker, stamp, writeDirect } from '../../../testing';
import { sectors } from '../../../units';
import { prng } from '../types';
import { exists, MetaRig, removeIfThere } from './rig';
import type { CaseOutcome, Driver, OpResult } from './driver';

const SECTOR = 512;
export const CACHE_BLOCK_SECTORS = 64;
const CACHE_BLOCKS = 16;
const FAST_NAME = 'ioerr-cache-fast';

export type CacheOp = { kind: 'write'; start: number; length: number; seed: number } | { kind: 'read'; block: number } | { kind: 'flush' };

/** Writes and reads stay in the first `hotBlocks` origin blocks (3x the cache: hits, misses and evictions). */
export function cacheWorkload(seed: number, rounds: number, writesPerRound: number, hotBlocks = 3 * CACHE_BLOCKS): CacheOp[] {
  const rand = prng(seed);
  const ops: CacheOp[] = [];
  let s = 0;
  const nextSeed = (): number => ((seed + 0x1000 * ++s) >>> 0) || 1;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < writesPerRound; i++) {
      const block = Math.floor(rand() * hotBlocks);
      const offset = 8 * Math.floor(rand() * (CACHE_BLOCK_SECTORS / 8));
      ops.push({ kind: 'write', start: block * CACHE_BLOCK_SECTORS + offset, length: 8, seed: nextSeed() });
    }
    ops.push({ kind: 'read', block: Math.floor(rand() * hotBlocks) });
    ops.push({ kind: 'flush' });
  }
  return ops;
}

export class CacheDriver implements Driver<CacheOp> {
  readonly name = 'ioerr-cache';
  readonly path = '/dev/mapper/ioerr-cache';
  readonly hasFailMode = true;
  private fd: number | undefined;
  /** Index of the next op run since create(), and the ops whose flush succeeded. */
  private next = 0;
  private goodFlushes: number[] = [];

  constructor(
    readonly dm: DeviceMapper,
    readonly meta: MetaRig,
    readonly origin: string,
    /** The ramdisk the cache device is a 16-block linear slice of. */
    readonly fastBacking: string,
    readonly lengthSectors: number,
    readonly baseSeed: number,
  ) {}

  private table(): TargetLine[] {
    return [
      cacheCodec.line(
        { metadataDevice: this.meta.path, cacheDevice: `/dev/mapper/${FAST_NAME}`, originDevice: this.origin, blockSize: sectors(BigInt(CACHE_BLOCK_SECTORS)), ioMode: 'writeback', metadata2: true, policy: 'default' },
        { start: sectors(0n), length: sectors(BigInt(this.lengthSectors)), type: 'dmkit-cache' },
      ),
    ];
  }

  /** The origin holds the base stamps at the start of every case. */
  prepare(): void {
    stamp(this.origin, { start: sectors(0n), length: sectors(BigInt(this.lengthSectors)) }, this.baseSeed);
  }

  async create(): Promise<void> {
    if (!(await exists(this.dm, FAST_NAME))) {
      await this.dm.create(FAST_NAME, { targets: [{ start: sectors(0n), length: sectors(BigInt(CACHE_BLOCKS * CACHE_BLOCK_SECTORS)), type: 'linear', params: `${this.fastBacking} 0` }] });
    }
    await this.dm.create(this.name, { targets: this.table() });
    this.fd = fs.openSync(this.path, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    this.next = 0;
    this.goodFlushes = [];
  }

  async run(op: CacheOp): Promise<OpResult> {
    const index = this.next++;
    try {
      if (op.kind === 'write') writeDirect(this.path, BigInt(op.start * SECTOR), patternBuffer(op.seed, sectors(BigInt(op.start)), op.length));
      else if (op.kind === 'read') readDirect(this.path, BigInt(op.block * CACHE_BLOCK_SECTORS * SECTOR), BigInt(CACHE_BLOCK_SECTORS * SECTOR));
      else {
        fs.fdatasyncSync(this.fd!);
        this.goodFlushes.push(index);
      }
      return { ok: true };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  }

  async probeFailMode(): Promise<string | null> {
    const [st] = await this.dm.status({ name: this.name }, { noflush: true });
    const parsed = cacheCodec.parseStatus(st!.status);
    if ('fail' in parsed || ('mode' in parsed && parsed.mode === 'ro')) return null;
    return `after the failed metadata write the cache still reports '${st!.status}' (want ro or Fail)`;
  }

  async remove(): Promise<void> {
    if (this.fd !== undefined) {
      try { fs.closeSync(this.fd); } catch { /* errors were reported by the flush */ }
      this.fd = undefined;
    }
    await removeIfThere(this.dm, this.name);
  }

  /** The fast device's slice goes with the rigs. */
  async close(): Promise<void> {
    await this.remove();
    await removeIfThere(this.dm, FAST_NAME);
  }

  async verify(ops: readonly CacheOp[], outcome: CaseOutcome): Promise<string[]> {
    // A write counts as durable once a flush after it succeeded before the injector tripped (the
    // last committed transaction). The flush during which it tripped must not succeed: its commit failed.
    const before = this.goodFlushes.filter((i) => i < outcome.committed);
    const lastGood = before.length ? before[before.length - 1]! : -1;
    const tripFlushOk = ops[outcome.committed]?.kind === 'flush' && this.goodFlushes.includes(outcome.committed);
    const durable = new Float64Array(this.lengthSectors).fill(-1);
    const maybe = new Map<number, Set<number>>();
    ops.forEach((op, i) => {
      if (op.kind !== 'write' || i >= outcome.attempted) return;
      for (let s = op.start; s < op.start + op.length; s++) {
        if (i < lastGood) {
          durable[s] = op.seed;
          maybe.delete(s);
        } else {
          const l = maybe.get(s) ?? new Set();
          l.add(op.seed);
          maybe.set(s, l);
        }
      }
    });

    const problems: string[] = [];
    if (tripFlushOk) problems.push(`the flush (op ${outcome.committed}) during which a metadata write failed returned success`);
    const chk = runChecker('cache_check', this.meta.path);
    if (!chk.ok) problems.push(`cache_check on the metadata the failure left exited ${chk.status}: ${chk.output.slice(0, 400)}`);
    let data: Buffer;
    let status = '';
    try {
      await this.dm.create(this.name, { targets: this.table() });
      const [st] = await this.dm.status({ name: this.name }, { noflush: true });
      status = st?.status ?? '';
      const parsed = cacheCodec.parseStatus(status);
      if ('fail' in parsed || 'error' in parsed) problems.push(`re-created cache reports '${status}'`);
      data = readDirect(this.path, 0n, BigInt(this.lengthSectors * SECTOR));
    } catch (e) {
      return [...problems, `re-creating the cache on the healthy metadata failed: ${(e as Error).message}`];
    } finally {
      await removeIfThere(this.dm, this.name);
    }
    const bad: string[] = [];
    for (let s = 0; s < this.lengthSectors && bad.length < 4; s++) {
      const allowed = [durable[s]! >= 0 ? durable[s]! : this.baseSeed, ...(maybe.get(s) ?? [])];
      const got = data.subarray(s * SECTOR, (s + 1) * SECTOR);
      if (!allowed.some((seed) => got.equals(patternBuffer(seed, sectors(BigInt(s)), 1)))) {
        bad.push(`sector ${s} (block ${Math.floor(s / CACHE_BLOCK_SECTORS)}): want seed ${allowed.join(' or ')}, found seed ${got.readUInt32LE(4)} sector ${got.readBigUInt64LE(8)}`);
        s = (Math.floor(s / CACHE_BLOCK_SECTORS) + 1) * CACHE_BLOCK_SECTORS - 1; // one report per block
      }
    }
    if (bad.length) problems.push(`cache data (last good flush: op ${lastGood}; re-created: ${(cacheCodec.parseStatus(status) as CacheInfo).dirty ?? '?'} dirty): ${bad.join('; ')}`);
    return problems;
  }
}
