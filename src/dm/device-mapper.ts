/**
 * The device-mapper control plane: one method per DM ioctl, typed in and out. Every request carries
 * its command's minimum interface version, replies that say BUFFER_FULL are retried with a doubled
 * buffer, and every argument is checked before the kernel sees it.
 *
 * With a `system` (DeviceMapper.open() supplies the native one) it also keeps userspace in step:
 *  - udev running (/run/udev/control exists) and `udev` not 'off': resume, remove, rename and setUuid
 *    use libdm's cookie protocol (udev.ts) and return once udev has processed the uevent; udev's rules
 *    own /dev/mapper, so dmkit does not touch it.
 *  - otherwise, unless `nodes` is 'off': resume (and create with a table) makes /dev/mapper/NAME, rename
 *    moves it, remove deletes it (nodes.ts). A node that cannot be made or deleted is a warning, not a
 *    failure: the kernel did what was asked, and mknodes() repairs the directory.
 * mknodes() reconciles /dev/mapper with the kernel's list whatever the mode. The /dev root is `devDir`,
 * else $DM_DEV_DIR, else /dev. events() iterates device events through DEV_ARM_POLL and poll().
 */
import { setTimeout as delay } from 'node:timers/promises';
import { sectors, type Sectors } from '../units';
import {
  buildRequest,
  commandName,
  decodeDev,
  decodeHeader,
  DM_VERSION_MAJOR,
  DmCommand,
  DmFlag,
  encodeDev,
  formatVersion,
  MIN_INTERFACE_VERSION,
  versionAtLeast,
  type DevNum,
  type DmHeader,
  type DmVersion,
  type RequestFields,
} from './abi';
import {
  describeDevId,
  validateDevId,
  validateName,
  validateNameId,
  validateUuid,
  type DevId,
  type NameId,
} from './dev-id';
import {
  checkChoice,
  checkFlag,
  checkFunction,
  checkInteger,
  checkOptions,
  checkSectorsArg,
  checkSignal,
  checkString,
  describeValue,
} from './check';
import { DmArgumentError, DmError, DmMalformedReplyError, isSystemError } from './errors';
import {
  checkTargetType,
  decodeDataString,
  decodeDeps,
  decodeNameList,
  decodeTargets,
  decodeVersions,
  encodeCString,
  encodeTargetMsg,
  encodeTargets,
  type NameListEntry,
  type TargetLine,
  type TargetVersion,
} from './payload';
import { DmEventStream, type EventsOptions } from './events';
import { DeviceNodes, resolveDevDir, type ReconcileReport } from './nodes';
import { nativeSystem, type DmSystem } from './system';
import { NativeTransport, type DmTransport } from './transport';
import { checkUdevFlags, UdevSync, type UdevMode } from './udev';

export const DM_BUFFER_INITIAL = 16 * 1024;
export const DM_BUFFER_MAX = 32 * 1024 * 1024;
/** dmsetup --retry: 25 attempts, 200 ms apart. */
export const DEFAULT_REMOVE_RETRY: RetryPolicy = { count: 25, intervalMs: 200 };
const LIST_EVENT_NR_VERSION: DmVersion = { major: 4, minor: 37, patch: 0 };

export interface DeviceFlags {
  readonly suspended: boolean;
  readonly readOnly: boolean;
  readonly activePresent: boolean;
  readonly inactivePresent: boolean;
  readonly deferredRemove: boolean;
  readonly internalSuspend: boolean;
  readonly ueventGenerated: boolean;
}

export interface DeviceInfo {
  readonly name: string;
  /** '' when the device has no uuid. */
  readonly uuid: string;
  readonly dev: DevNum;
  readonly openCount: number;
  readonly eventNr: number;
  readonly targetCount: number;
  readonly flags: DeviceFlags;
}

export interface DeviceListEntry {
  readonly name: string;
  readonly dev: DevNum;
  readonly eventNr: number;
  readonly uuid: string;
}

export interface TargetStatus {
  readonly start: Sectors;
  readonly length: Sectors;
  readonly type: string;
  readonly status: string;
}

export interface WaitResult {
  readonly info: DeviceInfo;
  readonly status: TargetStatus[];
}

/** Whether the kernel emitted a uevent (udev-synchronised callers wait only when it did). */
export interface UeventResult {
  readonly ueventGenerated: boolean;
}

export interface RemoveResult extends UeventResult {
  /** The device was open, so the kernel scheduled its removal for the last close. */
  readonly deferred: boolean;
}

export interface RetryPolicy {
  readonly count: number;
  readonly intervalMs: number;
}

export interface Geometry {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectors: number;
  readonly start: Sectors;
}

