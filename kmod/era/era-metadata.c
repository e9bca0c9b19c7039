// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-era metadata: the era on-disk format, built on the kernel's persistent-data library.
 *
 * Layout (little-endian, 4 KiB blocks, superblock in block 0; the same as the in-tree era target):
 *   superblock    space map root, data block size, number of origin blocks, current era, the current
 *                 writeset { nr_bits, bitset root }, the writeset tree root, the era array root and the
 *                 block of a held metadata snapshot (0 = none)
 *   writeset tree a one-level btree: era (u64) -> { __le32 nr_bits; __le64 bitset root } (12 bytes, packed)
 *   writeset      a dm_bitset with one bit per origin block, set once the block was written in that era
 *   era array     a dm_array of __le32: for each origin block, the last era that wrote it, as far as the
 *                 archived writesets have been digested into it
 *
 * Writesets are archived into the tree at each rollover and digested into the era array in the
 * background, oldest era first; a digested writeset leaves the tree.
 */
#include <linux/delay.h>
#include <linux/device-mapper.h>
#include <linux/mm.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "dmkit-common.h"
#include "persistent-data/dm-array.h"
#include "persistent-data/dm-bitset.h"
#include "persistent-data/dm-btree.h"
#include "persistent-data/dm-space-map.h"
#include "persistent-data/dm-transaction-manager.h"

#include "era-metadata.h"
#include "dmkit-md-guard.h"

#define DM_MSG_PREFIX "dmkit-era"

/* After DM_MSG_PREFIX: its validator logs with DMERR. */
#include "dmkit-sb.h"

#define ERA_SB_LOCATION 0
#define ERA_SB_MAGIC 2126579579ULL
#define ERA_SB_CSUM_SALT 146538381
#define ERA_SB_VERSION 1
#define ERA_SM_ROOT_BYTES 128
#define ERA_UUID_BYTES 16

/* Block 0 is never a writeset or a snapshot, so its number doubles as "none". */
#define ERA_NONE ERA_SB_LOCATION

/* Most block locks one thread holds at once (btree spine plus array block plus superblock). */
#define ERA_LOCKS_PER_THREAD 5

/* Widens the window between reading the superblock and following its roots (a table being loaded). */
DMKIT_TEST_KNOB(load_delay_ms, "milliseconds between reading the superblock and opening its space map");

/* Bits of an archived writeset looked at per digest step: keeps each worker pass short. */
#define ERA_DIGEST_BITS_PER_STEP 128

struct era_writeset_disk {
	__le32 nr_bits;
	__le64 root;
} __packed;

struct era_superblock_disk {
	__le32 csum;		/* crc32c of the rest of the block, salted */
	__le32 flags;
	__le64 blocknr;
	u8 uuid[ERA_UUID_BYTES];
	__le64 magic;
	__le32 version;

	u8 sm_root[ERA_SM_ROOT_BYTES];

	__le32 data_block_size;		/* sectors */
	__le32 metadata_block_size;	/* sectors */
	__le32 nr_blocks;
	__le32 current_era;
	struct era_writeset_disk current_writeset;

	/* In a metadata snapshot only these two roots mean anything. */
	__le64 writeset_tree_root;
	__le64 era_array_root;

	__le64 metadata_snap;
} __packed;

/* One era's writeset: an on-disk bitset and an in-core copy of the bits already durable on disk. */
struct era_writeset {
	u32 nr_bits;
	dm_block_t root;	/* ERA_NONE when this writeset has no on-disk bitset */
	unsigned long *bits;	/* md->bitmap_bits bits, or NULL before the first era_md_resize() */
};

/* Where the background digest of the oldest archived writeset stands. */
struct era_digest {
	bool active;
	u32 era;
	dm_block_t root;
	u32 nr_bits;
	u32 next_bit;
	struct dm_disk_bitset bitset;	/* its own word cache, reset for every writeset */
};

/* Words a word set lists; beyond this many, it is walked by scanning its bitmap instead. */
#define ERA_WORD_LIST 256
#define ERA_TOUCHED_MAX 8

/* A set of 64-bit bitset words: a bitmap with a bit per word, and a list of them while it fits. */
struct era_word_set {
	unsigned long *bits;
	u32 nr;
	u32 list[ERA_WORD_LIST];
};

struct era_md {
	struct block_device *bdev;
	struct dmkit_md_guard *guard;	/* shared with every table on this metadata device */
	struct dm_block_manager *bm;
	struct dm_space_map *sm;
	struct dm_transaction_manager *tm;

	struct dm_btree_info writeset_tree;
	struct dm_array_info era_array;
	struct dm_disk_bitset current_bitset;	/* word cache of the current writeset, reset every era */
	struct dm_disk_bitset plain_bitset;	/* never caches: only used to free bitsets */

	u32 data_block_size;
	u32 nr_blocks;
	u32 era;
	dm_block_t writeset_tree_root;
	dm_block_t era_array_root;
	dm_block_t held_root;

	/* Two writesets in turn: the current one is published to the I/O path under RCU. */
	struct era_writeset sets[2];
	struct era_writeset __rcu *current_set;
	u32 bitmap_bits;

	/*
	 * Marks of the current writeset (allocated with the in-core writesets): @marked holds every block
	 * set in its on-disk bitset, committed or not. @dirty holds the words that gained blocks since
	 * the last commit, @unwritten those of them whose latest blocks are not in the on-disk bitset
	 * yet. A commit writes each such word once, however many of its blocks were marked, and only once
	 * the transaction is durable copies the dirty words into the in-core bitmap that lets writes
	 * through.
	 */
	unsigned long *marked;
	struct era_word_set dirty;
	struct era_word_set unwritten;

