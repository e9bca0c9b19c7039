// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-cache: keeps copies of an origin device's hot blocks on a faster cache device. Its metadata is
 * the in-tree cache target's (formats 1 and 2): either target and cache_check/cache_dump read what the
 * other wrote.
 *
 * Table:    dmkit-cache <metadata dev> <cache dev> <origin dev> <block size> <#features>
 *           [writeback | writethrough | passthrough | metadata2 | no_discard_passdown]*
 *           <policy> <#policy args> [<key> <value>]*
 *           block size: sectors, a multiple of 64 in 64..2097152. Policies: dmkit-lru (also answers to
 *           default, smq and mq until an smq-class policy exists) and cleaner.
 * Status:   INFO  "<md block size> <used>/<total md blocks> <block size> <used>/<total cache blocks>
 *                  <read hits> <read misses> <write hits> <write misses> <demotions> <promotions>
 *                  <dirty> <#features> <features>* 2 migration_threshold <n> <policy> <#args> <args>*
 *                  <rw|ro> <needs_check|->", or "Fail"
 *           TABLE "<md maj:min> <cache maj:min> <origin maj:min> <the other ctr args>"
 * Messages: migration_threshold <sectors>; a policy tunable <key> <value>;
 *           invalidate_cblocks [<cblock>|<begin>-<end>]* (passthrough only, end exclusive)
 *
 * I/O: map() sends a bio on by itself when that needs no metadata change and no copy (max_io_len is the
 * block size, so a bio is in one cache block): a read of a mapped block, a writeback write to a mapped
 * block that is already dirty, and a miss that the policy does not promote go to the cache or the origin
 * device right away; a miss it chooses for a promotion goes to the origin too, and the worker copies the
 * block in later, with no bio waiting for it. Everything else (the first write that dirties a block,
 * writethrough and passthrough write hits, FUA, flushes, discards, bios to a block being migrated) goes
 * to one worker, which handles them in order, and between them the promotions asked for. The in-core mapping (hash, LRU and free lists, dirty bits, the policy's
 * counts) is guarded by a spinlock that map() takes; the worker changes it under both that spinlock and
 * the mutex.
 *
 * Migrations (promotion: origin -> cache; writeback: cache -> origin) are synchronous dm-kcopyd copies
 * done by the worker. A copy never races with a bio on the same block: before it, the block is marked
 * busy (map() hands its bios to the worker from then on) and the bios already sent to its cache block
 * (or, for a promotion, the writes already sent to the origin block) are waited for; other blocks' bios
 * go on. A cache block is only reused after the commit that unmapped it, and every commit first flushes
 * the cache and origin devices: metadata never names data that is not on disk. A write that map() sends
 * on lands in a block whose dirty bit is already set in core, so the next commit (a flush's, a FUA
 * write's or the periodic one) covers it like any other.
 *
 * Policy (dmkit-lru, the name kept for the metadata's sake): a frequency filter in front of an LRU. Every
 * access counts in a small table of decaying counters per origin block (exact, or a two-row hashed sketch
 * for large origins); counts halve every 64 accesses per cache block. While the cache has never been
 * full, every miss is promoted; after that a miss is promoted only when its block has been seen at least
 * twice and half again as often as the coldest of a few blocks at the LRU end, which is also the one
 * evicted (a few at a time), and while at most MAX_QUEUED_PROMOTIONS promotions wait for the worker. On
 * a stable workload the hot set stays and promotions become rare.
 *
 * Lifecycle: the ctr takes the metadata object shared by every table on that metadata device
 * (cache-metadata.c); the mappings, hints and discard bits are loaded at the first preresume, after the
 * previous table's postsuspend wrote its last clean commit. Every preresume commits once to clear the
 * clean-shutdown flag, so after a crash the whole cache counts as dirty.
 */
#include <linux/blkdev.h>
#include <linux/delay.h>
#include <linux/device-mapper.h>
#include <linux/dm-kcopyd.h>
#include <linux/hash.h>
#include <linux/jhash.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>

#include "dmkit-common.h"
#include "cache-metadata.h"

#define DM_MSG_PREFIX "dmkit-cache"

#define MIN_BLOCK_SECTORS 64
#define MAX_BLOCK_SECTORS 2097152
#define DEFAULT_MIGRATION_THRESHOLD 2048
#define MAX_DISCARD_BLOCKS (1U << 14)
#define LARGE_CACHE_BLOCKS (1U << 20)
#define COMMIT_PERIOD HZ
/*
 * Blocks freed at once when the cache is full, one commit for the lot: about 1/128 of the cache, at most
 * 4. The room left is only given to blocks hotter than the coldest still cached (admit()), so a batch
 * does not fill up with lukewarm blocks.
 */
#define EVICT_BATCH_MAX 4
#define CLEAN_BATCH 16
#define MAX_POLICY_ARGS 1024
#define MAX_HITS 0xffffffffU

/* Policy: access counts per origin block. */
#define FREQ_MAX 0xffffU
#define FREQ_EXACT_MAX (1U << 20)	/* origin blocks counted one by one up to this many */
#define FREQ_ROW_MAX (1U << 20)		/* else two hashed rows of at most this many counters */
#define FREQ_WINDOW_PER_CBLOCK 64	/* accesses per cache block between two halvings */
#define FREQ_AGE_CHUNK 4096		/* counters halved per spinlock hold */
#define FREQ_SEED_MAX 8			/* count given to a block loaded from the metadata */
#define PROMOTE_MIN_FREQ 2		/* a full cache never promotes a block seen once */
#define VICTIM_SAMPLE 8			/* entries at the LRU end looked at for the coldest */
/*
 * Promotions map() may have asked the worker for that it has not started. No more are asked for until
 * it has (those misses may be chosen when they come back): the worker does them one after the other.
 */
#define MAX_QUEUED_PROMOTIONS 2
/* Origin writes in flight are counted per bucket of origin blocks, for promotions to wait on. */
#define OWRITE_BITS 10

/*
 * Holds the worker this long before each promotion copy, so that a table reload reliably lands while
 * the active table is changing its metadata (the cache-shared-metadata window).
 */
DMKIT_TEST_KNOB(promote_delay_ms, "milliseconds the worker waits before each promotion");

enum io_mode {
	IO_WRITEBACK,
	IO_WRITETHROUGH,
	IO_PASSTHROUGH,
};

/* Metadata mode: write; read-only after a metadata error (nothing commits); fail (every bio errors). */
enum cache_mode {
	CACHE_MODE_WRITE,
	CACHE_MODE_READ_ONLY,
	CACHE_MODE_FAIL,
};

struct policy_type {
	const char *name;	/* as given in the table */
	const char *real;	/* as reported and stored with the hints */
	bool cleaner;
	u32 version[3];
};

static const struct policy_type policies[] = {
	{ "dmkit-lru", "dmkit-lru", false, { 1, 0, 0 } },
	{ "default", "dmkit-lru", false, { 1, 0, 0 } },
	{ "smq", "dmkit-lru", false, { 1, 0, 0 } },
	{ "mq", "dmkit-lru", false, { 1, 0, 0 } },
	{ "cleaner", "cleaner", true, { 1, 0, 0 } },
};

/* Accepted for compatibility with the mq policy's tables; they change nothing. */
static const char *const ignored_tunables[] = {
	"sequential_threshold", "random_threshold", "read_promote_adjustment",
	"write_promote_adjustment", "discard_promote_adjustment",
};

/*
 * One cache block: mapped (on the hash and the LRU list), free (on the free list), or just unmapped
 * and waiting for the commit that lets it be reused (on no list).
 */
struct centry {
	struct hlist_node hash;
	struct list_head lru;
	u64 oblock;
	u32 hits;
	atomic_t inflight;	/* bios sent to this cache block that have not completed */
	bool valid;
	bool dirty;
	bool busy;		/* being migrated or unmapped: map() hands its bios to the worker */
};

struct cache {
	struct dm_target *ti;
	struct dm_dev *metadata_dev;
	struct dm_dev *cache_dev;
	struct dm_dev *origin_dev;
	sector_t block_sectors;
	u64 nr_full_oblocks;	/* origin blocks wholly inside the target: only these are cached */
	u32 nr_cblocks;
	sector_t dblock_sectors;
	u64 nr_dblocks;

	enum io_mode io_mode;
	unsigned int metadata_version;
	bool discard_passdown;
	const struct policy_type *policy;
	unsigned long migration_threshold;
	char **table_args;
	unsigned int nr_table_args;

	struct cache_md *md;

	/* Serialises the worker, the ticker, messages and the suspend hooks; guards everything below. */
	struct mutex lock;
	enum cache_mode mode;
	bool loaded;
	bool suspended;
	bool changed;		/* metadata changed since the last commit */
	struct centry *entries;
	unsigned int hash_bits;
	unsigned long *discarded;	/* bits changed with atomic bitops, under the mutex */

	/*
	 * Also guarded by map_lock, which map() takes without the mutex: the hash, the lists, the valid,
	 * dirty, busy and hits fields of the entries, the promotion in progress and the policy's counts.
	 * map() only reorders the LRU list, bumps hits and counts accesses; every other change is the
	 * worker's (or a message's, or a suspend hook's), which holds both. Holding the mutex alone, one may
	 * read what only the holders of both change (the hash, the free list, valid and dirty), not the
	 * LRU order.
	 */
	spinlock_t map_lock;
	struct hlist_head *buckets;
	struct list_head lru;	/* head: least recently used */
	struct list_head free;
	bool filled;		/* the cache has been full since it was loaded */
	bool promoting;		/* promoting_oblock is being copied in: map() hands its bios on */
	u64 promote_req[MAX_QUEUED_PROMOTIONS];	/* origin blocks map() chose for a promotion */
	unsigned int nr_promote_req;
	u64 promoting_oblock;
	u16 *freq;		/* access counts: freq_rows rows of freq_size counters */
	u32 freq_size;
	unsigned int freq_rows;	/* 1: indexed by origin block; 2: hashed */
	u32 freq_accesses;	/* since the last halving */
	u32 freq_window;
	bool aging;
	struct work_struct age_work;

	/* Origin writes in flight per bucket of origin blocks (map()'s misses and the worker's). */
	atomic_t owrites[1U << OWRITE_BITS];

	/* Read without the lock (status). */
	atomic_t nr_valid;
	atomic_t nr_dirty;
	atomic_t read_hits, read_misses, write_hits, write_misses, demotions, promotions;

	spinlock_t bio_lock;
	struct bio_list deferred;
	struct workqueue_struct *wq;
	struct work_struct worker;
	struct delayed_work ticker;

	/* Bios the worker sent on that have not completed. */
	atomic_t inflight;
	wait_queue_head_t idle_wait;

	struct dm_kcopyd_client *kc;
	struct bio_set bs;
};

struct per_bio {
	bool tracked;
	int owrite;		/* its owrites bucket while it counts there, else -1 */
	struct centry *entry;	/* the entry whose inflight counts it, or NULL */
};

static const char *cache_name(struct cache *c)
{
	return dm_table_device_name(c->ti->table);
}

/*----------------------------------------------------------------------------------------------*/
/* Modes */

static const char *mode_word(enum cache_mode mode)
{
	switch (mode) {
	case CACHE_MODE_WRITE:
		return "rw";
	case CACHE_MODE_READ_ONLY:
		return "ro";
	default:
		return "Fail";
	}
}

static void set_mode(struct cache *c, enum cache_mode mode)
{
	if (mode == c->mode)
		return;
	if (mode != CACHE_MODE_WRITE)
		cache_md_set_read_only(c->md);
	else
		cache_md_set_read_write(c->md);
	DMWARN("%s: switching to %s mode", cache_name(c), mode_word(mode));
	WRITE_ONCE(c->mode, mode);
}

/*
 * A metadata operation failed: the disk keeps the last committed transaction, which no longer matches
 * what is in core, so nothing may commit any more. Reads and writes go on (writes to cached blocks go to
 * both devices from here on) until the device is reloaded after a check.
 */
static void metadata_failed(struct cache *c, const char *what, int r)
{
	DMERR("%s: metadata %s failed: %d", cache_name(c), what, r);
	if (c->mode != CACHE_MODE_WRITE)
		return;
	if (cache_md_set_needs_check(c->md))
		DMERR("%s: cannot set needs_check in the superblock", cache_name(c));
	if (cache_md_abort(c->md)) {
		set_mode(c, CACHE_MODE_FAIL);
		return;
	}
	set_mode(c, CACHE_MODE_READ_ONLY);
}

/*----------------------------------------------------------------------------------------------*/
/* Blocks */

static sector_t origin_sector(struct cache *c, struct bio *bio)
{
	return dm_target_offset(c->ti, bio->bi_iter.bi_sector);
}

static u64 bio_oblock(struct cache *c, struct bio *bio)
{
	sector_t s = origin_sector(c, bio);

	sector_div(s, c->block_sectors);
	return s;
}

static sector_t offset_in_block(struct cache *c, struct bio *bio)
{
	sector_t s = origin_sector(c, bio);

	return sector_div(s, c->block_sectors);
}

static u32 entry_cblock(struct cache *c, struct centry *e)
{
	return e - c->entries;
}

static u64 oblock_dblock(struct cache *c, u64 oblock)
{
	sector_t s = oblock * c->block_sectors;

	sector_div(s, c->dblock_sectors);
	return s;
}

static struct hlist_head *bucket(struct cache *c, u64 oblock)
{
	return &c->buckets[hash_64(oblock, c->hash_bits)];
}

static struct centry *lookup(struct cache *c, u64 oblock)
{
	struct centry *e;

	hlist_for_each_entry(e, bucket(c, oblock), hash)
		if (e->oblock == oblock)
			return e;
	return NULL;
}

/* map_lock held (or nothing else running: loading). */
static void map_entry(struct cache *c, struct centry *e, u64 oblock, bool dirty, u32 hits)
{
	e->oblock = oblock;
	e->valid = true;
	e->dirty = dirty;
	e->hits = hits;
	hlist_add_head(&e->hash, bucket(c, oblock));
	list_move_tail(&e->lru, &c->lru);
	atomic_inc(&c->nr_valid);
	if (dirty)
		atomic_inc(&c->nr_dirty);
}

/*
 * Unmapped in core, map_lock held; the caller unmaps it in the metadata and puts it where it may be
 * reused. Also drops it from the LRU list: it is on no list until then.
 */
static void unmap_entry(struct cache *c, struct centry *e)
{
	hlist_del_init(&e->hash);
	list_del_init(&e->lru);
	e->valid = false;
	if (e->dirty)
		atomic_dec(&c->nr_dirty);
	e->dirty = false;
	atomic_dec(&c->nr_valid);
}

/* Unmap and put on the free list at once (nothing committed names it any more), map_lock taken here. */
static void unmap_to_free(struct cache *c, struct centry *e)
{
	spin_lock_irq(&c->map_lock);
	unmap_entry(c, e);
	list_add_tail(&e->lru, &c->free);
	spin_unlock_irq(&c->map_lock);
}

static int record_entry(struct cache *c, struct centry *e)
{
	int r = cache_md_set_mapping(c->md, entry_cblock(c, e), e->valid, e->oblock, e->dirty);

	if (r)
		metadata_failed(c, "update", r);
	else
		c->changed = true;
	return r;
}

static int set_dirty(struct cache *c, struct centry *e, bool dirty)
{
	if (e->dirty == dirty)
		return 0;
	spin_lock_irq(&c->map_lock);
	e->dirty = dirty;
	spin_unlock_irq(&c->map_lock);
	if (dirty)
		atomic_inc(&c->nr_dirty);
	else
		atomic_dec(&c->nr_dirty);
	return record_entry(c, e);
}

/* map_lock held. */
static void touch(struct cache *c, struct centry *e)
{
	if (e->hits != MAX_HITS)
		e->hits++;
	list_move_tail(&e->lru, &c->lru);
}

static void touch_locked(struct cache *c, struct centry *e)
{
	spin_lock_irq(&c->map_lock);
	touch(c, e);
	spin_unlock_irq(&c->map_lock);
}

/*
 * Mark a mapped block busy and wait for the bios already sent to its cache block: from then on map()
 * sends it nothing, so a copy or an unmap cannot race with a bio. The worker's own bios on it have
 * been counted too. release() ends it.
 */
static void quiesce(struct cache *c, struct centry *e)
{
	spin_lock_irq(&c->map_lock);
	e->busy = true;
	spin_unlock_irq(&c->map_lock);
	wait_event(c->idle_wait, !atomic_read(&e->inflight));
}

static void release(struct cache *c, struct centry *e)
{
	spin_lock_irq(&c->map_lock);
	e->busy = false;
	spin_unlock_irq(&c->map_lock);
}

static unsigned int owrite_bucket(u64 oblock)
{
	return hash_64(oblock, OWRITE_BITS);
}

/*----------------------------------------------------------------------------------------------*/
/* Policy: access counts and the promotion filter (all under map_lock) */

static u32 freq_slot(struct cache *c, u64 oblock, unsigned int row)
{
	if (c->freq_rows == 1)
		return oblock < c->freq_size ? oblock : c->freq_size - 1;
	return row * c->freq_size +
	       (jhash_2words((u32)oblock, (u32)(oblock >> 32), 0x5eed0000U + row) & (c->freq_size - 1));
}

static u32 freq_get(struct cache *c, u64 oblock)
{
	u32 f = FREQ_MAX;
	unsigned int row;

	for (row = 0; row < c->freq_rows; row++)
		f = min_t(u32, f, c->freq[freq_slot(c, oblock, row)]);
	return f;
}

/* Count one access; returns the block's count after it. */
static u32 freq_bump(struct cache *c, u64 oblock)
{
	u32 f = freq_get(c, oblock);
	unsigned int row;
	u32 slot;

	/* Conservative update: only the counters that made the minimum move. */
	if (f < FREQ_MAX) {
		for (row = 0; row < c->freq_rows; row++) {
			slot = freq_slot(c, oblock, row);
			if (c->freq[slot] == f)
				c->freq[slot]++;
		}
		f++;
	}
	if (++c->freq_accesses >= c->freq_window && !c->aging) {
		c->aging = true;
		c->freq_accesses = 0;
		queue_work(c->wq, &c->age_work);
	}
	return f;
}

/* A block loaded from the metadata starts warm, so a reload does not make the cache churn. */
static void freq_seed(struct cache *c, u64 oblock, u32 hint)
{
	u32 f = min_t(u32, hint + 1, FREQ_SEED_MAX);
	unsigned int row;
	u32 slot;

	for (row = 0; row < c->freq_rows; row++) {
		slot = freq_slot(c, oblock, row);
		c->freq[slot] = max_t(u32, c->freq[slot], f);
	}
}

/* Halve every count, a chunk at a time, so that old popularity fades. */
static void do_age(struct work_struct *work)
{
	struct cache *c = container_of(work, struct cache, age_work);
	u32 total = c->freq_size * c->freq_rows;
	u32 i, end;

	for (i = 0; i < total; i = end) {
		end = min_t(u32, total, i + FREQ_AGE_CHUNK);
		spin_lock_irq(&c->map_lock);
		for (; i < end; i++)
			c->freq[i] >>= 1;
		spin_unlock_irq(&c->map_lock);
		cond_resched();
	}
	spin_lock_irq(&c->map_lock);
	c->aging = false;
	spin_unlock_irq(&c->map_lock);
}

/* The coldest of the few entries at the LRU end that are not busy, or NULL. */
static struct centry *coldest_entry(struct cache *c, u32 *freq)
{
	struct centry *e, *best = NULL;
	unsigned int seen = 0;
	u32 f, best_f = U32_MAX;

	list_for_each_entry(e, &c->lru, lru) {
		if (e->busy)
			continue;
		f = freq_get(c, e->oblock);
		/* On a tie a clean one: it needs no write back. */
		if (f < best_f || (f == best_f && best->dirty && !e->dirty)) {
			best = e;
			best_f = f;
		}
		if (++seen == VICTIM_SAMPLE)
			break;
	}
	if (freq)
		*freq = best_f;
	return best;
}

/* Whether a miss on a block counted @f times is worth a promotion. */
static bool admit(struct cache *c, u32 f)
{
	u32 victim_f;

	if (c->nr_promote_req >= MAX_QUEUED_PROMOTIONS)
		return false;
	if (!list_empty(&c->free) && !c->filled)
		return true;
	if (list_empty(&c->free))
		c->filled = true;
	if (f < PROMOTE_MIN_FREQ)
		return false;
	if (!coldest_entry(c, &victim_f))
		return !list_empty(&c->free);
	/*
	 * Hotter than what it would replace (or than the coldest left, for the room an eviction batch
	 * left), by a margin that keeps near-equals from swapping.
	 */
	return f > victim_f + victim_f / 2;
}

/*----------------------------------------------------------------------------------------------*/
/* Commit */

static int flush_devices(struct cache *c)
{
	return blkdev_issue_flush(c->cache_dev->bdev) ?: blkdev_issue_flush(c->origin_dev->bdev);
}

static void save_stats(struct cache *c)
{
	struct cache_md_stats s = {
		.read_hits = atomic_read(&c->read_hits),
		.read_misses = atomic_read(&c->read_misses),
		.write_hits = atomic_read(&c->write_hits),
		.write_misses = atomic_read(&c->write_misses),
	};

	cache_md_set_stats(c->md, &s);
}

/* Data first: both devices are flushed, then the metadata that names their blocks commits. */
static int commit(struct cache *c, bool clean_shutdown)
{
	int r;

	r = flush_devices(c);
	if (r) {
		DMERR_LIMIT("%s: flushing the cache or origin device failed: %d", cache_name(c), r);
		return r;
	}
	if (c->mode != CACHE_MODE_WRITE)
		return 0;
	save_stats(c);
	r = cache_md_commit(c->md, clean_shutdown);
	if (r) {
		metadata_failed(c, "commit", r);
		return r;
	}
	c->changed = false;
	return 0;
}

/*----------------------------------------------------------------------------------------------*/
/* Migrations */

struct sync_copy {
	struct completion done;
	bool failed;
};

static void copy_done(int read_err, unsigned long write_err, void *context)
{
	struct sync_copy *sc = context;

	sc->failed = read_err || write_err;
	complete(&sc->done);
}

static void wait_idle(struct cache *c)
{
	wait_event(c->idle_wait, !atomic_read(&c->inflight));
}

static int copy_block(struct cache *c, struct centry *e, u64 oblock, bool to_cache)
{
	struct dm_io_region origin = {
		.bdev = c->origin_dev->bdev,
		.sector = oblock * c->block_sectors,
		.count = c->block_sectors,
	};
	struct dm_io_region cached = {
		.bdev = c->cache_dev->bdev,
		.sector = (sector_t)entry_cblock(c, e) * c->block_sectors,
		.count = c->block_sectors,
	};
	struct sync_copy sc = { .failed = false };

	init_completion(&sc.done);
	if (to_cache)
		dm_kcopyd_copy(c->kc, &origin, 1, &cached, 0, copy_done, &sc);
	else
		dm_kcopyd_copy(c->kc, &cached, 1, &origin, 0, copy_done, &sc);
	wait_for_completion(&sc.done);
	if (sc.failed) {
		DMERR_LIMIT("%s: copying block %llu %s the cache failed", cache_name(c), oblock,
			    to_cache ? "into" : "out of");
		return -EIO;
	}
	return 0;
}

/* The block is quiesced (busy, nothing in flight on it). */
static int write_back(struct cache *c, struct centry *e)
{
	int r = copy_block(c, e, e->oblock, false);

	if (r)
		return r;
	return set_dirty(c, e, false);
}

/*
 * Free a batch of cache blocks, the coldest near the LRU end first: dirty ones are written back first.
 * The freed blocks are only reused once the commit that unmaps them is on disk, or a crash could find
 * the old mapping pointing at another block's data.
 */
static int evict_some(struct cache *c)
{
	unsigned int batch = clamp_t(u32, c->nr_cblocks / 128, 1, EVICT_BATCH_MAX);
	unsigned int n = 0, tries = 0;
	struct centry *e;
	LIST_HEAD(evicted);
	int r;

	while (n < batch && tries++ < batch + VICTIM_SAMPLE) {
		spin_lock_irq(&c->map_lock);
		e = coldest_entry(c, NULL);
		spin_unlock_irq(&c->map_lock);
		if (!e)
			break;
		quiesce(c, e);
		if (e->dirty && write_back(c, e)) {
			/* Keep it; try another one. */
			spin_lock_irq(&c->map_lock);
			e->busy = false;
			list_move_tail(&e->lru, &c->lru);
			spin_unlock_irq(&c->map_lock);
			continue;
		}
		if (c->mode != CACHE_MODE_WRITE) {
			release(c, e);
			r = -EPERM;
			goto out;
		}
		spin_lock_irq(&c->map_lock);
		unmap_entry(c, e);
		e->busy = false;
		list_add_tail(&e->lru, &evicted);
		spin_unlock_irq(&c->map_lock);
		r = record_entry(c, e);
		if (r)
			goto out;
		atomic_inc(&c->demotions);
		n++;
	}
	if (!n)
		return -ENOSPC;

	r = commit(c, false);
out:
	if (!r) {
		spin_lock_irq(&c->map_lock);
		list_splice_tail(&evicted, &c->free);
		spin_unlock_irq(&c->map_lock);
	}
	/* Else the unmapped blocks stay off every list: the metadata no longer commits. */
	return r;
}

static bool may_promote(struct cache *c, u64 oblock)
{
	return c->mode == CACHE_MODE_WRITE && c->io_mode != IO_PASSTHROUGH && !c->policy->cleaner &&
	       oblock < c->nr_full_oblocks && !test_bit(oblock_dblock(c, oblock), c->discarded);
}

static void end_promoting(struct cache *c)
{
	spin_lock_irq(&c->map_lock);
	c->promoting = false;
	spin_unlock_irq(&c->map_lock);
}

static struct centry *promote(struct cache *c, u64 oblock)
{
	atomic_t *owrites = &c->owrites[owrite_bucket(oblock)];
	struct centry *e;

	/* map() hands the block's bios to the worker from here on; the writes it sent already land first. */
	spin_lock_irq(&c->map_lock);
	c->promoting = true;
	c->promoting_oblock = oblock;
	spin_unlock_irq(&c->map_lock);
	wait_event(c->idle_wait, !atomic_read(owrites));

	if (list_empty(&c->free) && evict_some(c))
		goto fail;
	e = list_first_entry(&c->free, struct centry, lru);

	if (dmkit_knob(promote_delay_ms))
		msleep(dmkit_knob(promote_delay_ms));
	if (copy_block(c, e, oblock, true))
		goto fail;
	spin_lock_irq(&c->map_lock);
	map_entry(c, e, oblock, false, 0);
	c->promoting = false;
	spin_unlock_irq(&c->map_lock);
	if (record_entry(c, e)) {
		unmap_to_free(c, e);
		return NULL;
	}
	atomic_inc(&c->promotions);
	return e;

fail:
	end_promoting(c);
	return NULL;
}

/*----------------------------------------------------------------------------------------------*/
/* Bios */

/* Counts the bio where quiesce(), promote() and the suspend hooks look, then sends it on. */
static void issue(struct cache *c, struct bio *bio, struct dm_dev *dev, sector_t sector)
{
	struct per_bio *pb = dm_per_bio_data(bio, sizeof(struct per_bio));

	pb->tracked = true;
	atomic_inc(&c->inflight);
	bio_set_dev(bio, dev->bdev);
	bio->bi_iter.bi_sector = sector;
	dm_submit_bio_remap(bio, NULL);
}

static void issue_to_origin(struct cache *c, struct bio *bio)
{
	struct per_bio *pb = dm_per_bio_data(bio, sizeof(struct per_bio));

	if (bio_op(bio) == REQ_OP_WRITE) {
		pb->owrite = owrite_bucket(bio_oblock(c, bio));
		atomic_inc(&c->owrites[pb->owrite]);
	}
	issue(c, bio, c->origin_dev, origin_sector(c, bio));
}

static sector_t cache_sector(struct cache *c, struct bio *bio, struct centry *e)
{
	return (sector_t)entry_cblock(c, e) * c->block_sectors + offset_in_block(c, bio);
}

static void issue_to_cache(struct cache *c, struct bio *bio, struct centry *e)
{
	struct per_bio *pb = dm_per_bio_data(bio, sizeof(struct per_bio));

	/* A FUA write is durable when it completes: so must be the mapping it lands in. */
	if ((bio->bi_opf & REQ_FUA) && c->changed && commit(c, false)) {
		bio_io_error(bio);
		return;
	}
	pb->entry = e;
	atomic_inc(&e->inflight);
	issue(c, bio, c->cache_dev, cache_sector(c, bio, e));
}

/*
 * The origin's copy of a write that also goes to the cache, written before the cache's. map() sends no
 * write to such a block (a writethrough or read-only write hit always comes here), so no other write
 * to it can be in flight that this one must wait for.
 */
static int write_origin_copy(struct cache *c, struct bio *bio)
{
	struct bio *clone;
	int r;

	clone = bio_alloc_clone(c->origin_dev->bdev, bio, GFP_NOIO, &c->bs);
	if (!clone)
		return -ENOMEM;
	clone->bi_iter.bi_sector = origin_sector(c, bio);
	r = submit_bio_wait(clone);
	bio_put(clone);
	return r;
}

static void process_read(struct cache *c, struct bio *bio, u64 oblock)
{
	struct centry *e = lookup(c, oblock);

	if (e) {
		atomic_inc(&c->read_hits);
		touch_locked(c, e);
		issue_to_cache(c, bio, e);
		return;
	}
	atomic_inc(&c->read_misses);
	issue_to_origin(c, bio);
}

static void clear_discarded(struct cache *c, u64 oblock)
{
	u64 d = oblock_dblock(c, oblock);
	int r;

	if (!test_bit(d, c->discarded) || c->mode != CACHE_MODE_WRITE)
		return;
	r = cache_md_set_discard(c->md, d, false);
	if (r) {
		metadata_failed(c, "discard update", r);
		return;
	}
	clear_bit(d, c->discarded);
	c->changed = true;
}

/* Passthrough: a write hit drops the (clean) cached copy, committed before the origin changes. */
static void passthrough_write(struct cache *c, struct bio *bio, struct centry *e)
{
	if (e && c->mode == CACHE_MODE_WRITE) {
		quiesce(c, e);
		spin_lock_irq(&c->map_lock);
		unmap_entry(c, e);
		e->busy = false;
		spin_unlock_irq(&c->map_lock);
		if (record_entry(c, e) || commit(c, false)) {
			bio_io_error(bio);
			return;
		}
		spin_lock_irq(&c->map_lock);
		list_add_tail(&e->lru, &c->free);
		spin_unlock_irq(&c->map_lock);
		atomic_inc(&c->demotions);
	} else if (e) {
		/* Read-only metadata cannot unmap it: keep both copies equal instead. */
		if (write_origin_copy(c, bio)) {
			bio_io_error(bio);
			return;
		}
		issue_to_cache(c, bio, e);
		return;
	}
	issue_to_origin(c, bio);
}

static void process_write(struct cache *c, struct bio *bio, u64 oblock)
{
	struct centry *e = lookup(c, oblock);

	clear_discarded(c, oblock);
	if (e)
		atomic_inc(&c->write_hits);
	else
		atomic_inc(&c->write_misses);

	if (c->io_mode == IO_PASSTHROUGH) {
		passthrough_write(c, bio, e);
		return;
	}

	if (!e) {
		issue_to_origin(c, bio);
		return;
	}

	touch_locked(c, e);
	if (c->io_mode == IO_WRITEBACK && c->mode == CACHE_MODE_WRITE) {
		if (set_dirty(c, e, true)) {
			bio_io_error(bio);
			return;
		}
	} else if (write_origin_copy(c, bio)) {
		/* Writethrough, or writeback whose dirty state can no longer be recorded. */
		bio_io_error(bio);
		return;
	}
	issue_to_cache(c, bio, e);
}

/*
 * The commit covers every write that completed before the flush was sent: their dirty bits and
 * mappings were set in core before they were sent (by the worker, which got here after them), and the
 * commit flushes both devices first. Bios still in flight need not be waited for.
 */
static void process_flush(struct cache *c, struct bio *bio)
{
	int r;

	/*
	 * A commit that failed has switched the metadata to read-only or fail mode by now; the flush must
	 * still fail, or writes it covers that only the failed transaction mapped would count as durable.
	 */
	r = commit(c, false);
	if (r) {
		bio->bi_status = errno_to_blk_status(r);
		bio_endio(bio);
		return;
	}
	if (!bio_sectors(bio)) {
		bio_endio(bio);
		return;
	}
	bio->bi_opf &= ~REQ_PREFLUSH;
	if (bio_data_dir(bio) == WRITE)
		process_write(c, bio, bio_oblock(c, bio));
	else
		process_read(c, bio, bio_oblock(c, bio));
}

/* Marks the discard blocks the bio covers whole, then passes it to the origin unless told not to. */
static void process_discard(struct cache *c, struct bio *bio)
{
	sector_t start = origin_sector(c, bio);
	sector_t end = start + bio_sectors(bio);
	u64 d = dm_sector_div_up(start, c->dblock_sectors);
	int r;

	for (; (d + 1) * c->dblock_sectors <= end && d < c->nr_dblocks; d++) {
		if (test_bit(d, c->discarded) || c->mode != CACHE_MODE_WRITE)
			continue;
		r = cache_md_set_discard(c->md, d, true);
		if (r) {
			metadata_failed(c, "discard update", r);
			break;
		}
		set_bit(d, c->discarded);
		c->changed = true;
	}
	if (c->discard_passdown)
		issue(c, bio, c->origin_dev, origin_sector(c, bio));
	else
		bio_endio(bio);
}

static void process_bio(struct cache *c, struct bio *bio)
{
	if (c->mode == CACHE_MODE_FAIL) {
		bio_io_error(bio);
		return;
	}
	if (bio->bi_opf & REQ_PREFLUSH)
		process_flush(c, bio);
	else if (bio_op(bio) == REQ_OP_DISCARD)
		process_discard(c, bio);
	else if (bio_data_dir(bio) == WRITE)
		process_write(c, bio, bio_oblock(c, bio));
	else
		process_read(c, bio, bio_oblock(c, bio));
}

/* The first dirty entry in LRU order that is not busy, marked busy; NULL when there is none. */
static struct centry *claim_dirty(struct cache *c)
{
	struct centry *e;

	spin_lock_irq(&c->map_lock);
	list_for_each_entry(e, &c->lru, lru) {
		if (e->dirty && !e->busy) {
			e->busy = true;
			spin_unlock_irq(&c->map_lock);
			return e;
		}
	}
	spin_unlock_irq(&c->map_lock);
	return NULL;
}

/* The cleaner's work: write dirty blocks back to the origin, a batch at a time. */
static bool clean_some(struct cache *c)
{
	unsigned int n = 0;
	struct centry *e;
	int r;

	if (!c->policy->cleaner || c->mode != CACHE_MODE_WRITE || c->suspended || !c->loaded)
		return false;
	while (n < CLEAN_BATCH && (e = claim_dirty(c))) {
		quiesce(c, e);
		r = write_back(c, e);
		release(c, e);
		if (r)
			return false;
		n++;
	}
	if (n && !atomic_read(&c->nr_dirty))
		commit(c, false);
	return n && atomic_read(&c->nr_dirty);
}

/*
 * One promotion map() asked for, unless the block got mapped since or may no longer be promoted.
 * Returns whether more wait.
 */
static bool promote_next(struct cache *c)
{
	bool more;
	u64 oblock;

	spin_lock_irq(&c->map_lock);
	if (!c->nr_promote_req) {
		spin_unlock_irq(&c->map_lock);
		return false;
	}
	oblock = c->promote_req[0];
	c->nr_promote_req--;
	memmove(&c->promote_req[0], &c->promote_req[1], c->nr_promote_req * sizeof(c->promote_req[0]));
	more = c->nr_promote_req > 0;
	spin_unlock_irq(&c->map_lock);

	if (!c->suspended && c->loaded && !lookup(c, oblock) && may_promote(c, oblock))
		promote(c, oblock);
	return more;
}

/* The bios first, then at most one promotion (the bios that came meanwhile go before the next one). */
static void do_worker(struct work_struct *work)
{
	struct cache *c = container_of(work, struct cache, worker);
	struct bio_list bios;
	struct bio *bio;
	bool more;

	spin_lock_irq(&c->bio_lock);
	bios = c->deferred;
	bio_list_init(&c->deferred);
	spin_unlock_irq(&c->bio_lock);

	mutex_lock(&c->lock);
	while ((bio = bio_list_pop(&bios)))
		process_bio(c, bio);
	more = clean_some(c);
	more |= promote_next(c);
	mutex_unlock(&c->lock);

	if (more)
		queue_work(c->wq, &c->worker);
}

/* Commits need not wait for bios in flight: see process_flush(). */
static void do_tick(struct work_struct *work)
{
	struct cache *c = container_of(to_delayed_work(work), struct cache, ticker);
	bool rearm;

	mutex_lock(&c->lock);
	if (c->changed && c->mode == CACHE_MODE_WRITE && !c->suspended)
		commit(c, false);
	rearm = !c->suspended;
	mutex_unlock(&c->lock);

	if (rearm) {
		if (c->policy->cleaner)
			queue_work(c->wq, &c->worker);
		queue_delayed_work(c->wq, &c->ticker, COMMIT_PERIOD);
	}
}

static bool promote_requested(struct cache *c, u64 oblock)
{
	unsigned int i;

	for (i = 0; i < c->nr_promote_req; i++)
		if (c->promote_req[i] == oblock)
			return true;
	return false;
}

static void defer_bio(struct cache *c, struct bio *bio)
{
	unsigned long flags;

	spin_lock_irqsave(&c->bio_lock, flags);
	bio_list_add(&c->deferred, bio);
	spin_unlock_irqrestore(&c->bio_lock, flags);
	queue_work(c->wq, &c->worker);
}

/*
 * The fast path: sends the bio on and returns true when it needs neither a metadata change nor a copy
 * (see the head of the file), else returns false for the worker to handle it. Counts the access for
 * the policy either way, and marks the misses it chose for a promotion.
 */
static bool map_fast(struct cache *c, struct bio *bio, struct per_bio *pb, enum cache_mode mode)
{
	bool write = bio_op(bio) == REQ_OP_WRITE;
	struct dm_dev *dev = NULL;
	sector_t sector = 0;
	unsigned long flags;
	struct centry *e;
	u64 oblock;
	u32 f;

	if ((bio_op(bio) != REQ_OP_READ && !write) || (bio->bi_opf & (REQ_PREFLUSH | REQ_FUA)) ||
	    !bio_sectors(bio))
		return false;
	oblock = bio_oblock(c, bio);

	spin_lock_irqsave(&c->map_lock, flags);
	f = freq_bump(c, oblock);
	e = lookup(c, oblock);
	if (e) {
		if (e->busy)
			goto out;
		/* Writes only to blocks whose dirty bit is set (in core) already. */
		if (write && !(c->io_mode == IO_WRITEBACK && mode == CACHE_MODE_WRITE && e->dirty))
			goto out;
		touch(c, e);
		atomic_inc(write ? &c->write_hits : &c->read_hits);
		pb->entry = e;
		atomic_inc(&e->inflight);
		dev = c->cache_dev;
		sector = cache_sector(c, bio, e);
		goto out;
	}
	if (c->promoting && c->promoting_oblock == oblock)
		goto out;
	/* A write clears the block's discard bit: a metadata change. */
	if (write && mode == CACHE_MODE_WRITE && test_bit(oblock_dblock(c, oblock), c->discarded))
		goto out;
	/*
	 * A miss chosen for a promotion goes on to the origin like any other: the worker copies the block
	 * in later, after the origin writes in flight on it (this one too).
	 */
	if ((!write || c->io_mode == IO_WRITEBACK) && may_promote(c, oblock) &&
	    !promote_requested(c, oblock) && admit(c, f)) {
		c->promote_req[c->nr_promote_req++] = oblock;
		queue_work(c->wq, &c->worker);
	}
	atomic_inc(write ? &c->write_misses : &c->read_misses);
	if (write) {
		pb->owrite = owrite_bucket(oblock);
		atomic_inc(&c->owrites[pb->owrite]);
	}
	dev = c->origin_dev;
	sector = origin_sector(c, bio);
out:
	spin_unlock_irqrestore(&c->map_lock, flags);
	if (!dev)
		return false;
	pb->tracked = true;
	atomic_inc(&c->inflight);
	bio_set_dev(bio, dev->bdev);
	bio->bi_iter.bi_sector = sector;
	return true;
}

static int dc_map(struct dm_target *ti, struct bio *bio)
{
	struct cache *c = ti->private;
	struct per_bio *pb = dm_per_bio_data(bio, sizeof(struct per_bio));
	enum cache_mode mode = READ_ONCE(c->mode);

	pb->tracked = false;
	pb->owrite = -1;
	pb->entry = NULL;
	if (mode == CACHE_MODE_FAIL)
		return DM_MAPIO_KILL;
	if (map_fast(c, bio, pb, mode))
		return DM_MAPIO_REMAPPED;
	defer_bio(c, bio);
	return DM_MAPIO_SUBMITTED;
}

static void put_count(struct cache *c, atomic_t *count)
{
	if (atomic_dec_and_test(count) && wq_has_sleeper(&c->idle_wait))
		wake_up(&c->idle_wait);
}

static int dc_end_io(struct dm_target *ti, struct bio *bio, blk_status_t *error)
{
	struct cache *c = ti->private;
	struct per_bio *pb = dm_per_bio_data(bio, sizeof(struct per_bio));

	if (pb->entry) {
		put_count(c, &pb->entry->inflight);
		pb->entry = NULL;
	}
	if (pb->owrite >= 0) {
		put_count(c, &c->owrites[pb->owrite]);
		pb->owrite = -1;
	}
	if (pb->tracked) {
		pb->tracked = false;
		put_count(c, &c->inflight);
	}
	return DM_ENDIO_DONE;
}

/*----------------------------------------------------------------------------------------------*/
/* Status */

static void emit_features(struct cache *c, char *result, unsigned int maxlen, unsigned int *szp)
{
	static const char *const modes[] = { "writeback", "writethrough", "passthrough" };
	unsigned int sz = *szp;

	DMEMIT("%u ", 1 + (c->metadata_version == 2) + !c->discard_passdown);
	if (c->metadata_version == 2)
		DMEMIT("metadata2 ");
	DMEMIT("%s ", modes[c->io_mode]);
	if (!c->discard_passdown)
		DMEMIT("no_discard_passdown ");
	*szp = sz;
}

static void emit_info(struct cache *c, unsigned int status_flags, char *result, unsigned int maxlen)
{
	unsigned int sz = 0;
	u64 used, total;
	int r;

	if (READ_ONCE(c->mode) == CACHE_MODE_FAIL) {
		DMEMIT("Fail");
		return;
	}
	r = cache_md_space(c->md, &used, &total);
	if (r) {
		DMERR("%s: cannot read the metadata space map: %d", cache_name(c), r);
		DMEMIT("Error");
		return;
	}

	DMEMIT("%u %llu/%llu %llu %u/%u %u %u %u %u %u %u %u ", CACHE_MD_BLOCK_SECTORS,
	       (unsigned long long)used, (unsigned long long)total,
	       (unsigned long long)c->block_sectors, atomic_read(&c->nr_valid), c->nr_cblocks,
	       atomic_read(&c->read_hits), atomic_read(&c->read_misses),
	       atomic_read(&c->write_hits), atomic_read(&c->write_misses),
	       atomic_read(&c->demotions), atomic_read(&c->promotions), atomic_read(&c->nr_dirty));
	emit_features(c, result, maxlen, &sz);
	DMEMIT("2 migration_threshold %lu %s 0 %s %s", READ_ONCE(c->migration_threshold),
	       c->policy->real, mode_word(READ_ONCE(c->mode)),
	       cache_md_needs_check(c->md) ? "needs_check" : "-");
}

static void dc_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
			 char *result, unsigned int maxlen)
{
	struct cache *c = ti->private;
	unsigned int sz = 0;
	unsigned int i;

	switch (type) {
	case STATUSTYPE_INFO:
		emit_info(c, status_flags, result, maxlen);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s %s", c->metadata_dev->name, c->cache_dev->name, c->origin_dev->name);
		for (i = 0; i < c->nr_table_args; i++)
			DMEMIT(" %s", c->table_args[i]);
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",metadata_device=%s,cache_device=%s,cache_origin_device=%s,block_size=%llu;",
		       c->metadata_dev->name, c->cache_dev->name, c->origin_dev->name,
		       (unsigned long long)c->block_sectors);
		break;
	}
}

