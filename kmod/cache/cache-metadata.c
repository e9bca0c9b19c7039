// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-cache metadata. On disk (4 KiB persistent-data blocks), the in-tree cache target's format:
 *
 *   block 0      superblock: csum, flags (clean shutdown, needs check), blocknr, uuid, magic, version,
 *                policy name/version/hint size, metadata space map root, the roots of the arrays below,
 *                discard geometry, cache block size, metadata block size, number of cache blocks,
 *                feature flags, hit/miss counters, and (version 2) the dirty bitset root
 *   elsewhere    a dm_array of __le64 mappings, one per cache block: (oblock << 16) | flags, where flags
 *                are VALID and (version 1 only) DIRTY; a dm_array of __le32 policy hints; a dm_bitset of
 *                discarded origin ranges; (version 2) a dm_bitset of dirty cache blocks
 *
 * Fix "cache-shared-metadata": a table reload constructs the new table while the old one is live. Two
 * objects on one device means two block managers: the new one reads a superblock and space map the old
 * one is still changing, and after the swap it allocates over blocks the old one committed. So every
 * table naming a device gets the same refcounted object from one global list, keyed by the block device.
 */
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/slab.h>
#include <linux/device-mapper.h>

#include "persistent-data/dm-array.h"
#include "persistent-data/dm-bitset.h"
#include "persistent-data/dm-block-manager.h"
#include "persistent-data/dm-space-map.h"
#include "persistent-data/dm-transaction-manager.h"

#include "dmkit-common.h"
#include "cache-metadata.h"

#define DM_MSG_PREFIX "dmkit-cache metadata"

/* After DM_MSG_PREFIX: its validator logs with DMERR. */
#include "dmkit-sb.h"

#define SB_BLOCK 0
#define SB_MAGIC 1623043	/* 06142003 octal */
#define SB_CSUM_SALT 9031977
#define SM_ROOT_BYTES 128
#define MIN_VERSION 1
#define MAX_VERSION 2
#define MAX_HELD_BLOCKS 5
#define HINT_BYTES 4

#define SB_FLAG_CLEAN_SHUTDOWN (1U << 0)
#define SB_FLAG_NEEDS_CHECK (1U << 1)

#define MAP_VALID 1ULL
#define MAP_DIRTY 2ULL
#define MAP_FLAG_BITS 16

struct cache_sb_disk {
	__le32 csum;
	__le32 flags;
	__le64 blocknr;
	u8 uuid[16];
	__le64 magic;
	__le32 version;
	u8 policy[CACHE_POLICY_NAME_BYTES];
	__le32 hint_bytes;
	u8 metadata_space_map_root[SM_ROOT_BYTES];
	__le64 mapping_array_root;
	__le64 hint_array_root;
	__le64 discard_bitset_root;
	__le64 discard_block_sectors;
	__le64 nr_discard_blocks;
	__le32 cache_block_sectors;
	__le32 metadata_block_sectors;
	__le32 nr_cache_blocks;
	__le32 features_compat;
	__le32 features_compat_ro;
	__le32 features_incompat;
	__le32 stat_read_hits;
	__le32 stat_read_misses;
	__le32 stat_write_hits;
	__le32 stat_write_misses;
	__le32 policy_version_triple[3];
	__le64 dirty_bitset_root;	/* version 2 only */
} __packed;

struct cache_md {
	/* On the global list while @refs > 0 (never, with the fix reverted). */
	struct list_head list;
	refcount_t refs;
	struct block_device *bdev;
	sector_t block_sectors;

	/* Serialises every metadata access of every table sharing this object. */
	struct mutex lock;
	unsigned int version;
	struct dm_block_manager *bm;
	struct dm_space_map *sm;
	struct dm_transaction_manager *tm;
	struct dm_array_info map_info;
	struct dm_array_info hint_info;
	struct dm_disk_bitset dirty_info;
	struct dm_disk_bitset discard_info;

