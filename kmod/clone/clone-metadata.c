// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-clone metadata. On disk (4 KiB persistent-data blocks):
 *
 *   block 0      superblock: csum, flags, blocknr, uuid, magic, version, metadata space map root,
 *                region size, target size, bitset root
 *   elsewhere    a dm_bitset with one bit per region (set = the region is valid on the destination),
 *                and the metadata space map, all updated by shadowing
 *
 * In core we keep the whole region bitmap, plus two dirty sets that record which regions were marked
 * during a transaction. Marks only touch memory (so they are safe from bio completion), and a commit
 * writes exactly the bits of the transaction it closes.
 */
#include <linux/bitmap.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/device-mapper.h>

#include "persistent-data/dm-bitset.h"
#include "persistent-data/dm-block-manager.h"
#include "persistent-data/dm-space-map.h"
#include "persistent-data/dm-transaction-manager.h"

#include "dmkit-common.h"
#include "clone-metadata.h"
#include "dmkit-md-guard.h"

#define DM_MSG_PREFIX "dmkit-clone metadata"

/* After DM_MSG_PREFIX: its validator logs with DMERR. */
#include "dmkit-sb.h"

#define SB_BLOCK 0
#define SB_MAGIC 0x8af27f64ULL
#define SB_VERSION 1
#define SB_CSUM_SALT 257649492
#define SM_ROOT_BYTES 128

/* The superblock and at most a few bitset/btree blocks are locked at once. */
#define MAX_HELD_BLOCKS 5

struct clone_sb_disk {
	__le32 csum;
	__le32 flags;
	__le64 blocknr;
	u8 uuid[16];		/* unused, zero */
	__le64 magic;
	__le32 version;
	__u8 metadata_space_map_root[SM_ROOT_BYTES];
	__le64 region_size;
	__le64 target_size;
	__le64 bitset_root;
} __packed;

/* Regions marked during one transaction; @words says which longs of @regions hold a set bit. */
struct dirty_set {
	unsigned long *regions;
	unsigned long *words;
	bool any;
};

struct clone_md {
	struct block_device *bdev;
	struct dmkit_md_guard *guard;	/* shared with every table on this metadata device */
	sector_t target_sectors;
	sector_t region_sectors;
	unsigned long nr_regions;
	unsigned long nr_words;

	/* Serialises everything that does metadata I/O. */
	struct mutex io_lock;
	struct dm_block_manager *bm;
	struct dm_space_map *sm;
	struct dm_transaction_manager *tm;
	struct dm_disk_bitset bitset;
	dm_block_t bitset_root;
	/* Copied after the pre-commit: copying can fail, so never with the superblock locked. */
	u8 sm_root[SM_ROOT_BYTES];
	/* The pre-commit of the closed transaction succeeded: the superblock may be written. */
	bool prepared;
	/* A rollback could not reopen the metadata: bm/sm/tm are gone and every call fails. */
	bool broken;
	/* Open refused: the superblock's region or target size is not ours. */
	bool geometry_mismatch;

	/* Protects everything below; taken from bio completion, so with interrupts off. */
	spinlock_t map_lock;
	unsigned long *hydrated;
	unsigned long nr_hydrated;
	struct dirty_set dirty[2];
	/* Index of the dirty set that receives marks; the other one is being (or was last) committed. */
	unsigned int open_set;
	bool read_only;
};

/*----------------------------------------------------------------------------------------------*/
/* Superblock */

DMKIT_SB_HEAD_CHECK(struct clone_sb_disk);
DMKIT_SB_VALIDATOR(sb_validator, "clone", SB_MAGIC, SB_CSUM_SALT, SB_VERSION, SB_VERSION);

static int sb_is_blank(struct dm_block_manager *bm, bool *blank)
{
	struct dm_block *b;
	int r;

	/* No validator: a blank superblock would fail it. */
	r = dm_bm_read_lock(bm, SB_BLOCK, NULL, &b);
	if (r)
		return r;
	*blank = !memchr_inv(dm_block_data(b), 0, dm_bm_block_size(bm));
	dm_bm_unlock(b);
	return 0;
}

/*
 * Write the superblock of the transaction whose other blocks are already on disk
 * (dm_tm_pre_commit() done and md->sm_root copied after it). @publish false only fills it in and
 * unlocks it, dirty in the block manager's cache: what the code before fix (c) did after a failed
 * flush (the tm-commit-order revert switch).
 */