	/*
	 * Array blocks of the current writeset's bitset that this transaction has written (shadowed):
	 * more words in them can still join the transaction after its pre-commit, without allocating.
	 * @nr_touched above ERA_TOUCHED_MAX means more than could be listed. @joining is set while the
	 * target may add such marks (era_md_mark_joining()).
	 */
	u32 touched[ERA_TOUCHED_MAX];
	u32 nr_touched;
	bool joining;

	/*
	 * Array blocks this transaction wrote marks into (@nr_written above ERA_TOUCHED_MAX: too many to
	 * list), and those of the last commit (@hot): the next commit will likely mark words in the same
	 * blocks, so era_md_prepare_marks() shadows them ahead of it while the worker would be idle.
	 * @hot_held says whether that guess held at the last commit (at least half of @hot written again).
	 */
	u32 written[ERA_TOUCHED_MAX];
	u32 nr_written;
	u32 hot[ERA_TOUCHED_MAX];
	u32 nr_hot;
	bool hot_held;

	bool digest_wanted;	/* the writeset tree may hold writesets to digest */
	struct era_digest digest;

	/* The space map root is copied here before the superblock is locked: the copy can fail. */
	u8 sm_root[ERA_SM_ROOT_BYTES];
};

/*----------------------------------------------------------------
 * Space
 *--------------------------------------------------------------*/

/*
 * 6.1's persistent-data does not always unwind an operation whose allocation fails half-way: dm-array's
 * shadow_ablock() returns with the block it has just shadowed still locked when re-inserting it fails
 * (-ENOSPC), and dm_bufio_client_destroy() then hits a BUG_ON for the held buffer when the table goes.
 * So the library must never run out: every operation that may allocate first asks for its worst case
 * plus a reserve (which the commit after it may use too), and fails with -ENOSPC, nothing changed, when
 * the space map cannot give that much. The reserve is 1/16 of the device, at least 32 blocks.
 */
#define ERA_MD_RESERVE_MIN 32
#define ERA_MD_RESERVE_MAX 1024

/* Blocks a btree spine may allocate in one insert or remove: each level shadowed, and a split. */
#define ERA_MD_SPINE_BLOCKS 8

/* Values of @size bytes in one array block (after its header: checksum, three counts, block number). */
static u32 array_entries_per_block(struct era_md *md, size_t size)
{
	return (dm_bm_block_size(md->bm) - 4 * sizeof(__le32) - sizeof(__le64)) / size;
}

/* Array blocks (plus their btree's index nodes) that hold @entries entries of @size bytes. */
static dm_block_t array_blocks(struct era_md *md, u64 entries, size_t size)
{
	u32 per_block = array_entries_per_block(md, size);
	dm_block_t blocks = div_u64(entries + per_block - 1, per_block);

	/* An index node holds well over 100 entries. */
	return blocks + div_u64(blocks, 100) + 1;
}

/*
 * 0 when @need blocks plus the reserve are free, else -ENOSPC, with one log line naming @what (none
 * when @what is NULL: the caller only tries).
 */
static int space_for(struct era_md *md, dm_block_t need, const char *what)
{
	dm_block_t total, nr_free, reserve;
	int r;

	r = dm_sm_get_nr_blocks(md->sm, &total);
	if (!r)
		r = dm_sm_get_nr_free(md->sm, &nr_free);
	if (r)
		return r;
	reserve = clamp_t(dm_block_t, total >> 4, ERA_MD_RESERVE_MIN, ERA_MD_RESERVE_MAX);
	if (nr_free >= need + reserve)
		return 0;
	if (!what)
		return -ENOSPC;
	DMERR_LIMIT("metadata space exhausted: %s needs %llu blocks and %llu are kept in reserve, %llu of %llu are free (-ENOSPC)",
		    what, (unsigned long long)need, (unsigned long long)reserve,
		    (unsigned long long)nr_free, (unsigned long long)total);
	return -ENOSPC;
}

/* What a new writeset of @nr_blocks bits takes: its bitset's array blocks. */
static dm_block_t writeset_blocks(struct era_md *md, u32 nr_blocks)
{
	return array_blocks(md, div_u64((u64)nr_blocks + 63, 64), sizeof(__le64));
}

/*----------------------------------------------------------------
 * Superblock validation
 *--------------------------------------------------------------*/

DMKIT_SB_HEAD_CHECK(struct era_superblock_disk);
DMKIT_SB_VALIDATOR(sb_validator, "era", ERA_SB_MAGIC, ERA_SB_CSUM_SALT, ERA_SB_VERSION, ERA_SB_VERSION);

/*----------------------------------------------------------------
 * Value types
 *--------------------------------------------------------------*/

static dm_block_t writeset_value_root(const void *values, unsigned int i)
{
	struct era_writeset_disk v;

	memcpy(&v, (const u8 *)values + i * sizeof(v), sizeof(v));
	return le64_to_cpu(v.root);
}

/* A writeset tree value owns a reference to its bitset. */
static void writeset_value_inc(void *context, const void *values, unsigned int count)
{
	struct era_md *md = context;
	unsigned int i;

	for (i = 0; i < count; i++)
		dm_tm_inc(md->tm, writeset_value_root(values, i));
}

static void writeset_value_dec(void *context, const void *values, unsigned int count)
{
	struct era_md *md = context;
	unsigned int i;
	int r;

	for (i = 0; i < count; i++) {
		r = dm_bitset_del(&md->plain_bitset, writeset_value_root(values, i));
		if (r)
			DMERR_LIMIT("freeing an archived writeset failed: %d", r);
	}
}

static int writeset_value_equal(void *context, const void *a, const void *b)
{
	/* The whole packed value, both fields (era fix 5). */
	return !memcmp(a, b, sizeof(struct era_writeset_disk));
}

