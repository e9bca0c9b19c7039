/**
 * Device-mapper events as an async iterator. The kernel keeps one global event counter and one per
 * device (bumped by dm_table_event: target events, rename, remove). DEV_ARM_POLL records the global
 * counter on the control fd and poll() reports POLLIN once it moves; the device list then shows which
 * devices' event_nr changed. Arming comes before listing, so an event between the two only costs an
 * extra look, never a missed change.
 */
import type { DevNum } from './abi';

export interface DmEvent {
  readonly name: string;
  /** '' when the device has no uuid. */
  readonly uuid: string;
  readonly eventNr: number;
  readonly dev: DevNum;
}

/** A device as LIST_DEVICES reports it. */
export interface ListedDevice {
  readonly name: string;
  readonly uuid: string;
  readonly eventNr: number;
  readonly dev: DevNum;
}

/** Event numbers by device number ("major:minor", stable across renames). */
export type EventBaseline = ReadonlyMap<string, number>;

const devKey = (d: DevNum): string => `${d.major}:${d.minor}`;

export function eventBaseline(devices: readonly ListedDevice[]): Map<string, number> {
  return new Map(devices.map((d) => [devKey(d.dev), d.eventNr]));
}

/**
 * Devices whose event_nr moved since `before` (compared with !=, as DEV_WAIT does, so wrap-around
 * counts). A device that appeared since counts from 0: it is reported once it has had an event.
 */
export function diffEvents(before: EventBaseline, now: readonly ListedDevice[]): DmEvent[] {
  return now
    .filter((d) => d.eventNr !== (before.get(devKey(d.dev)) ?? 0))
    .map((d) => ({ name: d.name, uuid: d.uuid, eventNr: d.eventNr, dev: d.dev }));
}

/** What the stream needs from DeviceMapper and its transport. */
export interface EventSource {
  armPoll(): Promise<void>;
  list(): Promise<ListedDevice[]>;
  /** Resolves true when the control fd is readable, false once `signal` aborts. */
  waitReadable(signal: AbortSignal): Promise<boolean>;
}

export interface EventsOptions {
  /** Ends the iteration (done, not an error) when aborted. */
  readonly signal?: AbortSignal;
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

/**
 * The iterator behind DeviceMapper.events(). The first look (arm + list) starts at once; await `ready`
 * before causing the events you want to see. return() (a `break` out of for-await) and an aborted
 * signal cancel a pending poll immediately instead of waiting for the next event.
 */
export class DmEventStream implements AsyncIterableIterator<DmEvent> {
  /** Resolves once the baseline is taken; rejects if that failed (the failure also ends the iteration). */
  readonly ready: Promise<void>;
  private readonly queue: DmEvent[] = [];
  private readonly abort = new AbortController();
  private baseline: EventBaseline = new Map();
  private finished = false;
  private failure: { error: unknown } | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private detach: () => void = () => undefined;

  constructor(
    private readonly source: EventSource,
    opts: EventsOptions = {},
  ) {
    this.follow(opts.signal);
    this.ready = this.serial(async () => {
      await this.guard(() => this.look(false));
      if (this.failure) throw this.failure.error;
    });
    this.ready.catch(() => undefined); // the same failure reaches next(); awaiting ready is optional
  }

  /** True once the iteration has ended (returned, aborted or failed). */
  get done(): boolean {
    return this.finished;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<DmEvent>> {
    return this.serial(async () => {
      while (!this.finished && this.queue.length === 0) await this.guard(() => this.round());
      const value = this.queue.shift();
      if (value) return { done: false, value };
      return this.takeFailure();
    });
  }

  /** Ends the iteration: cancels a pending poll and waits for the in-flight step to settle. */
  async return(): Promise<IteratorResult<DmEvent>> {
    this.finish();
    this.queue.length = 0;
    await this.tail;
    return DONE;
  }

  private follow(signal: AbortSignal | undefined): void {
    if (!signal) return;
    if (signal.aborted) {
      this.finish();
      return;
    }
    const onAbort = (): void => void this.return();
    signal.addEventListener('abort', onAbort, { once: true });
    this.detach = () => signal.removeEventListener('abort', onAbort);
  }

  private finish(): void {
    this.finished = true;
    this.abort.abort();
    this.detach();
  }

  private takeFailure(): IteratorResult<DmEvent> {
    const failure = this.failure;
    this.failure = undefined;
    if (failure) throw failure.error;
    return DONE;
  }

  /** Steps run one at a time, in call order; a failed step does not block later ones. */
  private serial<T>(step: () => Promise<T>): Promise<T> {
    const run = this.tail.then(step);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async guard(step: () => Promise<void>): Promise<void> {
    try {
      await step();
    } catch (e) {
      if (!this.finished) this.failure = { error: e };
      this.finish();
    }
  }

  private async round(): Promise<void> {
    const readable = await this.source.waitReadable(this.abort.signal);
    if (!readable || this.finished) {
      this.finish();
      return;
    }
    await this.look(true);
  }

  private async look(report: boolean): Promise<void> {
    if (this.finished) return;
    await this.source.armPoll();
    const devices = await this.source.list();
    if (report) this.queue.push(...diffEvents(this.baseline, devices));
    this.baseline = eventBaseline(devices);
  }
}