static int write_superblock(struct clone_md *md, bool publish)
{
	struct clone_sb_disk *sb;
	struct dm_block *b;
	int r;

	r = dm_bm_write_lock_zero(md->bm, SB_BLOCK, &sb_validator.v, &b);
	if (r)
		return r;

	sb = dm_block_data(b);
	sb->flags = 0;
	sb->magic = cpu_to_le64(SB_MAGIC);
	sb->version = cpu_to_le32(SB_VERSION);
	memcpy(sb->metadata_space_map_root, md->sm_root, SM_ROOT_BYTES);
	sb->region_size = cpu_to_le64(md->region_sectors);
	sb->target_size = cpu_to_le64(md->target_sectors);
	sb->bitset_root = cpu_to_le64(md->bitset_root);
	if (!publish) {
		dm_bm_unlock(b);
		return 0;
	}

	/* Unlocks @b, then writes and flushes it: the superblock goes out last. */
	return dm_tm_commit(md->tm, b);
}

/* Flush everything but the superblock, then take the space map root that the superblock will name. */
static int write_all_but_superblock(struct clone_md *md)
{
	size_t len;
	int r;

	r = dm_bitset_flush(&md->bitset, md->bitset_root, &md->bitset_root);
	if (r)
		return r;

	r = dm_tm_pre_commit(md->tm);
	if (r)
		return r;

	r = dm_sm_root_size(md->sm, &len);
	if (r)
		return r;
	if (len > SM_ROOT_BYTES)
		return -EINVAL;
	return dm_sm_copy_root(md->sm, md->sm_root, len);
}

/*----------------------------------------------------------------------------------------------*/
/* Opening and closing the persistent-data structures */

static int format_device(struct clone_md *md)
{
	int r;

	r = dm_tm_create_with_sm(md->bm, SB_BLOCK, &md->tm, &md->sm);
	if (r) {
		DMERR("cannot create the transaction manager: %d", r);
		return r;
	}
	dm_disk_bitset_init(md->tm, &md->bitset);

	r = dm_bitset_empty(&md->bitset, &md->bitset_root);
	if (!r)
		r = dm_bitset_resize(&md->bitset, md->bitset_root, 0, md->nr_regions, false,
				     &md->bitset_root);
	if (!r)
		r = write_all_but_superblock(md);
	if (!r)
		r = write_superblock(md, true);
	if (r) {
		DMERR("cannot format the metadata device: %d", r);
		dm_sm_destroy(md->sm);
		dm_tm_destroy(md->tm);
	}
	return r;
}

static int open_device(struct clone_md *md)
{
	struct clone_sb_disk *sb;
	struct dm_block *b;
	int r;

	r = dm_bm_read_lock(md->bm, SB_BLOCK, &sb_validator.v, &b);
	if (r) {
		DMERR("cannot read the superblock: %d", r);
		return r;
	}
	sb = dm_block_data(b);

	/* A table error, not a metadata one: clone_md_open() reports it. */
	if (le64_to_cpu(sb->region_size) != md->region_sectors ||
	    le64_to_cpu(sb->target_size) != md->target_sectors) {
		md->geometry_mismatch = true;
		r = -EINVAL;
		goto out;
	}

	r = dm_tm_open_with_sm(md->bm, SB_BLOCK, sb->metadata_space_map_root,
			       sizeof(sb->metadata_space_map_root), &md->tm, &md->sm);
	if (r) {
		DMERR("cannot open the transaction manager: %d", r);
		goto out;
	}
	dm_disk_bitset_init(md->tm, &md->bitset);
	md->bitset_root = le64_to_cpu(sb->bitset_root);
out:
	dm_bm_unlock(b);
	return r;
}

