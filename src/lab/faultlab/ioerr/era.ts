/**
 * ioerr for era and dmkit-era: a seeded workload of stamped block writes (each batch fsynced) and
 * checkpoints, run once per injection point; afterwards the metadata must pass era_check and describe a
 * state between the last transaction the workload saw committed and everything it attempted.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../../dm';
import { era as eraCodec } from '../../../targets';
import { flushBuffers, patternBuffer, runChecker } from '../../../testing';
import { sectors } from '../../../units';
import { prng } from '../types';
import { MetaRig, removeIfThere } from './rig';
import type { CaseOutcome, Driver, OpResult } from './driver';

const SECTOR = 512;
const BLOCK_SECTORS = 8;

export type EraOp = { kind: 'write'; blocks: number[]; seed: number } | { kind: 'checkpoint' };

/** `rounds` of (a batch of writes, a checkpoint), the last round without its checkpoint. */
export function eraWorkload(seed: number, nrBlocks: number, rounds: number, perRound: number): EraOp[] {
  const rand = prng(seed);
  const ops: EraOp[] = [];
  for (let r = 0; r < rounds; r++) {
    const set = new Set<number>();
    while (set.size < perRound) set.add(Math.floor(rand() * nrBlocks));
    ops.push({ kind: 'write', blocks: [...set].sort((a, b) => a - b), seed: ((seed ^ (r * 0x9e3779b1)) >>> 0) || 1 });
    if (r < rounds - 1) ops.push({ kind: 'checkpoint' });
  }
  return ops;
}

export class EraDriver implements Driver<EraOp> {
  readonly name = 'ioerr-era';
  readonly path = `/dev/mapper/ioerr-era`;
  readonly nrBlocks: number;

  constructor(
    readonly dm: DeviceMapper,
    readonly type: 'era' | 'dmkit-era',
    readonly meta: MetaRig,
    readonly origin: string,
    readonly originSectors: number,
  ) {
    this.nrBlocks = originSectors / BLOCK_SECTORS;
  }

  /** The in-tree era has no fail mode: after a failed commit it must be torn down quietly. */
  get hasFailMode(): boolean {
    return this.type === 'dmkit-era';
  }

  async create(): Promise<void> {
    await this.dm.create(this.name, {
      targets: [{ start: sectors(0n), length: sectors(BigInt(this.originSectors)), type: this.type, params: `${this.meta.path} ${this.origin} ${BLOCK_SECTORS}` }],
    });
  }

