/** How DM requests reach the kernel. DeviceMapper only sees this interface, so tests can fake it. */
import type { DmCommand } from './abi';
import { DmError } from './errors';
import { loadNative, type DmNativeBinding } from './native';

export interface DmTransport {
  /** Sends one request buffer (header + payload); resolves with the reply buffer or rejects with an errno error. */
  ioctl(command: DmCommand, buffer: Buffer): Promise<Buffer>;
  close?(): Promise<void>;
}

/** The real control device, /dev/mapper/control, through the native addon. */
export class NativeTransport implements DmTransport {
  private pending = 0;
  private closing: Promise<void> | undefined;
  private release: (() => void) | undefined;

  private constructor(
    private readonly native: DmNativeBinding,
    /** The control fd, e.g. for poll() after armPoll(). */
    readonly fd: number,
  ) {}

  static open(native: DmNativeBinding = loadNative()): NativeTransport {
    return new NativeTransport(native, native.dmControlOpen());
  }

  async ioctl(command: DmCommand, buffer: Buffer): Promise<Buffer> {
    if (this.closing) throw new DmError('device-mapper control is closed', { code: 'ERR_DM_CLOSED' });
    this.pending++;
    try {
      return await this.native.dmIoctl(this.fd, command, buffer);
    } finally {
      this.pending--;
      if (this.pending === 0) this.release?.();
    }
  }

  /**
   * Closes the fd once in-flight ioctls have returned: closing under a pool thread that has not yet
   * entered ioctl() could let a newly opened file reuse the fd number and receive a DM command.
   * A pending DEV_WAIT therefore delays the close until its event arrives.
   */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.release = resolve;
      if (this.pending === 0) resolve();
    }).then(() => this.native.dmControlClose(this.fd));
    return this.closing;
  }
}
