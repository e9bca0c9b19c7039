/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * dmkit-era metadata: the on-disk format of the era target (compatible with the in-tree "era" target and
 * with era_check / era_dump / era_invalidate) behind a small API. The target never sees a btree, a bitset
 * or the superblock.
 *
 * Locking: the caller serialises every call except era_md_range_marked(), which is safe against a
 * concurrent era_md_rollover() (the current writeset is published under RCU).
 */
#ifndef DMKIT_ERA_METADATA_H
#define DMKIT_ERA_METADATA_H

#include <linux/blkdev.h>
#include "persistent-data/dm-block-manager.h"

/* Metadata block size in bytes and sectors (always 4 KiB). */
#define ERA_MD_BLOCK_BYTES 4096
#define ERA_MD_BLOCK_SECTORS (ERA_MD_BLOCK_BYTES >> SECTOR_SHIFT)

/* The era bitsets and the in-core bitmaps are indexed by a signed int: keep below 2^31 blocks. */
#define ERA_MD_MAX_BLOCKS ((1ULL << 31) - 1)

struct era_md;

struct era_md_usage {
	dm_block_t used;	/* metadata blocks in use */
	dm_block_t total;	/* metadata blocks on the device */
	u32 era;		/* current era */
	dm_block_t held_root;	/* block of the metadata snapshot, 0 when none is held */
};

/*
 * Opening and closing. era_md_open() formats an all-zero device when @may_format is set, and fails with
 * -EINVAL when the device was formatted for another data block size; on failure *@error says why in
 * words fit for ti->error. It does not allocate the in-core bitmaps: era_md_resize() does.
 */
struct era_md *era_md_open(struct block_device *bdev, u32 data_block_size, bool may_format,
			   const char **error);
void era_md_close(struct era_md *md);

/*
 * Transactions. era_md_pre_commit() writes and flushes everything but the superblock; era_md_commit()
 * runs it and, only if it succeeded, writes the superblock that makes the transaction durable.
 */
int era_md_pre_commit(struct era_md *md);
int era_md_commit(struct era_md *md);

/*
 * Size of the origin in blocks. era_md_resize() reallocates both in-core bitmaps and resizes the era
 * array; call it only while the target is suspended (preresume).
 */
u32 era_md_nr_blocks(struct era_md *md);
bool era_md_sized_for(struct era_md *md, u32 nr_blocks);
int era_md_resize(struct era_md *md, u32 nr_blocks);

/*
 * Eras. era_md_archive() moves the current writeset (if any) into the writeset tree; era_md_rollover()
 * archives and starts the next era with an empty writeset. Both leave the changes to the next commit.
 */
int era_md_archive(struct era_md *md);
int era_md_rollover(struct era_md *md);

/*
 * Marking writes. era_md_range_marked() tests the in-core bitmap of the current writeset (I/O path).
 * era_md_mark_on_disk() sets the on-disk bits and returns 1 when a commit is needed, 0 when every block
 * was already marked in core; era_md_mark_in_core() must only follow the commit that made those
 * on-disk bits durable.
 */
bool era_md_range_marked(struct era_md *md, u32 first, u32 last);
int era_md_mark_on_disk(struct era_md *md, u32 first, u32 last);
void era_md_mark_in_core(struct era_md *md, u32 first, u32 last);

/*
 * Digesting archived writesets into the era array, a bounded amount per call. era_md_digest_step()
 * returns 1 when more work remains, 0 when every archived writeset is digested, < 0 on error.
 */
bool era_md_digest_pending(struct era_md *md);
int era_md_digest_step(struct era_md *md);

/*
 * Metadata snapshots for userspace tools. era_md_take_snap() rolls the era over and commits first;
 * both leave their own changes to the next commit.
 */
bool era_md_snap_held(struct era_md *md);
int era_md_take_snap(struct era_md *md);
int era_md_drop_snap(struct era_md *md);

int era_md_usage(struct era_md *md, struct era_md_usage *usage);

#endif
