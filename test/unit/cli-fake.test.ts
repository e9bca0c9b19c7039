/**
 * The CLI test harness: an in-memory device-mapper and a runner that captures output. It holds no tests
 * itself (the cli-*.test.ts name keeps it beside the suites that import it).
 */
import { DeviceMapper, DmArgumentError, DmError, type DevId, type DeviceInfo, type TargetLine } from '../../src/dm';
import { runCli } from '../../src/cli/cli';
import type { Runtime } from '../../src/cli/runtime';
import { sectors, type Sectors } from '../../src/units';

interface FakeDevice {
  name: string;
  uuid: string;
  minor: number;
  live: TargetLine[] | undefined;
  inactive: TargetLine[] | undefined;
  suspended: boolean;
  readOnly: boolean;
  openCount: number;
  eventNr: number;
  deps: Array<{ major: number; minor: number }>;
}

export interface Call {
  readonly method: string;
  readonly args: unknown[];
}

const errno = (code: string, n: number, command: string, device?: string): DmError =>
  new DmError(`${command}${device ? ` (${device})` : ''} failed: ${code}: simulated`, { code, errno: n, command, device });

/** Just enough device-mapper to run the CLI: devices, tables, status text, messages, and scripted failures. */
export class FakeDm {
  readonly calls: Call[] = [];
  readonly devices = new Map<string, FakeDevice>();
  /** Status text per target type; the default is ''. */
  statusText: Record<string, string> = {};
  /** Reply per message text; undefined means no DATA_OUT. */
  replies: Record<string, string> = {};
  /** Method name -> errno code to fail with. */
  failures: Record<string, string> = {};
  targetTypes = [
    { name: 'linear', version: { major: 1, minor: 4, patch: 0 } },
    { name: 'era', version: { major: 1, minor: 2, patch: 0 } },
    { name: 'dmkit-era', version: { major: 1, minor: 0, patch: 0 } },
  ];
  closed = false;
  private nextMinor = 0;

  /** A device with a live table, as if created and resumed. */
  add(name: string, live: string[] = ['0 8 zero'], extra: Partial<FakeDevice> = {}): FakeDevice {
    const d: FakeDevice = {
      name,
      uuid: '',
      minor: this.nextMinor++,
      live: live.map(line),
      inactive: undefined,
      suspended: false,
      readOnly: false,
      openCount: 0,
      eventNr: 0,
      deps: [],
      ...extra,
    };
    this.devices.set(name, d);
    return d;
  }

  asDeviceMapper(): DeviceMapper {
    return this as unknown as DeviceMapper;
  }

  private record(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    const code = this.failures[method];
    if (code) {
      const numbers: Record<string, number> = { EBUSY: 16, ENXIO: 6, EINVAL: 22, EACCES: 13, EPERM: 1 };
      throw errno(code, numbers[code] ?? 5, `DM_${method.toUpperCase()}`);
    }
  }

  private find(id: DevId, command: string): FakeDevice {
    if (id.name !== undefined && (id.name === '' || id.name.includes('/'))) {
      throw new DmArgumentError('ERR_DM_INVALID_NAME', `invalid device name ${JSON.stringify(id.name)}`);
    }
    const d = id.name !== undefined ? this.devices.get(id.name) : [...this.devices.values()].find((x) => x.uuid === id.uuid);
    if (!d) throw errno('ENXIO', 6, command, id.name ?? `uuid:${id.uuid}`);
    return d;
  }