  async run(op: EraOp): Promise<OpResult> {
    if (op.kind === 'checkpoint') return this.message('checkpoint');
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.path, 'r+');
      for (const b of op.blocks) {
        const buf = patternBuffer(op.seed, sectors(BigInt(b * BLOCK_SECTORS)), BLOCK_SECTORS);
        fs.writeSync(fd, buf, 0, buf.length, b * BLOCK_SECTORS * SECTOR);
      }
      fs.fsyncSync(fd);
      return { ok: true };
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    } finally {
      if (fd !== undefined) try { fs.closeSync(fd); } catch { /* the error was reported by fsync */ }
    }
  }

  private async message(text: string): Promise<OpResult> {
    try {
      await this.dm.message({ name: this.name }, undefined, text);
      return { ok: true };
    } catch (e) {
      if (e instanceof DmError) return { ok: false, error: `${text}: ${e.code}` };
      throw e;
    }
  }

  /** After a trip: a checkpoint must be refused (dmkit-era's fail mode). */
  async probeFailMode(): Promise<string | null> {
    const r = await this.message('checkpoint');
    return r.ok ? 'a checkpoint after the failed metadata write succeeded (no fail mode)' : null;
  }

  async remove(): Promise<void> {
    await removeIfThere(this.dm, this.name);
  }

  /**
   * On a healthy metadata device: era_check, a reopen (which recovers the committed writeset and starts
   * a new era), then era_dump --logical against the model, and the origin's data.
   */
  async verify(ops: readonly EraOp[], outcome: CaseOutcome): Promise<string[]> {
    const problems: string[] = [];
    const check = runChecker('era_check', this.meta.path);
    if (!check.ok) return [`era_check exited ${check.status}: ${oneLine(check.output)}`];

    // The model: ops before `committed` are durable; the rest may or may not be.
    const committedEra = 1 + ops.slice(0, outcome.committed).filter((o) => o.kind === 'checkpoint').length;
    const maxEra = 1 + ops.filter((o, i) => o.kind === 'checkpoint' && i < outcome.attempted).length;
    const allowed = new Map<number, Set<number>>(); // block -> eras era_dump --logical may show
    const lastCommitted = new Map<number, { era: number; seed: number }>();
    const laterSeeds = new Map<number, Set<number>>();
    let e = 1;
    ops.forEach((op, i) => {
      if (i >= outcome.attempted) return;
      if (op.kind === 'checkpoint') {
        e++;
        return;
      }
      for (const b of op.blocks) {
        if (i < outcome.committed) {
          lastCommitted.set(b, { era: e, seed: op.seed });
          allowed.set(b, new Set([e]));
          laterSeeds.delete(b);
        } else {
          const s = allowed.get(b) ?? new Set([0]);
          s.add(e);
          allowed.set(b, s);
          const l = laterSeeds.get(b) ?? new Set();
          l.add(op.seed);
          laterSeeds.set(b, l);
        }
      }
    });

    try {
      await this.create();
      const [st] = await this.dm.status({ name: this.name }, { noflush: true });
      const parsed = eraCodec.parseStatus(st!.status);
      if ('error' in parsed) problems.push(`reopened ${this.type} reports Error`);
      else {
        const cur = Number(parsed.currentEra);
        if (cur < committedEra + 1 || cur > maxEra + 1) problems.push(`reopened in era ${cur}, want ${committedEra + 1}${maxEra > committedEra ? `..${maxEra + 1}` : ''}`);
      }
    } catch (err) {
      problems.push(`reopening ${this.type} on the healthy metadata failed: ${(err as Error).message}`);
    } finally {
      await this.remove();
    }

    const dump = spawnSync('era_dump', ['--logical', this.meta.path], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (dump.status !== 0) {
      problems.push(`era_dump exited ${dump.status}: ${oneLine(dump.stderr)}`);
    } else {
      const eras = new Map<number, number>();
      for (const m of dump.stdout.matchAll(/<era block\s*=\s*"(\d+)"\s+era\s*=\s*"(\d+)"\s*\/>/g)) eras.set(Number(m[1]), Number(m[2]));
      const wrong: string[] = [];
      for (let b = 0; b < this.nrBlocks; b++) {
        const got = eras.get(b) ?? 0;
        const ok = allowed.get(b) ?? new Set([0]);
        if (!ok.has(got)) wrong.push(`block ${b} era ${got} want ${[...ok].join('|')}`);
      }
      if (wrong.length) problems.push(`era_dump --logical: ${wrong.length} blocks wrong, e.g. ${wrong.slice(0, 5).join(', ')}`);
    }

    problems.push(...this.checkData(lastCommitted, laterSeeds));
    return problems;
  }

  /** Blocks written by a committed op hold its stamp, or one of a later attempted write's. */
  private checkData(committed: Map<number, { seed: number }>, later: Map<number, Set<number>>): string[] {
    flushBuffers(this.origin);
    const buf = Buffer.alloc(this.originSectors * SECTOR);
    const fd = fs.openSync(this.origin, 'r');
    try {
      fs.readSync(fd, buf, 0, buf.length, 0);
    } finally {
      fs.closeSync(fd);
    }
    const bad: string[] = [];
    for (const [b, { seed }] of committed) {
      const seeds = [seed, ...(later.get(b) ?? [])];
      const at = b * BLOCK_SECTORS * SECTOR;
      const got = buf.subarray(at, at + BLOCK_SECTORS * SECTOR);
      if (!seeds.some((s) => got.equals(patternBuffer(s, sectors(BigInt(b * BLOCK_SECTORS)), BLOCK_SECTORS)))) {
        bad.push(`block ${b}: want the stamp of seed ${seeds.join(' or ')}, found seed ${got.readUInt32LE(4)} sector ${got.readBigUInt64LE(8)}`);
        if (bad.length >= 5) break;
      }
    }
    return bad.length ? [`origin data: ${bad.join('; ')}`] : [];
  }
}

function oneLine(s: string): string {
  return s.trim().split('\n').slice(0, 6).join(' | ');
}
