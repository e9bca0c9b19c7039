/**
 * What each target brings to the torture component: its rig, its table lines (the one a case starts
 * from and the changed ones a reload may swap in), the messages it takes, a check of its metadata once
 * the device is gone, and whether a table swap to linear and back applies. A new target joins the
 * component by one more profile here.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { DeviceMapper, type TargetLine } from '../../../dm';
import { eraWrittenBlocks, readCloneMetadata, readEraMetadata } from '../../../pdata/reader';
import { readCow } from '../../../pdata/snapshot-cow';
import { cache, clone, snapshot } from '../../../targets';
import { readDirect, writeDirect, ramdisks, Scope, zero, type BlockDevice } from '../../../testing';
import { createDevice } from '../../../testing/dmsetup';
import { bytes, sectors, targetBlocks } from '../../../units';
import { SectorModel } from './model';

const MiB = 1n << 20n;
export const BASE_SEED = 3;

export interface TortureRig {
  /** Sectors of the target. */
  nrSectors: number;
  /** The table a case starts from. */
  line(): TargetLine;
  /** A reload's table: the same devices, arguments changed where the target allows it. */
  variant(rand: () => number): TargetLine;
  /** A message to send now (its words), given the device's status line, or undefined for none. */
  message(rand: () => number, status: string): string | undefined;
  /**
   * Problems in the metadata, read with the device removed (or, `held`, with its tables suspended:
   * checked on a raw copy); `model` has every write of the run.
   */
  checkMetadata(model: SectorModel, opts?: { held?: boolean }): string[];
  /** The raw metadata device's bytes (read with O_DIRECT), to see whether a quiesced table wrote it. */
  metadataImage?(): Buffer;
  /** Test builds: widen the windows of the target's background work (on) or stop widening them (off). */
  holdBackground?(on: boolean): void;
  /** A linear table on the device that holds the data, when a swap to it is allowed now. */
  linear?(dm: DeviceMapper, name: string): Promise<TargetLine | undefined>;
}

export interface TortureProfile {
  type: string;
  /** For an in-tree target: the upstream source its failures are known from (counted as known_upstream). */
  knownUpstream?: string;
  makeRig(scope: Scope): TortureRig;
}

function checkerProblem(cmd: string, args: string[]): string[] {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? [] : [`${cmd} ${args.join(' ')}: exit ${r.status}: ${`${r.stdout}${r.stderr}`.trim().split('\n').slice(0, 3).join(' | ')}`];
}

/*----------------------------------------------------------------
 * era
 *--------------------------------------------------------------*/

const ERA_ORIGIN_MIB = 16n;
const ERA_META_MIB = 2n; // small: the space map's cursor wraps, as in the era-postsuspend scenario
const ERA_BLOCK = 8; // sectors

/*
 * A test build of dmkit-era holds each digest step this long (knob digest_step_delay_ms) while a swap
 * races a checkpoint, so the swap's suspend lands while the worker digests: the window of the
 * era-postsuspend bug (a digest step after postsuspend's commit), which this component must catch.
 * Only around swaps: held for a whole case, the undigested eras of 200 suspends would fill the metadata.
 */
const DIGEST_KNOB = '/sys/module/dmkit_era/parameters/digest_step_delay_ms';
const DIGEST_STEP_MS = 3;

function digestHolder(scope: Scope): ((on: boolean) => void) | undefined {
  if (!fs.existsSync(DIGEST_KNOB)) return undefined;
  const before = fs.readFileSync(DIGEST_KNOB, 'utf8').trim();
  scope.defer('digest step delay', () => fs.writeFileSync(DIGEST_KNOB, before));
  return (on) => fs.writeFileSync(DIGEST_KNOB, on ? String(DIGEST_STEP_MS) : before);
}

