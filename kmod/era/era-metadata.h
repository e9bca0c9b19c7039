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
 * A commit that lets more writes join after its pre-commit: @join runs between the pre-commit and the
 * superblock and may call era_md_mark_joining(), which marks a range and returns 1 when that costs no
 * new metadata block (its words are in bitset blocks this transaction wrote already), and otherwise
 * marks nothing and returns 0 (the write waits for the next commit). @join returns 0 or an error,
 * which fails the commit.
 */
typedef int (*era_md_join_fn)(void *context);
int era_md_commit_joining(struct era_md *md, era_md_join_fn join, void *context);
int era_md_mark_joining(struct era_md *md, u32 first, u32 last);

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
 * Marking writes. era_md_range_marked() tests the in-core bitmap of the current writeset (I/O path):
 * a block set there is durably marked on disk. era_md_mark() records blocks for the next commit;
 * era_md_marks_pending() says whether some wait for it. The commit writes them into the on-disk
 * writeset and, only once the transaction is durable, sets them in core. era_md_write_marks() writes
 * those recorded so far ahead of the commit, so that marks recorded after it still join the commit.
 */
bool era_md_range_marked(struct era_md *md, u32 first, u32 last);
int era_md_mark(struct era_md *md, u32 first, u32 last);
bool era_md_marks_pending(struct era_md *md);
int era_md_write_marks(struct era_md *md);

/*
 * Between commits, while no write waits: shadows the bitset blocks the last commit marked words in,
 * when the commit before guessed right that way, so the next commit need not copy them.
 */
int era_md_prepare_marks(struct era_md *md);

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
