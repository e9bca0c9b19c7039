/**
 * Corruptions that panic the 6.1 kernel in code dmkit does not own (the exported persistent-data library,
 * the in-tree dm-cache). Each killed the lab VM with a BUG; they are upstream findings, recorded here with
 * what triggers them, skipped by default and counted as `known_upstream` (DMKIT_LAB_KNOWN_PANICS=1 runs
 * them anyway, e.g. on a kernel that may have fixed them).
 */
import type { Corruption } from './mutate';

const BITMAP_HEADER = 16; // {le32 csum, le32 not_used, le64 blocknr}, then 2-bit entries

/** True when some 2-bit space-map entry in the edit went from 0–2 to 3 ("look it up in the ref-count tree"). */
function makesOverflowEntry(c: Corruption): boolean {
  for (const e of c.edits) {
    const within = e.at % 4096;
    if (within < BITMAP_HEADER) continue;
    for (let i = 0; i < e.new.length; i++) {
      for (let k = 0; k < 8; k += 2) {
        const was = (e.old[i]! >> k) & 3;
        const now = (e.new[i]! >> k) & 3;
        if (was !== 3 && now === 3) return true;
      }
    }
  }
  return false;
}

/** Why this corruption is a known upstream panic for `type`, or null. */
export function knownPanic(type: string, c: Corruption): string | null {
  if (c.blockKind === 'sm-bitmap' && c.csum === 'fixed' && makesOverflowEntry(c)) {
    return 'persistent-data: a space-map bitmap entry of 3 with no ref-count tree entry hits BUG_ON(i < 0) in btree_get_overwrite_leaf (dm-btree.c:1186) on the next decrement (seen through dmkit-clone\'s commit)';
  }
  if (type === 'cache' && c.mode === 'field' && c.field === 'hint_root' && c.csum === 'fixed') {
    return 'dm-cache: a hint array that fails to load in preresume leaks a bufio buffer, then BUG in dm_bufio_client_destroy (dm-bufio.c:1644)';
  }
  return null;
}

export function runKnownPanics(): boolean {
  return process.env['DMKIT_LAB_KNOWN_PANICS'] === '1';
}