static int open_persistent(struct clone_md *md, bool may_format)
{
	bool blank;
	int r;

	md->bm = dm_block_manager_create(md->bdev, CLONE_MD_BLOCK_SECTORS << SECTOR_SHIFT,
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
		r = format_device(md);
	else if (blank)
		r = -ENODATA;
	else
		r = open_device(md);

	if (r)
		dm_block_manager_destroy(md->bm);
	return r;
}

static void close_persistent(struct clone_md *md)
{
	dm_sm_destroy(md->sm);
	dm_tm_destroy(md->tm);
	dm_block_manager_destroy(md->bm);
}

/*----------------------------------------------------------------------------------------------*/
/* In-core region bitmap */

struct load_state {
	unsigned long *map;
	unsigned long nr_regions;
};

/* dm_array_walk() callback: one little-endian 64-bit word of the bitset, bit j = region 64 * key + j. */
static int load_word(void *context, uint64_t key, void *value_le)
{
	struct load_state *ls = context;
	unsigned long first = key * 64;
	unsigned int nbits;
	__le64 word_le;
	u64 word;

	if (first >= ls->nr_regions)
		return 0;
	memcpy(&word_le, value_le, sizeof(word_le));
	word = le64_to_cpu(word_le);
	nbits = min_t(unsigned long, 64, ls->nr_regions - first);

	while (word && nbits) {
		unsigned int j = __ffs64(word);

		if (j >= nbits)
			break;
		__set_bit(first + j, ls->map);
		word &= word - 1;
	}
	return 0;
}

/* Read the committed bitset into @map (all zeroes on entry) and count its set bits. */
static int load_hydrated_map(struct clone_md *md, unsigned long *map, unsigned long *count)
{
	struct load_state ls = { .map = map, .nr_regions = md->nr_regions };
	int r;

	r = dm_bitset_flush(&md->bitset, md->bitset_root, &md->bitset_root);
	if (r)
		return r;
	r = dm_array_walk(&md->bitset.array_info, md->bitset_root, load_word, &ls);
	if (r)
		return r;
	*count = bitmap_weight(map, md->nr_regions);
	return 0;
}

static unsigned long *alloc_region_bitmap(unsigned long nbits)
{
	return kvzalloc(BITS_TO_LONGS(nbits) * sizeof(unsigned long), GFP_KERNEL);
}

static void free_dirty_sets(struct clone_md *md)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(md->dirty); i++) {
		kvfree(md->dirty[i].regions);
		kvfree(md->dirty[i].words);
	}
}

static int alloc_dirty_sets(struct clone_md *md)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(md->dirty); i++) {
		md->dirty[i].regions = alloc_region_bitmap(md->nr_regions);
		md->dirty[i].words = alloc_region_bitmap(md->nr_words);
		if (!md->dirty[i].regions || !md->dirty[i].words) {
			free_dirty_sets(md);
			return -ENOMEM;
		}
	}
	return 0;
}

static void reset_dirty_set(struct clone_md *md, struct dirty_set *ds)
{
	bitmap_zero(ds->regions, md->nr_regions);
	bitmap_zero(ds->words, md->nr_words);
	ds->any = false;
}

/*----------------------------------------------------------------------------------------------*/
/* Open / close */

struct clone_md *clone_md_open(struct block_device *bdev, sector_t target_sectors,
			       sector_t region_sectors, char **error)
{
	struct clone_md *md;
	unsigned int noio;
	int r = -ENOMEM;

	md = kzalloc(sizeof(*md), GFP_KERNEL);
	if (!md)
		return ERR_PTR(-ENOMEM);
	md->guard = dmkit_md_guard_get(bdev);
	if (!md->guard)
		goto bad_guard;

	md->bdev = bdev;
	md->target_sectors = target_sectors;
	md->region_sectors = region_sectors;
	md->nr_regions = dm_sector_div_up(target_sectors, region_sectors);
	md->nr_words = BITS_TO_LONGS(md->nr_regions);
	mutex_init(&md->io_lock);
	spin_lock_init(&md->map_lock);

	md->hydrated = alloc_region_bitmap(md->nr_regions);
	if (!md->hydrated)
		goto bad_map;
	if (alloc_dirty_sets(md))
		goto bad_dirty;

	/* No commit of another table on this device may run while this one reads. */
	noio = dmkit_md_guard_lock(md->guard);
	r = open_persistent(md, true);
	if (md->geometry_mismatch)
		*error = "Region size and/or target size differ from the ones in the metadata";
	if (!r) {
		r = load_hydrated_map(md, md->hydrated, &md->nr_hydrated);
		if (r) {
			DMERR("cannot load the region bitmap: %d", r);
			close_persistent(md);
		}
	}
	dmkit_md_guard_unlock(md->guard, noio);
	if (r)
		goto bad_persistent;
	return md;

bad_persistent:
	free_dirty_sets(md);
bad_dirty:
	kvfree(md->hydrated);
bad_map:
	dmkit_md_guard_put(md->guard);
bad_guard:
	kfree(md);
	return ERR_PTR(r);
}

