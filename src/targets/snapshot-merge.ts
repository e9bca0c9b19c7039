/**
 * snapshot-merge (and dmkit-merge): the snapshot table (persistent stores only), loaded in place of
 * snapshot-origin to merge the COW back into the origin. Its INFO status is the snapshot's.
 */
import { snapshotCodec } from './snapshot';

export const snapshotMerge = snapshotCodec('snapshot-merge', ['snapshot-merge', 'dmkit-merge'], true);