static void init_value_types(struct era_md *md)
{
	struct dm_btree_value_type era_value = { .size = sizeof(__le32) };

	md->writeset_tree.tm = md->tm;
	md->writeset_tree.levels = 1;
	md->writeset_tree.value_type = (struct dm_btree_value_type) {
		.context = md,
		.size = sizeof(struct era_writeset_disk),
		.inc = writeset_value_inc,
		.dec = writeset_value_dec,
		.equal = writeset_value_equal,
	};
	dm_array_info_init(&md->era_array, md->tm, &era_value);
	dm_disk_bitset_init(md->tm, &md->current_bitset);
	dm_disk_bitset_init(md->tm, &md->plain_bitset);
}

/*----------------------------------------------------------------
 * Writesets
 *--------------------------------------------------------------*/

/* For the callers that serialise among themselves; only the I/O path reads current_set under RCU. */
static struct era_writeset *current_writeset(struct era_md *md)
{
	return rcu_dereference_protected(md->current_set, true);
}

static struct era_writeset *other_writeset(struct era_md *md)
{
	struct era_writeset *cur = current_writeset(md);

	return cur == &md->sets[0] ? &md->sets[1] : &md->sets[0];
}

static unsigned long *alloc_bitmap(u32 nr_bits)
{
	return kvcalloc(BITS_TO_LONGS(max_t(u32, nr_bits, 1)), sizeof(unsigned long), GFP_KERNEL);
}

/*----------------------------------------------------------------
 * Word sets
 *--------------------------------------------------------------*/

static void word_set_free(struct era_word_set *set)
{
	kvfree(set->bits);
	set->bits = NULL;
	set->nr = 0;
}

static void word_set_add(struct era_word_set *set, u32 w)
{
	if (__test_and_set_bit(w, set->bits))
		return;
	if (set->nr < ERA_WORD_LIST)
		set->list[set->nr] = w;
	set->nr++;
}

/*
 * Calls @fn for each word of @set, emptying it as it goes; stops at the first error, leaving the
 * words not done yet in the set.
 */
static int word_set_drain(struct era_md *md, struct era_word_set *set, u32 nr_words,
			  int (*fn)(struct era_md *md, u32 w))
{
	u32 w;
	int r;

	if (set->nr <= ERA_WORD_LIST) {
		while (set->nr) {
			w = set->list[set->nr - 1];
			r = fn(md, w);
			if (r)
				return r;
			__clear_bit(w, set->bits);
			set->nr--;
		}
		return 0;
	}
	for_each_set_bit(w, set->bits, nr_words) {
		r = fn(md, w);
		if (r)
			return r;
		__clear_bit(w, set->bits);
	}
	set->nr = 0;
	return 0;
}

static void free_bitmaps(struct era_md *md)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(md->sets); i++) {
		kvfree(md->sets[i].bits);
		md->sets[i].bits = NULL;
	}
	kvfree(md->marked);
	md->marked = NULL;
	word_set_free(&md->dirty);
	word_set_free(&md->unwritten);
	md->nr_touched = 0;
	md->bitmap_bits = 0;
}

/*----------------------------------------------------------------
 * Bitset words: word w of a writeset holds blocks 64w to 64w + 63, block 64w + i in bit i
 *--------------------------------------------------------------*/

#define ERA_WORD_BITS 64
#define ERA_LONGS_PER_WORD (ERA_WORD_BITS / BITS_PER_LONG)

static u32 nr_words(u32 nr_bits)
{
	return DIV_ROUND_UP(nr_bits, ERA_WORD_BITS);
}

/* Word @w of an in-core bitmap of @nr_bits bits, as the on-disk bitset stores it. */
static __le64 disk_word(const unsigned long *bits, u32 nr_bits, u32 w)
{
	u64 value = 0;
	u32 i, first = w * ERA_LONGS_PER_WORD, end = min_t(u32, first + ERA_LONGS_PER_WORD, BITS_TO_LONGS(nr_bits));

	for (i = first; i < end; i++)
		value |= (u64)bits[i] << ((i - first) * BITS_PER_LONG);
	return cpu_to_le64(value);
}

/* Sets the blocks of word @w of @from in @to; the I/O path may be testing @to meanwhile. */
static void or_word(unsigned long *to, const unsigned long *from, u32 nr_bits, u32 w)
{
	u32 i, first = w * ERA_LONGS_PER_WORD, end = min_t(u32, first + ERA_LONGS_PER_WORD, BITS_TO_LONGS(nr_bits));

	for (i = first; i < end; i++)
		WRITE_ONCE(to[i], to[i] | from[i]);
}

static bool in_core_covers(struct era_md *md, struct era_writeset *ws, u32 last)
{
	return ws->bits && last < md->bitmap_bits;
}

static int no_bit_set(u32 index, bool *value, void *context)
{
	*value = false;
	return 0;
}

/*----------------------------------------------------------------
 * Superblock and transactions
 *--------------------------------------------------------------*/

static int superblock_is_blank(struct dm_block_manager *bm, bool *blank)
{
	struct dm_block *b;
	int r;

	/* No validator: a blank block is not a valid superblock. */
	r = dm_bm_read_lock(bm, ERA_SB_LOCATION, NULL, &b);
	if (r)
		return r;
	*blank = !memchr_inv(dm_block_data(b), 0, ERA_MD_BLOCK_BYTES);
	dm_bm_unlock(b);
	return 0;
}

static void fill_superblock(struct era_md *md, struct era_superblock_disk *sb)
{
	struct era_writeset *ws = current_writeset(md);

	/* The block was zeroed when locked: flags and uuid stay 0, as the in-tree target leaves them. */
	sb->magic = cpu_to_le64(ERA_SB_MAGIC);
	sb->version = cpu_to_le32(ERA_SB_VERSION);
	memcpy(sb->sm_root, md->sm_root, sizeof(sb->sm_root));
	sb->data_block_size = cpu_to_le32(md->data_block_size);
	sb->metadata_block_size = cpu_to_le32(ERA_MD_BLOCK_SECTORS);
	sb->nr_blocks = cpu_to_le32(md->nr_blocks);
	sb->current_era = cpu_to_le32(md->era);
	sb->current_writeset.nr_bits = cpu_to_le32(ws->nr_bits);
	sb->current_writeset.root = cpu_to_le64(ws->root);
	sb->writeset_tree_root = cpu_to_le64(md->writeset_tree_root);
	sb->era_array_root = cpu_to_le64(md->era_array_root);
	sb->metadata_snap = cpu_to_le64(md->held_root);
}

