/**
 * Shared pieces of the snapshot suites (no tests here). Every suite runs once per family the booted kernel
 * has: the in-tree snapshot targets (dm-snapshot, always in Debian's kernel) and dmkit's (dmkit-origin,
 * dmkit-snapshot, dmkit-merge) once the module is loaded. `DMKIT_SNAPSHOT_FAMILY=dmkit|in-tree` narrows it.
 *
 * A rig is a volume `<prefix>-vol` (linear over a stamped ramdisk) snapshotted through the API's own
 * workflows (src/workflows/snapshot.ts), with a data model per device: the origin's, and each snapshot's
 * frozen at the moment it was taken plus the writes made to it. After each step the suites check the data
 * (every sector read with O_DIRECT against its model) and the metadata: the COW device read by
 * src/pdata/snapshot-cow.ts (header magic, version, chunk size, every exception inside the device and at a
 * data chunk, exactly the chunks that had to be copied, and each copied chunk holding the snapshot's data).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper, DmError } from '../../src/dm';
import { exceptionMap, readCow, type CowImage } from '../../src/pdata/snapshot-cow';
import { linear, snapshot, type SnapshotStatus, type SnapshotStore } from '../../src/targets';
import { afterEach, before, beforeEach, describe } from 'node:test';
import { DataModel, ramdisks, readDirect, RELEASE_SCALE, Scope, stampDirect, verifyModel } from '../../src/testing';
import { bytes, sectors, type Sectors } from '../../src/units';
import { createSnapshot, SNAPSHOT_TYPES, type SnapshotFamily } from '../../src/workflows';

export const MiB = 1n << 20n;

/** JSON text for messages, BigInts as decimal strings. */
export const showJson = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
/**
 * The families each suite runs for: dmkit's, and at release scale (DMKIT_SCALE=release) the in-tree one too,
 * which checks the suites themselves against upstream (CI's budget; the differential and smoke suites use
 * both families in CI).
 */
export const FAMILIES: readonly SnapshotFamily[] = (() => {
  const only = process.env['DMKIT_SNAPSHOT_FAMILY'];
  if (only === 'dmkit' || only === 'in-tree') return [only];
  return RELEASE_SCALE ? ['in-tree', 'dmkit'] : ['dmkit'];
})();

/** undefined when the family's snapshot target is registered (GET_TARGET_VERSION loads dm-snapshot), else why not. */
export async function familySkip(dm: DeviceMapper, family: SnapshotFamily): Promise<string | undefined> {
  try {
    await dm.targetVersion(SNAPSHOT_TYPES[family].snapshot);
    return undefined;
  } catch (e) {
    if (!(e instanceof DmError)) throw e;
    return `${SNAPSHOT_TYPES[family].snapshot} is not registered on ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}`;
  }
}

/** Removes every device whose name starts with `prefix`: snapshots first, then origins, then the rest. */
export function removeDevices(prefix: string): void {
  const list = spawnSync('dmsetup', ['ls'], { encoding: 'utf8' }).stdout ?? '';
  const names = list
    .split('\n')
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(prefix));
  const typeOf = (n: string): string => (spawnSync('dmsetup', ['table', n], { encoding: 'utf8' }).stdout ?? '').split(' ')[2] ?? '';
  const rank = (n: string): number => {
    const t = typeOf(n);
    return t.endsWith('snapshot') ? 0 : t.endsWith('origin') || t.endsWith('merge') ? 1 : n.endsWith('-real') ? 2 : 3;
  };
  for (const n of names.sort((a, b) => rank(a) - rank(b))) {
    spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'remove', '--retry', n]);
  }
  spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'mknodes']);
}

export function assertModel(path: string, model: DataModel, what: string): void {
  const bad = verifyModel(path, model);
  assert.deepEqual(bad, [], `${what}: ${bad.map((b) => `sector ${b.sector}: want ${b.want}, found ${b.found}`).join('; ')}`);
}