	/* The superblock of the open transaction. */
	u32 flags;
	dm_block_t map_root;
	dm_block_t hint_root;
	dm_block_t dirty_root;
	dm_block_t discard_root;
	u64 discard_block_size;
	u64 discard_nr_blocks;
	u32 cache_blocks;
	char policy_name[CACHE_POLICY_NAME_BYTES];
	u32 policy_version[3];
	u32 policy_hint_size;
	struct cache_md_stats stats;
	u8 sm_root[SM_ROOT_BYTES];

	/* The persistent-data objects are gone (a failed rollback): everything fails. */
	bool broken;
	bool read_only;
};

static DEFINE_MUTEX(md_table_lock);
static LIST_HEAD(md_table);

/*----------------------------------------------------------------------------------------------*/
/* Superblock */

DMKIT_SB_HEAD_CHECK(struct cache_sb_disk);
DMKIT_SB_VALIDATOR(sb_validator, "cache", SB_MAGIC, SB_CSUM_SALT, MIN_VERSION, MAX_VERSION);

static int sb_is_blank(struct dm_block_manager *bm, bool *blank)
{
	struct dm_block *b;
	int r;

	r = dm_bm_read_lock(bm, SB_BLOCK, NULL, &b);
	if (r)
		return r;
	*blank = !memchr_inv(dm_block_data(b), 0, dm_bm_block_size(bm));
	dm_bm_unlock(b);
	return 0;
}

static void fill_superblock(struct cache_md *md, struct cache_sb_disk *sb)
{
	memset(sb, 0, sizeof(*sb));
	sb->flags = cpu_to_le32(md->flags);
	sb->magic = cpu_to_le64(SB_MAGIC);
	sb->version = cpu_to_le32(md->version);
	memcpy(sb->policy, md->policy_name, sizeof(sb->policy));
	sb->hint_bytes = cpu_to_le32(md->policy_hint_size);
	memcpy(sb->metadata_space_map_root, md->sm_root, SM_ROOT_BYTES);
	sb->mapping_array_root = cpu_to_le64(md->map_root);
	sb->hint_array_root = cpu_to_le64(md->hint_root);
	sb->discard_bitset_root = cpu_to_le64(md->discard_root);
	sb->discard_block_sectors = cpu_to_le64(md->discard_block_size);
	sb->nr_discard_blocks = cpu_to_le64(md->discard_nr_blocks);
	sb->cache_block_sectors = cpu_to_le32(md->block_sectors);
	sb->metadata_block_sectors = cpu_to_le32(CACHE_MD_BLOCK_SECTORS);
	sb->nr_cache_blocks = cpu_to_le32(md->cache_blocks);
	sb->stat_read_hits = cpu_to_le32(md->stats.read_hits);
	sb->stat_read_misses = cpu_to_le32(md->stats.read_misses);
	sb->stat_write_hits = cpu_to_le32(md->stats.write_hits);
	sb->stat_write_misses = cpu_to_le32(md->stats.write_misses);
	sb->policy_version_triple[0] = cpu_to_le32(md->policy_version[0]);
	sb->policy_version_triple[1] = cpu_to_le32(md->policy_version[1]);
	sb->policy_version_triple[2] = cpu_to_le32(md->policy_version[2]);
	if (md->version >= 2)
		sb->dirty_bitset_root = cpu_to_le64(md->dirty_root);
}

