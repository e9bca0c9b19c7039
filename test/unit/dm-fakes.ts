/**
 * Fakes shared by the DeviceMapper, nodes, udev and events tests: a scripted kernel, an in-memory /dev and SysV
 * semaphores with a stand-in for udev. (No tests here; node --test loads it as an empty file.)
 */
import * as path from 'node:path';
import {
  decodeHeader,
  type DevNum,
  type DmCommand,
  type DmHeader,
  type DmSystem,
  type DmTransport,
  type DmVersion,
  type NodeFs,
  type NodeStat,
  type SemaphoreOps,
} from '../../src/dm';

export interface Call {
  readonly command: DmCommand;
  readonly header: DmHeader;
  readonly buffer: Buffer;
}

export type Handler = (call: Call) => Buffer | Error;

export class FakeKernel implements DmTransport {
  readonly calls: Call[] = [];
  constructor(private readonly handler: Handler) {}

  async ioctl(command: DmCommand, buffer: Buffer): Promise<Buffer> {
    const call = { command, header: decodeHeader(buffer), buffer: Buffer.from(buffer) };
    this.calls.push(call);
    const answer = this.handler(call);
    if (answer instanceof Error) throw answer;
    return answer;
  }
}

export interface ReplyFields {
  version?: DmVersion;
  flags?: number;
  payload?: Buffer;
  targetCount?: number;
  openCount?: number;
  eventNr?: number;
  dev?: bigint;
  name?: string;
  uuid?: string;
}

/** Turns a request into a reply the way the kernel does: same buffer, kernel version (default 4.48), results filled in. */
export function reply(call: Call, f: ReplyFields = {}): Buffer {
  const b = Buffer.from(call.buffer);
  const ver = f.version ?? { major: 4, minor: 48, patch: 0 };
  b.writeUInt32LE(ver.major, 0);
  b.writeUInt32LE(ver.minor, 4);
  b.writeUInt32LE(ver.patch, 8);
  if (f.payload) {
    f.payload.copy(b, 312);
    b.writeUInt32LE(312 + f.payload.length, 12);
  }
  if (f.flags !== undefined) b.writeUInt32LE(f.flags, 28);
  if (f.targetCount !== undefined) b.writeUInt32LE(f.targetCount, 20);
  if (f.openCount !== undefined) b.writeInt32LE(f.openCount, 24);
  if (f.eventNr !== undefined) b.writeUInt32LE(f.eventNr, 32);
  if (f.dev !== undefined) b.writeBigUInt64LE(f.dev, 40);
  if (f.name !== undefined) b.fill(0, 48, 176).write(f.name, 48);
  if (f.uuid !== undefined) b.fill(0, 176, 305).write(f.uuid, 176);
  return b;
}

export const errnoError = (code: string, n: number, syscall = 'ioctl'): Error =>
  Object.assign(new Error(`${code}: simulated, ${syscall}`), { code, errno: n, syscall });

export interface ListEntry {
  name: string;
  dev: bigint;
  eventNr: number;
  uuid?: string;
}

/** A LIST_DEVICES payload (interface >= 4.46 layout: event_nr, flags, uuid after each name). */
export function nameList(entries: readonly ListEntry[]): Buffer {
  const records = entries.map((e) => {
    const tailAt = (12 + Buffer.byteLength(e.name) + 1 + 7) & ~7;
    const size = (tailAt + 8 + (e.uuid ? e.uuid.length + 1 : 0) + 7) & ~7;
    const r = Buffer.alloc(size);
    r.writeBigUInt64LE(e.dev, 0);
    r.write(e.name, 12);
    r.writeUInt32LE(e.eventNr, tailAt);
    r.writeUInt32LE(e.uuid ? 1 : 2, tailAt + 4);
    if (e.uuid) r.write(e.uuid, tailAt + 8);
    return r;
  });
  records.forEach((r, i) => r.writeUInt32LE(i + 1 < records.length ? r.length : 0, 8));
  return Buffer.concat(records);
}

/** dev_t as the kernel encodes it (small numbers only). */
export const devT = (major: number, minor: number): bigint => BigInt((major << 8) | minor);

// ---- an in-memory /dev ----

export type FakeEntry = { kind: 'block' | 'char'; dev: DevNum } | { kind: 'dir' | 'other' } | { kind: 'symlink'; to: string };

