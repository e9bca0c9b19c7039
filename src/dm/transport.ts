/** How DM requests reach the kernel. DeviceMapper only sees this interface, so tests can fake it. */
import { closeSync } from 'node:fs';
import type { DmCommand } from './abi';
import { DmError } from './errors';
import { loadNative, type DmNativeBinding, type DmPollBinding } from './native';

/** A safety net only: cancellation goes through an eventfd and is immediate. */
export const POLL_SLICE_MS = 1000;

export interface DmTransport {
  /** Sends one request buffer (header + payload); resolves with the reply buffer or rejects with an errno error. */
  ioctl(command: DmCommand, buffer: Buffer): Promise<Buffer>;
  /**
   * Waits until the control fd is readable (a DM event since the last DEV_ARM_POLL): true, or false
   * once `signal` aborts or the transport closes. Transports without it cannot deliver events.
   */
  waitReadable?(signal: AbortSignal): Promise<boolean>;
  close?(): Promise<void>;
}

/** The real control device, /dev/mapper/control, through the native addon. */
export class NativeTransport implements DmTransport {
  private pending = 0;
  private closing: Promise<void> | undefined;
  private release: (() => void) | undefined;
  /** Aborted by close(), so waits for events end instead of holding the fd open. */
  private readonly closed = new AbortController();

  private constructor(
    private readonly native: DmNativeBinding,
    /** The control fd, e.g. for poll() after armPoll(). */
    readonly fd: number,
  ) {}

  static open(native: DmNativeBinding = loadNative()): NativeTransport {
    return new NativeTransport(native, native.dmControlOpen());
  }

  async ioctl(command: DmCommand, buffer: Buffer): Promise<Buffer> {
    this.checkOpen();
    this.pending++;
    try {
      return await this.native.dmIoctl(this.fd, command, buffer);
    } finally {
      this.leave();
    }
  }

  async waitReadable(signal: AbortSignal): Promise<boolean> {
    const poll = this.pollBinding();
    this.checkOpen();
    const cancelFd = poll.eventfdOpen();
    const signals = [signal, this.closed.signal];
    const cancel = (): void => poll.eventfdSignal(cancelFd);
    for (const s of signals) s.addEventListener('abort', cancel, { once: true });
    this.pending++;
    try {
      for (;;) {
        if (signals.some((s) => s.aborted)) return false;
        const outcome = await poll.pollReadable(this.fd, cancelFd, POLL_SLICE_MS);
        if (outcome !== 'timeout') return outcome === 'readable';
      }
    } finally {
      for (const s of signals) s.removeEventListener('abort', cancel);
      closeSync(cancelFd); // only now: no poll thread uses it any more
      this.leave();
    }
  }

  /**
   * Closes the fd once in-flight ioctls have returned: closing under a pool thread that has not yet
   * entered ioctl() could let a newly opened file reuse the fd number and receive a DM command.
   * A pending DEV_WAIT therefore delays the close until its event arrives; waitReadable() calls are
   * cancelled at once.
   */
  close(): Promise<void> {
    this.closed.abort();
    this.closing ??= new Promise<void>((resolve) => {
      this.release = resolve;
      if (this.pending === 0) resolve();
    }).then(() => this.native.dmControlClose(this.fd));
    return this.closing;
  }

  private checkOpen(): void {
    if (this.closing) throw new DmError('device-mapper control is closed', { code: 'ERR_DM_CLOSED' });
  }

  private leave(): void {
    this.pending--;
    if (this.pending === 0) this.release?.();
  }

  private pollBinding(): DmPollBinding {
    const { eventfdOpen, eventfdSignal, pollReadable } = this.native;
    if (!eventfdOpen || !eventfdSignal || !pollReadable) {
      throw new DmError('this native binding cannot poll for events', { code: 'ERR_DM_UNSUPPORTED' });
    }
    const n = this.native;
    return {
      eventfdOpen: eventfdOpen.bind(n),
      eventfdSignal: eventfdSignal.bind(n),
      pollReadable: pollReadable.bind(n),
    };
  }
}
