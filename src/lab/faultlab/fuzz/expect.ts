/**
 * Must-refuse inputs that the in-tree 6.1 targets are known to accept. They are counted and reported
 * (`upstream_lenient`), not failed: the code is upstream's, and each entry names the line of the 6.1
 * source that explains it. A dmkit-* target gets no such allowance: its acceptance is a failure.
 */
import type { TableCase } from './mutate';

export interface Leniency {
  readonly type: string;
  readonly why: string;
  readonly matches: (c: TableCase) => boolean;
}

const sharing = (c: TableCase, ...roles: string[]): boolean => c.mutations[0] === 'dev-same' && roles.every((r) => (c.mustReject ?? '').includes(r));
/**
 * A count saying fewer words than follow (as dm_read_arg reads it: u32, wrapping): the constructor stops
 * reading there and ignores the rest. Matches both count-lie and a num-edge on a count.
 */
const saysFewer = (c: TableCase, field: string): boolean => {
  const m = /^(.*) count (?:says (\d+), gives (\d+)|"(\d+)" for (\d+) words)$/.exec(c.mustReject ?? '');
  if (!m || m[1] !== field) return false;
  const says = BigInt(m[2] ?? m[4]!) % (1n << 32n);
  return says < BigInt(m[3] ?? m[5]!);
};

export const UPSTREAM_LENIENT: readonly Leniency[] = [
  {
    type: 'era',
    why: 'era_ctr (dm-era-target.c) opens metadata and origin with dm_get_device and never compares them',
    matches: (c) => sharing(c, 'meta', 'origin'),
  },
  {
    type: 'cache',
    why: 'cache_ctr/parse_cache_args (dm-cache-target.c) never compare the metadata, cache and origin devices',
    matches: (c) => sharing(c, 'meta'),
  },
  {
    type: 'cache',
    why: 'parse_cache_args reads <#policy args> words and ignores whatever follows them',
    matches: (c) => saysFewer(c, 'policy args'),
  },
  {
    type: 'log-writes',
    why: 'log_writes_ctr (dm-log-writes.c) never compares the device and the log device',
    matches: (c) => sharing(c, 'log', 'data'),
  },
  {
    type: 'thin-pool',
    why: 'pool_ctr/parse_pool_features (dm-thin.c) read <#features> words and ignore whatever follows',
    matches: (c) => saysFewer(c, 'features'),
  },
  {
    type: 'snapshot',
    why: 'snapshot_ctr/parse_snapshot_features (dm-snap.c) read <#features> words and ignore whatever follows',
    matches: (c) => saysFewer(c, 'features'),
  },
  {
    type: 'snapshot',
    why: 'dm_exception_store_create (dm-exception-store.c) looks only at the first letter of the store type (P or N)',
    matches: (c) => c.mutations[0] === 'unknown-word' && /^unknown store "[PpNn]/.test(c.mustReject ?? ''),
  },
  {
    type: 'snapshot-merge',
    why: 'snapshot_ctr/parse_snapshot_features (dm-snap.c) read <#features> words and ignore whatever follows',
    matches: (c) => saysFewer(c, 'features'),
  },
  {
    type: 'snapshot-merge',
    why: 'dm_exception_store_create (dm-exception-store.c) looks only at the first letter of the store type (P or N)',
    matches: (c) => c.mutations[0] === 'unknown-word' && /^unknown store "[PpNn]/.test(c.mustReject ?? ''),
  },
  {
    type: 'flakey',
    why: 'flakey_ctr/parse_features (dm-flakey.c) read <#features> words and ignore whatever follows',
    matches: (c) => saysFewer(c, 'features'),
  },
];

export function upstreamLeniency(c: TableCase): Leniency | undefined {
  return UPSTREAM_LENIENT.find((l) => l.type === c.type && l.matches(c));
}
