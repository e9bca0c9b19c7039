/**
 * `npm run demo`, the main job: what dmkit is for, on its own targets. On a host with device-mapper and
 * root it runs here; anywhere else it boots the VM lab and runs there.
 *
 *  1. dmkit-era tracks changed blocks: a volume is written, checkpointed, written again, and the blocks
 *     changed since the checkpoint are listed (blocks and byte ranges) by era_invalidate on a metadata
 *     snapshot and by dmkit's own metadata reader; both must equal the blocks the writes touched.
 *  2. dmkit-clone restores instantly: a fresh destination is cloned from that volume's image, a reader
 *     is served at once (before any region is hydrated), a write lands on the destination, hydration runs
 *     with a progress bar, and the device swaps to linear on the destination while a reader keeps reading.
 *  3. Verification: every byte through the device and on the destination, era_check, the clone metadata.
 *  4. dmkit-snapshot: a snapshot of the restored volume keeps its image under new writes; merging it
 *     back (progress bar) rolls the volume back, and the volume returns to its plain table.
 *  5. dmkit-cache: a writeback cache is put in front of a linear volume; hot reads become hits, writes
 *     leave dirty blocks the origin does not have yet; detaching cleans them (progress bar) and the
 *     volume, linear again, holds every write.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DeviceMapper } from '../dm';
import { eraWrittenBlocks, readCloneMetadata, readEraMetadata, type EraMetadata } from '../pdata/reader';
import { cache, cloneMessages, era, eraMessages } from '../targets';
import { assertClean, flushBuffers, patternBuffer, ramdisks, readDirect, Scope, writeDirect } from '../testing';
import { bytes, sectors, targetBlocks } from '../units';
import { eraInvalidate } from '../testing/era-fixtures';
import { attachCache, backup, createSnapshot, detachCache, hydrateAndSwap, mergeSnapshot, restore as restoreBackup, snapshotReport } from '../workflows';
import { describeResult, runVm } from './vm';

const MiB = 1 << 20;
const KiB = 1024;
const DISK = 32 * MiB;
const ERA_BLOCK = 64 * KiB; // era's tracking granularity
const REGION = 64 * KiB; // clone's region size
const SNAP_CHUNK = 64 * KiB; // snapshot chunk size
const CACHE_BLOCK = 64 * KiB; // cache block size

// ---- output ----

const out = (s = ''): void => void process.stdout.write(`${s}\n`);
function section(n: number, title: string): void {
  out();
  out(`== ${n}. ${title}`);
}
function show(label: string, value: string | number | bigint): void {
  out(`   ${label.padEnd(30)} ${value}`);
}
const mib = (b: number): string => (b % MiB === 0 ? `${b / MiB} MiB` : b % KiB === 0 ? `${b / KiB} KiB` : `${b} B`);

/** A progress bar: redrawn in place on a terminal, else a line every few seconds and at the end. */
class Bar {
  private lastLine = 0;
  private readonly started = Date.now();
  constructor(private readonly label: string) {}
  update(done: number, total: number, detail = ''): void {
    const now = Date.now();
    const final = done >= total;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const width = 30;
    const full = Math.round(frac * width);
    const text = `   ${this.label.padEnd(18)} [${'#'.repeat(full)}${'.'.repeat(width - full)}] ${(frac * 100).toFixed(0).padStart(3)}% ${detail}`;
    if (process.stdout.isTTY) {
      process.stdout.write(`\r${text}\x1b[K${final ? '\n' : ''}`);
    } else if (final || now - this.lastLine >= 2000 || this.lastLine === 0) {
      this.lastLine = now;
      out(text);
    }
  }
  seconds(): number {
    return (Date.now() - this.started) / 1000;
  }
}

// ---- data ----

/** What a byte range should hold: stamped pattern seeds, later writes win. */
class Image {
  readonly writes: Array<{ at: number; length: number; seed: number }> = [];
  write(at: number, length: number, seed: number): void {
    this.writes.push({ at, length, seed });
  }
  /** The expected bytes of [at, at+length). */
  bytes(at: number, length: number): Buffer {
    const buf = Buffer.alloc(length);
    for (const w of this.writes) {
      const from = Math.max(at, w.at);
      const to = Math.min(at + length, w.at + w.length);
      if (from >= to) continue;
      patternBuffer(w.seed, sectors(BigInt(from / 512)), (to - from) / 512).copy(buf, from - at);
    }
    return buf;
  }
  sha256(length: number): string {
    const h = createHash('sha256');
    for (let at = 0; at < length; at += 8 * MiB) h.update(this.bytes(at, Math.min(8 * MiB, length - at)));
    return h.digest('hex');
  }
}