static void read_superblock(struct cache_md *md, struct cache_sb_disk *sb)
{
	md->version = le32_to_cpu(sb->version);
	md->flags = le32_to_cpu(sb->flags);
	memcpy(md->policy_name, sb->policy, sizeof(md->policy_name));
	md->policy_name[CACHE_POLICY_NAME_BYTES - 1] = '\0';
	md->policy_hint_size = le32_to_cpu(sb->hint_bytes);
	md->map_root = le64_to_cpu(sb->mapping_array_root);
	md->hint_root = le64_to_cpu(sb->hint_array_root);
	md->discard_root = le64_to_cpu(sb->discard_bitset_root);
	md->discard_block_size = le64_to_cpu(sb->discard_block_sectors);
	md->discard_nr_blocks = le64_to_cpu(sb->nr_discard_blocks);
	md->cache_blocks = le32_to_cpu(sb->nr_cache_blocks);
	md->stats.read_hits = le32_to_cpu(sb->stat_read_hits);
	md->stats.read_misses = le32_to_cpu(sb->stat_read_misses);
	md->stats.write_hits = le32_to_cpu(sb->stat_write_hits);
	md->stats.write_misses = le32_to_cpu(sb->stat_write_misses);
	md->policy_version[0] = le32_to_cpu(sb->policy_version_triple[0]);
	md->policy_version[1] = le32_to_cpu(sb->policy_version_triple[1]);
	md->policy_version[2] = le32_to_cpu(sb->policy_version_triple[2]);
	md->dirty_root = md->version >= 2 ? le64_to_cpu(sb->dirty_bitset_root) : 0;
}

/* Flush every structure but the superblock, then copy the space map root the superblock will name. */
static int write_all_but_superblock(struct cache_md *md)
{
	size_t len;
	int r;

	r = dm_bitset_flush(&md->discard_info, md->discard_root, &md->discard_root);
	if (!r && md->version >= 2)
		r = dm_bitset_flush(&md->dirty_info, md->dirty_root, &md->dirty_root);
	if (!r)
		r = dm_tm_pre_commit(md->tm);
	if (!r)
		r = dm_sm_root_size(md->sm, &len);
	if (r)
		return r;
	if (len > SM_ROOT_BYTES)
		return -EINVAL;
	return dm_sm_copy_root(md->sm, md->sm_root, len);
}

static int write_superblock(struct cache_md *md)
{
	struct dm_block *b;
	int r;

	r = dm_bm_write_lock_zero(md->bm, SB_BLOCK, &sb_validator.v, &b);
	if (r)
		return r;
	fill_superblock(md, dm_block_data(b));
	/* Unlocks @b and writes it after everything else: the superblock goes out last. */
	return dm_tm_commit(md->tm, b);
}

/*----------------------------------------------------------------------------------------------*/
/* Opening and closing the persistent-data structures */

static void init_infos(struct cache_md *md)
{
	struct dm_btree_value_type vt = { .size = sizeof(__le64) };

	dm_array_info_init(&md->map_info, md->tm, &vt);
	vt.size = sizeof(__le32);
	dm_array_info_init(&md->hint_info, md->tm, &vt);
	dm_disk_bitset_init(md->tm, &md->dirty_info);
	dm_disk_bitset_init(md->tm, &md->discard_info);
}

static int format_device(struct cache_md *md, unsigned int version)
{
	int r;

	r = dm_tm_create_with_sm(md->bm, SB_BLOCK, &md->tm, &md->sm);
	if (r) {
		DMERR("cannot create the transaction manager: %d", r);
		return r;
	}
	init_infos(md);
	md->version = version;
	md->flags = SB_FLAG_CLEAN_SHUTDOWN;
	md->cache_blocks = 0;
	md->hint_root = 0;
	md->dirty_root = 0;
	md->discard_block_size = 0;
	md->discard_nr_blocks = 0;

	r = dm_array_empty(&md->map_info, &md->map_root);
	if (!r && version >= 2)
		r = dm_bitset_empty(&md->dirty_info, &md->dirty_root);
	if (!r)
		r = dm_bitset_empty(&md->discard_info, &md->discard_root);
	if (!r)
		r = write_all_but_superblock(md);
	if (!r)
		r = write_superblock(md);
	if (r) {
		DMERR("cannot format the metadata device: %d", r);
		dm_sm_destroy(md->sm);
		dm_tm_destroy(md->tm);
	}
	return r;
}