/*
 * The second half of a commit. The space map root is only final once the pre-commit has committed the
 * space map (era fix 8), and it is copied before the superblock is locked because the copy can fail.
 * @publish false only fills the superblock in and unlocks it, dirty in the block manager's cache: what
 * the code before fix (c) did after a failed flush (the tm-commit-order revert switch).
 */
static int write_superblock(struct era_md *md, bool publish)
{
	struct dm_block *sb_block;
	size_t len;
	int r;

	r = dm_sm_root_size(md->sm, &len);
	if (!r && len > sizeof(md->sm_root))
		r = -EOVERFLOW;
	if (!r)
		r = dm_sm_copy_root(md->sm, md->sm_root, len);
	if (r) {
		DMERR("copying the space map root failed: %d", r);
		return r;
	}

	r = dm_bm_write_lock_zero(md->bm, ERA_SB_LOCATION, &sb_validator.v, &sb_block);
	if (r) {
		DMERR("locking the superblock failed: %d", r);
		return r;
	}
	fill_superblock(md, dm_block_data(sb_block));
	if (!publish) {
		dm_bm_unlock(sb_block);
		return 0;
	}

	/* Unlocks the superblock, then writes and flushes it: the last write of the transaction. */
	r = dm_tm_commit(md->tm, sb_block);
	if (r)
		DMERR("writing the superblock failed: %d", r);
	return r;
}

/* The bitset's array block holding word @w. */
static u32 word_ablock(struct era_md *md, u32 w)
{
	return w / array_entries_per_block(md, sizeof(__le64));
}

/* Lists of array blocks: up to ERA_TOUCHED_MAX of them, a count above that means "more". */
static bool ablock_listed(const u32 *list, u32 nr, u32 ablock)
{
	u32 i;

	for (i = 0; i < nr && i < ERA_TOUCHED_MAX; i++)
		if (list[i] == ablock)
			return true;
	return false;
}

static void ablock_list_add(u32 *list, u32 *nr, u32 ablock)
{
	if (ablock_listed(list, *nr, ablock) || *nr > ERA_TOUCHED_MAX)
		return;
	if (*nr < ERA_TOUCHED_MAX)
		list[*nr] = ablock;
	(*nr)++;
}

static bool ablock_touched(struct era_md *md, u32 ablock)
{
	return ablock_listed(md->touched, md->nr_touched, ablock);
}

static int write_word(struct era_md *md, u32 w)
{
	struct era_writeset *ws = current_writeset(md);
	__le64 value = disk_word(md->marked, md->bitmap_bits, w);
	int r;

	__dm_bless_for_disk(&value);
	r = dm_array_set_value(&md->current_bitset.array_info, ws->root, w, &value, &ws->root);
	if (!r) {
		ablock_list_add(md->touched, &md->nr_touched, word_ablock(md, w));
		ablock_list_add(md->written, &md->nr_written, word_ablock(md, w));
	} else
		DMERR("marking blocks %u-%u in era %u failed: %d", w * ERA_WORD_BITS,
		      min(w * ERA_WORD_BITS + ERA_WORD_BITS, md->bitmap_bits) - 1, md->era, r);
	return r;
}

/* Writes the words that gained blocks since they were last written into the on-disk bitset. */
static int write_marks(struct era_md *md)
{
	return word_set_drain(md, &md->unwritten, nr_words(md->bitmap_bits), write_word);
}

int era_md_write_marks(struct era_md *md)
{
	return current_writeset(md)->root == ERA_NONE ? 0 : write_marks(md);
}

static int publish_word(struct era_md *md, u32 w)
{
	struct era_writeset *ws = current_writeset(md);

	if (ws->bits)
		or_word(ws->bits, md->marked, md->bitmap_bits, w);
	return 0;
}

/*
 * At a commit: the blocks it wrote marks into are the guess for the next one, and the guess made at
 * the last commit is scored.
 */
static void rotate_hot(struct era_md *md)
{
	u32 i, held = 0;

	if (md->nr_written) {
		for (i = 0; i < md->nr_hot && i < ERA_TOUCHED_MAX; i++)
			held += ablock_listed(md->written, md->nr_written, md->hot[i]);
		md->hot_held = md->nr_hot <= ERA_TOUCHED_MAX && 2 * held >= md->nr_hot;
		md->nr_hot = md->nr_written;
		memcpy(md->hot, md->written, sizeof(md->hot));
	}
	md->nr_written = 0;
	md->nr_touched = 0;
}

/* After the commit that made the dirty words durable: writes to their blocks may pass from now on. */
static void publish_marks(struct era_md *md)
{
	word_set_drain(md, &md->dirty, nr_words(md->bitmap_bits), publish_word);
	rotate_hot(md);
}

/*
 * Shadows the hot array blocks of the current writeset, by writing a word of each back unchanged, so
 * that the next commit's marks land in blocks this transaction owns already: that copy is most of the
 * cost of marking. Only while the guess holds, and never into the reserve: it is only a head start.
 */