/** Writes a stamped range through `path` with O_DIRECT (so the target sees it now) and records it. */
function write(path: string, image: Image, at: number, length: number, seed: number): void {
  writeDirect(path, BigInt(at), patternBuffer(seed, sectors(BigInt(at / 512)), length / 512), { bs: 4096n });
  image.write(at, length, seed);
}

function sha256Of(path: string, length: number): string {
  const h = createHash('sha256');
  for (let at = 0; at < length; at += 8 * MiB) h.update(readDirect(path, BigInt(at), BigInt(Math.min(8 * MiB, length - at))));
  return h.digest('hex');
}

/** Runs of consecutive numbers: [[first, last], ...]. */
function runs(list: readonly number[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const n of [...list].sort((a, b) => a - b)) {
    const last = out.at(-1);
    if (last && n === last[1] + 1) last[1] = n;
    else out.push([n, n]);
  }
  return out;
}

/** Blocks era written since `since` (inclusive), from dmkit's own reader of a metadata image. */
function writtenSince(md: EraMetadata, since: number): number[] {
  const out = new Set<number>();
  for (let b = 0; b < md.nrBlocks; b++) if (md.eraArray[b]! >= since) out.add(b);
  for (const [e, ws] of md.archived) if (e >= since) for (const b of ws.members()) out.add(b);
  if (md.current && md.currentEra >= since) for (const b of md.current.members()) out.add(b);
  return [...out].sort((a, b) => a - b);
}

/**
 * Reads the whole device with `dd iflag=direct`, pass after pass, hashing each pass; stop() ends it after
 * the current pass. Every pass must hash to the expected image and every dd must succeed.
 */
class Reader {
  passes = 0;
  errors: string[] = [];
  wrong = 0;
  private stopping = false;
  private readonly loop: Promise<void>;
  constructor(private readonly path: string, private readonly length: number, private readonly want: string) {
    this.loop = this.run();
  }
  private async run(): Promise<void> {
    while (!this.stopping && this.errors.length < 3) {
      const r = await new Promise<{ code: number | null; hash: string; err: string }>((resolve) => {
        const child = spawn('dd', [`if=${this.path}`, 'bs=1M', `count=${this.length / MiB}`, 'iflag=direct', 'status=none'], { stdio: ['ignore', 'pipe', 'pipe'] });
        const h = createHash('sha256');
        let err = '';
        child.stdout.on('data', (d: Buffer) => h.update(d));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (code) => resolve({ code, hash: h.digest('hex'), err }));
      });
      this.passes++;
      if (r.code !== 0) this.errors.push(`dd exit ${r.code}: ${r.err.trim()}`);
      else if (r.hash !== this.want) this.wrong++;
    }
  }
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
  }
}

// ---- the scenario ----