static int open_device(struct cache_md *md, char **error)
{
	struct cache_sb_disk *sb;
	struct dm_block *b;
	int r;

	r = dm_bm_read_lock(md->bm, SB_BLOCK, &sb_validator.v, &b);
	if (r) {
		DMERR("cannot read the superblock: %d", r);
		return r;
	}
	sb = dm_block_data(b);

	r = -EINVAL;
	if (le32_to_cpu(sb->features_incompat)) {
		*error = "Metadata has unsupported incompatible features";
		goto out;
	}
	if (le32_to_cpu(sb->features_compat_ro) && !bdev_read_only(md->bdev)) {
		*error = "Metadata has unsupported features for writing";
		goto out;
	}
	if (le32_to_cpu(sb->metadata_block_sectors) != CACHE_MD_BLOCK_SECTORS) {
		*error = "Metadata block size is not 8 sectors";
		goto out;
	}
	if (le32_to_cpu(sb->cache_block_sectors) != md->block_sectors) {
		*error = "Cache block size differs from the one in the metadata";
		goto out;
	}

	r = dm_tm_open_with_sm(md->bm, SB_BLOCK, sb->metadata_space_map_root,
			       sizeof(sb->metadata_space_map_root), &md->tm, &md->sm);
	if (r) {
		DMERR("cannot open the transaction manager: %d", r);
		goto out;
	}
	init_infos(md);
	read_superblock(md, sb);
out:
	dm_bm_unlock(b);
	return r;
}

static int open_persistent(struct cache_md *md, bool may_format, unsigned int version, char **error)
{
	bool blank;
	int r;

	md->bm = dm_block_manager_create(md->bdev, CACHE_MD_BLOCK_SECTORS << SECTOR_SHIFT,
					 MAX_HELD_BLOCKS);
	if (IS_ERR(md->bm)) {
		r = PTR_ERR(md->bm);
		DMERR("cannot create the block manager: %d", r);
		return r;
	}

	r = sb_is_blank(md->bm, &blank);
	if (r)
		DMERR("cannot read block 0 of the metadata device: %d", r);
	else if (blank && may_format)
		r = format_device(md, version);
	else if (blank)
		r = -ENODATA;
	else
		r = open_device(md, error);

	if (r)
		dm_block_manager_destroy(md->bm);
	return r;
}

static void close_persistent(struct cache_md *md)
{
	dm_sm_destroy(md->sm);
	dm_tm_destroy(md->tm);
	dm_block_manager_destroy(md->bm);
}

static struct cache_md *md_open(struct block_device *bdev, sector_t block_sectors,
				unsigned int version, char **error)
{
	struct cache_md *md;
	int r;

	md = kzalloc(sizeof(*md), GFP_KERNEL);
	if (!md)
		return ERR_PTR(-ENOMEM);
	INIT_LIST_HEAD(&md->list);
	refcount_set(&md->refs, 1);
	mutex_init(&md->lock);
	md->bdev = bdev;
	md->block_sectors = block_sectors;

	r = open_persistent(md, true, version, error);
	if (r) {
		kfree(md);
		return ERR_PTR(r);
	}
	return md;
}

static void md_close(struct cache_md *md)
{
	if (!md->broken)
		close_persistent(md);
	kfree(md);
}

/*----------------------------------------------------------------------------------------------*/
/* The shared-object table */

static struct cache_md *table_lookup(struct block_device *bdev)
{
	struct cache_md *md;

	list_for_each_entry(md, &md_table, list)
		if (md->bdev == bdev)
			return md;
	return NULL;
}

/* Called with md_table_lock held: take a reference on @md if it fits the table asking. */
static struct cache_md *table_take(struct cache_md *md, sector_t block_sectors, char **error)
{
	if (md->block_sectors != block_sectors) {
		*error = "Cache block size differs from the table sharing this metadata device";
		return ERR_PTR(-EINVAL);
	}
	refcount_inc(&md->refs);
	return md;
}

