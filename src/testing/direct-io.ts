/**
 * Direct IO through dd (O_DIRECT, page-aligned buffers handled by dd): reads and writes that bypass every
 * page cache, so what they see is what the device holds.
 */
import { execFileSync, spawn } from 'node:child_process';

const KiB = 1024n;

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
