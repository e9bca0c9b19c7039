/**
 * ioerr for dmkit-clone: a seeded workload of rounds of partial-region writes (each hydrates its region
 * from the source first), a whole-region write (hydrates without copying) and a flush. Recovery reopens
 * the clone over a zero source with hydration off, so a region reads zeros exactly when the metadata does
 * not call it hydrated: every region a successful flush committed must still be hydrated, and every
 * hydrated region must hold the source's data or data that was written to it.
 */
import * as fs from 'node:fs';
import { DeviceMapper } from '../../../dm';
import { clone as cloneCodec } from '../../../targets';
import { patternBuffer, readDirect } from '../../../testing';
import { sectors } from '../../../units';
import { prng } from '../types';
import { MetaRig, removeIfThere } from './rig';
import type { CaseOutcome, Driver, OpResult } from './driver';

const SECTOR = 512;
export const REGION_SECTORS = 128;

export type CloneOp = { kind: 'write'; start: number; length: number; seed: number } | { kind: 'flush' };

export function cloneWorkload(seed: number, nrRegions: number, rounds: number, partialPerRound: number): CloneOp[] {
  const rand = prng(seed);
  const ops: CloneOp[] = [];
  let s = 0;
  const nextSeed = (): number => ((seed + 0x1000 * ++s) >>> 0) || 1;
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < partialPerRound; i++) {
      const region = Math.floor(rand() * nrRegions);
      const offset = 8 * Math.floor(rand() * (REGION_SECTORS / 8 - 1)); // 4 KiB aligned, never the whole region
      ops.push({ kind: 'write', start: region * REGION_SECTORS + offset, length: 8, seed: nextSeed() });
    }
    ops.push({ kind: 'write', start: Math.floor(rand() * nrRegions) * REGION_SECTORS, length: REGION_SECTORS, seed: nextSeed() });
    ops.push({ kind: 'flush' });
  }
  return ops;
}

export class CloneDriver implements Driver<CloneOp> {
  readonly name = 'ioerr-clone';
  readonly path = '/dev/mapper/ioerr-clone';
  readonly hasFailMode = true;
  private fd: number | undefined;

  constructor(
    readonly dm: DeviceMapper,
    readonly meta: MetaRig,
    readonly dest: string,
    readonly source: string,
    /** A device of zeros as long as the clone (dm 'zero'), the source for recovery. */
    readonly zeroSource: string,
    readonly lengthSectors: number,
    readonly baseSeed: number,
  ) {}

  private table(source: string): { start: ReturnType<typeof sectors>; length: ReturnType<typeof sectors>; type: string; params: string }[] {
    return [{ start: sectors(0n), length: sectors(BigInt(this.lengthSectors)), type: 'dmkit-clone', params: `${this.meta.path} ${this.dest} ${source} ${REGION_SECTORS} 1 no_hydration` }];
  }

  async create(): Promise<void> {
    await this.dm.create(this.name, { targets: this.table(this.source) });
    this.fd = fs.openSync(this.path, 'r+');
  }

  /** Writes go to the page cache; the flush op writes them back and flushes (fdatasync). */
  async run(op: CloneOp): Promise<OpResult> {
    try {
      if (op.kind === 'write') {
        const buf = patternBuffer(op.seed, sectors(BigInt(op.start)), op.length);
        fs.writeSync(this.fd!, buf, 0, buf.length, op.start * SECTOR);
      } else {
        fs.fdatasyncSync(this.fd!);
      }
      return { ok: true };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  }

  async probeFailMode(): Promise<string | null> {
    const [st] = await this.dm.status({ name: this.name }, { noflush: true });
    const parsed = cloneCodec.parseStatus(st!.status);
    if ('fail' in parsed || ('mode' in parsed && parsed.mode === 'ro')) return null;
    return `after the failed metadata write the clone still reports '${st!.status}' (want ro or Fail)`;
  }

  async remove(): Promise<void> {
    if (this.fd !== undefined) {
      try { fs.closeSync(this.fd); } catch { /* errors were reported by the flush */ }
      this.fd = undefined;
    }
    await removeIfThere(this.dm, this.name);
  }

  async verify(ops: readonly CloneOp[], outcome: CaseOutcome): Promise<string[]> {
    // Writes count as committed only once a flush after them succeeded before the trip.
    let lastFlush = -1;
    for (let i = 0; i < outcome.committed; i++) if (ops[i]!.kind === 'flush') lastFlush = i;
    const nrSectors = this.lengthSectors;
    const committedSeed = new Float64Array(nrSectors).fill(-1);
    const laterSeeds = new Map<number, Set<number>>();
    const hydrated = new Set<number>();
    ops.forEach((op, i) => {
      if (op.kind !== 'write' || i >= outcome.attempted) return;
      for (let s = op.start; s < op.start + op.length; s++) {
        if (i < lastFlush) {
          committedSeed[s] = op.seed;
          laterSeeds.delete(s);
        } else {
          const l = laterSeeds.get(s) ?? new Set();
          l.add(op.seed);
          laterSeeds.set(s, l);
        }
      }
      if (i < lastFlush) hydrated.add(Math.floor(op.start / REGION_SECTORS));
    });

    const problems: string[] = [];
    let data: Buffer;
    try {
      await this.dm.create(this.name, { targets: this.table(this.zeroSource) });
      const [st] = await this.dm.status({ name: this.name }, { noflush: true });
      const parsed = cloneCodec.parseStatus(st!.status);
      if (!('mode' in parsed) || parsed.mode !== 'rw') problems.push(`reopened clone reports '${st!.status}'`);
      data = readDirect(this.path, 0n, BigInt(nrSectors * SECTOR));
    } catch (e) {
      return [`reopening the clone on the healthy metadata failed: ${(e as Error).message}`];
    } finally {
      await removeIfThere(this.dm, this.name);
    }

    const zero = Buffer.alloc(REGION_SECTORS * SECTOR);
    const bad: string[] = [];
    for (let r = 0; r * REGION_SECTORS < nrSectors && bad.length < 6; r++) {
      const at = r * REGION_SECTORS * SECTOR;
      if (data.subarray(at, at + zero.length).equals(zero)) {
        if (hydrated.has(r)) bad.push(`region ${r} was committed hydrated but reads as unhydrated`);
        continue;
      }
      for (let i = 0; i < REGION_SECTORS; i++) {
        const s = r * REGION_SECTORS + i;
        const allowed = [committedSeed[s]! >= 0 ? committedSeed[s]! : this.baseSeed, ...(laterSeeds.get(s) ?? [])];
        const got = data.subarray((s) * SECTOR, (s + 1) * SECTOR);
        if (!allowed.some((seed) => got.equals(patternBuffer(seed, sectors(BigInt(s)), 1)))) {
          bad.push(`region ${r} sector ${s}: want the stamp of seed ${allowed.join(' or ')}, found seed ${got.readUInt32LE(4)} sector ${got.readBigUInt64LE(8)}`);
          break;
        }
      }
    }
    if (bad.length) problems.push(`clone data: ${bad.join('; ')}`);
    return problems;
  }
}