async function scenario(): Promise<void> {
  const scope = new Scope();
  const dm = DeviceMapper.open();
  const created = new Set<string>();
  const remove = async (name: string): Promise<void> => {
    await dm.remove({ name }, { retry: true });
    created.delete(name);
  };
  const checks: string[] = [];
  const started = Date.now();
  try {
    out(`dmkit demo: changed-block tracking, incremental backup, instant restore, snapshots and a cache on dmkit's own targets (kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()})`);

    section(1, 'The dmkit kernel modules');
    const targets = new Map((await dm.targets()).map((t) => [t.name, t.version]));
    for (const t of ['dmkit-era', 'dmkit-clone', 'dmkit-snapshot', 'dmkit-cache']) {
      const v = targets.get(t);
      if (!v) throw new Error(`the ${t} target is not registered: load the module (modprobe ${t}, see dmkit modules install)`);
      show(t, `v${v.major}.${v.minor}.${v.patch}`);
    }
    const [eraMeta, volume, cloneMeta, fresh] = ramdisks(scope, 4, bytes(BigInt(DISK)));
    show('disks (brd ramdisks)', `${[eraMeta, volume, cloneMeta, fresh].map((d) => d!.path).join(' ')}, ${mib(DISK)} each`);

    // ---- era ----
    section(2, 'A volume under dmkit-era');
    writeDirect(eraMeta!.path, 0n, Buffer.alloc(4096));
    const length = volume!.sectors;
    await dm.create('demo-vol', { targets: [era.line({ metadataDevice: eraMeta!.path, originDevice: volume!.path, blockSize: sectors(BigInt(ERA_BLOCK / 512)) }, { start: sectors(0), length, type: 'dmkit-era' })] });
    created.add('demo-vol');
    const vol = dm.devicePath('demo-vol');
    show('demo-vol', `${vol}: dmkit-era over ${volume!.path}, ${mib(ERA_BLOCK)} blocks, metadata on ${eraMeta!.path}`);
    const image = new Image();
    const fill = new Bar('initial data');
    for (let at = 0; at < DISK; at += 4 * MiB) {
      write(vol, image, at, 4 * MiB, 1);
      fill.update(at + 4 * MiB, DISK, `${mib(at + 4 * MiB)} of ${mib(DISK)}`);
    }
    show('written', `${mib(DISK)} in ${fill.seconds().toFixed(1)} s`);
    await dm.message({ name: 'demo-vol' }, undefined, eraMessages.checkpoint());
    const eraStatus = async (): Promise<{ currentEra: bigint; heldRoot: bigint | null }> => {
      const st = era.parseStatus((await dm.status({ name: 'demo-vol' }))[0]!.status);
      if (!('currentEra' in st)) throw new Error('dmkit-era reports Error');
      return st;
    };
    const since = Number((await eraStatus()).currentEra);
    show('checkpoint', `now in era ${since}`);
    // Writes after the checkpoint: a whole MiB, one 4 KiB page, and 96 KiB that straddles two blocks.
    const later = [
      { at: 8 * MiB, length: 1 * MiB },
      { at: 24 * MiB + 12 * KiB, length: 4 * KiB },
      { at: 20 * MiB + 32 * KiB, length: 96 * KiB },
    ];
    for (const w of later) {
      write(vol, image, w.at, w.length, 2);
      show(`wrote in era ${since}`, `${mib(w.length)} at byte ${w.at} (${mib(w.at)})`);
    }
    const expected = [...new Set(later.flatMap((w) => Array.from({ length: Math.ceil((w.at + w.length) / ERA_BLOCK) - Math.floor(w.at / ERA_BLOCK) }, (_, i) => Math.floor(w.at / ERA_BLOCK) + i)))].sort((a, b) => a - b);

    section(3, `What changed since era ${since}`);
    await dm.message({ name: 'demo-vol' }, undefined, eraMessages.takeMetadataSnap());
    const held = await eraStatus();
    show('metadata snapshot', `held at metadata block ${held.heldRoot}, era now ${held.currentEra}`);
    const listed = eraInvalidate(eraMeta!.path, since, { snapshot: true });
    await dm.message({ name: 'demo-vol' }, undefined, eraMessages.dropMetadataSnap());
    out('   changed blocks (era_invalidate on the snapshot) and their byte ranges:');
    for (const [a, b] of runs(listed)) {
      out(`     blocks ${a === b ? `${a}` : `${a}-${b}`}`.padEnd(22) + `bytes [${a * ERA_BLOCK}, ${(b + 1) * ERA_BLOCK})  = ${mib(a * ERA_BLOCK)} + ${mib((b - a + 1) * ERA_BLOCK)}`);
    }
    show('blocks the writes touched', `${expected.length}: ${runs(expected).map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(', ')}`);
    if (listed.join() !== expected.join()) throw new Error(`era_invalidate listed ${listed.join(',')}, the writes touched ${expected.join(',')}`);
    // dmkit's own reader, on the metadata as committed at suspend.
    await dm.suspend({ name: 'demo-vol' });
    const md = readEraMetadata(readDirect(eraMeta!.path, 0n, BigInt(DISK), BigInt(MiB)));
    await dm.resume({ name: 'demo-vol' });
    const mine = writtenSince(md, since);
    show('dmkit metadata reader', `${mine.length} blocks written since era ${since} (${eraWrittenBlocks(md).size} ever written), same list: ${mine.join() === listed.join() ? 'yes' : 'NO'}`);
    if (mine.join() !== listed.join()) throw new Error(`dmkit's metadata reader lists ${mine.join(',')}, era_invalidate ${listed.join(',')}`);
    checks.push(`era listed ${listed.length}/${expected.length} changed blocks, exactly the ones written`);

    section(4, 'A full backup, an incremental one, and a restore');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmkit-demo-'));
    scope.defer('backup images', () => fs.rmSync(dir, { recursive: true, force: true }));
    const fullBar = new Bar('full backup');
    const full = await backup(dm, { name: 'demo-vol' }, { to: path.join(dir, 'full.dmkb'), onProgress: (d, t) => fullBar.update(Number(d), Number(t), mib(Number(d))) });
    show('full backup', `${full.file}: ${mib(Number(full.header.dataBytes))} of data, eras up to ${full.header.untilEra}, ${full.header.pieces.length} checksummed pieces`);
    for (const at of [3 * MiB, 13 * MiB + 20 * KiB]) write(vol, image, at, 256 * KiB, 4);
    show('wrote after it', '2 x 256 KiB');
    const incBar = new Bar('incremental');
    const inc = await backup(dm, { name: 'demo-vol' }, { since: full.header.untilEra, to: path.join(dir, 'inc1.dmkb'), onProgress: (d, t) => incBar.update(Number(d), Number(t), mib(Number(d))) });
    show('incremental backup', `${inc.file}: ${mib(Number(inc.header.dataBytes))} (eras ${inc.header.sinceEra}..${inc.header.untilEra}), not ${mib(DISK)}`);
    const restoreBar = new Bar('restore');
    const restored = await restoreBackup([full.file, inc.file], fresh!.path, { onProgress: (d, t) => restoreBar.update(Number(d), Number(t), mib(Number(d))) });
    flushBuffers(fresh!.path);
    const restoredSum = sha256Of(fresh!.path, DISK);
    const volumeSum = image.sha256(DISK);
    show('restored onto', `${fresh!.path}: ${mib(Number(restored.bytes))} written after every checksum was verified`);
    show('restored image', `${restoredSum.slice(0, 16)}... ${restoredSum === volumeSum ? 'equals the volume' : 'DIFFERENT'}`);
    if (restoredSum !== volumeSum) throw new Error('the restored image differs from the volume');
    checks.push(`a full backup plus an incremental of ${mib(Number(inc.header.dataBytes))} restored byte for byte`);
    await remove('demo-vol');
    assertClean('era_check', eraMeta!.path);
    show('era_check', 'clean');

    // ---- clone ----
    section(5, 'Instant restore with dmkit-clone');
    const want = image.sha256(DISK);
    show('source image', `${volume!.path} (the volume above), sha256 ${want.slice(0, 16)}...`);
    writeDirect(fresh!.path, 0n, patternBuffer(99, sectors(0), (4 * MiB) / 512), { bs: 4096n });
    show('destination', `${fresh!.path}, a fresh disk (old data on it)`);
    const restoreStarted = Date.now();
    const run = hydrateAndSwap(dm, {
      name: 'demo-restore',
      source: volume!.path,
      destination: fresh!.path,
      metadata: cloneMeta!.path,
      regionSize: sectors(BigInt(REGION / 512)),
      type: 'dmkit-clone',
      length,
      hydrationThreshold: targetBlocks(0), // paused, to show reads served before any hydration
      pollIntervalMs: 200,
    });
    created.add('demo-restore');
    const progress = run.progress[Symbol.asyncIterator]();
    const first = (await progress.next()).value;
    const restore = dm.devicePath('demo-restore');
    const probe = readDirect(restore, BigInt(8 * MiB), BigInt(MiB));
    const servedOk = probe.equals(image.bytes(8 * MiB, MiB));
    show('device ready after', `${Date.now() - restoreStarted} ms, ${first ? `${first.hydrated}/${first.total}` : '?'} regions hydrated`);
    show('read 1 MiB at 8 MiB at once', servedOk ? 'the source\'s data (served from the source)' : 'WRONG DATA');
    if (!servedOk) throw new Error('the clone served data that is not the source\'s');
    write(restore, image, 28 * MiB, 128 * KiB, 3);
    show('wrote 128 KiB at 28 MiB', 'lands on the destination; the source is never written');
    const wantAfter = image.sha256(DISK);
    const reader = new Reader(restore, DISK, wantAfter);
    await dm.message({ name: 'demo-restore' }, undefined, cloneMessages.hydrationThreshold(targetBlocks(8)));
    const bar = new Bar('hydration');
    for (let p = await progress.next(); !p.done; p = await progress.next()) {
      const s = p.value;
      bar.update(Number(s.hydrated), Number(s.total), `${s.hydrated}/${s.total} regions, ${(s.bytesPerSecond / MiB).toFixed(1)} MiB/s`);
    }
    const result = await run.done;
    bar.update(1, 1, `${result.regions}/${result.regions} regions, ${mib(Number(result.bytes))} in ${result.seconds.toFixed(1)} s`);
    const passesAtSwap = reader.passes;
    while (reader.passes < passesAtSwap + 2 && reader.errors.length === 0) await new Promise((r) => setTimeout(r, 50));
    await reader.stop();
    const table = await dm.table({ name: 'demo-restore' });
    show('after the swap', `${table.map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`).join('; ')} (same device ${restore})`);
    show('reader across the swap', `${reader.passes} whole passes, ${reader.errors.length} IO errors, ${reader.wrong} passes with wrong data`);
    if (!result.swapped || table.length !== 1 || table[0]!.type !== 'linear') throw new Error('the device did not swap to linear');
    if (reader.errors.length || reader.wrong) throw new Error(`the reader saw ${reader.errors.join('; ') || `${reader.wrong} wrong passes`}`);
    checks.push(`restore served reads at once, hydrated ${result.regions} regions, swapped to linear under ${reader.passes} reader passes with 0 errors`);

    section(6, 'Verification');
    const through = sha256Of(restore, DISK);
    await remove('demo-restore');
    flushBuffers(fresh!.path);
    const onDisk = sha256Of(fresh!.path, DISK);
    const src = sha256Of(volume!.path, DISK);
    show('expected image', wantAfter.slice(0, 16) + '...');
    show('through the device', `${through.slice(0, 16)}... ${through === wantAfter ? 'equal' : 'DIFFERENT'}`);
    show('on the destination disk', `${onDisk.slice(0, 16)}... ${onDisk === wantAfter ? 'equal' : 'DIFFERENT'}`);
    show('source untouched', `${src.slice(0, 16)}... ${src === want ? 'equal to before' : 'CHANGED'}`);
    const cmd = readCloneMetadata(readDirect(cloneMeta!.path, 0n, BigInt(DISK), BigInt(MiB)));
    show('clone metadata (dmkit reader)', `${cmd.hydrated.count()}/${cmd.nrRegions} regions marked hydrated, region ${cmd.regionSectors} sectors`);
    if (through !== wantAfter || onDisk !== wantAfter || src !== want) throw new Error('restored data differs');
    if (cmd.hydrated.count() !== cmd.nrRegions) throw new Error('clone metadata does not mark every region hydrated');
    checks.push(`${mib(DISK)} restored byte for byte, source untouched, metadata checked`);

    // ---- snapshot ----
    section(7, 'A snapshot with dmkit-snapshot, then a rollback by merging it');
    const cow = eraMeta!.path;
    writeDirect(cow, 0n, Buffer.alloc(64 * KiB));
    await dm.create('demo-snapvol', { targets: [{ start: sectors(0), length, type: 'linear', params: `${fresh!.path} 0` }] });
    created.add('demo-snapvol');
    const snapVol = dm.devicePath('demo-snapvol');
    show('demo-snapvol', `linear over ${fresh!.path} (the restored image)`);
    const snap = await createSnapshot(dm, { origin: 'demo-snapvol', name: 'demo-snap', cow, chunkSize: sectors(BigInt(SNAP_CHUNK / 512)), store: 'P', family: 'dmkit' });
    // Removal order on failure: the snapshot, the origin, then the real device under both.
    created.delete('demo-snapvol');
    for (const n of ['demo-snap', 'demo-snapvol', 'demo-snapvol-real']) created.add(n);
    show('snapshot taken', `demo-snap: ${snap.table.type}, COW on ${cow}, ${mib(SNAP_CHUNK)} chunks; demo-snapvol is now ${snap.realName}'s origin`);
    const changed = new Image();
    for (const w of image.writes) changed.write(w.at, w.length, w.seed);
    for (const at of [2 * MiB, 9 * MiB, 17 * MiB + 64 * KiB]) write(snapVol, changed, at, MiB, 5);
    show('wrote to the volume', '3 MiB in three places, after the snapshot');
    const report = await snapshotReport(dm, 'demo-snap');
    show('snapshot status', `${report.state}, ${report.allocated} of ${report.total} sectors allocated, ${report.metadata} metadata`);
    const wantChanged = changed.sha256(DISK);
    const volNow = sha256Of(snapVol, DISK);
    const snapNow = sha256Of(dm.devicePath('demo-snap'), DISK);
    show('the volume', `${volNow.slice(0, 16)}... ${volNow === wantChanged ? 'has the new writes' : 'WRONG'}`);
    show('the snapshot', `${snapNow.slice(0, 16)}... ${snapNow === wantAfter ? 'still the image at snapshot time' : 'WRONG'}`);
    if (volNow !== wantChanged || snapNow !== wantAfter) throw new Error('snapshot or volume data wrong');
    const mergeBar = new Bar('merge');
    const merged = await mergeSnapshot(dm, {
      name: 'demo-snap',
      pollIntervalMs: 100,
      onProgress: (p) => mergeBar.update(Number(p.total - p.remaining), Number(p.total), `${p.total - p.remaining}/${p.total} sectors`),
    });
    created.delete('demo-snap');
    created.delete('demo-snapvol-real');
    const rolledBack = sha256Of(snapVol, DISK);
    const snapTable = await dm.table({ name: 'demo-snapvol' });
    show('after the merge', `${snapTable.map((t) => `${t.type} ${t.params}`).join('; ')}, ${mib(Number(merged.merged) * 512)} merged in ${merged.seconds.toFixed(1)} s`);
    show('the volume', `${rolledBack.slice(0, 16)}... ${rolledBack === wantAfter ? 'back to the snapshot image' : 'WRONG'}`);
    if (rolledBack !== wantAfter || snapTable[0]?.type !== 'linear') throw new Error('the merge did not roll the volume back');
    await remove('demo-snapvol');
    checks.push(`a snapshot kept its image under 3 MiB of writes and merging it rolled the volume back`);

    // ---- cache ----
    section(8, 'A cache in front of a slow volume with dmkit-cache');
    // Free again: the clone's metadata disk holds the cache's metadata, the COW disk becomes the cache.
    const [cacheMeta, cacheDisk] = [cloneMeta!.path, cow];
    await dm.create('demo-cached', { targets: [{ start: sectors(0), length, type: 'linear', params: `${fresh!.path} 0` }] });
    created.add('demo-cached');
    const cachedVol = dm.devicePath('demo-cached');
    show('demo-cached', `linear over ${fresh!.path} (the restored image)`);
    await attachCache(dm, { name: 'demo-cached', metadata: cacheMeta, cacheDevice: cacheDisk, blockSize: sectors(BigInt(CACHE_BLOCK / 512)), type: 'dmkit-cache', ioMode: 'writeback' });
    const tableOf = async (): Promise<{ types: string; text: string }> => {
      const lines = await dm.table({ name: 'demo-cached' });
      return { types: lines.map((t) => t.type).join(), text: lines.map((t) => `${t.start} ${t.length} ${t.type} ${t.params}`).join('; ') };
    };
    show('cache attached', `${mib(CACHE_BLOCK)} blocks on ${cacheDisk}, metadata on ${cacheMeta}, writeback`);
    const attached = await tableOf();
    show('table', attached.text);
    if (attached.types !== 'dmkit-cache') throw new Error(`demo-cached has a ${attached.types} table after the attach`);
    const hot = { at: 4 * MiB, length: MiB };
    for (let pass = 0; pass < 3; pass++) {
      if (!readDirect(cachedVol, BigInt(hot.at), BigInt(hot.length)).equals(image.bytes(hot.at, hot.length))) throw new Error('the cache served wrong data');
    }
    show(`read ${mib(hot.length)} at ${mib(hot.at)}, 3 times`, 'the image\'s data each time (O_DIRECT, 64 KiB requests)');
    // Writes to cached blocks stay in the cache (a write miss goes to the origin, as with smq, unless the
    // policy promotes its block), so the demo writes over the hot region the reads brought in.
    write(cachedVol, image, hot.at, hot.length, 6);
    show(`wrote ${mib(hot.length)} at ${mib(hot.at)}`, 'over the hot region, every block of it cached (4 KiB requests)');
    const st = cache.parseStatus((await dm.status({ name: 'demo-cached' }))[0]!.status);
    if ('fail' in st || 'error' in st) throw new Error('dmkit-cache reports Fail');
    const hotBlocks = hot.length / CACHE_BLOCK;
    const written = hot.length / CACHE_BLOCK;
    show('cache status (dmkit parser)', `reads ${st.readHits} hits / ${st.readMisses} misses, writes ${st.writeHits} hits / ${st.writeMisses} misses, ${st.promotions} promotions`);
    show('dirty', `${st.dirty} of ${st.cacheTotal} cache blocks: ${mib(Number(st.dirty) * CACHE_BLOCK)} only in the cache so far`);
    if (st.readMisses !== BigInt(hotBlocks) || st.readHits !== BigInt(2 * hotBlocks)) throw new Error(`hot reads: ${st.readHits} hits, ${st.readMisses} misses; want ${2 * hotBlocks} and ${hotBlocks}`);
    if (st.dirty !== BigInt(written)) throw new Error(`${st.dirty} dirty blocks, want the ${written} written`);
    const originBefore = sha256Of(fresh!.path, DISK);
    show('the origin meanwhile', `${originBefore.slice(0, 16)}... ${originBefore === wantAfter ? 'still the old image' : 'CHANGED'}`);
    if (originBefore !== wantAfter) throw new Error('writeback wrote to the origin before the detach');
    const cleanBar = new Bar('detach (cleaner)');
    const detached = await detachCache(dm, {
      name: 'demo-cached',
      pollIntervalMs: 100,
      onProgress: (p) => cleanBar.update(Number(p.total - p.dirty), Number(p.total), `${p.dirty} of ${p.total} blocks dirty`),
    });
    const cachedSum = sha256Of(cachedVol, DISK);
    const wantCached = image.sha256(DISK);
    const afterDetach = await tableOf();
    show('after the detach', `${afterDetach.text}, ${detached.flushed} blocks written back in ${detached.seconds.toFixed(1)} s`);
    show('the volume', `${cachedSum.slice(0, 16)}... ${cachedSum === wantCached ? 'equals the model: every write reached the origin' : 'WRONG'}`);
    if (cachedSum !== wantCached || afterDetach.types !== 'linear') throw new Error('the detached volume is not the model on a linear table');
    await remove('demo-cached');
    assertClean('cache_check', cacheMeta);
    show('cache_check', 'clean');
    checks.push(`a writeback cache served ${st.readHits} hot reads from the cache and wrote its ${st.dirty} dirty blocks back on detach`);
    out();
    out(`verified: ${checks.join('; ')} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    out('demo: OK');
  } finally {
    for (const name of created) await remove(name).catch(() => undefined);
    await dm.close();
    scope.close();
  }
}

/** Root, and a control device that opens (a stale /dev/mapper/control node on a kernel without dm does not). */
function hostHasDeviceMapper(): boolean {
  if (process.getuid?.() !== 0) return false;
  if (fs.existsSync('/sys/class/misc/device-mapper')) return true;
  try {
    fs.closeSync(fs.openSync('/dev/mapper/control', 'r'));
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  if (process.argv.includes('--here') || hostHasDeviceMapper()) {
    await scenario();
    return;
  }
  console.log('demo: this host has no device-mapper (or is not root): running the scenario in the VM lab');
  const r = await runVm({ command: [process.execPath, __filename, '--here'], timeoutSec: 900 });
  console.error(describeResult(r));
  process.exit(r.exitCode);
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(`demo: FAILED: ${(e as Error).message}`);
    process.exit(1);
  });
}