int era_md_prepare_marks(struct era_md *md)
{
	struct era_writeset *ws = current_writeset(md);
	u32 i, w, per_block = array_entries_per_block(md, sizeof(__le64));
	__le64 value;
	int r;

	if (ws->root == ERA_NONE || !md->hot_held || !md->nr_hot || md->nr_hot > ERA_TOUCHED_MAX)
		return 0;
	r = space_for(md, md->nr_hot + ERA_MD_SPINE_BLOCKS, NULL);
	if (r)
		return r == -ENOSPC ? 0 : r;

	for (i = 0; i < md->nr_hot; i++) {
		w = md->hot[i] * per_block;
		if (ablock_touched(md, md->hot[i]) || w >= nr_words(ws->nr_bits))
			continue;
		r = dm_array_get_value(&md->current_bitset.array_info, ws->root, w, &value);
		if (!r) {
			__dm_bless_for_disk(&value);
			r = dm_array_set_value(&md->current_bitset.array_info, ws->root, w, &value, &ws->root);
		}
		if (r) {
			DMERR("shadowing the bitset block of blocks %u.. in era %u failed: %d",
			      w * ERA_WORD_BITS, md->era, r);
			return r;
		}
		ablock_list_add(md->touched, &md->nr_touched, md->hot[i]);
	}
	return 0;
}

int era_md_pre_commit(struct era_md *md)
{
	struct era_writeset *ws = current_writeset(md);
	int r;

	if (ws->root != ERA_NONE) {
		r = write_marks(md);
		if (!r)
			r = dm_bitset_flush(&md->current_bitset, ws->root, &ws->root);
		if (r) {
			DMERR("flushing the current writeset failed: %d", r);
			return r;
		}
	}

	r = dm_tm_pre_commit(md->tm);
	if (r)
		DMERR("writing the metadata failed: %d", r);
	return r;
}

/*
 * Between the pre-commit and the superblock: marks the target adds now (era_md_mark_joining()) are
 * all in array blocks this transaction has shadowed already, so writing them allocates nothing, and
 * the space map committed by the pre-commit stays exact. They are written and flushed before the
 * superblock, like the rest of the transaction.
 */
static int join_late(struct era_md *md, era_md_join_fn join, void *context)
{
	dm_block_t free_before, free_after;
	int r;

	r = dm_sm_get_nr_free(md->sm, &free_before);
	if (r)
		return r;
	md->joining = true;
	r = join(context);
	md->joining = false;
	if (r < 0 || !md->unwritten.nr)
		return r;

	r = write_marks(md);
	if (!r)
		r = dm_sm_get_nr_free(md->sm, &free_after);
	if (!r && free_after != free_before) {
		DMERR("late marks of era %u allocated metadata blocks after the space map commit", md->era);
		r = -EIO;
	}
	if (!r)
		r = dm_bm_flush(md->bm);
	if (r)
		DMERR("writing the late marks of era %u failed: %d", md->era, r);
	return r;
}

/* Called with the device's guard held. */
static int commit_guarded(struct era_md *md, era_md_join_fn join, void *context)
{
	int r;

	r = era_md_pre_commit(md);
	if (!r && join && current_writeset(md)->root != ERA_NONE)
		r = join_late(md, join, context);
	/*
	 * Fix (c): a transaction is atomic only if the superblock reaches the disk after every block it
	 * points at. After a failed flush some of them may not be there, so the old superblock must stay,
	 * and nothing of the new one may wait in the cache for a later write-back.
	 */
	if (r) {
		if (dmkit_reverted(TM_COMMIT_ORDER))
			write_superblock(md, false);
		return r;
	}
	r = write_superblock(md, true);
	if (!r)
		publish_marks(md);
	return r;
}

int era_md_commit_joining(struct era_md *md, era_md_join_fn join, void *context)
{
	unsigned int noio = dmkit_md_guard_lock(md->guard);
	int r = commit_guarded(md, join, context);

	dmkit_md_guard_unlock(md->guard, noio);
	return r;
}

int era_md_commit(struct era_md *md)
{
	return era_md_commit_joining(md, NULL, NULL);
}

/*----------------------------------------------------------------
 * Open, format, close
 *--------------------------------------------------------------*/

static void destroy_tm(struct era_md *md)
{
	dm_sm_destroy(md->sm);
	dm_tm_destroy(md->tm);
	md->sm = NULL;
	md->tm = NULL;
}

static int format_metadata(struct era_md *md)
{
	int r;

	r = dm_tm_create_with_sm(md->bm, ERA_SB_LOCATION, &md->tm, &md->sm);
	if (r) {
		DMERR("creating the space map failed: %d", r);
		return r;
	}
	init_value_types(md);

	r = dm_btree_empty(&md->writeset_tree, &md->writeset_tree_root);
	if (!r)
		r = dm_array_empty(&md->era_array, &md->era_array_root);
	if (!r)
		r = commit_guarded(md, NULL, NULL);
	if (r) {
		DMERR("formatting the metadata failed: %d", r);
		destroy_tm(md);
	}
	return r;
}

static int load_metadata(struct era_md *md, const char **error)
{
	struct era_superblock_disk *sb;
	struct era_writeset *ws = current_writeset(md);
	struct dm_block *b;
	int r;

	r = dm_bm_read_lock(md->bm, ERA_SB_LOCATION, &sb_validator.v, &b);
	if (r) {
		*error = "Cannot read the metadata superblock";
		return r;
	}
	sb = dm_block_data(b);
	if (dmkit_knob(load_delay_ms))
		msleep(dmkit_knob(load_delay_ms));

	/* Era fix 3: the bits on disk are only meaningful for the block size they were recorded with. */
	if (le32_to_cpu(sb->data_block_size) != md->data_block_size) {
		*error = "Metadata was formatted for another block size; changing it is not supported";
		r = -EINVAL;
		goto out;
	}

	r = dm_tm_open_with_sm(md->bm, ERA_SB_LOCATION, sb->sm_root, sizeof(sb->sm_root),
			       &md->tm, &md->sm);
	if (r) {
		*error = "Cannot open the metadata space map";
		goto out;
	}
	init_value_types(md);

	md->nr_blocks = le32_to_cpu(sb->nr_blocks);
	md->era = le32_to_cpu(sb->current_era);
	md->writeset_tree_root = le64_to_cpu(sb->writeset_tree_root);
	md->era_array_root = le64_to_cpu(sb->era_array_root);
	md->held_root = le64_to_cpu(sb->metadata_snap);

	/*
	 * A writeset in the superblock belongs to an era that was never archived, e.g. because the machine
	 * crashed: it holds every committed mark of that era. Keep it as the current writeset so that the
	 * next rollover archives it instead of losing it (era fix 1).
	 */
	ws->nr_bits = le32_to_cpu(sb->current_writeset.nr_bits);
	ws->root = le64_to_cpu(sb->current_writeset.root);
	md->digest_wanted = true;
out:
	dm_bm_unlock(b);
	return r;
}