/*----------------------------------------------------------------------------------------------*/
/* Messages and policy tunables */

/* A tunable of the core or the policy; -EINVAL for an unknown key or a bad value. */
static int set_tunable(struct cache *c, const char *key, const char *value)
{
	unsigned long v;
	size_t i;

	if (kstrtoul(value, 10, &v))
		return -EINVAL;
	if (!strcasecmp(key, "migration_threshold")) {
		WRITE_ONCE(c->migration_threshold, v);
		return 0;
	}
	if (c->policy->cleaner)
		return -EINVAL;
	for (i = 0; i < ARRAY_SIZE(ignored_tunables); i++)
		if (!strcasecmp(key, ignored_tunables[i]))
			return 0;
	return -EINVAL;
}

struct cblock_range {
	u32 begin;
	u32 end;	/* exclusive */
};

static int parse_cblock_range(struct cache *c, const char *word, struct cblock_range *range)
{
	unsigned long long b, e;
	char dummy;

	if (sscanf(word, "%llu-%llu%c", &b, &e, &dummy) == 2) {
		/* both ends given */
	} else if (sscanf(word, "%llu%c", &b, &dummy) == 1) {
		e = b + 1;
	} else {
		DMERR("%s: invalidate_cblocks: '%s' is not a cblock or a range", cache_name(c), word);
		return -EINVAL;
	}
	if (b >= e || e > c->nr_cblocks) {
		DMERR("%s: invalidate_cblocks: range %s is not within 0-%u", cache_name(c), word,
		      c->nr_cblocks);
		return -EINVAL;
	}
	range->begin = b;
	range->end = e;
	return 0;
}

