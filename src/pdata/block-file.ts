/**
 * Metadata blocks read from a file or a block device, one pread per block. With `direct`, the reads use
 * O_DIRECT so they see what the kernel wrote (dm-bufio writes under the page cache of the device node).
 */
import * as fs from 'node:fs';
import { METADATA_BLOCK_BYTES as B, type BlockReader } from './reader';

export class MetadataFileError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'MetadataFileError';
  }
}

/** Size in bytes of a regular file or a block device (sysfs for devices: fstat says 0 there). */
function sizeOf(path: string, st: fs.Stats): number {
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | (Math.floor(st.rdev / 4096) & ~0xff);
    const sectors = Number(fs.readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim());
    if (!Number.isSafeInteger(sectors)) throw new MetadataFileError(`${path}: cannot read the device size`, 'ERR_METADATA_FILE');
    return sectors * 512;
  }
  throw new MetadataFileError(`${path}: not a regular file or a block device`, 'ERR_METADATA_FILE');
}

/** A buffer of `size` bytes at an address O_DIRECT accepts: Node cannot ask for alignment, so probe offsets. */
function alignedBuffer(fd: number, size: number): Buffer {
  const big = Buffer.allocUnsafeSlow(size + B);
  for (let off = 0; off < B; off += 16) {
    try {
      fs.readSync(fd, big, off, B, 0);
      return big.subarray(off, off + size);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
    }
  }
  throw new MetadataFileError('no buffer alignment accepted for O_DIRECT reads', 'ERR_METADATA_FILE');
}

/** Blocks per read (1 MiB): walks meet array and bitset blocks mostly in allocation order, so read ahead. */
const WINDOW_BLOCKS = 256;

export class FileBlockReader implements BlockReader {
  readonly nrBlocks: number;
  private readonly fd: number;
  private readonly window: Buffer;
  private windowStart = -1;
  private windowBlocks = 0;

  /** Opens `path` read-only; close() when done. */
  constructor(readonly path: string, opts: { direct?: boolean } = {}) {
    if (typeof path !== 'string' || path === '') throw new MetadataFileError('metadata path must be a non-empty string', 'ERR_INVALID_ARG_VALUE');
    this.fd = fs.openSync(path, fs.constants.O_RDONLY | (opts.direct ? fs.constants.O_DIRECT : 0));
    try {
      this.nrBlocks = Math.floor(sizeOf(path, fs.fstatSync(this.fd)) / B);
      this.window = opts.direct ? alignedBuffer(this.fd, WINDOW_BLOCKS * B) : Buffer.allocUnsafeSlow(WINDOW_BLOCKS * B);
    } catch (e) {
      fs.closeSync(this.fd);
      throw e;
    }
  }

  read(n: number): Buffer {
    if (n < this.windowStart || n >= this.windowStart + this.windowBlocks) {
      const count = Math.min(WINDOW_BLOCKS, this.nrBlocks - n);
      this.windowStart = -1;
      const got = fs.readSync(this.fd, this.window, 0, count * B, n * B);
      if (got < B) throw new MetadataFileError(`${this.path}: short read of block ${n} (${got} bytes)`, 'EIO');
      this.windowStart = n;
      this.windowBlocks = Math.floor(got / B);
    }
    const out = Buffer.allocUnsafe(B);
    const at = (n - this.windowStart) * B;
    this.window.copy(out, 0, at, at + B);
    return out;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