struct era_md *era_md_open(struct block_device *bdev, u32 data_block_size, bool may_format,
			   const char **error)
{
	struct era_md *md;
	unsigned int noio;
	bool blank;
	int r;

	md = kzalloc(sizeof(*md), GFP_KERNEL);
	if (!md) {
		*error = "Cannot allocate the metadata object";
		return ERR_PTR(-ENOMEM);
	}
	md->guard = dmkit_md_guard_get(bdev);
	if (!md->guard) {
		*error = "Cannot allocate the metadata object";
		r = -ENOMEM;
		goto bad_guard;
	}
	md->bdev = bdev;
	md->data_block_size = data_block_size;
	RCU_INIT_POINTER(md->current_set, &md->sets[0]);

	md->bm = dm_block_manager_create(bdev, ERA_MD_BLOCK_BYTES, ERA_LOCKS_PER_THREAD);
	if (IS_ERR(md->bm)) {
		*error = "Cannot create the metadata block manager";
		r = PTR_ERR(md->bm);
		goto bad_bm;
	}

	/* No commit of another table on this device may run while this one reads. */
	noio = dmkit_md_guard_lock(md->guard);
	r = superblock_is_blank(md->bm, &blank);
	if (r) {
		*error = "Cannot read the metadata device";
	} else if (blank && !may_format) {
		*error = "Metadata device is blank";
		r = -ENODATA;
	} else if (blank) {
		r = format_metadata(md);
		if (r)
			*error = "Cannot format the metadata device";
	} else {
		r = load_metadata(md, error);
	}
	dmkit_md_guard_unlock(md->guard, noio);
	if (r)
		goto bad_contents;
	return md;

bad_contents:
	dm_block_manager_destroy(md->bm);
bad_bm:
	dmkit_md_guard_put(md->guard);
bad_guard:
	kfree(md);
	return ERR_PTR(r);
}

void era_md_close(struct era_md *md)
{
	free_bitmaps(md);
	destroy_tm(md);
	dm_block_manager_destroy(md->bm);
	dmkit_md_guard_put(md->guard);
	kfree(md);
}

/*----------------------------------------------------------------
 * Size
 *--------------------------------------------------------------*/

u32 era_md_nr_blocks(struct era_md *md)
{
	return md->nr_blocks;
}

bool era_md_sized_for(struct era_md *md, u32 nr_blocks)
{
	return md->marked && md->bitmap_bits == nr_blocks && md->nr_blocks == nr_blocks;
}

int era_md_resize(struct era_md *md, u32 nr_blocks)
{
	unsigned long *fresh[ARRAY_SIZE(md->sets)] = { NULL };
	unsigned long *marked = NULL, *dirty = NULL, *unwritten = NULL;
	__le32 never_written = cpu_to_le32(0);
	unsigned int i;
	int r;

	/* The in-core marks are sized for the current writeset; none may wait for a commit here. */
	if (md->dirty.nr) {
		DMERR("resizing with %u bitset words of era %u not committed", md->dirty.nr, md->era);
		return -EBUSY;
	}

	if (nr_blocks > ERA_MD_MAX_BLOCKS) {
		DMERR("%u origin blocks are too many (at most %llu)", nr_blocks, ERA_MD_MAX_BLOCKS);
		return -EINVAL;
	}

	if (nr_blocks > md->nr_blocks) {
		r = space_for(md, array_blocks(md, nr_blocks - md->nr_blocks, sizeof(__le32)) + ERA_MD_SPINE_BLOCKS,
			      "growing the era array");
		if (r)
			return r;
	}

	/* Allocate first: nothing on disk changes unless the in-core side can follow. */
	for (i = 0; i < ARRAY_SIZE(fresh); i++) {
		fresh[i] = alloc_bitmap(nr_blocks);
		if (!fresh[i]) {
			r = -ENOMEM;
			goto bad;
		}
	}
	marked = alloc_bitmap(nr_blocks);
	dirty = alloc_bitmap(nr_words(nr_blocks));
	unwritten = alloc_bitmap(nr_words(nr_blocks));
	if (!marked || !dirty || !unwritten) {
		r = -ENOMEM;
		goto bad;
	}

	if (nr_blocks != md->nr_blocks) {
		__dm_bless_for_disk(&never_written);
		r = dm_array_resize(&md->era_array, md->era_array_root, md->nr_blocks, nr_blocks,
				    &never_written, &md->era_array_root);
		if (r) {
			DMERR("resizing the era array from %u to %u blocks failed: %d",
			      md->nr_blocks, nr_blocks, r);
			goto bad;
		}
		md->nr_blocks = nr_blocks;
	}

	/*
	 * Only a rollover follows (the next era starts from empty bitmaps), so the fresh bitmaps need not
	 * hold the current writeset's blocks: no write is marked in it any more.
	 */
	free_bitmaps(md);
	for (i = 0; i < ARRAY_SIZE(fresh); i++)
		md->sets[i].bits = fresh[i];
	md->marked = marked;
	md->dirty.bits = dirty;
	md->unwritten.bits = unwritten;
	md->bitmap_bits = nr_blocks;
	return 0;

bad:
	for (i = 0; i < ARRAY_SIZE(fresh); i++)
		kvfree(fresh[i]);
	kvfree(marked);
	kvfree(dirty);
	kvfree(unwritten);
	return r;
}