function eraProfile(type: 'era' | 'dmkit-era', knownUpstream?: string): TortureProfile {
  return {
    type,
    ...(knownUpstream ? { knownUpstream } : {}),
    makeRig(scope: Scope): TortureRig {
      // The third ramdisk takes a raw copy of the metadata while a table holds it (era_check wants it alone).
      const [origin, metaDisk, copyDisk] = ramdisks(scope, 3, bytes(ERA_ORIGIN_MIB * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
      const metaSectors = Number((ERA_META_MIB * MiB) / 512n);
      const meta = createDevice(scope, 'tt-era-meta', `0 ${metaSectors} linear ${metaDisk.path} 0`).path;
      zero(meta, bytes(64 * 1024));
      const nrSectors = Number((ERA_ORIGIN_MIB * MiB) / 512n);
      SectorModel.fillBase(origin.path, nrSectors, BASE_SEED);
      const line = (): TargetLine => ({ start: sectors(0), length: sectors(BigInt(nrSectors)), type, params: `${meta} ${origin.path} ${ERA_BLOCK}` });
      const hold = type === 'dmkit-era' ? digestHolder(scope) : undefined;
      return {
        nrSectors,
        line,
        ...(hold ? { holdBackground: hold } : {}),
        metadataImage: () => readDirect(meta, 0n, ERA_META_MIB * MiB, 64n * 1024n),
        // Era's block size is fixed by its metadata: a reload keeps the arguments.
        variant: line,
        message(rand, status) {
          if (rand() < 0.6) return 'checkpoint';
          // Status: <md block size> <used>/<total> <era> <held root|->; a second take or a drop of none is EINVAL.
          const held = status.trim().split(/\s+/)[3] !== '-';
          return held ? 'drop_metadata_snap' : 'take_metadata_snap';
        },
        checkMetadata(model, opts) {
          const image = readDirect(meta, 0n, ERA_META_MIB * MiB, 64n * 1024n);
          if (opts?.held) writeDirect(copyDisk.path, 0n, image);
          const problems = checkerProblem('era_check', [opts?.held ? copyDisk.path : meta]);
          if (problems.length) return problems;
          try {
            const md = readEraMetadata(image);
            const tracked = eraWrittenBlocks(md);
            const missing: number[] = [];
            for (let b = 0; b < md.nrBlocks && missing.length < 8; b++) {
              const first = b * ERA_BLOCK;
              let written = false;
              for (let s = first; s < first + ERA_BLOCK; s++) if (model.acked[s] !== BASE_SEED) written = true;
              if (written && !tracked.has(b)) missing.push(b);
            }
            return missing.length ? [`era metadata misses written blocks ${missing.join(',')}`] : [];
          } catch (e) {
            return [`era metadata does not pass the validating reader: ${(e as Error).message}`];
          }
        },
      };
    },
  };
}

/*----------------------------------------------------------------
 * clone
 *--------------------------------------------------------------*/

const CLONE_MIB = 8n;
const CLONE_REGION = 128n; // sectors

function cloneProfile(type: 'clone' | 'dmkit-clone', knownUpstream?: string): TortureProfile {
  return {
    type,
    ...(knownUpstream ? { knownUpstream } : {}),
    makeRig(scope: Scope): TortureRig {
      const [meta, dest, src] = ramdisks(scope, 3, bytes(CLONE_MIB * MiB)) as [BlockDevice, BlockDevice, BlockDevice];
      zero(meta.path, bytes(4096));
      const nrSectors = Number((CLONE_MIB * MiB) / 512n);
      SectorModel.fillBase(src.path, nrSectors, BASE_SEED);
      SectorModel.fillBase(dest.path, nrSectors, 0x7fff0000); // never a right answer
      const make = (o: { noHydration?: boolean; threshold?: number; batch?: number }): TargetLine =>
        clone.line(
          {
            metadataDevice: meta.path,
            destinationDevice: dest.path,
            sourceDevice: src.path,
            regionSize: sectors(CLONE_REGION),
            noHydration: o.noHydration ?? false,
            hydrationThreshold: o.threshold === undefined ? null : targetBlocks(o.threshold),
            hydrationBatchSize: o.batch === undefined ? null : targetBlocks(o.batch),
          },
          { start: sectors(0), length: sectors(BigInt(nrSectors)), type },
        );
      return {
        nrSectors,
        line: () => make({ threshold: 2 }),
        variant(rand) {
          const r = rand();
          if (r < 0.3) return make({ noHydration: true });
          return make({ threshold: 1 + Math.floor(rand() * 8), batch: 1 + Math.floor(rand() * 4) });
        },
        message(rand) {
          const r = rand();
          if (r < 0.25) return 'disable_hydration';
          if (r < 0.5) return 'enable_hydration';
          if (r < 0.75) return `hydration_threshold ${1 + Math.floor(rand() * 8)}`;
          return `hydration_batch_size ${1 + Math.floor(rand() * 4)}`;
        },
        checkMetadata() {
          try {
            const md = readCloneMetadata(readDirect(meta.path, 0n, 4n * MiB, MiB));
            if (md.nrRegions !== nrSectors / Number(CLONE_REGION)) return [`clone metadata has ${md.nrRegions} regions`];
            return [];
          } catch (e) {
            return [`clone metadata does not pass the validating reader: ${(e as Error).message}`];
          }
        },
        async linear(dm, name) {
          const [st] = await dm.status({ name }, { noflush: true });
          const info = clone.parseStatus(st!.status);
          if ('fail' in info || 'error' in info || info.hydrated !== info.totalRegions) return undefined;
          return { start: sectors(0), length: sectors(BigInt(nrSectors)), type: 'linear', params: `${dest.path} 0` };
        },
      };
    },
  };
}

/*----------------------------------------------------------------
 * snapshot family: the origin under the storm, a snapshot beside it
 *--------------------------------------------------------------*/

const SNAP_ORIGIN_MIB = 8n;
const SNAP_COW_MIB = 12n; // every origin chunk fits, with its exception areas: the snapshot never fills
const SNAP_CHUNK = 8n; // sectors

/*
 * The device under the storm is the origin target, with one persistent snapshot taken of the base data
 * before the case: every write copies its chunk into the COW device first, so suspends, preloads (a
 * second origin table registered on the same block device), reloads and handovers race chunk copies and
 * exception commits. The snapshot keeps its own device. Its contract: it reads the base data in every
 * sector, whatever the origin went through, and its COW store is valid (our reader: header, exception
 * areas, no chunk twice, every old chunk inside the origin). The target takes no messages.
 */
function originProfile(type: 'snapshot-origin' | 'dmkit-origin', snapType: 'snapshot' | 'dmkit-snapshot', knownUpstream?: string): TortureProfile {
  return {
    type,
    ...(knownUpstream ? { knownUpstream } : {}),
    makeRig(scope: Scope): TortureRig {
      const [origin, cow] = ramdisks(scope, 2, bytes(SNAP_COW_MIB * MiB)) as [BlockDevice, BlockDevice];
      zero(cow.path, bytes(64 * 1024));
      const nrSectors = Number((SNAP_ORIGIN_MIB * MiB) / 512n);
      const originLine = `0 ${nrSectors} linear ${origin.path} 0`;
      const base = createDevice(scope, `tt-${type}-base`, originLine).path;
      SectorModel.fillBase(base, nrSectors, BASE_SEED);
      const snapLine = snapshot.line(
        { origin: base, cow: cow.path, store: 'P', chunkSize: sectors(SNAP_CHUNK) },
        { start: sectors(0), length: sectors(BigInt(nrSectors)), type: snapType },
      );
      const snap = createDevice(scope, `tt-${type}-snap`, `${snapLine.start} ${snapLine.length} ${snapLine.type} ${snapLine.params}`).path;
      const line = (): TargetLine => ({ start: sectors(0), length: sectors(BigInt(nrSectors)), type, params: base });
      const cowImage = (): Buffer => readDirect(cow.path, 0n, SNAP_COW_MIB * MiB, MiB);
      return {
        nrSectors,
        line,
        variant: line,
        message: () => undefined,
        metadataImage: cowImage,
        checkMetadata() {
          const problems: string[] = [];
          try {
            const img = readCow(cowImage(), { chunkSize: sectors(SNAP_CHUNK), originSectors: sectors(BigInt(nrSectors)) });
            if (img.state !== 'valid') problems.push(`the snapshot's COW store is ${img.state}`);
          } catch (e) {
            problems.push(`the snapshot's COW store does not pass our reader: ${(e as Error).message}`);
          }
          // The snapshot was taken of the base data: it must read nothing written to the origin since.
          problems.push(...new SectorModel(nrSectors, BASE_SEED).checkAll(snap).map((p) => `the snapshot: ${p}`));
          return problems;
        },
      };
    },
  };
}

/*----------------------------------------------------------------
 * cache
 *--------------------------------------------------------------*/

const CACHE_ORIGIN_MIB = 16n;
const CACHE_FAST_MIB = 2n; // 64 blocks of 32 KiB for a 512-block origin: promotions and demotions all the time
const CACHE_META_MIB = 4n;
const CACHE_BLOCK = 64n; // sectors

/*
 * dmkit-cache in writeback over an origin 8 times the cache, so the writers promote, demote and leave
 * dirty blocks all the time. Preloads load the inactive table on the same three devices (LVM's way, the
 * race the shared-metadata fix is about), reloads change the mode and the policy (writeback/writethrough,
 * dmkit-lru/cleaner), messages set migration_threshold. The metadata must pass cache_check once the device
 * is gone (on a raw copy while a table holds it).
 */
function cacheProfile(type: 'cache' | 'dmkit-cache', knownUpstream?: string): TortureProfile {
  return {
    type,
    ...(knownUpstream ? { knownUpstream } : {}),
    makeRig(scope: Scope): TortureRig {
      const [origin, fast, metaDisk, copyDisk] = ramdisks(scope, 4, bytes(CACHE_ORIGIN_MIB * MiB)) as [BlockDevice, BlockDevice, BlockDevice, BlockDevice];
      const meta = createDevice(scope, `tt-${type}-meta`, `0 ${Number((CACHE_META_MIB * MiB) / 512n)} linear ${metaDisk.path} 0`).path;
      const cdev = createDevice(scope, `tt-${type}-fast`, `0 ${Number((CACHE_FAST_MIB * MiB) / 512n)} linear ${fast.path} 0`).path;
      zero(meta, bytes(64 * 1024));
      const nrSectors = Number((CACHE_ORIGIN_MIB * MiB) / 512n);
      SectorModel.fillBase(origin.path, nrSectors, BASE_SEED);
      const make = (o: { mode?: 'writeback' | 'writethrough'; policy?: string }): TargetLine =>
        cache.line(
          {
            metadataDevice: meta,
            cacheDevice: cdev,
            originDevice: origin.path,
            blockSize: sectors(CACHE_BLOCK),
            ioMode: o.mode ?? 'writeback',
            policy: o.policy ?? (type === 'dmkit-cache' ? 'dmkit-lru' : 'smq'),
          },
          { start: sectors(0), length: sectors(BigInt(nrSectors)), type },
        );
      const image = (): Buffer => readDirect(meta, 0n, CACHE_META_MIB * MiB, MiB);
      return {
        nrSectors,
        line: () => make({}),
        variant(rand) {
          const r = rand();
          if (r < 0.4) return make({ mode: 'writethrough' });
          if (r < 0.7) return make({ policy: 'cleaner' });
          return make({ mode: 'writeback' });
        },
        message: (rand) => `migration_threshold ${256 * (1 + Math.floor(rand() * 16))}`,
        metadataImage: image,
        checkMetadata(_model, opts) {
          if (!opts?.held) return checkerProblem('cache_check', [meta]);
          writeDirect(copyDisk.path, 0n, image());
          return checkerProblem('cache_check', [copyDisk.path]);
        },
      };
    },
  };
}

export const PROFILES: readonly TortureProfile[] = [
  eraProfile('dmkit-era'),
  cloneProfile('dmkit-clone'),
  originProfile('dmkit-origin', 'dmkit-snapshot'),
  cacheProfile('dmkit-cache'),
  eraProfile('era', 'drivers/md/dm-era-target.c: no fail mode after a metadata error, metadata read at table load'),
  cloneProfile('clone', 'drivers/md/dm-clone-target.c: clone_ctr reads the metadata at table load (dm_clone_metadata_open)'),
  originProfile('snapshot-origin', 'snapshot', 'drivers/md/dm-snap.c'),
  cacheProfile('cache', 'drivers/md/dm-cache-target.c: two metadata objects on one metadata device when LVM preloads a table'),
];