struct cache_md *cache_md_get(struct block_device *bdev, sector_t block_sectors,
			      unsigned int format_version, char **error)
{
	struct cache_md *md, *other;

	if (dmkit_reverted(CACHE_SHARED_METADATA))
		return md_open(bdev, block_sectors, format_version, error);

	mutex_lock(&md_table_lock);
	md = table_lookup(bdev);
	if (md)
		md = table_take(md, block_sectors, error);
	mutex_unlock(&md_table_lock);
	if (md)
		return md;

	/* Opened without the table lock (it does I/O), so another table may have won meanwhile. */
	md = md_open(bdev, block_sectors, format_version, error);
	if (IS_ERR(md))
		return md;

	mutex_lock(&md_table_lock);
	other = table_lookup(bdev);
	if (other) {
		other = table_take(other, block_sectors, error);
		mutex_unlock(&md_table_lock);
		md_close(md);
		return other;
	}
	list_add(&md->list, &md_table);
	mutex_unlock(&md_table_lock);
	return md;
}

void cache_md_put(struct cache_md *md)
{
	if (dmkit_reverted(CACHE_SHARED_METADATA)) {
		md_close(md);
		return;
	}

	mutex_lock(&md_table_lock);
	if (!refcount_dec_and_test(&md->refs)) {
		mutex_unlock(&md_table_lock);
		return;
	}
	list_del(&md->list);
	mutex_unlock(&md_table_lock);
	md_close(md);
}

/*----------------------------------------------------------------------------------------------*/
/* Queries and modes */

static bool md_writable(struct cache_md *md)
{
	return !md->broken && !md->read_only && !dm_bm_is_read_only(md->bm);
}

unsigned int cache_md_version(struct cache_md *md)
{
	return md->version;
}

u32 cache_md_nr_cblocks(struct cache_md *md)
{
	u32 n;

	mutex_lock(&md->lock);
	n = md->cache_blocks;
	mutex_unlock(&md->lock);
	return n;
}

bool cache_md_clean_shutdown(struct cache_md *md)
{
	bool clean;

	mutex_lock(&md->lock);
	clean = md->flags & SB_FLAG_CLEAN_SHUTDOWN;
	mutex_unlock(&md->lock);
	return clean;
}

bool cache_md_needs_check(struct cache_md *md)
{
	bool check;

	mutex_lock(&md->lock);
	check = md->flags & SB_FLAG_NEEDS_CHECK;
	mutex_unlock(&md->lock);
	return check;
}

/* Only the flag changes: the superblock is rewritten in place, naming the last committed roots. */
int cache_md_set_needs_check(struct cache_md *md)
{
	struct cache_sb_disk *sb;
	struct dm_block *b;
	int r = -EIO;

	mutex_lock(&md->lock);
	md->flags |= SB_FLAG_NEEDS_CHECK;
	if (md->broken || dm_bm_is_read_only(md->bm))
		goto out;
	r = dm_bm_write_lock(md->bm, SB_BLOCK, &sb_validator.v, &b);
	if (r)
		goto out;
	sb = dm_block_data(b);
	sb->flags = cpu_to_le32(le32_to_cpu(sb->flags) | SB_FLAG_NEEDS_CHECK);
	dm_bm_unlock(b);
	r = dm_bm_flush(md->bm);
out:
	mutex_unlock(&md->lock);
	return r;
}

static void set_read_only(struct cache_md *md, bool ro)
{
	mutex_lock(&md->lock);
	md->read_only = ro;
	if (!md->broken) {
		if (ro)
			dm_bm_set_read_only(md->bm);
		else
			dm_bm_set_read_write(md->bm);
	}
	mutex_unlock(&md->lock);
}

void cache_md_set_read_only(struct cache_md *md)
{
	set_read_only(md, true);
}

void cache_md_set_read_write(struct cache_md *md)
{
	set_read_only(md, false);
}

