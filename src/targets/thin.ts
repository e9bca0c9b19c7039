/**
 * thin: `<pool dev> <dev id> [<external origin dev>]`. INFO: `<mapped sectors> <highest mapped
 * sector|->`, or `Fail` (pool in fail mode; printed for TABLE too), `-` (no device opened), `Error`.
 */
import type { Sectors } from '../units';
import { checkDevice, checkInt, conflict, defineCodec, readFailOrError, type ErrorStatus, type FailStatus } from './codec';
import { MAX_THIN_DEV_ID } from './thin-pool';
import type { Tokens } from './tokens';

const TYPE = 'thin';

export interface ThinParams {
  readonly poolDevice: string;
  /** 24-bit id created with the pool's create_thin/create_snap message. */
  readonly deviceId: number;
  /** Read-only device providing unprovisioned blocks, or null. */
  readonly externalOrigin: string | null;
}

export type ThinInput = Omit<ThinParams, 'externalOrigin'> & { readonly externalOrigin?: string | null };

export interface ThinInfo {
  readonly mappedSectors: Sectors;
  /** Last sector of the highest mapped block, or null when nothing is mapped. */
  readonly highestMappedSector: Sectors | null;
}

export type ThinStatus = ThinInfo | FailStatus | ErrorStatus | { readonly inactive: true };

function normalize(p: ThinInput): ThinParams {
  const poolDevice = checkDevice(TYPE, 'poolDevice', p.poolDevice);
  const externalOrigin = p.externalOrigin == null ? null : checkDevice(TYPE, 'externalOrigin', p.externalOrigin);
  if (externalOrigin === poolDevice) throw conflict(TYPE, 'externalOrigin', 'the origin cannot be the pool');
  return { poolDevice, deviceId: checkInt(TYPE, 'deviceId', p.deviceId, MAX_THIN_DEV_ID), externalOrigin };
}

function emit(p: ThinParams): string {
  return p.externalOrigin === null ? `${p.poolDevice} ${p.deviceId}` : `${p.poolDevice} ${p.deviceId} ${p.externalOrigin}`;
}

function read(t: Tokens): ThinInput {
  const poolDevice = t.device('pool device');
  const deviceId = t.small('device id');
  const externalOrigin = t.remaining > 0 ? t.device('external origin') : null;
  return { poolDevice, deviceId, externalOrigin };
}

function readStatus(t: Tokens): ThinStatus {
  const failed = readFailOrError(t);
  if (failed) return failed;
  if (t.takeExactly('-')) return { inactive: true };
  const mappedSectors = t.sectors('mapped sectors');
  const highest = t.optionalUint('highest mapped sector');
  return { mappedSectors, highestMappedSector: highest === null ? null : (highest as Sectors) };
}

export const thin = defineCodec<ThinParams, ThinStatus, ThinInput>({
  type: TYPE,
  names: [TYPE],
  normalize,
  emit,
  read,
  readStatus,
});
