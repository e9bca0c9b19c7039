/**
 * The LVM-style preload race on dmkit-cache (the cache-shared-metadata fix), for the crash and fault lab's
 * 'reload' component: the same table is loaded (inactive) while the live one writes, then resumed, round
 * after round. Both tables name one metadata device; with the fix they share one metadata object, with the
 * revert (make -C kmod REVERT=cache-shared-metadata) the new table works from the superblock, space map
 * and buffers it read at load time, so blocks promoted or dirtied between load and resume lose their
 * mappings after the swap.
 *
 * Two writers make the window: a background writer (stamped 4 KiB writes at random blocks, every fourth
 * fsynced) runs across the load, the swap and after it, and each round also writes a few fsynced blocks
 * of its own between load and resume, so with the revert a commit always lands after the load. The test
 * knob promote_delay_ms (test builds only) holds each promotion so the worker is mid-promotion when the
 * load and the swap arrive. Checked after every round: the whole device against the model and a
 * read-write status; at the end, after removal: cache_check, then the cache re-created from its
 * metadata reads the model back (dirty blocks included), and after its removal cache_check again.
 */
import * as fs from 'node:fs';
import { DeviceMapper, type TargetLine } from '../dm';
import { cache, type CacheInfo } from '../targets';
import { bytes, sectors } from '../units';
import { runChecker } from './checkers';
import { DataModel, stampDirect, verifyModel } from './clone-model';
import { ramdisks, Scope, sh, type BlockDevice } from './devices';
import { writeDirectAsync } from './direct-io';
import { patternBuffer, stamp, zero } from './patterns';
import { prng } from './random';

const MiB = 1n << 20n;
/** Cache block: 32 KiB. */
const BLOCK = 64n;
/** 8 MiB origin, 1 MiB (32 blocks) of cache: promotions evict, so demotions happen too. */
const LENGTH = (8n * MiB) / 512n;
const CACHE_SECTORS = 32n * BLOCK;
const ORIGIN_SEED = 3;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sets a test knob of dmkit-cache; false when the module has none by that name (a release build). */
export function setCacheKnob(name: string, value: number): boolean {
  const p = `/sys/module/dmkit_cache/parameters/${name}`;
  if (!fs.existsSync(p)) return false;
  fs.writeFileSync(p, `${value}\n`);
  return true;
}

export interface PreloadResult {
  problems: string[];
  /** Writes acknowledged over all rounds (both writers). */
  writes: number;
  /** Promotions the live device reported at the end of each round. */
  promotions: bigint[];
  /** Whether the promote_delay_ms knob was there to widen the window. */
  knob: boolean;
}

async function cacheStatus(dm: DeviceMapper, name: string): Promise<CacheInfo | string> {
  const [st] = await dm.status({ name });
  const parsed = cache.parseStatus(st?.status ?? '');
  if ('fail' in parsed || 'error' in parsed) return `status ${JSON.stringify(st?.status)}`;
  return parsed as CacheInfo;
}

/**
 * `rounds` preload races on one dmkit-cache device (writeback, so blocks are dirty at every swap);
 * returns the problems seen (empty: data and metadata intact). Throws only when the scenario cannot run.
 */