int cache_md_space(struct cache_md *md, u64 *used, u64 *total)
{
	dm_block_t nr_free, nr;
	int r = -EIO;

	mutex_lock(&md->lock);
	if (!md->broken) {
		r = dm_sm_get_nr_blocks(md->sm, &nr);
		if (!r)
			r = dm_sm_get_nr_free(md->sm, &nr_free);
		if (!r) {
			*total = nr;
			*used = nr - nr_free;
		}
	}
	mutex_unlock(&md->lock);
	return r;
}

void cache_md_get_stats(struct cache_md *md, struct cache_md_stats *stats)
{
	mutex_lock(&md->lock);
	*stats = md->stats;
	mutex_unlock(&md->lock);
}

void cache_md_set_stats(struct cache_md *md, const struct cache_md_stats *stats)
{
	mutex_lock(&md->lock);
	md->stats = *stats;
	mutex_unlock(&md->lock);
}

void cache_md_discard_geometry(struct cache_md *md, sector_t *dblock_sectors, u64 *nr_dblocks)
{
	mutex_lock(&md->lock);
	*dblock_sectors = md->discard_block_size;
	*nr_dblocks = md->discard_nr_blocks;
	mutex_unlock(&md->lock);
}

/*----------------------------------------------------------------------------------------------*/
/* Changes */

static int drop_hints(struct cache_md *md)
{
	int r = 0;

	if (md->hint_root)
		r = dm_array_del(&md->hint_info, md->hint_root);
	if (!r)
		md->hint_root = 0;
	return r;
}

int cache_md_resize(struct cache_md *md, u32 nr_cblocks)
{
	__le64 unmapped = cpu_to_le64(0);
	int r = -EPERM;

	mutex_lock(&md->lock);
	if (!md_writable(md))
		goto out;
	r = drop_hints(md);
	if (r)
		goto out;
	__dm_bless_for_disk(&unmapped);
	r = dm_array_resize(&md->map_info, md->map_root, md->cache_blocks, nr_cblocks, &unmapped,
			    &md->map_root);
	if (!r && md->version >= 2)
		r = dm_bitset_resize(&md->dirty_info, md->dirty_root, md->cache_blocks, nr_cblocks,
				     false, &md->dirty_root);
	if (!r)
		md->cache_blocks = nr_cblocks;
out:
	mutex_unlock(&md->lock);
	return r;
}

int cache_md_resize_discards(struct cache_md *md, sector_t dblock_sectors, u64 nr_dblocks)
{
	int r = -EPERM;

	mutex_lock(&md->lock);
	if (!md_writable(md))
		goto out;
	/* A new geometry makes the old bits meaningless: start over with nothing discarded. */
	if (dblock_sectors != md->discard_block_size && md->discard_nr_blocks) {
		r = dm_bitset_resize(&md->discard_info, md->discard_root, md->discard_nr_blocks, 0,
				     false, &md->discard_root);
		if (r)
			goto out;
		md->discard_nr_blocks = 0;
	}
	r = dm_bitset_resize(&md->discard_info, md->discard_root, md->discard_nr_blocks, nr_dblocks,
			     false, &md->discard_root);
	if (!r) {
		md->discard_block_size = dblock_sectors;
		md->discard_nr_blocks = nr_dblocks;
	}
out:
	mutex_unlock(&md->lock);
	return r;
}

static u64 pack_mapping(struct cache_md *md, bool valid, u64 oblock, bool dirty)
{
	u64 v;

	if (!valid)
		return 0;
	v = (oblock << MAP_FLAG_BITS) | MAP_VALID;
	if (dirty && md->version < 2)
		v |= MAP_DIRTY;
	return v;
}