void clone_md_close(struct clone_md *md)
{
	if (!md->broken)
		close_persistent(md);
	free_dirty_sets(md);
	kvfree(md->hydrated);
	dmkit_md_guard_put(md->guard);
	kfree(md);
}

/*----------------------------------------------------------------------------------------------*/
/* Commit */

/* Write the marked bits of one word of @ds into the bitset, clearing them from @ds. */
static int write_dirty_word(struct clone_md *md, struct dirty_set *ds, unsigned long word)
{
	unsigned long region = word * BITS_PER_LONG;
	unsigned long end = min(md->nr_regions, region + BITS_PER_LONG);
	int r;

	for_each_set_bit_from(region, ds->regions, end) {
		r = dm_bitset_set_bit(&md->bitset, md->bitset_root, region, &md->bitset_root);
		if (r)
			return r;
		__clear_bit(region, ds->regions);
	}
	__clear_bit(word, ds->words);
	return 0;
}

static int write_dirty_set(struct clone_md *md, struct dirty_set *ds)
{
	unsigned long word;
	int r;

	for_each_set_bit(word, ds->words, md->nr_words) {
		r = write_dirty_word(md, ds, word);
		if (r)
			return r;
	}
	return 0;
}

static bool md_writable(struct clone_md *md)
{
	return !md->broken && !md->read_only && !dm_bm_is_read_only(md->bm);
}

int clone_md_pre_commit(struct clone_md *md)
{
	struct dirty_set *closing;
	int r;

	mutex_lock(&md->io_lock);
	if (!md_writable(md)) {
		r = -EPERM;
		goto out;
	}
	if (WARN_ON_ONCE(md->prepared)) {
		r = -EBUSY;
		goto out;
	}

	/*
	 * Close the transaction: marks from now on land in the other set. That set was emptied by the
	 * last successful commit (a failed one is followed by an abort, which empties both).
	 */
	spin_lock_irq(&md->map_lock);
	if (WARN_ON_ONCE(md->dirty[md->open_set ^ 1].any)) {
		spin_unlock_irq(&md->map_lock);
		r = -EINVAL;
		goto out;
	}
	closing = &md->dirty[md->open_set];
	md->open_set ^= 1;
	spin_unlock_irq(&md->map_lock);

	/* Nobody marks @closing any more, so it is read without the spinlock. */
	r = write_dirty_set(md, closing);
	if (!r)
		r = write_all_but_superblock(md);
	if (!r)
		md->prepared = true;
	else if (dmkit_reverted(TM_COMMIT_ORDER))
		write_superblock(md, false);
out:
	mutex_unlock(&md->io_lock);
	return r;
}

int clone_md_commit(struct clone_md *md)
{
	unsigned int noio;
	int r;

	mutex_lock(&md->io_lock);
	if (!md_writable(md)) {
		r = -EPERM;
		goto out;
	}
	/* Only a transaction whose pre-commit succeeded may get a superblock. */
	if (WARN_ON_ONCE(!md->prepared)) {
		r = -EINVAL;
		goto out;
	}

	noio = dmkit_md_guard_lock(md->guard);
	r = write_superblock(md, true);
	dmkit_md_guard_unlock(md->guard, noio);
	if (r)
		goto out;

	md->prepared = false;
	spin_lock_irq(&md->map_lock);
	md->dirty[md->open_set ^ 1].any = false;
	spin_unlock_irq(&md->map_lock);
out:
	mutex_unlock(&md->io_lock);
	return r;
}

bool clone_md_changed(struct clone_md *md)
{
	unsigned long flags;
	bool changed;

	/* The closed set counts until its commit is done: a flush racing with the commit must wait. */
	spin_lock_irqsave(&md->map_lock, flags);
	changed = md->dirty[0].any || md->dirty[1].any;
	spin_unlock_irqrestore(&md->map_lock, flags);
	return changed;
}