export async function cachePreloadRace(dm: DeviceMapper, rounds: number, seed: number, opts: { promoteDelayMs?: number; type?: string } = {}): Promise<PreloadResult> {
  const type = opts.type ?? 'dmkit-cache';
  const problems: string[] = [];
  const promotions: bigint[] = [];
  const scope = new Scope();
  const name = 'lab-cache-preload';
  const fastName = 'lab-cache-preload-fast';
  let live = false;
  let writes = 0;
  const rand = prng(seed);
  const knob = setCacheKnob('promote_delay_ms', opts.promoteDelayMs ?? 5);
  try {
    const [meta, fastDisk, origin] = ramdisks(scope, 3, bytes(8n * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
    zero(meta.path, bytes(4096));
    stamp(origin.path, { start: sectors(0), length: sectors(LENGTH) }, ORIGIN_SEED);
    await dm.create(fastName, { targets: [{ start: sectors(0), length: sectors(CACHE_SECTORS), type: 'linear', params: `${fastDisk.path} 0` }] });
    scope.defer(`remove ${fastName}`, () => void sh('dmsetup', '--noudevrules', '--noudevsync', 'remove', '--retry', fastName));
    const fast = dm.devicePath(fastName);
    const model = new DataModel(LENGTH, ORIGIN_SEED);
    const tableLine: TargetLine = cache.line(
      { metadataDevice: meta.path, cacheDevice: fast, originDevice: origin.path, blockSize: sectors(BLOCK), ioMode: 'writeback', policy: 'default' },
      { start: sectors(0), length: sectors(LENGTH), type },
    );
    await dm.create(name, { targets: [tableLine] });
    live = true;
    const dev = dm.devicePath(name);
    const nrBlocks = Number(LENGTH / BLOCK);
    /**
     * A random 4 KiB slot of a random cache block of the given parity: the background writer takes odd
     * blocks and the round's own writes even ones, so no two writes in flight overlap and the model's
     * order (by completion) is the disk's.
     */
    const randomSlot = (parity: 0 | 1): bigint =>
      BigInt(2 * Math.floor((rand() * nrBlocks) / 2) + parity) * BLOCK + BigInt(Math.floor(rand() * Number(BLOCK / 8n))) * 8n;

    for (let round = 0; round < rounds; round++) {
      let writing = true;
      let writerError: Error | undefined;
      const writer = (async () => {
        while (writing) {
          const at = randomSlot(1);
          const s = 100_000 + round * 10_000 + writes;
          await writeDirectAsync(dev, at * 512n, patternBuffer(s, sectors(at), 8), { fsync: writes % 4 === 3 });
          model.write(at, 8n, s);
          writes++;
        }
      })().catch((e: Error) => void (writerError = e));
      await sleep(150);
      await dm.load({ name }, [tableLine]);
      // The live table promotes, dirties and commits while the inactive one exists.
      for (let i = 0; i < 6; i++) {
        const at = randomSlot(0);
        const s = 50_000 + round * 100 + i;
        await writeDirectAsync(dev, at * 512n, patternBuffer(s, sectors(at), 8), { fsync: true });
        model.write(at, 8n, s);
        writes++;
      }
      await dm.suspend({ name });
      await dm.resume({ name });
      await sleep(150);
      writing = false;
      await writer;
      if (writerError) {
        problems.push(`round ${round}: a write failed: ${writerError.message}`);
        break;
      }
      const bad = verifyModel(dev, model, 4);
      if (bad.length) problems.push(`round ${round}: after the swap: ${bad.map((b) => `sector ${b.sector}: want ${b.want}, found ${b.found}`).join('; ')}`);
      const st = await cacheStatus(dm, name);
      if (typeof st === 'string') problems.push(`round ${round}: ${st}`);
      else {
        promotions.push(st.promotions);
        if (st.mode !== 'rw' || st.needsCheck) problems.push(`round ${round}: metadata mode ${st.mode}${st.needsCheck ? ', needs_check' : ''}`);
      }
      if (problems.length) break;
    }
    // One more stamp of the whole first block range, flushed, so something is dirty at removal.
    stampDirect(dev, model, 0n, BLOCK, 99, { fsync: true });
    await dm.remove({ name }, { retry: true });
    live = false;
    const chk = runChecker('cache_check', meta.path);
    if (!chk.ok) problems.push(`cache_check after removal exited ${chk.status}: ${chk.output.slice(0, 600)}`);
    await dm.create(name, { targets: [tableLine] });
    live = true;
    const again = verifyModel(dev, model, 4);
    if (again.length) problems.push(`re-created from its metadata: ${again.map((b) => `sector ${b.sector}: want ${b.want}, found ${b.found}`).join('; ')}`);
    await dm.remove({ name }, { retry: true });
    live = false;
    const chk2 = runChecker('cache_check', meta.path);
    if (!chk2.ok) problems.push(`cache_check at the end exited ${chk2.status}: ${chk2.output.slice(0, 600)}`);
  } finally {
    setCacheKnob('promote_delay_ms', 0);
    if (live) await dm.remove({ name }, { retry: true }).catch(() => undefined);
    scope.close();
  }
  return { problems, writes, promotions, knob };
}
