/**
 * Shared pieces of the clone suites (no tests here): which clone target to test, direct-IO reads and
 * writes through dd, a data model of stamped extents, the metadata superblock check and a continuous
 * direct-IO reader in child processes.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import assert from 'node:assert/strict';
import { DeviceMapper, DmError } from '../../src/dm';
import { clone, type CloneInfo } from '../../src/targets';
import { blockChecksum, CHECKSUM_SALT } from '../../src/pdata/checksum';
import { setCloneThrottle } from '../../src/testing/clone-scenarios';
import { compare, DataModel, readDirect, stampDirect, verifyModel, writeDirect, writeDirectAsync, type SectorMismatch as Mismatch } from '../../src/testing';

export { compare, DataModel, stampDirect, verifyModel, type Mismatch };

export { readDirect, writeDirect, writeDirectAsync };
import { type Sectors } from '../../src/units';

export const MiB = 1n << 20n;
export const KiB = 1024n;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type CloneKind = 'clone' | 'dmkit-clone';

/**
 * dmkit-clone when it is registered, else the in-tree clone (the debug kernel has it as a module, which
 * GET_TARGET_VERSION loads), else undefined and the reason to skip.
 */
export async function pickCloneType(dm: DeviceMapper): Promise<{ type?: CloneKind; skip?: string }> {
  const override = process.env['DMKIT_CLONE_TYPE'];
  const order: CloneKind[] = override === 'clone' || override === 'dmkit-clone' ? [override] : ['dmkit-clone', 'clone'];
  for (const type of order) {
    try {
      await dm.targetVersion(type);
      return { type };
    } catch (e) {
      if (!(e instanceof DmError)) throw e;
    }
  }
  return { skip: `no clone target: neither dmkit-clone nor the in-tree clone is registered on ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}` };
}

/** The hydration throttle of the loaded clone module (percent; 100 = unthrottled), or undefined if none. */
export function throttlePath(type: CloneKind): string | undefined {
  const p = type === 'dmkit-clone' ? '/sys/module/dmkit_clone/parameters/hydration_throttle' : '/sys/module/dm_clone/parameters/clone_hydration_throttle';
  return fs.existsSync(p) ? p : undefined;
}

/** The loaded clone module's throttle (src/testing/clone-scenarios.ts has the one writer). */
export const setThrottle: (type: CloneKind, percent: number) => void = setCloneThrottle;

export function assertModel(path: string, model: DataModel, what: string): void {
  const bad = verifyModel(path, model);
  assert.deepEqual(bad, [], `${what}: ${bad.map((b) => `sector ${b.sector}: want ${b.want}, found ${b.found}`).join('; ')}`);
}

export async function cloneStatus(dm: DeviceMapper, name: string, opts: { noflush?: boolean } = {}): Promise<CloneInfo> {
  const [line] = await dm.status({ name }, opts);
  assert.ok(line, `${name} has a status line`);
  const st = clone.parseStatus(line.status);
  assert.ok(!('fail' in st) && !('error' in st), `${name} status: ${line.status}`);
  return st as CloneInfo;
}

export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function waitHydrated(dm: DeviceMapper, name: string, timeoutMs = 120_000): Promise<CloneInfo> {
  return waitFor(`${name} to hydrate`, timeoutMs, async () => {
    const st = await cloneStatus(dm, name);
    return st.hydrated === st.totalRegions ? st : undefined;
  }, 100);
}

export interface Superblock {
  magic: bigint;
  version: number;
  csumOk: boolean;
  regionSize: bigint;
  targetSize: bigint;
  bitsetRoot: bigint;
}

/** Reads the clone metadata superblock (direct IO) and checks its checksum the kernel's way. */
export function readSuperblock(metaPath: string | Buffer): Superblock {
  const b = Buffer.isBuffer(metaPath) ? metaPath.subarray(0, 4096) : readDirect(metaPath, 0n, 4096n, 4096n);
  const csum = b.readUInt32LE(0);
  return {
    magic: b.readBigUInt64LE(32),
    version: b.readUInt32LE(40),
    csumOk: blockChecksum(b.subarray(4, 4096), CHECKSUM_SALT.cloneSuperblock) === csum,
    regionSize: b.readBigUInt64LE(172),
    targetSize: b.readBigUInt64LE(180),
    bitsetRoot: b.readBigUInt64LE(188),
  };
}

/** The metadata checks every test ends with (there is no clone_check in thin-provisioning-tools). */
export function assertSuperblock(meta: string | Buffer, regionSize: Sectors, length: Sectors): void {
  const sb = readSuperblock(meta);
  assert.equal(sb.magic, 0x8af27f64n, 'clone superblock magic');
  assert.equal(sb.version, 1, 'clone metadata version');
  assert.ok(sb.csumOk, 'clone superblock checksum (crc32c ^ 257649492)');
  assert.equal(sb.regionSize, regionSize, 'region size in the superblock');
  assert.equal(sb.targetSize, length, 'target size in the superblock');
  assert.notEqual(sb.bitsetRoot, 0n, 'bitset root');
}

/**
 * A reader in child processes: `dd iflag=direct` over the whole range, pass after pass, every byte checked
 * against the model in this process. Stop with stop(); it resolves after the current pass.
 */
export class DirectReader {
  passes = 0;
  errors: string[] = [];
  mismatches: Mismatch[] = [];
  bytes = 0;
  private stopping = false;
  private readonly loop: Promise<void>;

  constructor(
    readonly path: string,
    readonly model: () => DataModel,
    readonly lengthSectors: bigint,
    readonly start: bigint = 0n,
  ) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      await this.pass();
      this.passes++;
      if (this.errors.length > 4) break;
    }
  }

  private pass(): Promise<void> {
    const model = this.model();
    return new Promise((resolve) => {
      const child = spawn('dd', [`if=${this.path}`, 'bs=64K', `skip=${(this.start * 512n) / (64n * KiB)}`, `count=${(this.lengthSectors * 512n) / (64n * KiB)}`, 'iflag=direct', 'status=none'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let pending: Buffer = Buffer.alloc(0);
      let pos = this.start; // sectors
      let err = '';
      child.stdout.on('data', (d: Buffer) => {
        pending = pending.length ? Buffer.concat([pending, d]) : d;
        const whole = pending.length - (pending.length % 512);
        if (whole > 0) {
          if (this.mismatches.length < 8) this.mismatches.push(...compare(model, pos, pending.subarray(0, whole), 8 - this.mismatches.length));
          pos += BigInt(whole / 512);
          this.bytes += whole;
          pending = pending.subarray(whole);
        }
      });
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('close', (code) => {
        if (code !== 0) this.errors.push(`dd exit ${code}: ${err.trim()}`);
        else if (pos !== this.start + this.lengthSectors) this.errors.push(`short pass: ${pos} of ${this.lengthSectors} sectors`);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }
}