/*----------------------------------------------------------------
 * Eras
 *--------------------------------------------------------------*/

int era_md_archive(struct era_md *md)
{
	struct era_writeset *ws = current_writeset(md);
	struct era_writeset_disk value;
	u64 key = md->era;
	int r;

	if (ws->root == ERA_NONE)
		return 0;

	r = space_for(md, 2 * ERA_MD_SPINE_BLOCKS, "archiving an era");
	if (r)
		return r;
	r = write_marks(md);
	if (!r)
		r = dm_bitset_flush(&md->current_bitset, ws->root, &ws->root);
	if (r) {
		DMERR("flushing the writeset of era %u failed: %d", md->era, r);
		return r;
	}

	value.nr_bits = cpu_to_le32(ws->nr_bits);
	value.root = cpu_to_le64(ws->root);
	__dm_bless_for_disk(&value);
	r = dm_btree_insert(&md->writeset_tree, md->writeset_tree_root, &key, &value,
			    &md->writeset_tree_root);
	if (r) {
		DMERR("archiving the writeset of era %u failed: %d", md->era, r);
		return r;
	}

	/* The tree owns the bitset now. */
	ws->root = ERA_NONE;
	md->digest_wanted = true;
	return 0;
}

static int start_next_era(struct era_md *md)
{
	struct era_writeset *next = other_writeset(md);
	dm_block_t root;
	int r;

	/*
	 * The bitset word cache is keyed by word index only: a word cached for the previous writeset
	 * would be taken for this one's. Every writeset starts with a clean cache (era fix 6).
	 */
	dm_disk_bitset_init(md->tm, &md->current_bitset);
	r = dm_bitset_new(&md->current_bitset, &root, md->nr_blocks, no_bit_set, NULL);
	if (r) {
		DMERR("creating the writeset of era %u failed: %d", md->era + 1, r);
		return r;
	}

	if (next->bits)
		bitmap_zero(next->bits, md->bitmap_bits);
	if (md->marked)
		bitmap_zero(md->marked, md->bitmap_bits);
	/* The next era's bitset is another array. */
	md->nr_touched = 0;
	md->nr_written = 0;
	md->nr_hot = 0;
	next->nr_bits = md->nr_blocks;
	next->root = root;

	rcu_assign_pointer(md->current_set, next);
	/*
	 * Once no mapper still tests the previous writeset, every write from now on is checked against
	 * the new era; the previous bitmap is only wiped two eras on.
	 */
	synchronize_rcu();
	md->era++;
	return 0;
}

int era_md_rollover(struct era_md *md)
{
	int r;

	r = space_for(md, writeset_blocks(md, md->nr_blocks) + 2 * ERA_MD_SPINE_BLOCKS, "starting a new era");
	if (r)
		return r;
	r = era_md_archive(md);
	if (r)
		return r;
	return start_next_era(md);
}

/*----------------------------------------------------------------
 * Marking writes
 *--------------------------------------------------------------*/

bool era_md_range_marked(struct era_md *md, u32 first, u32 last)
{
	struct era_writeset *ws;
	bool marked;

	rcu_read_lock();
	ws = rcu_dereference(md->current_set);
	marked = in_core_covers(md, ws, last) && find_next_zero_bit(ws->bits, last + 1, first) > last;
	rcu_read_unlock();
	return marked;
}

int era_md_mark(struct era_md *md, u32 first, u32 last)
{
	struct era_writeset *ws = current_writeset(md);
	u32 b;
	int r;

	if (ws->root == ERA_NONE || last >= ws->nr_bits || !md->marked || last >= md->bitmap_bits) {
		DMERR("no writeset covers blocks %u-%u in era %u", first, last, md->era);
		return -EINVAL;
	}
	if (find_next_zero_bit(md->marked, last + 1, first) > last)
		return 0;
	r = space_for(md, array_blocks(md, last / ERA_WORD_BITS - first / ERA_WORD_BITS + 1, sizeof(__le64)) +
		      ERA_MD_SPINE_BLOCKS, "marking written blocks");
	if (r)
		return r;

	for (b = first; b <= last; b++) {
		if (__test_and_set_bit(b, md->marked))
			continue;
		word_set_add(&md->dirty, b / ERA_WORD_BITS);
		word_set_add(&md->unwritten, b / ERA_WORD_BITS);
	}
	return 0;
}

int era_md_mark_joining(struct era_md *md, u32 first, u32 last)
{
	u32 w, b;

	if (WARN_ON_ONCE(!md->joining))
		return -EINVAL;
	if (last >= md->bitmap_bits || last >= current_writeset(md)->nr_bits)
		return 0;	/* era_md_mark() says why, in the next batch */
	for (b = first; b <= last; b = (w + 1) * ERA_WORD_BITS) {
		b = find_next_zero_bit(md->marked, last + 1, b);
		if (b > last)
			break;
		w = b / ERA_WORD_BITS;
		if (!ablock_touched(md, word_ablock(md, w)))
			return 0;
	}
	return era_md_mark(md, first, last) ?: 1;
}

bool era_md_marks_pending(struct era_md *md)
{
	return md->dirty.nr;
}

/*----------------------------------------------------------------
 * Digest
 *--------------------------------------------------------------*/

bool era_md_digest_pending(struct era_md *md)
{
	return md->digest.active || md->digest_wanted;
}

/* Returns 1 when it picked the oldest archived writeset, 0 when none is left. */
static int digest_pick_oldest(struct era_md *md)
{
	struct era_digest *d = &md->digest;
	struct era_writeset_disk value;
	u64 from = 0, era;
	int r;

	r = dm_btree_lookup_next(&md->writeset_tree, md->writeset_tree_root, &from, &era, &value);
	if (r == -ENODATA) {
		md->digest_wanted = false;
		return 0;
	}
	if (r)
		return r;

	d->era = era;
	d->root = le64_to_cpu(value.root);
	/* Bits beyond a shrunk origin have no era array entry. */
	d->nr_bits = min(le32_to_cpu(value.nr_bits), md->nr_blocks);
	d->next_bit = 0;
	dm_disk_bitset_init(md->tm, &d->bitset);	/* era fix 6 */
	d->active = true;
	return 1;
}