/* Called with md->lock held, on writable metadata. */
static int set_mapping_locked(struct cache_md *md, u32 cblock, bool valid, u64 oblock, bool dirty)
{
	__le64 old_le, new_le;
	bool old_dirty;
	int r;

	r = dm_array_get_value(&md->map_info, md->map_root, cblock, &old_le);
	if (r)
		return r;
	new_le = cpu_to_le64(pack_mapping(md, valid, oblock, dirty));
	if (new_le != old_le) {
		__dm_bless_for_disk(&new_le);
		r = dm_array_set_value(&md->map_info, md->map_root, cblock, &new_le, &md->map_root);
		if (r)
			return r;
	}
	if (md->version < 2)
		return 0;
	dirty = dirty && valid;
	r = dm_bitset_test_bit(&md->dirty_info, md->dirty_root, cblock, &md->dirty_root, &old_dirty);
	if (r || old_dirty == dirty)
		return r;
	if (dirty)
		return dm_bitset_set_bit(&md->dirty_info, md->dirty_root, cblock, &md->dirty_root);
	return dm_bitset_clear_bit(&md->dirty_info, md->dirty_root, cblock, &md->dirty_root);
}

int cache_md_set_mapping(struct cache_md *md, u32 cblock, bool valid, u64 oblock, bool dirty)
{
	int r = -EPERM;

	mutex_lock(&md->lock);
	if (!md_writable(md))
		goto out;
	r = -ERANGE;
	if (cblock >= md->cache_blocks)
		goto out;
	r = set_mapping_locked(md, cblock, valid, oblock, dirty);
out:
	mutex_unlock(&md->lock);
	return r;
}

int cache_md_set_discard(struct cache_md *md, u64 dblock, bool discarded)
{
	int r = -EPERM;

	mutex_lock(&md->lock);
	if (!md_writable(md))
		goto out;
	r = -ERANGE;
	if (dblock >= md->discard_nr_blocks)
		goto out;
	if (discarded)
		r = dm_bitset_set_bit(&md->discard_info, md->discard_root, dblock, &md->discard_root);
	else
		r = dm_bitset_clear_bit(&md->discard_info, md->discard_root, dblock, &md->discard_root);
out:
	mutex_unlock(&md->lock);
	return r;
}

struct hint_source {
	cache_md_hint_fn get;
	void *context;
};

static int hint_value(u32 index, void *value_le, void *context)
{
	struct hint_source *src = context;
	__le32 v = cpu_to_le32(src->get(src->context, index));

	memcpy(value_le, &v, sizeof(v));
	return 0;
}

int cache_md_write_hints(struct cache_md *md, const char *policy_name, const u32 version[3],
			 cache_md_hint_fn get, void *context)
{
	struct hint_source src = { .get = get, .context = context };
	int r = -EPERM;

	mutex_lock(&md->lock);
	if (!md_writable(md))
		goto out;
	r = -EINVAL;
	if (!policy_name[0] || strlen(policy_name) >= CACHE_POLICY_NAME_BYTES)
		goto out;
	r = drop_hints(md);
	if (r)
		goto out;
	memset(md->policy_name, 0, sizeof(md->policy_name));
	strscpy(md->policy_name, policy_name, sizeof(md->policy_name));
	memcpy(md->policy_version, version, sizeof(md->policy_version));
	md->policy_hint_size = HINT_BYTES;
	r = dm_array_new(&md->hint_info, &md->hint_root, md->cache_blocks, hint_value, &src);
out:
	mutex_unlock(&md->lock);
	return r;
}

/*----------------------------------------------------------------------------------------------*/
/* Loading */

struct map_walk {
	bool all_dirty;
	bool hints_valid;
	cache_md_load_fn fn;
	void *context;
};