static int invalidate_cblocks(struct cache *c, unsigned int count, char **words)
{
	struct cblock_range *ranges;
	struct centry *e;
	unsigned int i;
	u32 cb;
	int r = 0;

	if (c->io_mode != IO_PASSTHROUGH) {
		DMERR("%s: invalidate_cblocks is only allowed in passthrough mode", cache_name(c));
		return -EPERM;
	}
	ranges = kcalloc(count, sizeof(*ranges), GFP_KERNEL);
	if (!ranges)
		return -ENOMEM;
	for (i = 0; i < count && !r; i++)
		r = parse_cblock_range(c, words[i], &ranges[i]);
	if (r)
		goto out;

	mutex_lock(&c->lock);
	if (!c->loaded || c->mode != CACHE_MODE_WRITE) {
		DMERR("%s: invalidate_cblocks needs a resumed cache with writable metadata", cache_name(c));
		r = -EPERM;
		goto unlock;
	}
	for (i = 0; i < count && !r; i++) {
		for (cb = ranges[i].begin; cb < ranges[i].end && !r; cb++) {
			e = &c->entries[cb];
			if (!e->valid)
				continue;
			quiesce(c, e);
			spin_lock_irq(&c->map_lock);
			unmap_entry(c, e);
			e->busy = false;
			list_add_tail(&e->lru, &c->free);
			spin_unlock_irq(&c->map_lock);
			r = record_entry(c, e);
			atomic_inc(&c->demotions);
		}
	}
	if (!r)
		r = commit(c, false);
unlock:
	mutex_unlock(&c->lock);
out:
	kfree(ranges);
	return r;
}