static int digest_copy_bits(struct era_md *md)
{
	struct era_digest *d = &md->digest;
	u32 stop = min(d->nr_bits, d->next_bit + ERA_DIGEST_BITS_PER_STEP);
	__le32 era_le = cpu_to_le32(d->era);
	dm_block_t unchanged;
	bool written;
	int r;

	while (d->next_bit < stop) {
		/* Nothing in this bitset is dirty, so its root cannot move. */
		r = dm_bitset_test_bit(&d->bitset, d->root, d->next_bit, &unchanged, &written);
		if (r)
			return r;
		if (written) {
			__dm_bless_for_disk(&era_le);
			r = dm_array_set_value(&md->era_array, md->era_array_root, d->next_bit,
					       &era_le, &md->era_array_root);
			if (r)
				return r;
		}
		d->next_bit++;
	}
	return 0;
}

static int digest_retire_writeset(struct era_md *md)
{
	u64 key = md->digest.era;
	int r;

	/* Removing the value drops the tree's reference, which frees the bitset. */
	r = dm_btree_remove(&md->writeset_tree, md->writeset_tree_root, &key, &md->writeset_tree_root);
	if (!r)
		md->digest.active = false;
	return r;
}

int era_md_digest_step(struct era_md *md)
{
	struct era_digest *d = &md->digest;
	int r;

	if (!d->active) {
		r = digest_pick_oldest(md);
		if (r <= 0)
			goto out;
	}

	r = space_for(md, array_blocks(md, ERA_DIGEST_BITS_PER_STEP, sizeof(__le32)) + ERA_MD_SPINE_BLOCKS,
		      "digesting an archived era");
	if (r)
		goto out;
	if (d->next_bit < d->nr_bits)
		r = digest_copy_bits(md);
	else
		r = digest_retire_writeset(md);
	if (!r)
		return 1;
out:
	if (r < 0) {
		DMERR("digesting era %u into the era array failed: %d", d->era, r);
		d->active = false;
	}
	return r;
}

/*----------------------------------------------------------------
 * Metadata snapshots
 *--------------------------------------------------------------*/

bool era_md_snap_held(struct era_md *md)
{
	return md->held_root != ERA_NONE;
}

/*
 * Copies the committed superblock to a new block and takes a reference on the two roots it names, so
 * userspace can read them while the live metadata moves on.
 */
static int clone_superblock(struct era_md *md)
{
	struct dm_block *copy;
	dm_block_t where;
	int children_shared;
	int r;

	/* A shared block 0 makes the shadow a copy in a new location rather than block 0 itself. */
	r = dm_sm_inc_block(md->sm, ERA_SB_LOCATION);
	if (r)
		return r;
	r = dm_tm_shadow_block(md->tm, ERA_SB_LOCATION, &sb_validator.v, &copy, &children_shared);
	if (r) {
		dm_sm_dec_block(md->sm, ERA_SB_LOCATION);
		return r;
	}
	where = dm_block_location(copy);

	r = dm_sm_inc_block(md->sm, md->writeset_tree_root);
	if (r)
		goto bad_tree_ref;
	r = dm_sm_inc_block(md->sm, md->era_array_root);
	if (r)
		goto bad_array_ref;

	dm_tm_unlock(md->tm, copy);
	md->held_root = where;
	return 0;

bad_array_ref:
	dm_sm_dec_block(md->sm, md->writeset_tree_root);
bad_tree_ref:
	dm_tm_unlock(md->tm, copy);
	dm_sm_dec_block(md->sm, where);
	return r;
}

int era_md_take_snap(struct era_md *md)
{
	int r;

	if (era_md_snap_held(md))
		return -EINVAL;

	/* The snapshot shows a complete era: close the current one and commit before copying. */
	r = era_md_rollover(md);
	if (!r)
		r = era_md_commit(md);
	if (!r)
		r = clone_superblock(md);
	if (r)
		DMERR("taking a metadata snapshot failed: %d", r);
	return r;
}

int era_md_drop_snap(struct era_md *md)
{
	struct era_superblock_disk *sb;
	struct dm_block *copy;
	dm_block_t where = md->held_root, tree, array;
	int r;

	if (!era_md_snap_held(md))
		return -EINVAL;

	r = dm_tm_read_lock(md->tm, where, &sb_validator.v, &copy);
	if (r) {
		DMERR("reading the metadata snapshot in block %llu failed: %d", where, r);
		return r;
	}
	sb = dm_block_data(copy);
	tree = le64_to_cpu(sb->writeset_tree_root);
	array = le64_to_cpu(sb->era_array_root);
	dm_tm_unlock(md->tm, copy);

	/* Whatever fails below, the next commit no longer records a snapshot. */
	md->held_root = ERA_NONE;

	r = dm_btree_del(&md->writeset_tree, tree);
	if (!r)
		r = dm_array_del(&md->era_array, array);
	if (!r)
		r = dm_sm_dec_block(md->sm, where);
	if (r)
		DMERR("dropping the metadata snapshot failed: %d", r);
	return r;
}

/*----------------------------------------------------------------
 * Usage
 *--------------------------------------------------------------*/

int era_md_usage(struct era_md *md, struct era_md_usage *usage)
{
	dm_block_t nr_free;
	int r;

	r = dm_sm_get_nr_blocks(md->sm, &usage->total);
	if (!r)
		r = dm_sm_get_nr_free(md->sm, &nr_free);
	if (r)
		return r;
	usage->used = usage->total - nr_free;
	usage->era = md->era;
	usage->held_root = md->held_root;
	return 0;
}
