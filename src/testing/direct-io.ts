/**
 * Direct IO (O_DIRECT) in this process with page-aligned buffers: reads and writes that bypass every page
 * cache, so what they see is what the device holds. No child process per call (a dd per request cost
 * more than the IO under emulation). Each call issues requests of `bs` bytes, as `dd bs=` did, and an
 * error names the call and the errno as dd's message did (`Input/output error`).
 */
import * as fs from 'node:fs';

const KiB = 1024n;
// The one part of the WebAssembly JS API used here (tsconfig has no DOM lib, which types the rest).
declare const WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => { buffer: ArrayBuffer } };

/**
 * A buffer whose memory is page-aligned, as O_DIRECT needs (a Node Buffer is only 16-byte aligned): a
 * view on a WebAssembly memory, whose pages the engine maps page-aligned. Rounded up to 64 KiB pages.
 * Each one reserves address space until collected: reuse them (the pool below) rather than make many.
 */
export function alignedBuffer(length: number): Buffer {
  if (!Number.isSafeInteger(length) || length <= 0 || length > 1 << 30) throw new RangeError(`alignedBuffer: bad length ${length}`);
  const pages = Math.ceil(length / 65536);
  return Buffer.from(new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer, 0, length);
}

/** Aligned buffers free for the next call, by size. */
const pool = new Map<number, Buffer[]>();
const POOL_MAX_PER_SIZE = 8;

function acquire(size: number): Buffer {
  return pool.get(size)?.pop() ?? alignedBuffer(size);
}

function release(buf: Buffer): void {
  const free = pool.get(buf.length) ?? [];
  if (free.length < POOL_MAX_PER_SIZE) free.push(buf);
  pool.set(buf.length, free);
}

const STRERROR: Record<string, string> = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
  EINVAL: 'Invalid argument',
  ENXIO: 'No such device or address',
  EROFS: 'Read-only file system',
  EPERM: 'Operation not permitted',
};

function ioError(e: unknown, what: string): Error {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  const err = new Error(`${what}: ${STRERROR[code] ?? (e as Error).message}${code ? ` (${code})` : ''}`) as NodeJS.ErrnoException;
  if (code) err.code = code;
  return err;
}

function chunkSize(offset: bigint, length: bigint, bs: bigint, what: string): number {
  if (bs <= 0n || offset % bs !== 0n || length % bs !== 0n) throw new RangeError(`${what}: bs ${bs} does not divide offset ${offset} and length ${length}`);
  return Number(bs);
}

function openDirect(path: string, flags: number): number {
  try {
    return fs.openSync(path, flags | fs.constants.O_DIRECT, 0o644);
  } catch (e) {
    throw ioError(e, `opening ${path} with O_DIRECT`);
  }
}

/** Reads `length` bytes at `offset` with O_DIRECT in requests of `bs` bytes (512 where `bs` does not divide). */
export function readDirect(path: string, offset: bigint, length: bigint, bs = 64n * KiB): Buffer {
  if (offset % bs !== 0n || length % bs !== 0n) bs = 512n;
  const step = chunkSize(offset, length, bs, `readDirect ${path}`);
  const out = Buffer.allocUnsafe(Number(length));
  const fd = openDirect(path, fs.constants.O_RDONLY);
  const scratch = acquire(step);
  try {
    for (let at = 0; at < out.length; at += step) {
      const pos = Number(offset) + at;
      let n: number;
      try {
        n = fs.readSync(fd, scratch, 0, step, pos);
      } catch (e) {
        throw ioError(e, `O_DIRECT read of ${step} bytes at byte ${pos} of ${path}`);
      }
      scratch.copy(out, at, 0, n);
      if (n !== step) return out.subarray(0, at + n); // the end of the device, as dd stops there
    }
  } finally {
    fs.closeSync(fd);
    release(scratch);
  }
  return out;
}

/**
 * Writes `data` at `offset` with O_DIRECT; fsync=true adds a flush at the end. `bs` sets the size of each
 * write (default 4 KiB, or 512 bytes where 4 KiB does not align); it must divide offset and length.
 */
export function writeDirect(path: string, offset: bigint, data: Buffer, opts: { fsync?: boolean; bs?: bigint } = {}): void {
  const bs = opts.bs ?? (offset % 4096n === 0n && data.length % 4096 === 0 ? 4096n : 512n);
  const step = chunkSize(offset, BigInt(data.length), bs, 'writeDirect');
  const fd = openDirect(path, fs.constants.O_WRONLY | fs.constants.O_CREAT); // dd of= creates a missing file too
  const scratch = acquire(step);
  try {
    for (let at = 0; at < data.length; at += step) {
      const pos = Number(offset) + at;
      data.copy(scratch, 0, at, at + step);
      try {
        const n = fs.writeSync(fd, scratch, 0, step, pos);
        if (n !== step) throw new Error(`short write: ${n} bytes`);
      } catch (e) {
        throw ioError(e, `O_DIRECT write of ${step} bytes at byte ${pos} of ${path}`);
      }
    }
    if (opts.fsync) {
      try {
        fs.fsyncSync(fd);
      } catch (e) {
        throw ioError(e, `fsync of ${path}`);
      }
    }
  } finally {
    fs.closeSync(fd);
    release(scratch);
  }
}

/** Async writeDirect (does not block the event loop, so API calls can run meanwhile). */
export async function writeDirectAsync(path: string, offset: bigint, data: Buffer, opts: { fsync?: boolean } = {}): Promise<void> {
  const bs = offset % 4096n === 0n && data.length % 4096 === 0 ? 4096n : 512n;
  const step = chunkSize(offset, BigInt(data.length), bs, 'writeDirectAsync');
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_DIRECT);
  } catch (e) {
    throw ioError(e, `opening ${path} with O_DIRECT`);
  }
  const scratch = acquire(step);
  try {
    for (let at = 0; at < data.length; at += step) {
      const pos = Number(offset) + at;
      data.copy(scratch, 0, at, at + step);
      try {
        const { bytesWritten } = await fh.write(scratch, 0, step, pos);
        if (bytesWritten !== step) throw new Error(`short write: ${bytesWritten} bytes`);
      } catch (e) {
        throw ioError(e, `O_DIRECT write of ${step} bytes at byte ${pos} of ${path}`);
      }
    }
    if (opts.fsync) {
      try {
        await fh.sync();
      } catch (e) {
        throw ioError(e, `fsync of ${path}`);
      }
    }
  } finally {
    await fh.close();
    release(scratch);
  }
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