export interface CreateOptions {
  readonly uuid?: string;
  readonly readOnly?: boolean;
  /** Ask for this minor number (DM_PERSISTENT_DEV). */
  readonly minor?: number;
  /** Load this table and resume, as `dmsetup create --table`; the device is removed if that fails. */
  readonly targets?: readonly TargetLine[];
}
export interface LoadOptions {
  readonly readOnly?: boolean;
}
export interface SuspendOptions {
  readonly noflush?: boolean;
  readonly nolockfs?: boolean;
}
/**
 * udev options for resume, remove, rename and setUuid. `udevFlags` (UdevFlag bits) go into the upper
 * half of event_nr with DM_UDEV_PRIMARY_SOURCE. `udevCookie` is a caller-managed cookie (as `dmsetup
 * --udevcookie`): with udev sync active the task is counted on its semaphore (which must exist) and
 * dmkit does not wait (the caller waits for its whole transaction); with sync off it is ignored, as
 * libdm ignores it. Without one, dmkit makes and waits on a cookie of its own when sync is active.
 */
export interface UdevOptions {
  readonly udevCookie?: number;
  readonly udevFlags?: number;
}
/** dmsetup resume --noflush/--nolockfs: how the kernel suspends internally when it swaps in a loaded table. */
export interface ResumeOptions extends UdevOptions {
  readonly noflush?: boolean;
  readonly nolockfs?: boolean;
}
export interface RemoveOptions extends UdevOptions {
  readonly deferred?: boolean;
  /** Retry EBUSY: true for 25 x 200 ms, like dmsetup --retry. */
  readonly retry?: boolean | Partial<RetryPolicy>;
}
export interface QueryOptions {
  readonly inactive?: boolean;
}
export interface StatusOptions extends QueryOptions {
  /** Also skips a thin-pool metadata commit while reporting. */
  readonly noflush?: boolean;
}

export interface DeviceMapperOptions {
  readonly sleep?: (ms: number) => Promise<void>;
  readonly initialBufferSize?: number;
  readonly maxBufferSize?: number;
  /** Filesystem, semaphores and udev detection. Without it neither nodes nor udev are managed. */
  readonly system?: DmSystem;
  /** The /dev root for nodes; default $DM_DEV_DIR, else /dev. */
  readonly devDir?: string;
  /** 'auto' (default): make /dev/mapper nodes when udev does not; 'off': never (mknodes() still works). */
  readonly nodes?: 'auto' | 'off';
  /** 'auto' (default): cookie sync when udev runs; 'off': never sync, treat udev as absent. */
  readonly udev?: UdevMode;
  /** How long to wait for udev per command (default 30 s); a timeout is a warning. */
  readonly udevTimeoutMs?: number;
  /** Where warnings go (default process.emitWarning). */
  readonly warn?: (message: string) => void;
}

interface Request {
  readonly device?: string;
  readonly name?: string;
  readonly uuid?: string;
  readonly flags?: number;
  readonly eventNr?: number;
  readonly dev?: bigint;
  readonly targetCount?: number;
  readonly payload?: Buffer;
  /** The reply carries a payload, so start with a roomy buffer. */
  readonly returnsData?: boolean;
}

interface Reply {
  readonly header: DmHeader;
  readonly buffer: Buffer;
}

const EMPTY = Buffer.alloc(0);

const flagIf = (on: boolean | undefined, flag: number): number => (on ? flag : 0);

/** The /dev root and buffer sizes are bounded: a reply buffer is allocated at the size asked for. */
const MIN_BUFFER = 1024;
const PATH_MAX_BYTES = 4095;

/** Checks every DeviceMapper option before anything is opened or allocated. */
function checkDeviceMapperOptions(options: DeviceMapperOptions | undefined): DeviceMapperOptions {
  const o = checkOptions(options, 'DeviceMapper options') as DeviceMapperOptions;
  checkFunction(o.sleep, 'sleep');
  checkFunction(o.warn, 'warn');
  if (o.initialBufferSize !== undefined) checkInteger(o.initialBufferSize, MIN_BUFFER, DM_BUFFER_MAX, 'initialBufferSize');
  if (o.maxBufferSize !== undefined) checkInteger(o.maxBufferSize, MIN_BUFFER, DM_BUFFER_MAX, 'maxBufferSize');
  if (o.initialBufferSize !== undefined && o.maxBufferSize !== undefined && o.initialBufferSize > o.maxBufferSize) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `initialBufferSize ${o.initialBufferSize} exceeds maxBufferSize ${o.maxBufferSize}`);
  }
  if (o.system !== undefined && (typeof o.system !== 'object' || o.system === null)) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `system must be a DmSystem, got ${describeValue(o.system)}`);
  }
  if (o.devDir !== undefined) checkString(o.devDir, PATH_MAX_BYTES, 'devDir');
  checkChoice(o.nodes, ['auto', 'off'], 'nodes');
  checkChoice(o.udev, ['auto', 'off'], 'udev');
  if (o.udevTimeoutMs !== undefined) checkInteger(o.udevTimeoutMs, 0, 3_600_000, 'udevTimeoutMs');
  return o;
}

