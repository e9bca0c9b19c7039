/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * dmkit-clone metadata: the whole on-disk format of the clone target behind a small API.
 *
 * The format is the one of the in-tree dm-clone (superblock magic 0x8af27f64, version 1, one
 * persistent-data bitset with a bit per region), so either implementation opens the other's metadata.
 *
 * Regions are marked hydrated in core first (safe from interrupt context); a commit writes them out in
 * two phases so the target can make the data durable in between:
 *
 *   clone_md_pre_commit()  closes the transaction: later marks go to the next one. The closed
 *                          transaction's bits are written into the bitset and every metadata block but
 *                          the superblock reaches the disk.
 *   clone_md_commit()      writes the superblock, which makes the closed transaction the live one.
 *
 * After a failed pre-commit or commit call clone_md_abort(): it rolls back to the last committed
 * transaction and reloads the in-core map from it.
 */
#ifndef DMKIT_CLONE_METADATA_H
#define DMKIT_CLONE_METADATA_H

#include <linux/blkdev.h>
#include <linux/types.h>

#include "persistent-data/dm-space-map-metadata.h"

/* Metadata block size in sectors, as reported in the status line. */
#define CLONE_MD_BLOCK_SECTORS DM_SM_METADATA_BLOCK_SIZE

/* Only this many sectors of the metadata device are ever used. */
#define CLONE_MD_MAX_SECTORS DM_SM_METADATA_MAX_SECTORS

struct clone_md;

/*
 * Open the metadata on @bdev, formatting it when its superblock is all zeroes. On failure *error is
 * set to a reason fit for ti->error; -EINVAL means the stored region size or target size differ from
 * the given ones.
 */
struct clone_md *clone_md_open(struct block_device *bdev, sector_t target_sectors,
			       sector_t region_sectors, char **error);
void clone_md_close(struct clone_md *md);

/* Two-phase commit; see the top of this file. */
int clone_md_pre_commit(struct clone_md *md);
int clone_md_commit(struct clone_md *md);

/* True when regions were marked since the last successful commit. */
bool clone_md_changed(struct clone_md *md);

/*
 * Drop the open transaction: reopen the last committed one and reload the in-core map from it. If
 * that fails too the metadata is unusable and every later call fails.
 */
int clone_md_abort(struct clone_md *md);

/* Mode helpers: marks and commits fail with -EPERM while read-only. */
void clone_md_set_read_only(struct clone_md *md);
void clone_md_set_read_write(struct clone_md *md);

/* Mark one region, or every not yet hydrated region of a range, hydrated. Callable from any context. */
int clone_md_set_hydrated(struct clone_md *md, unsigned long region);
int clone_md_set_range_hydrated(struct clone_md *md, unsigned long first, unsigned long count);

bool clone_md_is_hydrated(struct clone_md *md, unsigned long region);
bool clone_md_range_is_hydrated(struct clone_md *md, unsigned long first, unsigned long count);
unsigned long clone_md_next_unhydrated(struct clone_md *md, unsigned long from);
unsigned long clone_md_hydrated_count(struct clone_md *md);
bool clone_md_fully_hydrated(struct clone_md *md);

/* Metadata space in blocks of CLONE_MD_BLOCK_SECTORS. */
int clone_md_space(struct clone_md *md, dm_block_t *used, dm_block_t *total);

#endif