int clone_md_abort(struct clone_md *md)
{
	unsigned long *map, count;
	unsigned int noio;
	int r;

	map = alloc_region_bitmap(md->nr_regions);
	if (!map)
		return -ENOMEM;

	mutex_lock(&md->io_lock);
	if (md->broken) {
		r = -EIO;
		goto out;
	}

	close_persistent(md);
	noio = dmkit_md_guard_lock(md->guard);
	r = open_persistent(md, false);
	if (!r) {
		if (md->read_only)
			dm_bm_set_read_only(md->bm);
		r = load_hydrated_map(md, map, &count);
		if (r)
			close_persistent(md);
	}
	dmkit_md_guard_unlock(md->guard, noio);
	if (r) {
		md->broken = true;
		goto out;
	}

	/* Copied, not swapped: lookups read md->hydrated without the lock. */
	spin_lock_irq(&md->map_lock);
	bitmap_copy(md->hydrated, map, md->nr_regions);
	md->nr_hydrated = count;
	reset_dirty_set(md, &md->dirty[0]);
	reset_dirty_set(md, &md->dirty[1]);
	spin_unlock_irq(&md->map_lock);
	md->prepared = false;
out:
	mutex_unlock(&md->io_lock);
	kvfree(map);
	return r;
}

/*----------------------------------------------------------------------------------------------*/
/* Modes */

static void set_read_only(struct clone_md *md, bool ro)
{
	mutex_lock(&md->io_lock);
	spin_lock_irq(&md->map_lock);
	md->read_only = ro;
	spin_unlock_irq(&md->map_lock);

	if (!md->broken) {
		if (ro)
			dm_bm_set_read_only(md->bm);
		else
			dm_bm_set_read_write(md->bm);
	}
	mutex_unlock(&md->io_lock);
}

void clone_md_set_read_only(struct clone_md *md)
{
	set_read_only(md, true);
}

void clone_md_set_read_write(struct clone_md *md)
{
	set_read_only(md, false);
}

/*----------------------------------------------------------------------------------------------*/
/* Marking and querying regions */

/* Called with map_lock held. */
static void mark_one(struct clone_md *md, struct dirty_set *ds, unsigned long region)
{
	if (__test_and_set_bit(region, md->hydrated))
		return;
	md->nr_hydrated++;
	__set_bit(region, ds->regions);
	__set_bit(region / BITS_PER_LONG, ds->words);
	ds->any = true;
}

int clone_md_set_hydrated(struct clone_md *md, unsigned long region)
{
	return clone_md_set_range_hydrated(md, region, 1);
}

int clone_md_set_range_hydrated(struct clone_md *md, unsigned long first, unsigned long count)
{
	unsigned long flags, region;
	int r = 0;

	if (unlikely(!count || first >= md->nr_regions || count > md->nr_regions - first)) {
		DMERR("region range %lu+%lu is outside 0..%lu", first, count, md->nr_regions);
		return -ERANGE;
	}

	spin_lock_irqsave(&md->map_lock, flags);
	if (md->read_only) {
		r = -EPERM;
	} else {
		for (region = first; region < first + count; region++)
			mark_one(md, &md->dirty[md->open_set], region);
	}
	spin_unlock_irqrestore(&md->map_lock, flags);
	return r;
}

bool clone_md_is_hydrated(struct clone_md *md, unsigned long region)
{
	return test_bit(region, md->hydrated);
}

bool clone_md_range_is_hydrated(struct clone_md *md, unsigned long first, unsigned long count)
{
	return find_next_zero_bit(md->hydrated, first + count, first) >= first + count;
}

unsigned long clone_md_next_unhydrated(struct clone_md *md, unsigned long from)
{
	return find_next_zero_bit(md->hydrated, md->nr_regions, from);
}

unsigned long clone_md_hydrated_count(struct clone_md *md)
{
	return READ_ONCE(md->nr_hydrated);
}

bool clone_md_fully_hydrated(struct clone_md *md)
{
	return clone_md_hydrated_count(md) == md->nr_regions;
}

int clone_md_space(struct clone_md *md, dm_block_t *used, dm_block_t *total)
{
	dm_block_t nr_free;
	int r = -EIO;

	mutex_lock(&md->io_lock);
	if (!md->broken) {
		r = dm_sm_get_nr_blocks(md->sm, total);
		if (!r)
			r = dm_sm_get_nr_free(md->sm, &nr_free);
		if (!r)
			*used = *total - nr_free;
	}
	mutex_unlock(&md->io_lock);
	return r;
}
