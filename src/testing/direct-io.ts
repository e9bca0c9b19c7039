/**
 * Direct IO (O_DIRECT) through dd, or in-process with page-aligned buffers: reads and writes that bypass every
 * page cache, so what they see is what the device holds.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';

const KiB = 1024n;
// The one part of the WebAssembly JS API used here (tsconfig has no DOM lib, which types the rest).
declare const WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => { buffer: ArrayBuffer } };

/** Reads `length` bytes at `offset` with O_DIRECT (dd), bypassing every page cache. */
export function readDirect(path: string, offset: bigint, length: bigint, bs = 64n * KiB): Buffer {
  if (offset % bs !== 0n || length % bs !== 0n) bs = 512n;
  return execFileSync('dd', [`if=${path}`, `bs=${bs}`, `skip=${offset / bs}`, `count=${length / bs}`, 'iflag=direct', 'status=none'], {
    maxBuffer: Number(length) + (1 << 20),
  });
}

/**
 * Writes `data` at `offset` with O_DIRECT (dd); fsync=true adds a flush (conv=fsync). `bs` sets the size
 * of each write (default 4 KiB, or 512 bytes where 4 KiB does not align); it must divide offset and length.
 */
export function writeDirect(path: string, offset: bigint, data: Buffer, opts: { fsync?: boolean; bs?: bigint } = {}): void {
  const bs = opts.bs ?? (offset % 4096n === 0n && data.length % 4096 === 0 ? 4096n : 512n);
  if (offset % bs !== 0n || BigInt(data.length) % bs !== 0n) throw new RangeError(`writeDirect: bs ${bs} does not divide offset ${offset} and length ${data.length}`);
  execFileSync('dd', [`of=${path}`, `bs=${bs}`, `seek=${offset / bs}`, 'oflag=direct', 'conv=notrunc' + (opts.fsync ? ',fsync' : ''), 'status=none'], {
    input: data,
  });
}

/** Async writeDirect (does not block the event loop, so API calls can run meanwhile). */
export function writeDirectAsync(path: string, offset: bigint, data: Buffer, opts: { fsync?: boolean } = {}): Promise<void> {
  const bs = offset % 4096n === 0n && data.length % 4096 === 0 ? 4096n : 512n;
  return new Promise((resolve, reject) => {
    const child = spawn('dd', [`of=${path}`, `bs=${bs}`, `seek=${offset / bs}`, 'oflag=direct', 'conv=notrunc' + (opts.fsync ? ',fsync' : ''), 'status=none'], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`dd of=${path} seek=${offset}: exit ${code}: ${err.trim()}`))));
    child.stdin.end(data);
  });
}

/**
 * A buffer whose memory is page-aligned, as O_DIRECT needs (a Node Buffer is only 16-byte aligned): a
 * view on a WebAssembly memory, whose pages the engine maps page-aligned. Rounded up to 64 KiB pages.
 */
export function alignedBuffer(length: number): Buffer {
  if (!Number.isSafeInteger(length) || length <= 0 || length > 1 << 30) throw new RangeError(`alignedBuffer: bad length ${length}`);
  const pages = Math.ceil(length / 65536);
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, length);
}

/**
 * A block device (or file) opened for in-process O_DIRECT IO: no child process per request, so many
 * requests per second even under emulation, and the event loop stays free (libuv's pool does the IO).
 * `fua` writes go through a second descriptor opened O_DSYNC (REQ_FUA); `flush` writes are followed by
 * an fdatasync (a PREFLUSH). Offsets and lengths must be multiples of 512 bytes.
 */
export class DirectFile {
  private constructor(
    private readonly plain: fs.promises.FileHandle,
    private readonly dsync: fs.promises.FileHandle,
  ) {}

  static async open(path: string): Promise<DirectFile> {
    const { O_RDWR, O_DIRECT, O_DSYNC } = fs.constants;
    const plain = await fs.promises.open(path, O_RDWR | O_DIRECT);
    try {
      return new DirectFile(plain, await fs.promises.open(path, O_RDWR | O_DIRECT | O_DSYNC));
    } catch (e) {
      await plain.close();
      throw e;
    }
  }

  /** Writes all of `data` (an alignedBuffer or a view into one) at byte `offset`. */
  async write(offset: number, data: Buffer, mode: 'direct' | 'flush' | 'fua' = 'direct'): Promise<void> {
    const fh = mode === 'fua' ? this.dsync : this.plain;
    const { bytesWritten } = await fh.write(data, 0, data.length, offset);
    if (bytesWritten !== data.length) throw new Error(`short O_DIRECT write at byte ${offset}: ${bytesWritten} of ${data.length}`);
    if (mode === 'flush') await this.plain.datasync();
  }

  /** Reads `into.length` bytes at byte `offset` into `into` (an alignedBuffer or a view into one). */
  async read(offset: number, into: Buffer): Promise<Buffer> {
    const { bytesRead } = await this.plain.read(into, 0, into.length, offset);
    if (bytesRead !== into.length) throw new Error(`short O_DIRECT read at byte ${offset}: ${bytesRead} of ${into.length}`);
    return into;
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.plain.close(), this.dsync.close()]);
  }
}
