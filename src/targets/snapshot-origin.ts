/** snapshot-origin (and dmkit-origin): `<origin dev>`; INFO status is empty. */
import { checkDevice, defineCodec, readEmptyStatus, type EmptyStatus } from './codec';
import type { Tokens } from './tokens';

const TYPE = 'snapshot-origin';

export interface SnapshotOriginParams {
  readonly origin: string;
}

export const snapshotOrigin = defineCodec<SnapshotOriginParams, EmptyStatus, SnapshotOriginParams>({
  type: TYPE,
  names: [TYPE, 'dmkit-origin'],
  normalize: (p) => ({ origin: checkDevice(TYPE, 'origin', p.origin) }),
  emit: (p) => p.origin,
  read: (t: Tokens) => ({ origin: t.device('origin') }),
  readStatus: readEmptyStatus,
});