/** A method's options bag with its boolean fields checked. */
function flagOptions<T extends object>(opts: T | undefined, what: string, flags: readonly (keyof T & string)[]): T {
  const o = checkOptions(opts, `${what} options`) as T;
  for (const f of flags) checkFlag(o[f], `${what} option ${f}`);
  return o;
}

function idFields(id: DevId): Pick<Request, 'device' | 'name' | 'uuid'> {
  validateDevId(id);
  return id.name !== undefined
    ? { device: describeDevId(id), name: id.name }
    : { device: describeDevId(id), uuid: id.uuid };
}

function checkU32(value: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `${what} must be a u32, got ${describeValue(value)}`);
  }
  return value;
}

function checkRange(value: number, max: number, what: string): void {
  checkInteger(value, 0, max, what);
}

/** The udev fields of resume/remove/rename/setUuid options, checked up front. */
function checkUdevOptions<T extends UdevOptions>(opts: T | undefined, what: string): T {
  const o = checkOptions(opts, `${what} options`) as T;
  if (o.udevCookie !== undefined) checkU32(o.udevCookie, 'udev cookie');
  if (o.udevFlags !== undefined) checkUdevFlags(o.udevFlags);
  return o;
}

function retryPolicy(retry: RemoveOptions['retry']): RetryPolicy {
  if (retry === undefined || retry === false) return { count: 1, intervalMs: 0 };
  if (retry !== true && (typeof retry !== 'object' || retry === null || Array.isArray(retry))) {
    throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `retry must be a boolean or {count, intervalMs}, got ${describeValue(retry)}`);
  }
  const policy = retry === true ? DEFAULT_REMOVE_RETRY : { count: retry.count ?? DEFAULT_REMOVE_RETRY.count, intervalMs: retry.intervalMs ?? DEFAULT_REMOVE_RETRY.intervalMs };
  checkRange(policy.count, 10_000, 'retry count');
  checkRange(policy.intervalMs, 3_600_000, 'retry interval');
  return policy;
}

export function infoFromHeader(h: DmHeader): DeviceInfo {
  const has = (flag: number): boolean => (h.flags & flag) !== 0;
  return {
    name: h.name,
    uuid: h.uuid,
    dev: decodeDev(h.dev),
    openCount: h.openCount,
    eventNr: h.eventNr,
    targetCount: h.targetCount,
    flags: {
      suspended: has(DmFlag.SUSPEND),
      readOnly: has(DmFlag.READONLY),
      activePresent: has(DmFlag.ACTIVE_PRESENT),
      inactivePresent: has(DmFlag.INACTIVE_PRESENT),
      deferredRemove: has(DmFlag.DEFERRED_REMOVE),
      internalSuspend: has(DmFlag.INTERNAL_SUSPEND),
      ueventGenerated: has(DmFlag.UEVENT_GENERATED),
    },
  };
}

const ueventResult = (h: DmHeader): UeventResult => ({ ueventGenerated: (h.flags & DmFlag.UEVENT_GENERATED) !== 0 });

const toStatus = (t: TargetLine): TargetStatus => ({
  start: t.start,
  length: t.length,
  type: t.type,
  status: t.params,
});

/**
 * Opening /dev/mapper/control failed: a DmError with the errno's code and a message that says what to
 * do. ENOENT/ENODEV/ENXIO mean there is no device-mapper (dm_mod not loaded, or no node and no sysfs
 * entry to make one from): code ERR_DM_NO_CONTROL, the errno kept in `errno`.
 */
export function controlOpenError(e: unknown): unknown {
  if (e instanceof DmError) return e;
  if (!isSystemError(e)) {
    return new DmError(`cannot open /dev/mapper/control: ${e instanceof Error ? e.message : describeValue(e)}`, {
      code: 'ERR_DM_NO_CONTROL',
      command: 'open',
      cause: e,
    });
  }
  const missing = e.code === 'ENOENT' || e.code === 'ENODEV' || e.code === 'ENXIO';
  const hint = missing
    ? 'device-mapper is not available (is the dm_mod module loaded? try: modprobe dm_mod)'
    : e.code === 'EACCES' || e.code === 'EPERM'
      ? 'permission denied (device-mapper needs root or CAP_SYS_ADMIN)'
      : e.message;
  return new DmError(`cannot open /dev/mapper/control: ${hint}`, {
    code: missing ? 'ERR_DM_NO_CONTROL' : e.code,
    errno: e.errno,
    command: 'open',
    cause: e,
  });
}

