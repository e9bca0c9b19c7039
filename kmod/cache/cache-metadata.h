/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * dmkit-cache metadata: the in-tree cache target's on-disk format (versions 1 and 2) behind a small API.
 * The target never touches a btree, an array or the superblock itself.
 *
 * One object per metadata block device, shared by every table that names that device (the inactive
 * table loaded while the active one still writes gets the same object, hence the same block manager and
 * the same in-core roots): cache_md_get() / cache_md_put().
 */
#ifndef DMKIT_CACHE_METADATA_H
#define DMKIT_CACHE_METADATA_H

#include <linux/blkdev.h>
#include <linux/types.h>

#define CACHE_MD_BLOCK_SECTORS 8
#define CACHE_POLICY_NAME_BYTES 16

struct cache_md;

struct cache_md_stats {
	u32 read_hits;
	u32 read_misses;
	u32 write_hits;
	u32 write_misses;
};

/*
 * Take the metadata object of @bdev: the existing one, or a new one opened (formatted with
 * @format_version when block 0 is all zeroes). -EINVAL with *error set when the device's cache block size
 * is not @block_sectors.
 */
struct cache_md *cache_md_get(struct block_device *bdev, sector_t block_sectors,
			      unsigned int format_version, char **error);
void cache_md_put(struct cache_md *md);

unsigned int cache_md_version(struct cache_md *md);
/* Cache blocks the metadata describes (0 right after formatting). */
u32 cache_md_nr_cblocks(struct cache_md *md);
/* The last committed transaction was a clean shutdown (true for a freshly formatted device). */
bool cache_md_clean_shutdown(struct cache_md *md);
bool cache_md_needs_check(struct cache_md *md);
int cache_md_set_needs_check(struct cache_md *md);
void cache_md_set_read_only(struct cache_md *md);
void cache_md_set_read_write(struct cache_md *md);

/* Resize the mapping (and v2 dirty) arrays; new entries are unmapped. Drops the hints. */
int cache_md_resize(struct cache_md *md, u32 nr_cblocks);
void cache_md_discard_geometry(struct cache_md *md, sector_t *dblock_sectors, u64 *nr_dblocks);
int cache_md_resize_discards(struct cache_md *md, sector_t dblock_sectors, u64 nr_dblocks);

/*
 * Walk the committed mappings. @fn gets each valid cblock with its oblock, its dirty state (every block
 * is dirty when the last shutdown was not clean) and its hint (valid only when the stored hints belong to
 * @policy_name, @policy_major and a 4-byte hint size).
 */
typedef int (*cache_md_load_fn)(void *context, u32 cblock, u64 oblock, bool dirty, u32 hint,
				bool hint_valid);
int cache_md_load_mappings(struct cache_md *md, const char *policy_name, u32 policy_major,
			   cache_md_load_fn fn, void *context);
typedef int (*cache_md_discard_fn)(void *context, u64 dblock, bool discarded);
int cache_md_load_discards(struct cache_md *md, cache_md_discard_fn fn, void *context);

/* Record the state of one cblock for the next commit: @valid false unmaps it. Writes only changes. */
int cache_md_set_mapping(struct cache_md *md, u32 cblock, bool valid, u64 oblock, bool dirty);
int cache_md_set_discard(struct cache_md *md, u64 dblock, bool discarded);

/* Replace the hint array: @get returns the hint of each cblock. */
typedef u32 (*cache_md_hint_fn)(void *context, u32 cblock);
int cache_md_write_hints(struct cache_md *md, const char *policy_name, const u32 version[3],
			 cache_md_hint_fn get, void *context);

void cache_md_get_stats(struct cache_md *md, struct cache_md_stats *stats);
void cache_md_set_stats(struct cache_md *md, const struct cache_md_stats *stats);

/* Commit everything recorded: @clean_shutdown sets the flag, any other commit clears it. */
int cache_md_commit(struct cache_md *md, bool clean_shutdown);
/* Forget everything since the last commit (after a failed commit). */
int cache_md_abort(struct cache_md *md);

int cache_md_space(struct cache_md *md, u64 *used, u64 *total);

#endif