/* Called with md->lock held. */
static int load_one(struct cache_md *md, struct map_walk *w, u32 cblock)
{
	__le64 v_le;
	__le32 hint_le = 0;
	bool dirty;
	u64 v;
	int r;

	r = dm_array_get_value(&md->map_info, md->map_root, cblock, &v_le);
	if (r)
		return r;
	v = le64_to_cpu(v_le);
	if (!(v & MAP_VALID))
		return 0;

	if (md->version >= 2) {
		r = dm_bitset_test_bit(&md->dirty_info, md->dirty_root, cblock, &md->dirty_root, &dirty);
		if (r)
			return r;
	} else {
		dirty = v & MAP_DIRTY;
	}
	if (w->all_dirty && !dirty) {
		/*
		 * The block counts as dirty from now on, and so it must be recorded: the next clean
		 * shutdown trusts the bits on disk, and a block left clean there would never be written
		 * back although the cache may hold data the origin lacks.
		 */
		dirty = true;
		if (md_writable(md)) {
			r = set_mapping_locked(md, cblock, true, v >> MAP_FLAG_BITS, true);
			if (r)
				return r;
		}
	}

	if (w->hints_valid) {
		r = dm_array_get_value(&md->hint_info, md->hint_root, cblock, &hint_le);
		if (r)
			return r;
	}
	return w->fn(w->context, cblock, v >> MAP_FLAG_BITS, dirty, le32_to_cpu(hint_le), w->hints_valid);
}

int cache_md_load_mappings(struct cache_md *md, const char *policy_name, u32 policy_major,
			   cache_md_load_fn fn, void *context)
{
	struct map_walk w = { .fn = fn, .context = context };
	u32 cblock;
	int r = -EIO;

	mutex_lock(&md->lock);
	if (md->broken)
		goto out;
	/* After a crash the dirty bits on disk are stale: every cached block may hold newer data (load_one records it dirty). */
	w.all_dirty = !(md->flags & SB_FLAG_CLEAN_SHUTDOWN);
	w.hints_valid = !w.all_dirty && md->hint_root && md->policy_hint_size == HINT_BYTES &&
			md->policy_version[0] == policy_major &&
			!strncmp(md->policy_name, policy_name, CACHE_POLICY_NAME_BYTES);
	r = 0;
	for (cblock = 0; cblock < md->cache_blocks && !r; cblock++)
		r = load_one(md, &w, cblock);
out:
	mutex_unlock(&md->lock);
	return r;
}

int cache_md_load_discards(struct cache_md *md, cache_md_discard_fn fn, void *context)
{
	bool discarded;
	u64 b;
	int r = -EIO;

	mutex_lock(&md->lock);
	if (md->broken)
		goto out;
	r = 0;
	for (b = 0; b < md->discard_nr_blocks && !r; b++) {
		r = dm_bitset_test_bit(&md->discard_info, md->discard_root, b, &md->discard_root,
				       &discarded);
		if (!r)
			r = fn(context, b, discarded);
	}
out:
	mutex_unlock(&md->lock);
	return r;
}

/*----------------------------------------------------------------------------------------------*/
/* Commit and rollback */

int cache_md_commit(struct cache_md *md, bool clean_shutdown)
{
	u32 old_flags;
	int r = -EPERM;

	mutex_lock(&md->lock);
	if (!md_writable(md))
		goto out;
	old_flags = md->flags;
	if (clean_shutdown)
		md->flags |= SB_FLAG_CLEAN_SHUTDOWN;
	else
		md->flags &= ~SB_FLAG_CLEAN_SHUTDOWN;

	r = write_all_but_superblock(md);
	if (!r)
		r = write_superblock(md);
	if (r)
		md->flags = old_flags;
out:
	mutex_unlock(&md->lock);
	return r;
}

int cache_md_abort(struct cache_md *md)
{
	char *error = NULL;
	unsigned int version;
	int r = -EIO;

	mutex_lock(&md->lock);
	if (md->broken)
		goto out;
	version = md->version;
	close_persistent(md);
	r = open_persistent(md, false, version, &error);
	if (r) {
		DMERR("cannot reopen the metadata: %s (%d)", error ?: "I/O error", r);
		md->broken = true;
		goto out;
	}
	if (md->read_only)
		dm_bm_set_read_only(md->bm);
out:
	mutex_unlock(&md->lock);
	return r;
}