export class FakeNodeFs implements NodeFs {
  readonly entries = new Map<string, FakeEntry>();
  readonly log: string[] = [];
  major: number | undefined = 253;
  /** Set to make the next mknod fail with this error. */
  failMknod: Error | undefined;

  put(where: string, entry: FakeEntry): this {
    this.entries.set(where, entry);
    return this;
  }

  stat(where: string): NodeStat | undefined {
    const e = this.entries.get(where);
    if (e?.kind !== 'symlink') return e && { ...e };
    const target = this.entries.get(path.resolve(path.dirname(where), e.to));
    return { kind: 'symlink', target: target && target.kind !== 'symlink' ? { ...target } : undefined };
  }

  readdir(dir: string): string[] {
    return [...this.entries.keys()].filter((p) => path.dirname(p) === dir).map((p) => path.basename(p));
  }

  mkdir(dir: string): void {
    if (!this.entries.has(dir)) this.log.push(`mkdir ${dir}`);
    this.entries.set(dir, { kind: 'dir' });
  }

  mknodBlock(where: string, dev: DevNum): void {
    const fail = this.failMknod;
    this.failMknod = undefined;
    if (fail) throw fail;
    if (this.entries.has(where)) throw errnoError('EEXIST', 17, 'mknod');
    this.log.push(`mknod ${where} ${dev.major}:${dev.minor}`);
    this.entries.set(where, { kind: 'block', dev });
  }

  unlink(where: string): void {
    if (!this.entries.delete(where)) throw errnoError('ENOENT', 2, 'unlink');
    this.log.push(`unlink ${where}`);
  }

  rename(from: string, to: string): void {
    const e = this.entries.get(from);
    if (!e) throw errnoError('ENOENT', 2, 'rename');
    this.entries.delete(from);
    this.entries.set(to, e);
    this.log.push(`rename ${from} ${to}`);
  }

  dmMajor(): number | undefined {
    return this.major;
  }
}

// ---- SysV semaphores with a stand-in for udev ----

export class FakeSemaphores implements SemaphoreOps {
  readonly values = new Map<number, number>();
  readonly keys = new Map<number, number>();
  readonly log: string[] = [];
  private nextId = 1;
  /** Keys that already exist (semget fails with EEXIST). */
  readonly taken = new Set<number>();
  createError: Error | undefined;
  /** What "udev" does while the caller waits: by default it runs udevcomplete (decrements once). */
  udev: (id: number) => void = (id) => this.semAdd(id, -1);

  semCreate(key: number): number {
    if (this.createError) throw this.createError;
    if (this.taken.has(key)) throw errnoError('EEXIST', 17, 'semget');
    const id = this.nextId++;
    this.keys.set(id, key);
    this.values.set(id, 0);
    this.log.push(`create 0x${key.toString(16)}`);
    return id;
  }

  semSetValue(id: number, value: number): void {
    this.value(id);
    this.values.set(id, value);
    this.log.push(`set ${value}`);
  }

  semGetValue(id: number): number {
    return this.value(id);
  }

  semAdd(id: number, delta: number): void {
    const v = this.value(id) + delta;
    if (v < 0) throw errnoError('EAGAIN', 11, 'semop');
    this.values.set(id, v);
    this.log.push(`add ${delta}`);
  }

  async semWaitZero(id: number, timeoutMs: number): Promise<boolean> {
    this.log.push(`wait ${timeoutMs}`);
    if (this.value(id) !== 0) this.udev(id);
    return this.value(id) === 0;
  }

  semRemove(id: number): void {
    this.value(id);
    this.values.delete(id);
    this.log.push('remove');
  }

  private value(id: number): number {
    const v = this.values.get(id);
    if (v === undefined) throw errnoError('EINVAL', 22, 'semctl');
    return v;
  }
}

export const UDEV_CONTROL = '/run/udev/control';

/** A system over the fakes; udev "runs" when `udevRunning` is set. */
export function fakeSystem(nodeFs = new FakeNodeFs(), semaphores = new FakeSemaphores()) {
  const system = {
    nodeFs,
    semaphores,
    udevRunning: false as boolean,
    exists: (p: string): boolean => p === UDEV_CONTROL && system.udevRunning,
    findSemaphore: (key: number): number | undefined => [...semaphores.keys].find(([, k]) => k === key)?.[0],
  } satisfies DmSystem & { udevRunning: boolean };
  return system;
}
