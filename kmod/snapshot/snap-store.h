/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Exception stores of dmkit-snapshot: where a snapshot keeps the table "origin chunk -> COW chunk".
 *
 *   - persistent (P, PO): on the COW device, in the in-tree snapshot target's format, so either target
 *     can activate a COW device the other wrote (see snap-store.c for the layout);
 *   - transient (N): in memory only; the COW device holds data chunks from chunk 0 on.
 *
 * Callers serialise: snap_store_alloc() under the snapshot's spinlock (it never sleeps); add, commit,
 * drop and the merge calls from one worker at a time (they do synchronous I/O).
 */
#ifndef DMKIT_SNAP_STORE_H
#define DMKIT_SNAP_STORE_H

#include <linux/device-mapper.h>
#include <linux/types.h>

typedef u64 snap_chunk_t;

struct snap_store;

/* Called for every exception found on the COW device while loading. */
typedef int (*snap_load_fn)(void *context, snap_chunk_t old_chunk, snap_chunk_t new_chunk);

/*
 * chunk_sectors 0 (persistent only): take the chunk size from the header, or the default for a new COW.
 * On failure returns an ERR_PTR and points *error at a static description.
 */
struct snap_store *snap_store_create(struct dm_dev *cow, bool persistent, unsigned int chunk_sectors,
				     const char **error);
void snap_store_destroy(struct snap_store *st);

/*
 * Reads the header and every exception (persistent), or formats a new COW device. Returns 0, 1 when
 * the header says the snapshot was invalidated, or a negative errno with *error set.
 */
int snap_store_load(struct snap_store *st, snap_load_fn fn, void *context, const char **error);

unsigned int snap_store_chunk_sectors(struct snap_store *st);
bool snap_store_persistent(struct snap_store *st);

/* Reserves a COW chunk for a new exception; -ENOSPC when the COW device is full. Never sleeps. */
int snap_store_alloc(struct snap_store *st, snap_chunk_t *new_chunk);

/* Records a copied exception; writes the area when it fills. The exception is durable after commit. */
int snap_store_add(struct snap_store *st, snap_chunk_t old_chunk, snap_chunk_t new_chunk);
/* Writes the current area with PREFLUSH|FUA if exceptions were added since the last write. */
int snap_store_commit(struct snap_store *st);

/* Marks the snapshot invalid on disk (header valid = 0). */
int snap_store_drop(struct snap_store *st);
unsigned int snap_store_commit_delay_ms(void);

void snap_store_usage(struct snap_store *st, sector_t *allocated, sector_t *total, sector_t *metadata);

/*
 * Merge, from the last exception backwards. prepare returns how many exceptions end the current area
 * as one run of consecutive origin and COW chunks (0: nothing left to merge, < 0: error), with the run's
 * first origin and COW chunk. commit forgets the last n exceptions on disk.
 */
int snap_store_merge_prepare(struct snap_store *st, unsigned int max, snap_chunk_t *old_chunk,
			     snap_chunk_t *new_chunk);
int snap_store_merge_commit(struct snap_store *st, unsigned int n);

#endif