static int dc_message(struct dm_target *ti, unsigned int argc, char **argv, char *result,
			 unsigned int maxlen)
{
	struct cache *c = ti->private;
	int r;

	if (!argc) {
		DMERR("%s: empty message", cache_name(c));
		return -EINVAL;
	}
	if (!strcasecmp(argv[0], "invalidate_cblocks"))
		return invalidate_cblocks(c, argc - 1, argv + 1);
	if (argc != 2) {
		DMERR("%s: unsupported message '%s' with %u arguments", cache_name(c), argv[0], argc - 1);
		return -EINVAL;
	}
	r = set_tunable(c, argv[0], argv[1]);
	if (r)
		DMERR("%s: unsupported message '%s %s'", cache_name(c), argv[0], argv[1]);
	return r;
}

/*----------------------------------------------------------------------------------------------*/
/* Table line */

static const struct dm_arg block_size_arg = {
	MIN_BLOCK_SECTORS, MAX_BLOCK_SECTORS, "Invalid data block size"
};
static const struct dm_arg nr_features_arg = { 0, 3, "Invalid number of cache feature arguments" };
static const struct dm_arg nr_policy_args_arg = {
	0, MAX_POLICY_ARGS, "Invalid number of policy arguments"
};

static int get_devices(struct cache *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	int r;

	r = dm_get_device(ti, dm_shift_arg(as), FMODE_READ | FMODE_WRITE, &c->metadata_dev);
	if (r) {
		ti->error = "Error opening metadata device";
		return r;
	}
	r = dm_get_device(ti, dm_shift_arg(as), FMODE_READ | FMODE_WRITE, &c->cache_dev);
	if (r) {
		ti->error = "Error opening cache device";
		goto bad_cache;
	}
	r = dm_get_device(ti, dm_shift_arg(as), FMODE_READ | FMODE_WRITE, &c->origin_dev);
	if (r) {
		ti->error = "Error opening origin device";
		goto bad_origin;
	}
	r = -EINVAL;
	if (c->metadata_dev->bdev == c->cache_dev->bdev ||
	    c->metadata_dev->bdev == c->origin_dev->bdev ||
	    c->cache_dev->bdev == c->origin_dev->bdev) {
		ti->error = "The metadata, cache and origin devices must all differ";
		goto bad_same;
	}
	if (bdev_nr_sectors(c->origin_dev->bdev) < ti->len) {
		ti->error = "Device size larger than cached device";
		goto bad_same;
	}
	return 0;

bad_same:
	dm_put_device(ti, c->origin_dev);
bad_origin:
	dm_put_device(ti, c->cache_dev);
bad_cache:
	dm_put_device(ti, c->metadata_dev);
	return r;
}

