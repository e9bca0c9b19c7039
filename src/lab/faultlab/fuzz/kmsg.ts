/**
 * A nonblocking /dev/kmsg reader: opened once, drained to the end, then read in batches. Each read()
 * returns one record; EAGAIN means nothing more for now, EPIPE that records were overwritten before we
 * read them (counted as lost, reading goes on).
 */
import * as fs from 'node:fs';
import { findSplats, type Splat } from '../../splat';

export interface KmsgBatch {
  readonly lines: string[];
  /** True when the ring buffer overwrote records we had not read. */
  readonly lost: boolean;
}

export class Kmsg {
  private readonly buf = Buffer.alloc(16384);
  private constructor(private readonly fd: number) {}

  /** Opens /dev/kmsg at its end, or returns undefined when it cannot be read. */
  static open(path = '/dev/kmsg'): Kmsg | undefined {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    const k = new Kmsg(fd);
    k.read();
    return k;
  }

  /** Every record since the last read (message text only, without the `prio,seq,...;` prefix). */
  read(): KmsgBatch {
    const lines: string[] = [];
    let lost = false;
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.buf, 0, this.buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break;
        if (code === 'EPIPE') {
          lost = true;
          continue;
        }
        throw e;
      }
      if (n <= 0) break;
      const rec = this.buf.toString('utf8', 0, n);
      const semi = rec.indexOf(';');
      // Continuation lines (" KEY=value") follow the message after a newline: keep the message only.
      lines.push((semi >= 0 ? rec.slice(semi + 1) : rec).split('\n')[0]!);
    }
    return { lines, lost };
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** Lines that mark one refused table load (dm-ioctl's line after any target's own DMERR). */
export function tableRefusals(lines: readonly string[]): number {
  return lines.filter((l) => /device-mapper: ioctl: (error adding target to table|unable to set up device queue for new table)/.test(l)).length;
}

export function splatsIn(lines: readonly string[]): Splat[] {
  return findSplats(lines.join('\n'));
}