  private info_(d: FakeDevice): DeviceInfo {
    return {
      name: d.name,
      uuid: d.uuid,
      dev: { major: 253, minor: d.minor },
      openCount: d.openCount,
      eventNr: d.eventNr,
      targetCount: d.live?.length ?? 0,
      flags: {
        suspended: d.suspended,
        readOnly: d.readOnly,
        activePresent: d.live !== undefined,
        inactivePresent: d.inactive !== undefined,
        deferredRemove: false,
        internalSuspend: false,
        ueventGenerated: false,
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
  async version(): Promise<{ major: number; minor: number; patch: number }> {
    this.record('version');
    return { major: 4, minor: 48, patch: 0 };
  }
  async list(): Promise<Array<{ name: string; dev: { major: number; minor: number }; eventNr: number; uuid: string }>> {
    this.record('list');
    return [...this.devices.values()].map((d) => ({ name: d.name, dev: { major: 253, minor: d.minor }, eventNr: d.eventNr, uuid: d.uuid }));
  }
  async create(name: string, opts: { uuid?: string; readOnly?: boolean; minor?: number; targets?: TargetLine[] } = {}): Promise<DeviceInfo> {
    this.record('create', name, opts);
    if (name.includes('/')) throw new DmArgumentError('ERR_DM_INVALID_NAME', `invalid device name ${JSON.stringify(name)}`);
    if (this.devices.has(name)) throw errno('EBUSY', 16, 'DM_DEV_CREATE', name);
    const d = this.add(name, [], { uuid: opts.uuid ?? '', readOnly: opts.readOnly ?? false });
    d.live = opts.targets ? [...opts.targets] : undefined;
    if (opts.minor !== undefined) d.minor = opts.minor;
    return this.info_(d);
  }
  async load(id: DevId, targets: TargetLine[], opts: { readOnly?: boolean } = {}): Promise<DeviceInfo> {
    this.record('load', id, targets, opts);
    const d = this.find(id, 'DM_TABLE_LOAD');
    d.inactive = [...targets];
    return this.info_(d);
  }
  async clear(id: DevId): Promise<DeviceInfo> {
    this.record('clear', id);
    const d = this.find(id, 'DM_TABLE_CLEAR');
    d.inactive = undefined;
    return this.info_(d);
  }
  async suspend(id: DevId, opts: object = {}): Promise<DeviceInfo> {
    this.record('suspend', id, opts);
    const d = this.find(id, 'DM_DEV_SUSPEND');
    d.suspended = true;
    return this.info_(d);
  }
  async resume(id: DevId, opts?: object): Promise<DeviceInfo> {
    this.record('resume', id, ...(opts === undefined ? [] : [opts]));
    const d = this.find(id, 'DM_DEV_SUSPEND');
    if (d.inactive) {
      d.live = d.inactive;
      d.inactive = undefined;
    }
    d.suspended = false;
    d.eventNr++;
    return this.info_(d);
  }
  async remove(id: DevId, opts: { retry?: boolean; deferred?: boolean } = {}): Promise<{ deferred: boolean; ueventGenerated: boolean }> {
    this.record('remove', id, opts);
    const d = this.find(id, 'DM_DEV_REMOVE');
    if (d.openCount > 0) {
      if (opts.deferred) return { deferred: true, ueventGenerated: false };
      throw errno('EBUSY', 16, 'DM_DEV_REMOVE', d.name);
    }
    this.devices.delete(d.name);
    return { deferred: false, ueventGenerated: true };
  }
  async removeAll(opts: object = {}): Promise<void> {
    this.record('removeAll', opts);
    for (const d of [...this.devices.values()]) if (d.openCount === 0) this.devices.delete(d.name);
  }
  async rename(id: { name: string }, newName: string): Promise<{ ueventGenerated: boolean }> {
    this.record('rename', id, newName);
    const d = this.find(id, 'DM_DEV_RENAME');
    this.devices.delete(d.name);
    d.name = newName;
    this.devices.set(newName, d);
    return { ueventGenerated: true };
  }
  async setUuid(id: { name: string }, uuid: string): Promise<{ ueventGenerated: boolean }> {
    this.record('setUuid', id, uuid);
    const d = this.find(id, 'DM_DEV_RENAME');
    if (d.uuid) throw errno('EINVAL', 22, 'DM_DEV_RENAME', d.name);
    d.uuid = uuid;
    return { ueventGenerated: true };
  }
  async info(id: DevId, opts: object = {}): Promise<DeviceInfo> {
    this.record('info', id, opts);
    return this.info_(this.find(id, 'DM_DEV_STATUS'));
  }
  async table(id: DevId, opts: { inactive?: boolean } = {}): Promise<TargetLine[]> {
    this.record('table', id, opts);
    const d = this.find(id, 'DM_TABLE_STATUS');
    return [...((opts.inactive ? d.inactive : d.live) ?? [])];
  }
  async status(id: DevId, opts: { inactive?: boolean } = {}): Promise<Array<{ start: Sectors; length: Sectors; type: string; status: string }>> {
    this.record('status', id, opts);
    const d = this.find(id, 'DM_TABLE_STATUS');
    return ((opts.inactive ? d.inactive : d.live) ?? []).map((t) => ({
      start: t.start,
      length: t.length,
      type: t.type,
      status: this.statusText[t.type] ?? '',
    }));
  }
  async deps(id: DevId, opts: object = {}): Promise<Array<{ major: number; minor: number }>> {
    this.record('deps', id, opts);
    return this.find(id, 'DM_TABLE_DEPS').deps;
  }
  async message(id: DevId, sector: Sectors | undefined, text: string): Promise<string | undefined> {
    this.record('message', id, sector, text);
    this.find(id, 'DM_TARGET_MSG');
    return this.replies[text];
  }
  async targets(): Promise<Array<{ name: string; version: { major: number; minor: number; patch: number } }>> {
    this.record('targets');
    return this.targetTypes;
  }
  async targetVersion(type: string): Promise<{ name: string; version: { major: number; minor: number; patch: number } }> {
    this.record('targetVersion', type);
    const t = this.targetTypes.find((x) => x.name === type);
    if (!t) throw errno('EINVAL', 22, 'DM_GET_TARGET_VERSION', type);
    return t;
  }
  async waitEvent(id: DevId, eventNr: number, opts: object = {}): Promise<{ info: DeviceInfo; status: unknown[] }> {
    this.record('waitEvent', id, eventNr, opts);
    const d = this.find(id, 'DM_DEV_WAIT');
    d.eventNr = Math.max(d.eventNr, eventNr + 1);
    return { info: this.info_(d), status: await this.status(id) };
  }
  async mknodes(name?: string): Promise<{ created: string[]; replaced: string[]; removed: string[] }> {
    this.record('mknodes', name);
    return { created: name === undefined ? [...this.devices.keys()] : [name], replaced: [], removed: [] };
  }
  async setGeometry(id: DevId, g: object): Promise<void> {
    this.record('setGeometry', id, g);
    this.find(id, 'DM_DEV_SET_GEOMETRY');
  }
}

/** `start length type params` to a TargetLine (test shorthand). */
export function line(text: string): TargetLine {
  const [start, length, type, ...params] = text.split(' ');
  return { start: sectors(BigInt(start!)), length: sectors(BigInt(length!)), type: type!, params: params.join(' ') };
}

export interface RunOptions {
  dm?: FakeDm;
  uid?: number;
  /** undefined: stdin is a terminal. */
  stdin?: string;
  files?: Record<string, string>;
  /** Block device sizes in sectors by path. */
  sizes?: Record<string, bigint>;
  openError?: Error;
}

export interface RunResult {
  code: number;
  out: string;
  err: string;
  dm: FakeDm;
  opened: number;
}

export async function run(args: string[], o: RunOptions = {}): Promise<RunResult> {
  const dm = o.dm ?? new FakeDm();
  let out = '';
  let err = '';
  let opened = 0;
  const runtime: Runtime = {
    openDm: () => {
      opened++;
      if (o.openError) throw o.openError;
      return dm.asDeviceMapper();
    },
    stdout: (t) => {
      out += t;
    },
    stderr: (t) => {
      err += t;
    },
    uid: o.uid ?? 0,
    env: {},
    readFile: async (path) => {
      const text = o.files?.[path];
      if (text === undefined) {
        throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT', errno: 2 });
      }
      return text;
    },
    readStdin: async () => o.stdin,
    blockDeviceSectors: async (path) => {
      const size = o.sizes?.[path];
      if (size === undefined) {
        throw Object.assign(new Error(`ENOENT: no such file or directory, stat '${path}'`), { code: 'ENOENT', errno: 2 });
      }
      return sectors(size);
    },
  };
  const code = await runCli(args, runtime);
  return { code, out, err, dm, opened };
}

/** The calls that changed or queried devices, without list/info lookups the CLI makes for names. */
export const calls = (dm: FakeDm, ...methods: string[]): Call[] => dm.calls.filter((c) => methods.includes(c.method));