static void put_devices(struct cache *c)
{
	dm_put_device(c->ti, c->origin_dev);
	dm_put_device(c->ti, c->cache_dev);
	dm_put_device(c->ti, c->metadata_dev);
}

static int parse_block_size(struct cache *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	unsigned int size;
	sector_t nr;
	int r;

	r = dm_read_arg(&block_size_arg, as, &size, &ti->error);
	if (r)
		return r;
	if (size % MIN_BLOCK_SECTORS) {
		ti->error = "Invalid data block size";
		return -EINVAL;
	}
	c->block_sectors = size;

	nr = bdev_nr_sectors(c->cache_dev->bdev);
	sector_div(nr, size);
	if (!nr) {
		ti->error = "Cache device is smaller than one cache block";
		return -EINVAL;
	}
	if (nr > U32_MAX - 1) {
		ti->error = "Too many cache blocks: increase the block size";
		return -EINVAL;
	}
	c->nr_cblocks = nr;
	if (nr > LARGE_CACHE_BLOCKS)
		DMWARN("%s: %llu cache blocks use a lot of memory: consider a larger block size",
		       cache_name(c), (unsigned long long)nr);

	nr = ti->len;
	sector_div(nr, size);
	c->nr_full_oblocks = nr;
	return 0;
}

static int parse_features(struct cache *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	bool mode_given = false;
	unsigned int n;
	const char *word;
	enum io_mode mode;
	int r;

	r = dm_read_arg_group(&nr_features_arg, as, &n, &ti->error);
	if (r)
		return r;
	while (n--) {
		word = dm_shift_arg(as);
		if (!strcasecmp(word, "metadata2")) {
			c->metadata_version = 2;
			continue;
		}
		if (!strcasecmp(word, "no_discard_passdown")) {
			c->discard_passdown = false;
			continue;
		}
		if (!strcasecmp(word, "writeback"))
			mode = IO_WRITEBACK;
		else if (!strcasecmp(word, "writethrough"))
			mode = IO_WRITETHROUGH;
		else if (!strcasecmp(word, "passthrough"))
			mode = IO_PASSTHROUGH;
		else {
			ti->error = "Unrecognised cache feature requested";
			return -EINVAL;
		}
		if (mode_given && mode != c->io_mode) {
			ti->error = "Duplicate cache io_mode features requested";
			return -EINVAL;
		}
		mode_given = true;
		c->io_mode = mode;
	}
	return 0;
}

