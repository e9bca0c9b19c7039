/** linear: `<device> <offset>`; INFO status is empty. */
import type { Sectors } from '../units';
import { checkDevice, checkSectors, defineCodec, readEmptyStatus, type EmptyStatus } from './codec';
import type { Tokens } from './tokens';

const TYPE = 'linear';

export interface LinearParams {
  readonly device: string;
  /** Start of the mapping on `device`. */
  readonly offset: Sectors;
}

function normalize(p: LinearParams): LinearParams {
  return { device: checkDevice(TYPE, 'device', p.device), offset: checkSectors(TYPE, 'offset', p.offset) };
}

function read(t: Tokens): LinearParams {
  return { device: t.device('device'), offset: t.sectors('offset') };
}

export const linear = defineCodec<LinearParams, EmptyStatus, LinearParams>({
  type: TYPE,
  names: [TYPE],
  normalize,
  emit: (p) => `${p.device} ${p.offset}`,
  read,
  readStatus: readEmptyStatus,
});
