/**
 * The torture component's data plane: O_DIRECT writers and readers in this process (libuv's pool does
 * the IO, so it really is in flight while the control plane storms; no child process per request, which
 * under emulation cost more than the IO) with stamped data, and a model of what every sector may hold.
 *
 * Each writer owns the 64 KiB extents whose index is its number modulo the writer count and writes them
 * one request at a time, so the seeds a sector sees only grow. A sector is right when it holds the full
 * stamp of a seed that was written there (or the base seed), no older than the last write acknowledged
 * when the read began and no newer than the last issued when it ended. At the end of a case every
 * sector must hold exactly its last acknowledged seed.
 */
import { execFileSync } from 'node:child_process';
import { alignedBuffer, describeSector, DirectFile, patternBuffer, readDirect, stampSector } from '../../../testing';
import { sectors } from '../../../units';

const SECTOR = 512;
export const EXTENT = 128; // sectors

export interface IoCounts {
  writes: number;
  flushWrites: number;
  fuaWrites: number;
  reads: number;
}

export class SectorModel {
  readonly acked: Uint32Array;
  readonly issued: Uint32Array;
  /** seed -> the extent it was written to. */
  private readonly extents = new Map<number, { start: number; count: number }>();

  constructor(
    readonly nrSectors: number,
    readonly baseSeed: number,
  ) {
    this.acked = new Uint32Array(nrSectors).fill(baseSeed);
    this.issued = new Uint32Array(nrSectors).fill(baseSeed);
  }

  issue(seed: number, start: number, count: number): void {
    this.extents.set(seed, { start, count });
    this.issued.fill(seed, start, start + count);
  }

  ack(seed: number): void {
    const e = this.extents.get(seed)!;
    this.acked.fill(seed, e.start, e.start + e.count);
  }

  private wroteThere(seed: number, sector: number): boolean {
    if (seed === this.baseSeed) return true;
    const e = this.extents.get(seed);
    return !!e && sector >= e.start && sector < e.start + e.count;
  }

  /**
   * Problems in `buf` (sectors from `first`), read while writes went on: `floor` is `acked` of those
   * sectors when the read began; the ceiling is what was issued by now.
   */
  checkRead(first: number, buf: Buffer, floor: Uint32Array | null, limit = 4): string[] {
    const bad: string[] = [];
    const want = Buffer.alloc(SECTOR);
    for (let i = 0; i * SECTOR < buf.length && bad.length < limit; i++) {
      const sector = first + i;
      const at = i * SECTOR;
      const low = floor ? floor[i]! : this.acked[sector]!;
      const high = floor ? this.issued[sector]! : this.acked[sector]!;
      const seed = buf.readUInt32LE(at + 4);
      const okSeed = floor ? seed === low || (seed > low && seed <= high && this.wroteThere(seed, sector)) : seed === low;
      if (okSeed) {
        stampSector(want, 0, seed, BigInt(sector));
        if (want.equals(buf.subarray(at, at + SECTOR))) continue;
      }
      bad.push(`sector ${sector}: want seed ${low}${floor && high !== low ? `..${high}` : ''}, found ${describeSector(buf, at)}`);
    }
    return bad;
  }

  /** The whole device against the last acknowledged seeds (no IO in flight). */
  checkAll(path: string, limit = 4): string[] {
    const bad: string[] = [];
    const step = 2048 * 8; // 8 MiB
    for (let s = 0; s < this.nrSectors && bad.length < limit; s += step) {
      const n = Math.min(step, this.nrSectors - s);
      const buf = readDirect(path, BigInt(s) * 512n, BigInt(n) * 512n);
      bad.push(...this.checkRead(s, buf, null, limit - bad.length));
    }
    return bad;
  }

  /** The base seed written everywhere (before the target exists). */
  static fillBase(path: string, nrSectors: number, seed: number): void {
    const step = 2048;
    for (let s = 0; s < nrSectors; s += step) {
      const n = Math.min(step, nrSectors - s);
      execFileSync('dd', [`of=${path}`, 'bs=64K', `seek=${s / 128}`, 'oflag=direct', 'conv=notrunc', 'status=none'], {
        input: patternBuffer(seed, sectors(BigInt(s)), n),
      });
    }
  }
}

/**
 * Writers and readers on `path` until stop(); every problem a reader sees is collected. IO errors are
 * problems too, unless the case expects them.
 */
export class Workload {
  readonly problems: string[] = [];
  readonly counts: IoCounts = { writes: 0, flushWrites: 0, fuaWrites: 0, reads: 0 };
  private running = true;
  readonly lanes: number;
  private readonly loops: Promise<void>[] = [];
  private readonly file: Promise<DirectFile>;