function wrapTransportError(e: unknown, command: string, device: string | undefined): unknown {
  if (e instanceof DmError || !isSystemError(e)) return e;
  const where = device === undefined ? command : `${command} (${device})`;
  return new DmError(`${where} failed: ${e.message}`, { code: e.code, errno: e.errno, command, device, cause: e });
}

function decodeWith<T>(fn: () => T, command: string, device: string | undefined): T {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof DmMalformedReplyError) || e.command !== '') throw e;
    throw new DmMalformedReplyError(`${command}: ${e.message}`, { command, device, cause: e });
  }
}

const defaultWarn = (message: string): void => process.emitWarning(message, { type: 'DmkitWarning' });

export class DeviceMapper {
  private kernel: DmVersion | undefined;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly initialBufferSize: number;
  private readonly maxBufferSize: number;
  /** /dev/mapper management; undefined without a system. */
  readonly nodes: DeviceNodes | undefined;
  private readonly autoNodes: boolean;
  private readonly udev: UdevSync;
  private readonly warn: (message: string) => void;
  private eventStream: DmEventStream | undefined;

  constructor(
    readonly transport: DmTransport,
    options: DeviceMapperOptions = {},
  ) {
    options = checkDeviceMapperOptions(options);
    if (typeof transport !== 'object' || transport === null || typeof transport.ioctl !== 'function') {
      throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `transport must be a DmTransport, got ${describeValue(transport)}`);
    }
    this.sleep = options.sleep ?? ((ms) => delay(ms));
    this.initialBufferSize = options.initialBufferSize ?? DM_BUFFER_INITIAL;
    this.maxBufferSize = options.maxBufferSize ?? DM_BUFFER_MAX;
    this.warn = options.warn ?? defaultWarn;
    const system = options.system;
    this.nodes = system && new DeviceNodes(system.nodeFs, resolveDevDir(options.devDir));
    this.autoNodes = options.nodes !== 'off';
    this.udev = new UdevSync({
      mode: options.udev ?? 'auto',
      semaphores: system?.semaphores,
      exists: (path) => system?.exists(path) ?? false,
      findSemaphore: system?.findSemaphore && ((key) => system.findSemaphore!(key)),
      timeoutMs: options.udevTimeoutMs,
      warn: this.warn,
    });
  }

  /** Opens /dev/mapper/control (creating the node if needed), with the native system for nodes and udev. */
  static open(options: DeviceMapperOptions = {}): DeviceMapper {
    const o = checkDeviceMapperOptions(options);
    let transport: NativeTransport;
    try {
      transport = NativeTransport.open();
    } catch (e) {
      throw controlOpenError(e);
    }
    return new DeviceMapper(transport, { ...o, system: o.system ?? nativeSystem() });
  }

  /** Ends a running events() iteration, then closes the transport. */
  async close(): Promise<void> {
    await this.eventStream?.return();
    await this.transport.close?.();
  }

  /** True when commands sync with udev now (udev runs and sync is not off). */
  get udevSyncActive(): boolean {
    return this.udev.active();
  }

  /** /dev/mapper/NAME under this instance's /dev root. */
  devicePath(name: string): string {
    validateName(name);
    return this.nodes?.path(name) ?? `/dev/mapper/${name}`;
  }

  /** The kernel's interface version, as reported in the last reply (undefined before any call). */
  get kernelVersion(): DmVersion | undefined {
    return this.kernel;
  }

  async version(): Promise<DmVersion> {
    return this.run(DmCommand.VERSION, {}, (r) => r.header.version);
  }

  async removeAll(opts: { deferred?: boolean } = {}): Promise<void> {
    opts = flagOptions(opts, 'removeAll', ['deferred']);
    await this.run(DmCommand.REMOVE_ALL, { flags: flagIf(opts.deferred, DmFlag.DEFERRED_REMOVE) }, () => undefined);
    if (this.managedNodes()) await this.mknodes().catch((e: unknown) => this.nodeWarning('remove all', e));
  }

  async list(): Promise<DeviceListEntry[]> {
    const entries = await this.run(DmCommand.LIST_DEVICES, { returnsData: true }, (r) =>
      decodeNameList(r.buffer, r.header, versionAtLeast(r.header.version, LIST_EVENT_NR_VERSION)),
    );
    const out: DeviceListEntry[] = [];
    for (const e of entries) {
      const full = await this.completeListEntry(e);
      if (full) out.push(full);
    }
    return out;
  }

  async create(name: string, opts: CreateOptions = {}): Promise<DeviceInfo> {
    validateName(name);
    opts = flagOptions(opts, 'create', ['readOnly']);
    if (opts.uuid !== undefined) validateUuid(opts.uuid);
    if (opts.targets) encodeTargets(opts.targets); // reject a bad table before creating anything
    const request: Request = {
      device: name,
      name,
      uuid: opts.uuid ?? '',
      flags: flagIf(opts.readOnly, DmFlag.READONLY) | flagIf(opts.minor !== undefined, DmFlag.PERSISTENT_DEV),
      dev: opts.minor === undefined ? 0n : encodeDev({ major: 0, minor: checkU32(opts.minor, 'minor') }),
    };
    const created = await this.run(DmCommand.DEV_CREATE, request, (r) => infoFromHeader(r.header));
    return opts.targets ? this.activate({ name }, opts.targets, opts.readOnly) : created;
  }

  async load(id: DevId, targets: readonly TargetLine[], opts: LoadOptions = {}): Promise<DeviceInfo> {
    opts = flagOptions(opts, 'load', ['readOnly']);
    const request: Request = {
      ...idFields(id),
      payload: encodeTargets(targets),
      targetCount: targets.length,
      flags: flagIf(opts.readOnly, DmFlag.READONLY),
    };
    return this.run(DmCommand.TABLE_LOAD, request, (r) => infoFromHeader(r.header));
  }

  async clear(id: DevId): Promise<DeviceInfo> {
    return this.run(DmCommand.TABLE_CLEAR, idFields(id), (r) => infoFromHeader(r.header));
  }

  async suspend(id: DevId, opts: SuspendOptions = {}): Promise<DeviceInfo> {
    opts = flagOptions(opts, 'suspend', ['noflush', 'nolockfs']);
    const flags =
      DmFlag.SUSPEND | flagIf(opts.noflush, DmFlag.NOFLUSH) | flagIf(opts.nolockfs, DmFlag.SKIP_LOCKFS);
    return this.run(DmCommand.DEV_SUSPEND, { ...idFields(id), flags }, (r) => infoFromHeader(r.header));
  }

  /** Resumes (DEV_SUSPEND without SUSPEND): udev-synced, and makes /dev/mapper/NAME when dmkit owns nodes. */
  async resume(id: DevId, opts: ResumeOptions = {}): Promise<DeviceInfo> {
    const fields = idFields(id);
    opts = checkUdevOptions(flagOptions(opts, 'resume', ['noflush', 'nolockfs']), 'resume');
    const flags = flagIf(opts.noflush, DmFlag.NOFLUSH) | flagIf(opts.nolockfs, DmFlag.SKIP_LOCKFS);
    const info = await this.udevSynced('resume', opts, (eventNr) =>
      this.run(DmCommand.DEV_SUSPEND, { ...fields, flags, eventNr }, (r) => infoFromHeader(r.header)),
    );
    this.updateNodes(`resume ${info.name}`, (nodes) => void nodes.ensure(info.name, info.dev));
    return info;
  }

  /** Removes a device: udev-synced, and deletes /dev/mapper/NAME when dmkit owns nodes (unless deferred). */
  async remove(id: DevId, opts: RemoveOptions = {}): Promise<RemoveResult> {
    opts = checkUdevOptions(flagOptions(opts, 'remove', ['deferred']), 'remove');
    const request: Request = { ...idFields(id), flags: flagIf(opts.deferred, DmFlag.DEFERRED_REMOVE) };
    const policy = retryPolicy(opts.retry);
    const name = id.name ?? (await this.nodeName(id));
    const result = await this.udevSynced('remove', opts, (eventNr) =>
      this.removeRetrying({ ...request, eventNr }, policy),
    );
    if (!result.deferred && name !== undefined) {
      this.updateNodes(`remove ${name}`, (nodes) => void nodes.remove(name));
    }
    return result;
  }

  /**
   * Renames a device (udev-synced; moves /dev/mapper/NAME when dmkit owns nodes). The kernel's reply
   * still carries the old name, so only the uevent flag is returned.
   */
  async rename(id: NameId, newName: string, opts: UdevOptions = {}): Promise<UeventResult> {
    validateNameId(id);
    validateName(newName);
    opts = checkUdevOptions(opts, 'rename');
    const request: Request = { ...idFields(id), payload: encodeCString(newName, 'new name') };
    const result = await this.udevSynced('rename', opts, (eventNr) =>
      this.run(DmCommand.DEV_RENAME, { ...request, eventNr }, (r) => ueventResult(r.header)),
    );
    if (this.managedNodes()) await this.moveNode(id.name, newName);
    return result;
  }

  /** Gives a device without a uuid its uuid (the kernel refuses to change an existing one); udev-synced. */
  async setUuid(id: NameId, uuid: string, opts: UdevOptions = {}): Promise<UeventResult> {
    validateNameId(id);
    validateUuid(uuid);
    opts = checkUdevOptions(opts, 'setUuid');
    const request: Request = { ...idFields(id), flags: DmFlag.UUID, payload: encodeCString(uuid, 'new uuid') };
    return this.udevSynced('set uuid', opts, (eventNr) =>
      this.run(DmCommand.DEV_RENAME, { ...request, eventNr }, (r) => ueventResult(r.header)),
    );
  }

  /**
   * `dmsetup mknodes`: makes /dev/mapper/NAME for every device (or just `name`) and deletes block nodes
   * of the DM major that no device owns. Works whatever the nodes/udev modes; needs a system.
   */
  async mknodes(name?: string): Promise<ReconcileReport> {
    if (name !== undefined) validateName(name);
    const nodes = this.nodes;
    if (!nodes) throw new DmError('mknodes needs a system (use DeviceMapper.open())', { code: 'ERR_DM_UNSUPPORTED' });
    return nodes.reconcile(await this.list(), name);
  }

  /**
   * Device events: an async iterator of devices whose event_nr changed, through DEV_ARM_POLL and
   * poll() on the control fd. One iteration at a time per DeviceMapper (they share the armed fd);
   * `break`, return(), the signal or close() end it at once. Await `ready` before causing events.
   */
  events(opts: EventsOptions = {}): DmEventStream {
    opts = checkOptions(opts, 'events options');
    checkSignal(opts.signal, 'events option signal');
    const wait = this.transport.waitReadable?.bind(this.transport);
    if (!wait) throw new DmError('this transport cannot wait for events', { code: 'ERR_DM_UNSUPPORTED' });
    if (this.eventStream && !this.eventStream.done) {
      throw new DmError('an events() iteration is already running on this DeviceMapper', { code: 'ERR_DM_BUSY' });
    }
    const source = {
      armPoll: () => this.armPoll(),
      list: () => this.list(),
      waitReadable: (signal: AbortSignal) =>
        wait(signal).catch((e: unknown) => {
          throw wrapTransportError(e, 'poll', undefined);
        }),
    };
    this.eventStream = new DmEventStream(source, opts);
    return this.eventStream;
  }

  async info(id: DevId, opts: QueryOptions = {}): Promise<DeviceInfo> {
    opts = flagOptions(opts, 'info', ['inactive']);
    const request: Request = { ...idFields(id), flags: flagIf(opts.inactive, DmFlag.QUERY_INACTIVE_TABLE) };
    return this.run(DmCommand.DEV_STATUS, request, (r) => infoFromHeader(r.header));
  }

  async table(id: DevId, opts: QueryOptions = {}): Promise<TargetLine[]> {
    opts = flagOptions(opts, 'table', ['inactive']);
    const flags = DmFlag.STATUS_TABLE | flagIf(opts.inactive, DmFlag.QUERY_INACTIVE_TABLE);
    return this.run(DmCommand.TABLE_STATUS, { ...idFields(id), flags, returnsData: true }, (r) =>
      decodeTargets(r.buffer, r.header),
    );
  }

  async status(id: DevId, opts: StatusOptions = {}): Promise<TargetStatus[]> {
    opts = flagOptions(opts, 'status', ['inactive', 'noflush']);
    const flags = flagIf(opts.inactive, DmFlag.QUERY_INACTIVE_TABLE) | flagIf(opts.noflush, DmFlag.NOFLUSH);
    return this.run(DmCommand.TABLE_STATUS, { ...idFields(id), flags, returnsData: true }, (r) =>
      decodeTargets(r.buffer, r.header).map(toStatus),
    );
  }

  async deps(id: DevId, opts: QueryOptions = {}): Promise<DevNum[]> {
    opts = flagOptions(opts, 'deps', ['inactive']);
    const flags = flagIf(opts.inactive, DmFlag.QUERY_INACTIVE_TABLE);
    return this.run(DmCommand.TABLE_DEPS, { ...idFields(id), flags, returnsData: true }, (r) =>
      decodeDeps(r.buffer, r.header),
    );
  }

  /**
   * Sends a target message; `sector` picks the target (undefined: sector 0, fine for '@' core messages
   * and single-target tables). Resolves with the target's reply when it gave one (DATA_OUT).
   */
  async message(id: DevId, sector: Sectors | undefined, text: string): Promise<string | undefined> {
    validateDevId(id);
    if (sector !== undefined) checkSectorsArg(sector, 'message sector');
    const payload = encodeTargetMsg(sector ?? sectors(0), text);
    const request: Request = { ...idFields(id), payload, returnsData: true };
    return this.run(DmCommand.TARGET_MSG, request, (r) =>
      r.header.flags & DmFlag.DATA_OUT ? decodeDataString(r.buffer, r.header, 'message reply') : undefined,
    );
  }

  /** Registered target types and their versions. */
  async targets(): Promise<TargetVersion[]> {
    return this.run(DmCommand.LIST_VERSIONS, { returnsData: true }, (r) => decodeVersions(r.buffer, r.header));
  }

  /** One target type's version; the kernel loads its module if needed. */
  async targetVersion(type: string): Promise<TargetVersion> {
    checkTargetType(type, 'target version');
    return this.run(DmCommand.GET_TARGET_VERSION, { name: type, device: type, returnsData: true }, (r) => {
      const [only, ...rest] = decodeVersions(r.buffer, r.header);
      if (!only || rest.length > 0) throw new DmMalformedReplyError('expected exactly one target version record');
      return only;
    });
  }

  /** Whether the kernel has target `type` (GET_TARGET_VERSION loads its module if it must). */
  async hasTarget(type: string): Promise<boolean> {
    try {
      await this.targetVersion(type);
      return true;
    } catch (e) {
      if (e instanceof DmError) return false;
      throw e;
    }
  }

  /**
   * Waits until the device's event number differs from `eventNr`, then returns its info and status.
   * The wait occupies one libuv pool thread until the event arrives.
   */
  async waitEvent(id: DevId, eventNr: number, opts: StatusOptions = {}): Promise<WaitResult> {
    validateDevId(id);
    opts = flagOptions(opts, 'waitEvent', ['inactive', 'noflush']);
    const flags = flagIf(opts.inactive, DmFlag.QUERY_INACTIVE_TABLE) | flagIf(opts.noflush, DmFlag.NOFLUSH);
    const request: Request = { ...idFields(id), flags, eventNr: checkU32(eventNr, 'event number'), returnsData: true };
    return this.run(DmCommand.DEV_WAIT, request, (r) => ({
      info: infoFromHeader(r.header),
      status: decodeTargets(r.buffer, r.header).map(toStatus),
    }));
  }

  async setGeometry(id: DevId, g: Geometry): Promise<void> {
    validateDevId(id);
    if (typeof g !== 'object' || g === null) {
      throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', `geometry must be {cylinders, heads, sectors, start}, got ${describeValue(g)}`);
    }
    checkRange(g.cylinders, 0xffff, 'cylinders');
    checkRange(g.heads, 0xff, 'heads');
    checkRange(g.sectors, 0xff, 'sectors per track');
    if (typeof g.start !== 'bigint' || g.start < 0n) {
      throw new DmArgumentError('ERR_DM_INVALID_ARGUMENT', 'geometry start must be Sectors');
    }
    const text = `${g.cylinders} ${g.heads} ${g.sectors} ${g.start}`;
    const request: Request = { ...idFields(id), payload: encodeCString(text, 'geometry') };
    await this.run(DmCommand.DEV_SET_GEOMETRY, request, () => undefined);
  }

  /** Arms this control fd so poll() reports the next DM event on any device. */
  async armPoll(): Promise<void> {
    await this.run(DmCommand.DEV_ARM_POLL, {}, () => undefined);
  }

  // ---- internals ----

  /** Runs a resume/remove/rename with the caller's cookie, with dmkit's udev sync, or plainly. */
  private udevSynced<T extends DeviceInfo | UeventResult>(
    what: string,
    opts: UdevOptions,
    run: (eventNr: number) => Promise<T>,
  ): Promise<T> {
    const flags = checkUdevFlags(opts.udevFlags ?? 0);
    const ueventGenerated = (r: T): boolean => ('flags' in r ? r.flags.ueventGenerated : r.ueventGenerated);
    if (opts.udevCookie !== undefined) return this.udev.runWithCookie({ what, flags, run, ueventGenerated }, checkU32(opts.udevCookie, 'udev cookie'));
    return this.udev.run({ what, flags, run, ueventGenerated });
  }

  private async removeRetrying(request: Request, policy: RetryPolicy): Promise<RemoveResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.run(DmCommand.DEV_REMOVE, request, (r) => ({
          deferred: (r.header.flags & DmFlag.DEFERRED_REMOVE) !== 0,
          ...ueventResult(r.header),
        }));
      } catch (e) {
        if (!(e instanceof DmError && e.code === 'EBUSY') || attempt >= policy.count) throw e;
        await this.sleep(policy.intervalMs);
      }
    }
  }

  /** The node manager when dmkit owns /dev/mapper now: a system, nodes not off, udev not syncing. */
  private managedNodes(): DeviceNodes | undefined {
    return this.autoNodes && !this.udev.active() ? this.nodes : undefined;
  }

  private updateNodes(what: string, update: (nodes: DeviceNodes) => void): void {
    const nodes = this.managedNodes();
    if (!nodes) return;
    try {
      update(nodes);
    } catch (e) {
      this.nodeWarning(what, e);
    }
  }

  private nodeWarning(what: string, e: unknown): void {
    this.warn(`${what}: /dev/mapper not updated: ${(e as Error).message}`);
  }

  /** A device addressed by uuid: its name, for the node to delete after removal. */
  private async nodeName(id: DevId): Promise<string | undefined> {
    if (!this.managedNodes()) return undefined;
    return this.info(id).then(
      (info) => info.name,
      () => undefined, // the removal itself reports a missing device
    );
  }

  private async moveNode(oldName: string, newName: string): Promise<void> {
    try {
      const { dev } = await this.info({ name: newName });
      this.nodes?.rename(oldName, newName, dev);
    } catch (e) {
      this.nodeWarning(`rename ${oldName} to ${newName}`, e);
    }
  }

  private async activate(id: DevId, targets: readonly TargetLine[], readOnly?: boolean): Promise<DeviceInfo> {
    try {
      await this.load(id, targets, { readOnly });
      return await this.resume(id);
    } catch (e) {
      // The load/resume failure is what the caller needs to see; a failed cleanup must not mask it.
      await this.remove(id).catch(() => undefined);
      throw e;
    }
  }

  /** Kernels before 4.37 (event_nr) or 4.46 (uuid flags) leave fields out of the list: ask per device. */
  private async completeListEntry(e: NameListEntry): Promise<DeviceListEntry | undefined> {
    if (e.eventNr !== undefined && e.uuid !== undefined) {
      return { name: e.name, dev: e.dev, eventNr: e.eventNr, uuid: e.uuid };
    }
    try {
      const info = await this.info({ name: e.name });
      return { name: e.name, dev: e.dev, eventNr: info.eventNr, uuid: info.uuid };
    } catch (err) {
      if (err instanceof DmError && err.code === 'ENXIO') return undefined; // removed since the listing
      throw err;
    }
  }

  private async run<T>(command: DmCommand, req: Request, decode: (reply: Reply) => T): Promise<T> {
    const name = commandName(command);
    this.checkSupported(command, name, req.device);
    let size = req.returnsData ? this.initialBufferSize : 0;
    for (;;) {
      const request = buildRequest(this.headerFields(command, req), req.payload ?? EMPTY, size);
      const reply = await this.exchange(command, request, req.device);
      if ((reply.header.flags & DmFlag.BUFFER_FULL) === 0) return decodeWith(() => decode(reply), name, req.device);
      size = this.grow(reply.buffer.length, name, req.device);
    }
  }

  private headerFields(command: DmCommand, req: Request): RequestFields {
    return {
      version: MIN_INTERFACE_VERSION[command],
      flags: req.flags ?? 0,
      eventNr: req.eventNr ?? 0,
      dev: req.dev ?? 0n,
      targetCount: req.targetCount ?? 0,
      name: req.name ?? '',
      uuid: req.uuid ?? '',
    };
  }

  private async exchange(command: DmCommand, request: Buffer, device: string | undefined): Promise<Reply> {
    const name = commandName(command);
    let buffer: Buffer;
    try {
      buffer = await this.transport.ioctl(command, request);
    } catch (e) {
      throw wrapTransportError(e, name, device);
    }
    const header = decodeWith(() => decodeHeader(buffer), name, device);
    if (header.version.major !== DM_VERSION_MAJOR) {
      const claimed = formatVersion(header.version);
      throw new DmMalformedReplyError(`${name}: reply claims interface ${claimed}`, { command: name, device });
    }
    this.kernel = header.version;
    return { header, buffer };
  }

  private grow(current: number, command: string, device: string | undefined): number {
    const next = Math.max(current * 2, this.initialBufferSize);
    if (next > this.maxBufferSize) {
      throw new DmError(`${command}: reply does not fit in ${this.maxBufferSize} bytes`, {
        code: 'ERR_DM_BUFFER_FULL',
        command,
        device,
      });
    }
    return next;
  }

  private checkSupported(command: DmCommand, name: string, device: string | undefined): void {
    const need = MIN_INTERFACE_VERSION[command];
    if (this.kernel && !versionAtLeast(this.kernel, need)) {
      throw new DmError(`${name} needs DM interface ${formatVersion(need)}, kernel has ${formatVersion(this.kernel)}`, {
        code: 'ERR_DM_UNSUPPORTED',
        command: name,
        device,
      });
    }
  }
}