export async function snapStatus(dm: DeviceMapper, name: string): Promise<SnapshotStatus> {
  const [line] = await dm.status({ name });
  assert.ok(line, `${name} has a status line`);
  return snapshot.parseStatus(line.status);
}

export interface Snap {
  readonly name: string;
  readonly path: string;
  readonly cow: string;
  readonly store: SnapshotStore;
  /** What the snapshot must read as. */
  readonly model: DataModel;
  /** Origin chunks that must have an exception in the COW (first origin writes and snapshot writes). */
  readonly copied: Set<bigint>;
}

export class SnapRig {
  readonly vol: string;
  readonly volPath: string;
  readonly origin: DataModel;
  readonly snaps: Snap[] = [];

  constructor(
    readonly dm: DeviceMapper,
    readonly scope: Scope,
    readonly prefix: string,
    public family: SnapshotFamily,
    readonly originDev: string,
    readonly length: Sectors,
    readonly chunk: Sectors,
    baseSeed: number,
  ) {
    this.vol = `${prefix}-vol`;
    this.volPath = dm.devicePath(this.vol);
    this.origin = new DataModel(length, baseSeed);
  }

  /** Stamps the origin ramdisk and creates the volume over it. */
  async open(): Promise<this> {
    stampDirect(this.originDev, undefined, 0n, this.length, this.origin.baseSeed, { bs: 1n << 20n });
    this.scope.defer(`remove ${this.prefix}-*`, () => removeDevices(`${this.prefix}-`));
    await this.dm.create(this.vol, { targets: [linear.line({ device: this.originDev, offset: sectors(0) }, { start: sectors(0), length: this.length, type: 'linear' })] });
    return this;
  }

  /** A new snapshot of the volume; `from` activates an earlier one's COW again (same model, same copies). */
  async take(cow: string, store: SnapshotStore = 'P', from?: Snap): Promise<Snap> {
    const r = await createSnapshot(this.dm, { origin: this.vol, name: `${this.prefix}-s${this.snaps.length}`, cow, chunkSize: this.chunk, store, family: this.family });
    const s: Snap = { name: r.name, path: this.dm.devicePath(r.name), cow, store, model: from?.model ?? this.origin.clone(), copied: from?.copied ?? new Set() };
    this.snaps.push(s);
    return s;
  }

  private chunksOf(start: bigint, length: bigint): bigint[] {
    const out: bigint[] = [];
    for (let c = start / this.chunk; c * this.chunk < start + length; c++) out.push(c);
    return out;
  }

  /** A stamped write to the volume: every live snapshot gets an exception for each chunk it touches. */
  writeOrigin(start: bigint, length: bigint, seed: number, opts: { fsync?: boolean } = {}): void {
    for (const s of this.snaps) for (const c of this.chunksOf(start, length)) s.copied.add(c);
    stampDirect(this.volPath, this.origin, start, length, seed, opts);
  }

  writeSnap(s: Snap, start: bigint, length: bigint, seed: number): void {
    for (const c of this.chunksOf(start, length)) s.copied.add(c);
    stampDirect(s.path, s.model, start, length, seed);
  }

  verifyData(what: string): void {
    assertModel(this.volPath, this.origin, `${what}: the volume`);
    for (const s of this.snaps) assertModel(s.path, s.model, `${what}: ${s.name}`);
  }