static int parse_policy(struct cache *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	const char *name, *key, *value;
	unsigned int n;
	size_t i;
	int r;

	if (!as->argc) {
		ti->error = "Missing cache policy";
		return -EINVAL;
	}
	name = dm_shift_arg(as);
	for (i = 0; i < ARRAY_SIZE(policies); i++)
		if (!strcmp(name, policies[i].name))
			c->policy = &policies[i];
	if (!c->policy) {
		ti->error = "Error creating cache's policy";
		return -EINVAL;
	}

	r = dm_read_arg_group(&nr_policy_args_arg, as, &n, &ti->error);
	if (r)
		return r;
	if (n % 2) {
		ti->error = "Policy arguments must be key value pairs";
		return -EINVAL;
	}
	for (; n; n -= 2) {
		key = dm_shift_arg(as);
		value = dm_shift_arg(as);
		if (set_tunable(c, key, value)) {
			ti->error = "Error setting cache policy's config values";
			return -EINVAL;
		}
	}
	if (as->argc) {
		ti->error = "Unexpected arguments after the policy arguments";
		return -EINVAL;
	}
	return 0;
}

static void free_table_args(struct cache *c)
{
	unsigned int i;

	for (i = 0; i < c->nr_table_args; i++)
		kfree(c->table_args[i]);
	kfree(c->table_args);
	c->table_args = NULL;
	c->nr_table_args = 0;
}