  constructor(
    readonly path: string,
    readonly model: SectorModel,
    readonly rand: () => number,
    readonly nextSeed: () => number,
    /** `lanes`: how many classes the extents fall in (default writers + 1; a second Workload on another
     *  path over the same sectors passes the first one's, so its bursts stay off that one's writers). */
    opts: { writers: number; readers: number; lanes?: number },
  ) {
    const extents = Math.floor(model.nrSectors / EXTENT);
    this.file = DirectFile.open(path);
    // A rejected open is reported by the loops; this keeps it from being an unhandled rejection meanwhile.
    this.file.catch(() => undefined);
    // Writer w takes the extents congruent to w; the last class is kept for burst().
    this.lanes = opts.lanes ?? opts.writers + 1;
    if (this.lanes <= opts.writers) throw new RangeError(`${opts.writers} writers need more than ${this.lanes} lanes`);
    for (let w = 0; w < opts.writers; w++) this.loops.push(this.guard(`writer ${w}`, (f) => this.writer(f, w, this.lanes, extents)));
    for (let r = 0; r < opts.readers; r++) this.loops.push(this.guard('reader', (f) => this.reader(f, extents)));
  }

  private async guard(who: string, loop: (f: DirectFile) => Promise<void>): Promise<void> {
    try {
      await loop(await this.file);
    } catch (e) {
      this.problems.push(`${who}: ${(e as Error).message}`);
    }
  }

  private async writer(file: DirectFile, id: number, of: number, extents: number): Promise<void> {
    const buf = alignedBuffer(EXTENT * SECTOR);
    while (this.running && this.problems.length < 8) {
      const ext = Math.floor(this.rand() * Math.floor(extents / of)) * of + id;
      const off = Math.floor(this.rand() * 16) * 8;
      const len = Math.min(EXTENT - off, (1 + Math.floor(this.rand() * 4)) * 8);
      const first = ext * EXTENT + off;
      const seed = this.nextSeed();
      const roll = this.rand();
      const mode = roll < 0.1 ? 'flush' : roll < 0.2 ? 'fua' : 'direct';
      buf.set(patternBuffer(seed, sectors(BigInt(first)), len));
      this.model.issue(seed, first, len);
      try {
        await file.write(first * SECTOR, buf.subarray(0, len * SECTOR), mode);
        this.model.ack(seed);
        this.counts.writes++;
        if (mode === 'flush') this.counts.flushWrites++;
        if (mode === 'fua') this.counts.fuaWrites++;
      } catch (e) {
        this.problems.push(`writer ${id}: ${mode} write of ${len} sectors at sector ${first}: ${(e as Error).message}`);
      }
    }
  }

  /**
   * Whole-extent writes to every extent of the burst lane among `count` extents from `from`, while the
   * writers go on (they never touch that lane): a dense run of changed blocks, e.g. for an era digest.
   */
  async burst(count: number, from = 0): Promise<void> {
    const file = await this.file;
    const buf = alignedBuffer(EXTENT * SECTOR);
    const last = Math.min(from + count, Math.floor(this.model.nrSectors / EXTENT));
    const lane = this.lanes - 1;
    for (let ext = from + ((lane - (from % this.lanes) + this.lanes) % this.lanes); ext < last; ext += this.lanes) {
      const first = ext * EXTENT;
      const seed = this.nextSeed();
      buf.set(patternBuffer(seed, sectors(BigInt(first)), EXTENT));
      this.model.issue(seed, first, EXTENT);
      try {
        await file.write(first * SECTOR, buf, 'direct');
        this.model.ack(seed);
        this.counts.writes++;
      } catch (e) {
        this.problems.push(`burst: write of ${EXTENT} sectors at sector ${first}: ${(e as Error).message}`);
      }
    }
  }

  private async reader(file: DirectFile, extents: number): Promise<void> {
    const buf = alignedBuffer(EXTENT * SECTOR);
    while (this.running && this.problems.length < 8) {
      const ext = Math.floor(this.rand() * extents);
      const first = ext * EXTENT;
      const floor = this.model.acked.slice(first, first + EXTENT);
      try {
        await file.read(first * SECTOR, buf);
        this.problems.push(...this.model.checkRead(first, buf, floor).map((p) => `reader: ${p}`));
        this.counts.reads++;
      } catch (e) {
        this.problems.push(`reader: read at sector ${first}: ${(e as Error).message}`);
      }
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    await (await this.file.catch(() => undefined))?.close();
  }
}