  /**
   * The COW of `s` as written on its device: valid, the table's chunk size, exactly the expected chunks
   * copied, each copy holding the snapshot's data; the status's allocated and metadata sectors agree.
   */
  async verifyCow(s: Snap, what: string, opts: { status?: boolean } = {}): Promise<CowImage> {
    const cowBytes = BigInt(spawnSync('blockdev', ['--getsize64', s.cow], { encoding: 'utf8' }).stdout.trim());
    const cow = readCow(readDirect(s.cow, 0n, cowBytes), { chunkSize: this.chunk, originSectors: this.length });
    assert.equal(cow.state, 'valid', `${what}: ${s.name}'s COW header says valid`);
    const map = exceptionMap(cow);
    const want = [...s.copied].sort((a, b) => Number(a - b));
    const got = [...map.keys()].sort((a, b) => Number(a - b));
    assert.deepEqual(got, want, `${what}: ${s.name}'s exceptions are the chunks written since it was taken`);
    const chunkBytes = this.chunk * 512n;
    for (const [oldChunk, newChunk] of map) {
      const data = readDirect(s.cow, newChunk * chunkBytes, chunkBytes);
      const expected = s.model.expected(oldChunk * this.chunk, Number(this.chunk));
      assert.ok(data.equals(expected), `${what}: ${s.name}'s COW chunk ${newChunk} holds origin chunk ${oldChunk} as the snapshot sees it`);
    }
    if (opts.status !== false) {
      const st = await snapStatus(this.dm, s.name);
      assert.ok('allocated' in st, `${what}: ${s.name} status ${showJson(st)}`);
      assert.equal(st.allocated, cow.nextFree * this.chunk, `${what}: ${s.name} allocated sectors = next free chunk x chunk size`);
      assert.equal(st.metadata, BigInt(cow.areas + 1) * this.chunk, `${what}: ${s.name} metadata sectors = (areas in use + header) x chunk size`);
      assert.equal(st.total, cowBytes / 512n, `${what}: ${s.name} total sectors = the COW device`);
    }
    return cow;
  }
}

/** A linear slice of a ramdisk (brd gives all its disks one size; a COW often wants less). */
export async function slice(dm: DeviceMapper, scope: Scope, name: string, dev: string, length: Sectors): Promise<string> {
  await dm.create(name, { targets: [linear.line({ device: dev, offset: sectors(0) }, { start: sectors(0), length, type: 'linear' })] });
  scope.defer(`remove ${name}`, () => {
    spawnSync('dmsetup', ['--noudevrules', '--noudevsync', 'remove', '--retry', name]);
  });
  return dm.devicePath(name);
}

/** Zeroes the first `bytes` of a device (a fresh COW: magic 0 means a new store). */
export function zeroStart(dev: string, bytes: bigint): void {
  const r = spawnSync('dd', ['if=/dev/zero', `of=${dev}`, 'bs=64K', `count=${bytes / 65536n}`, 'oflag=direct', 'status=none']);
  assert.equal(r.status, 0, `zeroing ${dev}`);
}

/** What each test of a family suite gets. */
export interface FamilyCase {
  readonly family: SnapshotFamily;
  /** Why this family cannot run on the booted kernel, or undefined. */
  readonly skip: string | undefined;
  /** This test's scope: fresh per test, closed after it. */
  readonly scope: Scope;
  /** `n` ramdisks of `size` bytes; all but the first (the origin) zeroed over their first MiB (COWs). */
  disks(n: number, size: bigint): string[];
}

/**
 * One describe block per family in FAMILIES, `title (family)`, each test with a fresh scope; `cleanup`
 * runs after each test before its scope closes.
 */
export function describeFamilies(dm: DeviceMapper, title: string, body: (c: FamilyCase) => void, cleanup?: (family: SnapshotFamily) => void): void {
  for (const family of FAMILIES) {
    describe(`${title} (${family})`, () => {
      let skip: string | undefined;
      let scope: Scope | undefined;
      before(async () => {
        skip = await familySkip(dm, family);
      });
      beforeEach(() => {
        scope = new Scope();
      });
      afterEach(() => {
        try {
          cleanup?.(family);
        } finally {
          scope?.close();
        }
      });
      body({
        family,
        get skip() {
          return skip;
        },
        get scope() {
          assert.ok(scope, 'a scope exists inside a test');
          return scope;
        },
        disks(n, size) {
          const paths = ramdisks(this.scope, n, bytes(size)).map((d) => d.path);
          for (const p of paths.slice(1)) zeroStart(p, MiB);
          return paths;
        },
      });
    });
  }
}