static int save_table_args(struct cache *c, unsigned int argc, char **argv)
{
	unsigned int i;

	c->table_args = kcalloc(argc, sizeof(*c->table_args), GFP_KERNEL);
	if (!c->table_args)
		goto nomem;
	for (i = 0; i < argc; i++) {
		c->table_args[i] = kstrdup(argv[i], GFP_KERNEL);
		if (!c->table_args[i])
			goto nomem;
		c->nr_table_args = i + 1;
	}
	return 0;

nomem:
	free_table_args(c);
	c->ti->error = "Cannot allocate the table line";
	return -ENOMEM;
}

/*----------------------------------------------------------------------------------------------*/
/* In-core state */

static void compute_discard_geometry(struct cache *c)
{
	sector_t size = c->block_sectors;

	while (dm_sector_div_up(c->ti->len, size) > MAX_DISCARD_BLOCKS)
		size *= 2;
	c->dblock_sectors = size;
	c->nr_dblocks = dm_sector_div_up(c->ti->len, size);
}

/* Sizes the policy's count table: one counter per origin block, or two hashed rows for large origins. */
static void size_freq(struct cache *c)
{
	u64 per_row;

	if (c->nr_full_oblocks < FREQ_EXACT_MAX) {
		c->freq_rows = 1;
		c->freq_size = c->nr_full_oblocks + 1;	/* the last, partial block shares the last slot */
	} else {
		c->freq_rows = 2;
		per_row = clamp_t(u64, 16ULL * c->nr_cblocks, 4096, FREQ_ROW_MAX);
		c->freq_size = roundup_pow_of_two(per_row);
	}
	c->freq_window = clamp_t(u64, (u64)FREQ_WINDOW_PER_CBLOCK * c->nr_cblocks, 1024, 1U << 30);
}

static int create_core(struct cache *c)
{
	u32 i;

	spin_lock_init(&c->map_lock);
	size_freq(c);
	c->hash_bits = max_t(unsigned int, 4, ilog2(c->nr_cblocks) + 1);
	c->buckets = kvcalloc(1UL << c->hash_bits, sizeof(*c->buckets), GFP_KERNEL);
	c->entries = kvcalloc(c->nr_cblocks, sizeof(*c->entries), GFP_KERNEL);
	c->discarded = kvcalloc(BITS_TO_LONGS(c->nr_dblocks), sizeof(long), GFP_KERNEL);
	c->freq = kvcalloc((size_t)c->freq_size * c->freq_rows, sizeof(*c->freq), GFP_KERNEL);
	if (!c->buckets || !c->entries || !c->discarded || !c->freq) {
		kvfree(c->buckets);
		kvfree(c->entries);
		kvfree(c->discarded);
		kvfree(c->freq);
		return -ENOMEM;
	}
	INIT_LIST_HEAD(&c->lru);
	INIT_LIST_HEAD(&c->free);
	for (i = 0; i < c->nr_cblocks; i++) {
		INIT_HLIST_NODE(&c->entries[i].hash);
		list_add_tail(&c->entries[i].lru, &c->free);
	}
	return 0;
}

static void destroy_core(struct cache *c)
{
	kvfree(c->buckets);
	kvfree(c->entries);
	kvfree(c->discarded);
	kvfree(c->freq);
}

static int create_runtime(struct cache *c)
{
	struct dm_target *ti = c->ti;
	int r;

	mutex_init(&c->lock);
	spin_lock_init(&c->bio_lock);
	bio_list_init(&c->deferred);
	init_waitqueue_head(&c->idle_wait);
	INIT_WORK(&c->worker, do_worker);
	INIT_WORK(&c->age_work, do_age);
	INIT_DELAYED_WORK(&c->ticker, do_tick);

	r = bioset_init(&c->bs, BIO_POOL_SIZE, 0, 0);
	if (r) {
		ti->error = "Cannot create the bio set";
		return r;
	}
	c->kc = dm_kcopyd_client_create(NULL);
	if (IS_ERR(c->kc)) {
		r = PTR_ERR(c->kc);
		ti->error = "Cannot create the kcopyd client";
		goto bad_kc;
	}
	c->wq = alloc_workqueue("dmkit-cache", WQ_MEM_RECLAIM, 1);
	if (!c->wq) {
		r = -ENOMEM;
		ti->error = "Cannot create the workqueue";
		goto bad_wq;
	}
	return 0;

bad_wq:
	dm_kcopyd_client_destroy(c->kc);
bad_kc:
	bioset_exit(&c->bs);
	return r;
}

static void destroy_runtime(struct cache *c)
{
	cancel_delayed_work_sync(&c->ticker);
	destroy_workqueue(c->wq);
	dm_kcopyd_client_destroy(c->kc);
	bioset_exit(&c->bs);
}

/*----------------------------------------------------------------------------------------------*/
/* Loading the metadata (first preresume) */

struct load_state {
	struct cache *c;
	u32 kept;
};

static int load_mapping(void *context, u32 cblock, u64 oblock, bool dirty, u32 hint, bool hint_valid)
{
	struct load_state *ls = context;
	struct cache *c = ls->c;
	struct centry *e;

	if (cblock >= c->nr_cblocks || oblock >= c->nr_full_oblocks) {
		if (dirty) {
			DMERR("%s: cache block %u (origin block %llu) is dirty but outside the new %s",
			      cache_name(c), cblock, oblock,
			      cblock >= c->nr_cblocks ? "cache size" : "origin size");
			return -EINVAL;
		}
		return 0;
	}
	if (lookup(c, oblock)) {
		DMERR("%s: origin block %llu is mapped twice: the metadata needs a check",
		      cache_name(c), oblock);
		return -EINVAL;
	}
	e = &c->entries[cblock];
	map_entry(c, e, oblock, dirty, hint_valid ? hint : 0);
	freq_seed(c, oblock, hint_valid ? hint : 0);
	ls->kept++;
	return 0;
}

static int load_discard(void *context, u64 dblock, bool discarded)
{
	struct cache *c = context;

	if (discarded && dblock < c->nr_dblocks)
		set_bit(dblock, c->discarded);
	return 0;
}

/* Unmap in the metadata whatever the in-core state dropped (blocks past a shrunk origin). */
static int drop_stale_mappings(struct cache *c, u32 md_cblocks)
{
	u32 cb, n = min(md_cblocks, c->nr_cblocks);
	int r;

	for (cb = 0; cb < n; cb++) {
		if (c->entries[cb].valid)
			continue;
		r = cache_md_set_mapping(c->md, cb, false, 0, false);
		if (r)
			return r;
	}
	return 0;
}

static void load_stats(struct cache *c)
{
	struct cache_md_stats s;

	cache_md_get_stats(c->md, &s);
	atomic_set(&c->read_hits, s.read_hits);
	atomic_set(&c->read_misses, s.read_misses);
	atomic_set(&c->write_hits, s.write_hits);
	atomic_set(&c->write_misses, s.write_misses);
}

