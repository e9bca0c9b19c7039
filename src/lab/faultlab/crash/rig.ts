/**
 * Pieces shared by the crash workloads: raw table lines, devices torn down in reverse order, the budget
 * of states recovered in the kernel, and the sampling parameters per scale.
 */
import { DeviceMapper, DmError } from '../../../dm';
import { sectors } from '../../../units';
import type { Scale } from '../types';

export const MiB = 1 << 20;

/** A one-target table over [0, lengthSectors). */
export function line(type: string, lengthSectors: number, params: string) {
  return { start: sectors(0), length: sectors(BigInt(lengthSectors)), type, params };
}

/** Devices created through one DeviceMapper, removed last-first (with retries) by `teardown`. */
export class Devices {
  private readonly names: string[] = [];

  constructor(readonly dm: DeviceMapper) {}

  async create(name: string, type: string, lengthSectors: number, params: string): Promise<string> {
    await this.dm.create(name, { targets: [line(type, lengthSectors, params)] });
    this.names.push(name);
    return this.dm.devicePath(name);
  }

  /** Removes one device made here (it must be the newest still present if others sit on it). */
  async remove(name: string): Promise<void> {
    await this.dm.remove({ name }, { retry: true });
    const i = this.names.lastIndexOf(name);
    if (i >= 0) this.names.splice(i, 1);
  }

  async teardown(): Promise<void> {
    for (const name of this.names.reverse()) await this.dm.remove({ name }, { retry: true }).catch((e: unknown) => (e instanceof DmError ? undefined : Promise.reject(e)));
    this.names.length = 0;
  }
}


/** Sampling per scale: how many workloads, how many subsets and torn writes per crash point, kernel budget. */
export interface CrashPlan {
  workloads: number;
  ops: number;
  exhaustiveUpTo: number;
  randomSubsets: number;
  tornPerPoint: number;
  /** Distinct crash images recovered in the kernel, per workload. */
  kernelPerWorkload: number;
  /** States checked per workload, about: each crash point gets an equal share (at least its prefix). */
  maxStates: number;
}

export function crashPlan(scale: Scale, target: 'era' | 'clone'): CrashPlan {
  if (scale === 'release') return { workloads: target === 'era' ? 100 : 60, ops: 40, exhaustiveUpTo: 12, randomSubsets: 1000, tornPerPoint: 16, kernelPerWorkload: 200, maxStates: 200_000 };
  // CI samples: every subset up to 6 pending writes, 24 random ones beyond (release: every subset up to 12);
  // one workload per target, so the CI run keeps its 60-minute budget as the lab grows.
  return target === 'era'
    ? { workloads: 1, ops: 18, exhaustiveUpTo: 6, randomSubsets: 24, tornPerPoint: 3, kernelPerWorkload: 24, maxStates: 700 }
    : { workloads: 1, ops: 0, exhaustiveUpTo: 6, randomSubsets: 24, tornPerPoint: 3, kernelPerWorkload: 16, maxStates: 900 };
}

/** Indices of the 4 KiB blocks of `buf` that are not all zeros. */
export function nonZeroBlocks(buf: Buffer, blockBytes: number): number[] {
  const zeros = Buffer.alloc(blockBytes);
  const out: number[] = [];
  for (let b = 0; b * blockBytes < buf.length; b++) {
    const blk = buf.subarray(b * blockBytes, (b + 1) * blockBytes);
    if (!blk.equals(zeros.subarray(0, blk.length))) out.push(b);
  }
  return out;
}