static int load_metadata(struct cache *c)
{
	struct load_state ls = { .c = c };
	sector_t dblock_sectors;
	u64 nr_dblocks;
	u32 md_cblocks = cache_md_nr_cblocks(c->md);
	bool clean = cache_md_clean_shutdown(c->md);
	int r;

	if (c->io_mode == IO_PASSTHROUGH && !clean) {
		DMERR("%s: passthrough refused: the cache was not shut down cleanly", cache_name(c));
		return -EINVAL;
	}

	r = cache_md_load_mappings(c->md, c->policy->real, c->policy->version[0], load_mapping, &ls);
	if (r) {
		DMERR("%s: cannot load the mappings: %d", cache_name(c), r);
		return r;
	}
	if (c->io_mode == IO_PASSTHROUGH && atomic_read(&c->nr_dirty)) {
		DMERR("%s: passthrough refused: %d cache blocks are dirty", cache_name(c),
		      atomic_read(&c->nr_dirty));
		return -EINVAL;
	}

	if (md_cblocks != c->nr_cblocks) {
		r = cache_md_resize(c->md, c->nr_cblocks);
		if (r) {
			DMERR("%s: cannot resize the metadata to %u cache blocks: %d", cache_name(c),
			      c->nr_cblocks, r);
			return r;
		}
	}
	r = drop_stale_mappings(c, md_cblocks);
	if (r)
		return r;

	cache_md_discard_geometry(c->md, &dblock_sectors, &nr_dblocks);
	if (dblock_sectors == c->dblock_sectors && nr_dblocks == c->nr_dblocks)
		r = cache_md_load_discards(c->md, load_discard, c);
	else
		r = cache_md_resize_discards(c->md, c->dblock_sectors, c->nr_dblocks);
	if (r) {
		DMERR("%s: cannot load the discard bitset: %d", cache_name(c), r);
		return r;
	}
	load_stats(c);
	return 0;
}

/* Reset the in-core state to nothing mapped, for a load that failed half way. */
static void reset_core(struct cache *c)
{
	u32 i;

	for (i = 0; i < c->nr_cblocks; i++)
		if (c->entries[i].valid)
			unmap_entry(c, &c->entries[i]);
	INIT_LIST_HEAD(&c->lru);
	INIT_LIST_HEAD(&c->free);
	for (i = 0; i < c->nr_cblocks; i++)
		list_add_tail(&c->entries[i].lru, &c->free);
	bitmap_zero(c->discarded, c->nr_dblocks);
	memset(c->freq, 0, (size_t)c->freq_size * c->freq_rows * sizeof(*c->freq));
	c->filled = false;
}

/*----------------------------------------------------------------------------------------------*/
/* Target methods */

static int dc_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dm_arg_set as = { .argc = argc, .argv = argv };
	struct cache *c;
	int r;

	if (argc < 6) {
		ti->error = "Invalid number of arguments";
		return -EINVAL;
	}
	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		ti->error = "Cannot allocate the cache context";
		return -ENOMEM;
	}
	c->ti = ti;
	c->io_mode = IO_WRITEBACK;
	c->metadata_version = 1;
	c->discard_passdown = true;
	c->migration_threshold = DEFAULT_MIGRATION_THRESHOLD;
	c->mode = CACHE_MODE_WRITE;
	c->suspended = true;

	r = get_devices(c, &as);
	if (r)
		goto bad_devices;
	r = parse_block_size(c, &as);
	if (!r)
		r = parse_features(c, &as);
	if (!r)
		r = parse_policy(c, &as);
	if (!r)
		r = dm_set_target_max_io_len(ti, c->block_sectors);
	if (!r)
		r = save_table_args(c, argc - 3, argv + 3);
	if (r)
		goto bad_args;

	compute_discard_geometry(c);
	r = create_core(c);
	if (r) {
		ti->error = "Cannot allocate the cache block table";
		goto bad_core;
	}

	ti->error = "Error creating metadata object";
	c->md = cache_md_get(c->metadata_dev->bdev, c->block_sectors, c->metadata_version, &ti->error);
	if (IS_ERR(c->md)) {
		r = PTR_ERR(c->md);
		goto bad_md;
	}
	/* An existing device keeps its format; the feature only chooses it for a blank one. */
	c->metadata_version = cache_md_version(c->md);

	r = create_runtime(c);
	if (r)
		goto bad_runtime;

	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	ti->num_discard_bios = 1;
	ti->discards_supported = true;
	ti->per_io_data_size = sizeof(struct per_bio);
	ti->private = c;
	return 0;

bad_runtime:
	cache_md_put(c->md);
bad_md:
	destroy_core(c);
bad_core:
	free_table_args(c);
bad_args:
	put_devices(c);
bad_devices:
	kfree(c);
	return r;
}

static void dc_dtr(struct dm_target *ti)
{
	struct cache *c = ti->private;

	destroy_runtime(c);
	cache_md_put(c->md);
	destroy_core(c);
	free_table_args(c);
	put_devices(c);
	kfree(c);
}

static u32 entry_hint(void *context, u32 cblock)
{
	struct cache *c = context;

	return c->entries[cblock].valid ? c->entries[cblock].hits : 0;
}

static void dc_postsuspend(struct dm_target *ti)
{
	struct cache *c = ti->private;
	int r;

	mutex_lock(&c->lock);
	c->suspended = true;
	spin_lock_irq(&c->map_lock);
	c->nr_promote_req = 0;
	spin_unlock_irq(&c->map_lock);
	mutex_unlock(&c->lock);
	cancel_delayed_work_sync(&c->ticker);
	flush_workqueue(c->wq);

	mutex_lock(&c->lock);
	wait_idle(c);
	if (c->loaded && c->mode == CACHE_MODE_WRITE) {
		r = cache_md_write_hints(c->md, c->policy->real, c->policy->version, entry_hint, c);
		if (r)
			metadata_failed(c, "hint write", r);
		else
			commit(c, true);
	}
	mutex_unlock(&c->lock);
}

static int dc_preresume(struct dm_target *ti)
{
	struct cache *c = ti->private;
	int r = 0;

	mutex_lock(&c->lock);
	if (!c->loaded) {
		r = load_metadata(c);
		if (r) {
			reset_core(c);
			goto out;
		}
		c->loaded = true;
	}
	/* From here on a crash must find the clean-shutdown flag cleared. */
	if (c->mode == CACHE_MODE_WRITE) {
		c->changed = true;
		r = commit(c, false);
	}
out:
	mutex_unlock(&c->lock);
	return r;
}

static void dc_resume(struct dm_target *ti)
{
	struct cache *c = ti->private;

	mutex_lock(&c->lock);
	c->suspended = false;
	mutex_unlock(&c->lock);
	queue_work(c->wq, &c->worker);
	mod_delayed_work(c->wq, &c->ticker, COMMIT_PERIOD);
}

static void set_discard_limits(struct cache *c, struct queue_limits *limits)
{
	struct block_device *origin = c->origin_dev->bdev;
	struct queue_limits *ol = &bdev_get_queue(origin)->limits;

	if (!c->discard_passdown || !bdev_max_discard_sectors(origin)) {
		limits->discard_granularity = c->dblock_sectors << SECTOR_SHIFT;
		limits->max_discard_sectors = min_t(sector_t, c->dblock_sectors * 1024,
						    UINT_MAX >> SECTOR_SHIFT);
		limits->max_hw_discard_sectors = limits->max_discard_sectors;
		return;
	}
	limits->discard_granularity = ol->discard_granularity;
	limits->discard_alignment = ol->discard_alignment;
	limits->discard_misaligned = ol->discard_misaligned;
	limits->max_discard_sectors = ol->max_discard_sectors;
	limits->max_hw_discard_sectors = ol->max_hw_discard_sectors;
	limits->max_discard_segments = ol->max_discard_segments;
}

static void dc_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct cache *c = ti->private;
	u64 io_opt = limits->io_opt >> SECTOR_SHIFT;

	if (io_opt < c->block_sectors || do_div(io_opt, c->block_sectors)) {
		blk_limits_io_min(limits, c->block_sectors << SECTOR_SHIFT);
		blk_limits_io_opt(limits, c->block_sectors << SECTOR_SHIFT);
	}
	set_discard_limits(c, limits);
}

static int dc_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn, void *data)
{
	struct cache *c = ti->private;

	return fn(ti, c->cache_dev, 0, bdev_nr_sectors(c->cache_dev->bdev), data) ?:
	       fn(ti, c->origin_dev, 0, ti->len, data);
}

static struct target_type cache_target_type = {
	.name = "dmkit-cache",
	.version = { DMKIT_VERSION_MAJOR, DMKIT_VERSION_MINOR, DMKIT_VERSION_PATCH },
	.module = THIS_MODULE,
	.ctr = dc_ctr,
	.dtr = dc_dtr,
	.map = dc_map,
	.end_io = dc_end_io,
	.postsuspend = dc_postsuspend,
	.preresume = dc_preresume,
	.resume = dc_resume,
	.status = dc_status,
	.message = dc_message,
	.io_hints = dc_io_hints,
	.iterate_devices = dc_iterate_devices,
};

static int __init dmkit_cache_init(void)
{
	int r = dm_register_target(&cache_target_type);

	if (r)
		DMERR("register failed: %d", r);
	return r;
}

static void __exit dmkit_cache_exit(void)
{
	dm_unregister_target(&cache_target_type);
}

module_init(dmkit_cache_init);
module_exit(dmkit_cache_exit);

MODULE_DESCRIPTION(DM_NAME " dmkit cache target (in-tree dm-cache metadata compatible)");
MODULE_AUTHOR("dmkit developers");
MODULE_LICENSE("GPL");
MODULE_VERSION(DMKIT_VERSION_STRING);
