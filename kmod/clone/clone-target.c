// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-clone: makes a destination device a copy of a read-only source device while both are in use,
 * compatible with the in-tree dm-clone (table, status, messages and metadata).
 *
 * Table:    dmkit-clone <metadata dev> <destination dev> <source dev> <region size>
 *                       [<#features> [no_hydration] [no_discard_passdown]]
 *                       [<#core args> [hydration_threshold <#regions>] [hydration_batch_size <#regions>]]
 * Status:   INFO  "<md block size> <used>/<total md blocks> <region size> <hydrated>/<total regions>
 *                  <hydrating> <#features> <features>* 4 hydration_threshold <n> hydration_batch_size <n>
 *                  <rw|ro>"  or "Fail"
 *           TABLE the table line
 * Messages: enable_hydration, disable_hydration, hydration_threshold <n>, hydration_batch_size <n>
 *
 * The target is cut in regions. A region is either hydrated (valid on the destination) or not (still
 * only on the source):
 *   - reads of a hydrated region and all writes go to the destination; reads of other regions go to
 *     the source;
 *   - a write to a region that is not hydrated waits until the region is copied, except a write of the
 *     whole region, which hydrates it by itself;
 *   - a discard marks the regions it covers completely as hydrated without copying them;
 *   - the worker copies the remaining regions in the background, through the copy engine of
 *     clone-copier.c, while no user I/O is in flight.
 * Regions are marked hydrated in core; the marks are committed on REQ_PREFLUSH/REQ_FUA, every second,
 * on suspend, and before an INFO status. A commit flushes the destination before writing the
 * superblock, so a committed mark never names data that is still in a volatile cache.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/dm-io.h>
#include <linux/dm-ioctl.h>
#include <linux/delay.h>
#include <linux/hashtable.h>
#include <linux/jiffies.h>
#include <linux/log2.h>
#include <linux/mempool.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "dmkit-common.h"
#include "clone-copier.h"
#include "clone-metadata.h"

#define DM_MSG_PREFIX "dmkit-clone"

#define MIN_REGION_SECTORS 8		/* 4 KiB */
#define MAX_REGION_SECTORS 2097152	/* 1 GiB */
#define MAX_REGIONS (1UL << 31)		/* the in-core bitmaps are indexed by int-sized bit numbers */
#define COMMIT_PERIOD HZ
#define HYDRATION_POOL_MIN 256
#define HYDRATING_HASH_BITS 10

/* Same name as before the copy engine replaced kcopyd, so scripts that slow hydration keep working. */
static unsigned int hydration_throttle = 100;
module_param(hydration_throttle, uint, 0644);
MODULE_PARM_DESC(hydration_throttle, "Percentage of time background hydration may keep copy I/O in flight");

DMKIT_TEST_KNOB(copy_done_delay_ms, "milliseconds a finished copy waits before it wakes the worker");

/* Status flag "do not commit first" (DMSTATUS --noflush); it lives in the private drivers/md/dm.h. */
#ifndef DM_STATUS_NOFLUSH_FLAG
#define DM_STATUS_NOFLUSH_FLAG (1 << 0)
#endif

enum clone_mode {
	CLONE_MODE_WRITE,	/* metadata may change */
	CLONE_MODE_READ_ONLY,	/* metadata is frozen at the last commit */
	CLONE_MODE_FAIL,	/* metadata is unusable: every bio fails */
};

/* Bits of clone_target.flags. */
enum {
	CLONE_HYDRATION_ENABLED,
	CLONE_DISCARD_PASSDOWN,
	CLONE_SUSPENDED,
};

struct clone_target {
	struct dm_target *ti;
	struct dm_dev *md_dev;
	struct dm_dev *dest;
	struct dm_dev *source;

	sector_t region_sectors;
	unsigned int region_shift;
	unsigned long nr_regions;

	struct clone_md *md;
	enum clone_mode mode;		/* changed only by set_mode() */
	unsigned long flags;

	unsigned int hydration_threshold;	/* regions being hydrated at most */
	unsigned int hydration_batch_size;	/* adjacent regions per copy */

	/* User bios between map and end_io; background hydration waits for zero. */
	atomic_t ios_in_flight;

	/* Regions being hydrated, by region number. */
	spinlock_t hydrating_lock;
	DECLARE_HASHTABLE(hydrating, HYDRATING_HASH_BITS);
	atomic_t nr_hydrating;
	wait_queue_head_t hydration_idle;
	unsigned long next_region;	/* background cursor, worker only */
	mempool_t hydration_pool;
	struct clone_copier *copier;

	/* Bios handed to the worker. */
	spinlock_t lock;
	struct bio_list ready;		/* their region got hydrated: submit to the destination */
	struct bio_list discards;	/* mark their regions hydrated */
	struct bio_list after_commit;	/* PREFLUSH/FUA bios to issue once the metadata is committed */
	struct bio_list fua_overwrites;	/* done FUA overwrites to complete once the metadata is committed */

	/* One commit at a time, together with the mode change a failure causes. */
	struct mutex commit_lock;
	unsigned long last_commit;
	bool hydration_announced;
	bool md_fresh;			/* md was read at this table's first resume (ct_preresume) */

	struct workqueue_struct *wq;
	struct work_struct worker;
	struct delayed_work ticker;

	/* Table arguments after the three devices, echoed by the TABLE status. */
	unsigned int nr_table_args;
	char **table_args;
};

/* One region being hydrated, by a copy or by a bio that overwrites it. */
struct hydration {
	struct clone_target *c;
	unsigned long region;
	struct hlist_node node;		/* in clone_target.hydrating */
	struct list_head batch;		/* the other regions of the head's copy */
	struct bio_list waiting;	/* writes to submit once the region is hydrated */
	struct bio *overwrite;
	bio_end_io_t *overwrite_end_io;
	void *overwrite_private;
	blk_status_t status;
	struct clone_copy copy;		/* the head's copy request */
};

static struct kmem_cache *hydration_cache;

static const char *clone_name(struct clone_target *c)
{
	return dm_table_device_name(c->ti->table);
}

static void wake_worker(struct clone_target *c)
{
	queue_work(c->wq, &c->worker);
}

/*----------------------------------------------------------------------------------------------*/
/* Metadata modes */

static enum clone_mode get_mode(struct clone_target *c)
{
	return READ_ONCE(c->mode);
}

/* The only place the mode changes. Fail is final; every real change is logged once and raises an event. */
static void set_mode(struct clone_target *c, enum clone_mode mode)
{
	static const char * const names[] = {
		[CLONE_MODE_WRITE] = "read-write",
		[CLONE_MODE_READ_ONLY] = "read-only",
		[CLONE_MODE_FAIL] = "fail",
	};
	enum clone_mode old = get_mode(c);

	if (old == CLONE_MODE_FAIL)
		mode = CLONE_MODE_FAIL;

	if (mode == CLONE_MODE_WRITE)
		clone_md_set_read_write(c->md);
	else
		clone_md_set_read_only(c->md);
	WRITE_ONCE(c->mode, mode);

	if (mode != old) {
		DMWARN("%s: switching metadata to %s mode", clone_name(c), names[mode]);
		dm_table_event(c->ti->table);
	}
}

/*
 * A metadata update failed: stop changing the metadata first, so no mark slips in, then roll back to
 * the last commit. Called with commit_lock held.
 */
static void metadata_failed(struct clone_target *c, const char *what, int r)
{
	DMERR("%s: metadata %s failed: %d", clone_name(c), what, r);
	if (get_mode(c) != CLONE_MODE_WRITE)
		return;

	set_mode(c, CLONE_MODE_READ_ONLY);
	r = clone_md_abort(c->md);
	if (r) {
		DMERR("%s: cannot roll back to the last commit: %d", clone_name(c), r);
		set_mode(c, CLONE_MODE_FAIL);
	}
}

/*----------------------------------------------------------------------------------------------*/
/* Commit */

static void announce_hydration_done(struct clone_target *c)
{
	/* All regions hydrated and nothing left to commit: the destination is a complete copy. */
	if (c->hydration_announced || !clone_md_fully_hydrated(c->md) || clone_md_changed(c->md))
		return;
	c->hydration_announced = true;
	DMINFO("%s: hydration complete", clone_name(c));
	dm_table_event(c->ti->table);
}

/*
 * Commit the marks made so far. *dest_flushed tells the caller the destination was flushed after
 * every bio it holds had completed. A non-zero return means the metadata is read-only or failed.
 */
static int commit_metadata(struct clone_target *c, bool *dest_flushed)
{
	int r = 0;

	if (dest_flushed)
		*dest_flushed = false;

	mutex_lock(&c->commit_lock);
	/* Read-only after a failed commit: nothing since is durable, even with nothing left to write. */
	if (get_mode(c) != CLONE_MODE_WRITE) {
		r = -EPERM;
		goto out;
	}
	if (!clone_md_changed(c->md))
		goto out;

	r = clone_md_pre_commit(c->md);
	if (r) {
		metadata_failed(c, "pre-commit", r);
		goto out;
	}
	/*
	 * Every region of the closed transaction was copied or written before it was marked. Flush those
	 * writes out of the destination's volatile cache before the superblock declares them valid.
	 */
	if (!dmkit_reverted(CLONE_FLUSH)) {
		r = blkdev_issue_flush(c->dest->bdev);
		if (r) {
			metadata_failed(c, "destination flush", r);
			goto out;
		}
		if (dest_flushed)
			*dest_flushed = true;
	}
	r = clone_md_commit(c->md);
	if (r) {
		metadata_failed(c, "commit", r);
		goto out;
	}
	c->last_commit = jiffies;
	announce_hydration_done(c);
out:
	mutex_unlock(&c->commit_lock);
	return r;
}

static bool commit_is_due(struct clone_target *c)
{
	return time_after_eq(jiffies, c->last_commit + COMMIT_PERIOD);
}

/*----------------------------------------------------------------------------------------------*/
/* Bio helpers */

static sector_t region_to_sector(struct clone_target *c, unsigned long region)
{
	return (sector_t)region << c->region_shift;
}

static unsigned long bio_region(struct clone_target *c, struct bio *bio)
{
	return bio->bi_iter.bi_sector >> c->region_shift;
}

/* The regions a discard covers completely: partial regions at either end are left alone. */
static void discard_regions(struct clone_target *c, struct bio *bio,
			    unsigned long *first, unsigned long *count)
{
	sector_t start = bio->bi_iter.bi_sector;
	unsigned long end = bio_end_sector(bio) >> c->region_shift;

	*first = (start + c->region_sectors - 1) >> c->region_shift;
	*count = end > *first ? end - *first : 0;
}

static void end_bios(struct bio_list *bios, blk_status_t status)
{
	struct bio *bio;

	while ((bio = bio_list_pop(bios))) {
		bio->bi_status = status;
		bio_endio(bio);
	}
}

static void take_list(struct clone_target *c, struct bio_list *from, struct bio_list *to)
{
	spin_lock_irq(&c->lock);
	bio_list_merge(to, from);
	bio_list_init(from);
	spin_unlock_irq(&c->lock);
}

static void hand_to_worker(struct clone_target *c, struct bio_list *list, struct bio *bio)
{
	unsigned long flags;

	spin_lock_irqsave(&c->lock, flags);
	bio_list_add(list, bio);
	spin_unlock_irqrestore(&c->lock, flags);
	wake_worker(c);
}

/*
 * Submit a bio already remapped to the destination. A PREFLUSH or FUA bio must not complete before
 * the marks made so far are committed, so while there are any it waits for the worker's commit.
 */
static void issue_to_dest(struct clone_target *c, struct bio *bio)
{
	if (!op_is_flush(bio->bi_opf)) {
		submit_bio_noacct(bio);
		return;
	}
	/*
	 * After a failed commit the marks of writes already acknowledged may have been rolled back, so
	 * no flush can promise that what came before it is durable: fail them all.
	 */
	if (get_mode(c) != CLONE_MODE_WRITE) {
		bio_io_error(bio);
		return;
	}
	if (!clone_md_changed(c->md)) {
		submit_bio_noacct(bio);
		return;
	}
	hand_to_worker(c, &c->after_commit, bio);
}

static void send_to_dest(struct clone_target *c, struct bio *bio)
{
	bio_set_dev(bio, c->dest->bdev);
	issue_to_dest(c, bio);
}

/*----------------------------------------------------------------------------------------------*/
/* Hydrations */

static struct hydration *find_hydration(struct clone_target *c, unsigned long region)
{
	struct hydration *h;

	hash_for_each_possible(c->hydrating, h, node, region)
		if (h->region == region)
			return h;
	return NULL;
}

static void init_hydration(struct hydration *h, struct clone_target *c, unsigned long region)
{
	memset(h, 0, sizeof(*h));
	h->c = c;
	h->region = region;
	INIT_LIST_HEAD(&h->batch);
	bio_list_init(&h->waiting);
}

/* Called with hydrating_lock held. */
static void track_hydration(struct clone_target *c, struct hydration *h)
{
	hash_add(c->hydrating, &h->node, h->region);
	atomic_inc(&c->nr_hydrating);
}

/* A FUA overwrite is durable only with its mark: complete it after the next commit. */
static void complete_overwrite(struct clone_target *c, struct bio *bio)
{
	if (bio->bi_opf & REQ_FUA)
		hand_to_worker(c, &c->fua_overwrites, bio);
	else
		bio_endio(bio);
}

static void release_waiting(struct clone_target *c, struct bio_list *bios)
{
	unsigned long flags;

	if (bio_list_empty(bios))
		return;
	spin_lock_irqsave(&c->lock, flags);
	bio_list_merge(&c->ready, bios);
	spin_unlock_irqrestore(&c->lock, flags);
	wake_worker(c);
}

/*
 * The copy or overwrite of h->region ended. Mark the region before untracking it: a writer that no
 * longer finds the hydration must find the region hydrated. May run in interrupt context.
 */
static void finish_hydration(struct hydration *h)
{
	struct clone_target *c = h->c;
	struct bio_list waiting = BIO_EMPTY_LIST;
	blk_status_t status = h->status;
	unsigned long flags;

	if (status == BLK_STS_OK && clone_md_set_hydrated(c->md, h->region))
		status = BLK_STS_IOERR;

	spin_lock_irqsave(&c->hydrating_lock, flags);
	hash_del(&h->node);
	bio_list_merge(&waiting, &h->waiting);
	spin_unlock_irqrestore(&c->hydrating_lock, flags);

	if (status == BLK_STS_OK) {
		if (h->overwrite)
			complete_overwrite(c, h->overwrite);
		release_waiting(c, &waiting);
	} else {
		if (h->overwrite)
			bio_list_add(&waiting, h->overwrite);
		end_bios(&waiting, status);
	}

	mempool_free(h, &c->hydration_pool);
	if (atomic_dec_and_test(&c->nr_hydrating))
		wake_up_all(&c->hydration_idle);
}

static void copy_done(bool failed, void *context)
{
	struct hydration *head = context, *h, *next;
	struct clone_target *c = head->c;
	blk_status_t status = BLK_STS_OK;

	if (failed) {
		DMERR_LIMIT("%s: copying from region %lu failed", clone_name(c), head->region);
		status = BLK_STS_IOERR;
	}

	list_for_each_entry_safe(h, next, &head->batch, batch) {
		list_del_init(&h->batch);
		h->status = status;
		finish_hydration(h);
	}
	head->status = status;
	finish_hydration(head);

	if (dmkit_knob(copy_done_delay_ms))
		msleep(dmkit_knob(copy_done_delay_ms));
	/* Keep the background copy going unless user I/O wants the devices. */
	if (test_bit(CLONE_HYDRATION_ENABLED, &c->flags) && !atomic_read(&c->ios_in_flight))
		wake_worker(c);
}

/* Copy @count adjacent regions starting at head->region; the others hang on head->batch. */
static void start_copy(struct hydration *head, unsigned int count)
{
	struct clone_target *c = head->c;
	sector_t start = region_to_sector(c, head->region);
	sector_t end = min_t(sector_t, region_to_sector(c, head->region + count), c->ti->len);

	clone_copier_queue(c->copier, &head->copy, c->source->bdev, c->dest->bdev, start, end - start,
			   copy_done, head);
}

static void overwrite_endio(struct bio *bio)
{
	struct hydration *h = bio->bi_private;

	bio->bi_end_io = h->overwrite_end_io;
	bio->bi_private = h->overwrite_private;
	h->status = bio->bi_status;
	finish_hydration(h);
}

/* A write of the whole region hydrates it by itself: no copy. */
static void start_overwrite(struct hydration *h, struct bio *bio)
{
	h->overwrite = bio;
	h->overwrite_end_io = bio->bi_end_io;
	h->overwrite_private = bio->bi_private;
	bio->bi_end_io = overwrite_endio;
	bio->bi_private = h;
	submit_bio_noacct(bio);
}

static bool is_region_overwrite(struct clone_target *c, struct bio *bio)
{
	/* Bios never cross a region (max_io_len), so a region-sized one covers a whole region. */
	return bio_sectors(bio) == c->region_sectors;
}

/*
 * A write (remapped to the destination) to a region that was not hydrated at map time: join the
 * region's hydration, start one, or, if the region got hydrated meanwhile, just issue the bio.
 */
static void hydrate_for_write(struct clone_target *c, struct bio *bio)
{
	unsigned long region = bio_region(c, bio);
	struct hydration *h, *fresh = NULL;

	spin_lock_irq(&c->hydrating_lock);
	h = find_hydration(c, region);
	if (!h && !clone_md_is_hydrated(c->md, region)) {
		spin_unlock_irq(&c->hydrating_lock);
		fresh = mempool_alloc(&c->hydration_pool, GFP_NOIO);
		init_hydration(fresh, c, region);
		spin_lock_irq(&c->hydrating_lock);
		h = find_hydration(c, region);
	}

	if (h) {
		bio_list_add(&h->waiting, bio);
		spin_unlock_irq(&c->hydrating_lock);
		goto drop_fresh;
	}
	if (clone_md_is_hydrated(c->md, region)) {
		spin_unlock_irq(&c->hydrating_lock);
		issue_to_dest(c, bio);
		goto drop_fresh;
	}
	/* The mark at the end could not be made: do not start what cannot finish. */
	if (get_mode(c) != CLONE_MODE_WRITE) {
		spin_unlock_irq(&c->hydrating_lock);
		bio_io_error(bio);
		goto drop_fresh;
	}

	track_hydration(c, fresh);
	if (is_region_overwrite(c, bio)) {
		spin_unlock_irq(&c->hydrating_lock);
		start_overwrite(fresh, bio);
		return;
	}
	bio_list_add(&fresh->waiting, bio);
	spin_unlock_irq(&c->hydrating_lock);
	start_copy(fresh, 1);
	return;

drop_fresh:
	if (fresh)
		mempool_free(fresh, &c->hydration_pool);
}

/*----------------------------------------------------------------------------------------------*/
/* Background hydration (worker only) */

struct copy_batch {
	struct hydration *head;
	unsigned int count;
};

static void issue_batch(struct copy_batch *b)
{
	if (b->head)
		start_copy(b->head, b->count);
	b->head = NULL;
	b->count = 0;
}

static void add_to_batch(struct clone_target *c, struct copy_batch *b, struct hydration *h)
{
	unsigned int max = max(READ_ONCE(c->hydration_batch_size), 1U);

	if (b->head && b->head->region + b->count != h->region)
		issue_batch(b);

	if (b->head) {
		list_add_tail(&h->batch, &b->head->batch);
		b->count++;
	} else {
		b->head = h;
		b->count = 1;
	}

	if (b->count >= max)
		issue_batch(b);
}

/* Track @h for the first region at or after *cursor that is neither hydrated nor being hydrated. */
static bool claim_next_region(struct clone_target *c, unsigned long *cursor, struct hydration *h)
{
	unsigned long region = *cursor;
	bool claimed = false;

	while (!claimed) {
		region = clone_md_next_unhydrated(c->md, region);
		if (region >= c->nr_regions)
			break;

		spin_lock_irq(&c->hydrating_lock);
		if (!clone_md_is_hydrated(c->md, region) && !find_hydration(c, region)) {
			init_hydration(h, c, region);
			track_hydration(c, h);
			claimed = true;
		}
		spin_unlock_irq(&c->hydrating_lock);
		region++;
	}
	*cursor = region;
	return claimed;
}

static bool background_may_run(struct clone_target *c)
{
	return test_bit(CLONE_HYDRATION_ENABLED, &c->flags) &&
	       !test_bit(CLONE_SUSPENDED, &c->flags) &&
	       get_mode(c) == CLONE_MODE_WRITE &&
	       !atomic_read(&c->ios_in_flight);
}

static struct hydration *get_hydration(struct clone_target *c, struct copy_batch *b)
{
	struct hydration *h = mempool_alloc(&c->hydration_pool, GFP_NOWAIT | __GFP_NOWARN);

	if (h)
		return h;
	/* Waiting for the pool while holding unissued regions could wait forever. */
	issue_batch(b);
	return mempool_alloc(&c->hydration_pool, GFP_NOIO);
}

static void hydrate_in_background(struct clone_target *c)
{
	struct copy_batch batch = { };
	struct hydration *h;

	if (clone_md_fully_hydrated(c->md))
		return;

	while (background_may_run(c) && c->next_region < c->nr_regions &&
	       atomic_read(&c->nr_hydrating) < READ_ONCE(c->hydration_threshold)) {
		h = get_hydration(c, &batch);
		if (!claim_next_region(c, &c->next_region, h)) {
			mempool_free(h, &c->hydration_pool);
			break;
		}
		add_to_batch(c, &batch, h);
	}
	issue_batch(&batch);

	if (c->next_region >= c->nr_regions)
		c->next_region = 0;
}

/*----------------------------------------------------------------------------------------------*/
/* Worker */

static void submit_ready(struct clone_target *c)
{
	struct bio_list bios = BIO_EMPTY_LIST;
	struct blk_plug plug;
	struct bio *bio;

	take_list(c, &c->ready, &bios);
	if (bio_list_empty(&bios))
		return;

	blk_start_plug(&plug);
	while ((bio = bio_list_pop(&bios)))
		issue_to_dest(c, bio);
	blk_finish_plug(&plug);
}

/* Complete a discard whose regions are marked, passing the whole-region part down if asked to. */
static void finish_discard(struct clone_target *c, struct bio *bio, bool marked)
{
	unsigned long first, count;

	if (!marked || !test_bit(CLONE_DISCARD_PASSDOWN, &c->flags)) {
		bio_endio(bio);
		return;
	}
	discard_regions(c, bio, &first, &count);
	bio_set_dev(bio, c->dest->bdev);
	bio->bi_iter.bi_sector = region_to_sector(c, first);
	bio->bi_iter.bi_size = to_bytes(region_to_sector(c, count));
	submit_bio_noacct(bio);
}

/*
 * Mark the regions a discard covers hydrated, except those with a hydration in progress. Their copy (or
 * overwrite) marks them when it ends, and until then writes to them wait for it. Marked now, a later
 * write would go straight to the destination and the copy, still queued or in flight, would land on top
 * of it with the source's bytes. hydrating_lock keeps new hydrations out of the range meanwhile.
 */
static int mark_discarded(struct clone_target *c, unsigned long first, unsigned long count)
{
	unsigned long from = first, end = first + count, next;
	struct hydration *h;
	int bkt, r = 0;

	spin_lock_irq(&c->hydrating_lock);
	while (from < end && !r) {
		next = end;
		hash_for_each(c->hydrating, bkt, h, node)
			if (h->region >= from && h->region < next)
				next = h->region;
		if (next > from)
			r = clone_md_set_range_hydrated(c->md, from, next - from);
		from = next + 1;
	}
	spin_unlock_irq(&c->hydrating_lock);
	return r;
}

static void process_discards(struct clone_target *c)
{
	struct bio_list bios = BIO_EMPTY_LIST;
	unsigned long first, count;
	struct blk_plug plug;
	struct bio *bio;
	int r;

	take_list(c, &c->discards, &bios);
	if (bio_list_empty(&bios))
		return;

	blk_start_plug(&plug);
	while ((bio = bio_list_pop(&bios))) {
		discard_regions(c, bio, &first, &count);
		r = mark_discarded(c, first, count);
		finish_discard(c, bio, !r);
	}
	blk_finish_plug(&plug);
}

/*
 * Commit for the bios that wait for one, or because the period elapsed. A PREFLUSH bio needs no
 * flush of its own when this commit flushed the destination after it arrived.
 */
static void process_commit_waiters(struct clone_target *c)
{
	struct bio_list waiting = BIO_EMPTY_LIST;
	struct bio_list overwrites = BIO_EMPTY_LIST;
	bool dest_flushed;
	struct bio *bio;

	take_list(c, &c->after_commit, &waiting);
	take_list(c, &c->fua_overwrites, &overwrites);

	if (bio_list_empty(&waiting) && bio_list_empty(&overwrites) &&
	    !(clone_md_changed(c->md) && commit_is_due(c)))
		return;

	if (commit_metadata(c, &dest_flushed)) {
		end_bios(&waiting, BLK_STS_IOERR);
		end_bios(&overwrites, BLK_STS_IOERR);
		return;
	}

	end_bios(&overwrites, BLK_STS_OK);
	while ((bio = bio_list_pop(&waiting))) {
		if ((bio->bi_opf & REQ_PREFLUSH) && dest_flushed)
			bio_endio(bio);
		else
			submit_bio_noacct(bio);
	}
}

static void do_worker(struct work_struct *work)
{
	struct clone_target *c = container_of(work, struct clone_target, worker);

	submit_ready(c);
	process_discards(c);
	process_commit_waiters(c);
	hydrate_in_background(c);
}

/* Runs every COMMIT_PERIOD: periodic commit, and restart of a background copy paused by user I/O. */
static void do_tick(struct work_struct *work)
{
	struct clone_target *c = container_of(to_delayed_work(work), struct clone_target, ticker);

	wake_worker(c);
	queue_delayed_work(c->wq, &c->ticker, COMMIT_PERIOD);
}

/*----------------------------------------------------------------------------------------------*/
/* Map */

static void map_discard(struct clone_target *c, struct bio *bio)
{
	unsigned long first, count;

	discard_regions(c, bio, &first, &count);
	if (!count) {
		bio_endio(bio);
		return;
	}
	if (WARN_ON_ONCE(first >= c->nr_regions || count > c->nr_regions - first)) {
		DMERR("%s: discard of regions %lu+%lu is past the %lu regions", clone_name(c),
		      first, count, c->nr_regions);
		bio_endio(bio);
		return;
	}

	if (clone_md_range_is_hydrated(c->md, first, count)) {
		finish_discard(c, bio, true);
		return;
	}
	/* Read-only metadata cannot record the regions: ignore the discard. */
	if (get_mode(c) != CLONE_MODE_WRITE) {
		bio_endio(bio);
		return;
	}
	hand_to_worker(c, &c->discards, bio);
}

static int ct_map(struct dm_target *ti, struct bio *bio)
{
	struct clone_target *c = ti->private;

	/* A killed bio never reaches end_io, so it is not counted. */
	if (unlikely(get_mode(c) == CLONE_MODE_FAIL))
		return DM_MAPIO_KILL;
	atomic_inc(&c->ios_in_flight);

	if (bio->bi_opf & REQ_PREFLUSH) {
		send_to_dest(c, bio);
		return DM_MAPIO_SUBMITTED;
	}

	bio->bi_iter.bi_sector = dm_target_offset(ti, bio->bi_iter.bi_sector);

	if (bio_op(bio) == REQ_OP_DISCARD) {
		map_discard(c, bio);
		return DM_MAPIO_SUBMITTED;
	}

	if (clone_md_is_hydrated(c->md, bio_region(c, bio))) {
		send_to_dest(c, bio);
		return DM_MAPIO_SUBMITTED;
	}
	if (bio_data_dir(bio) == READ) {
		bio_set_dev(bio, c->source->bdev);
		return DM_MAPIO_REMAPPED;
	}

	bio_set_dev(bio, c->dest->bdev);
	hydrate_for_write(c, bio);
	return DM_MAPIO_SUBMITTED;
}

static int ct_end_io(struct dm_target *ti, struct bio *bio, blk_status_t *error)
{
	struct clone_target *c = ti->private;

	atomic_dec(&c->ios_in_flight);
	return DM_ENDIO_DONE;
}

/*----------------------------------------------------------------------------------------------*/
/* Status */

static const char *mode_word(enum clone_mode mode)
{
	switch (mode) {
	case CLONE_MODE_WRITE:
		return "rw";
	case CLONE_MODE_READ_ONLY:
		return "ro";
	default:
		return "Fail";
	}
}

static void emit_info(struct clone_target *c, unsigned int status_flags, char *result,
		      unsigned int maxlen)
{
	bool no_hydration = !test_bit(CLONE_HYDRATION_ENABLED, &c->flags);
	bool no_passdown = !test_bit(CLONE_DISCARD_PASSDOWN, &c->flags);
	dm_block_t used, total;
	unsigned int sz = 0;
	int r;

	if (get_mode(c) == CLONE_MODE_FAIL) {
		DMEMIT("Fail");
		return;
	}

	/* Fresh numbers: commit first, unless asked not to or the device is suspended. */
	if (!(status_flags & DM_STATUS_NOFLUSH_FLAG) && !dm_suspended(c->ti))
		commit_metadata(c, NULL);

	r = clone_md_space(c->md, &used, &total);
	if (r) {
		DMERR("%s: cannot read the metadata space map: %d", clone_name(c), r);
		DMEMIT("Error");
		return;
	}

	DMEMIT("%u %llu/%llu %llu %lu/%lu %u ", CLONE_MD_BLOCK_SECTORS,
	       (unsigned long long)used, (unsigned long long)total,
	       (unsigned long long)c->region_sectors, clone_md_hydrated_count(c->md), c->nr_regions,
	       atomic_read(&c->nr_hydrating));
	DMEMIT("%u %s%s", no_hydration + no_passdown, no_hydration ? "no_hydration " : "",
	       no_passdown ? "no_discard_passdown " : "");
	DMEMIT("4 hydration_threshold %u hydration_batch_size %u %s",
	       READ_ONCE(c->hydration_threshold), READ_ONCE(c->hydration_batch_size),
	       mode_word(get_mode(c)));
}

static void ct_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
			 char *result, unsigned int maxlen)
{
	struct clone_target *c = ti->private;
	unsigned int sz = 0;
	unsigned int i;

	switch (type) {
	case STATUSTYPE_INFO:
		emit_info(c, status_flags, result, maxlen);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s %s", c->md_dev->name, c->dest->name, c->source->name);
		for (i = 0; i < c->nr_table_args; i++)
			DMEMIT(" %s", c->table_args[i]);
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",metadata_device=%s,destination_device=%s,source_device=%s,region_size=%llu;",
		       c->md_dev->name, c->dest->name, c->source->name,
		       (unsigned long long)c->region_sectors);
		break;
	}
}

/*----------------------------------------------------------------------------------------------*/
/* Messages */

static int msg_enable_hydration(struct clone_target *c, unsigned int unused)
{
	if (!test_and_set_bit(CLONE_HYDRATION_ENABLED, &c->flags))
		wake_worker(c);
	return 0;
}

static int msg_disable_hydration(struct clone_target *c, unsigned int unused)
{
	clear_bit(CLONE_HYDRATION_ENABLED, &c->flags);
	return 0;
}

static int msg_hydration_threshold(struct clone_target *c, unsigned int regions)
{
	WRITE_ONCE(c->hydration_threshold, regions);
	/* Zero pauses the copy; anything higher must restart it. */
	wake_worker(c);
	return 0;
}

static int msg_hydration_batch_size(struct clone_target *c, unsigned int regions)
{
	WRITE_ONCE(c->hydration_batch_size, regions);
	return 0;
}

static const struct ct_message {
	const char *name;
	bool takes_value;
	int (*apply)(struct clone_target *c, unsigned int value);
} clone_messages[] = {
	{ "enable_hydration", false, msg_enable_hydration },
	{ "disable_hydration", false, msg_disable_hydration },
	{ "hydration_threshold", true, msg_hydration_threshold },
	{ "hydration_batch_size", true, msg_hydration_batch_size },
};

static int ct_message(struct dm_target *ti, unsigned int argc, char **argv,
			 char *result, unsigned int maxlen)
{
	struct clone_target *c = ti->private;
	const struct ct_message *m;
	unsigned int value = 0;
	size_t i;

	for (i = 0; argc && i < ARRAY_SIZE(clone_messages); i++) {
		m = &clone_messages[i];
		if (strcasecmp(argv[0], m->name))
			continue;
		if (argc != 1 + m->takes_value) {
			DMERR("%s: message '%s' takes %s", clone_name(c), m->name,
			      m->takes_value ? "one number" : "no argument");
			return -EINVAL;
		}
		if (m->takes_value && kstrtouint(argv[1], 10, &value)) {
			DMERR("%s: message '%s': '%s' is not a number", clone_name(c), m->name, argv[1]);
			return -EINVAL;
		}
		return m->apply(c, value);
	}

	DMERR("%s: unsupported message '%s'", clone_name(c), argc ? argv[0] : "");
	return -EINVAL;
}

/*----------------------------------------------------------------------------------------------*/
/* Constructor helpers */

static const struct dm_arg region_size_arg = {
	MIN_REGION_SECTORS, MAX_REGION_SECTORS, "Invalid region size"
};
static const struct dm_arg nr_features_arg = { 0, 2, "Invalid number of feature arguments" };
static const struct dm_arg nr_core_args_arg = { 0, 4, "Invalid number of core arguments" };

static const struct core_arg {
	const char *key;
	struct dm_arg value;
	size_t offset;		/* of the unsigned int it sets in struct clone_target */
} core_args[] = {
	{ "hydration_threshold", { 0, UINT_MAX, "Invalid value for argument `hydration_threshold'" },
	  offsetof(struct clone_target, hydration_threshold) },
	{ "hydration_batch_size", { 0, UINT_MAX, "Invalid value for argument `hydration_batch_size'" },
	  offsetof(struct clone_target, hydration_batch_size) },
};

/* How each device of the table is opened and checked. */
struct device_role {
	fmode_t mode;
	char *open_error;
	char *size_error;	/* NULL: may be smaller than the target */
};

static const struct device_role metadata_role = {
	FMODE_READ | FMODE_WRITE, "Error opening metadata device", NULL
};
static const struct device_role dest_role = {
	FMODE_READ | FMODE_WRITE, "Error opening destination device",
	"Device size larger than destination device"
};
/* The source is only ever read. */
static const struct device_role source_role = {
	FMODE_READ, "Error opening source device", "Device size larger than source device"
};

static int get_device_as(struct clone_target *c, const char *path, const struct device_role *role,
			 struct dm_dev **dev)
{
	struct dm_target *ti = c->ti;
	int r;

	r = dm_get_device(ti, path, role->mode, dev);
	if (r) {
		ti->error = role->open_error;
		return r;
	}
	if (role->size_error && bdev_nr_sectors((*dev)->bdev) < ti->len) {
		dm_put_device(ti, *dev);
		ti->error = role->size_error;
		return -EINVAL;
	}
	return 0;
}

static int get_devices(struct clone_target *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	int r;

	r = get_device_as(c, dm_shift_arg(as), &metadata_role, &c->md_dev);
	if (r)
		return r;
	if (bdev_nr_sectors(c->md_dev->bdev) > CLONE_MD_MAX_SECTORS)
		DMWARN("metadata device %pg is larger than %llu sectors: the excess is not used",
		       c->md_dev->bdev, (unsigned long long)CLONE_MD_MAX_SECTORS);

	r = get_device_as(c, dm_shift_arg(as), &dest_role, &c->dest);
	if (r)
		goto bad_dest;
	r = get_device_as(c, dm_shift_arg(as), &source_role, &c->source);
	if (r)
		goto bad_source;

	/* Any two roles on one device would have the clone overwrite what it reads or tracks. */
	if (c->md_dev->bdev == c->dest->bdev || c->md_dev->bdev == c->source->bdev ||
	    c->dest->bdev == c->source->bdev) {
		ti->error = "The metadata, destination and source devices must all differ";
		r = -EINVAL;
		goto bad_same;
	}
	return 0;

bad_same:
	dm_put_device(ti, c->source);
bad_source:
	dm_put_device(ti, c->dest);
bad_dest:
	dm_put_device(ti, c->md_dev);
	return r;
}

static void put_devices(struct clone_target *c)
{
	dm_put_device(c->ti, c->source);
	dm_put_device(c->ti, c->dest);
	dm_put_device(c->ti, c->md_dev);
}

static int parse_region_size(struct clone_target *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	unsigned int lbs_sectors;
	unsigned int size;
	sector_t nr;
	int r;

	r = dm_read_arg(&region_size_arg, as, &size, &ti->error);
	if (r)
		return r;
	if (!is_power_of_2(size)) {
		ti->error = "Region size is not a power of 2";
		return -EINVAL;
	}
	lbs_sectors = max(bdev_logical_block_size(c->source->bdev),
			  bdev_logical_block_size(c->dest->bdev)) >> SECTOR_SHIFT;
	if (size % lbs_sectors) {
		ti->error = "Region size is not a multiple of device logical block size";
		return -EINVAL;
	}

	nr = dm_sector_div_up(ti->len, (sector_t)size);
	if (nr > MAX_REGIONS) {
		ti->error = "Too many regions. Consider increasing the region size";
		return -EINVAL;
	}
	c->region_sectors = size;
	c->region_shift = __ffs(size);
	c->nr_regions = nr;
	return 0;
}

static int parse_features(struct clone_target *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	unsigned int n;
	const char *name;
	int r;

	if (!as->argc)
		return 0;
	r = dm_read_arg_group(&nr_features_arg, as, &n, &ti->error);
	if (r)
		return r;

	while (n--) {
		name = dm_shift_arg(as);
		if (!strcasecmp(name, "no_hydration")) {
			__clear_bit(CLONE_HYDRATION_ENABLED, &c->flags);
		} else if (!strcasecmp(name, "no_discard_passdown")) {
			__clear_bit(CLONE_DISCARD_PASSDOWN, &c->flags);
		} else {
			ti->error = "Invalid feature argument";
			return -EINVAL;
		}
	}
	return 0;
}

static int parse_one_core_arg(struct clone_target *c, struct dm_arg_set *as)
{
	const char *key = dm_shift_arg(as);
	size_t i;

	for (i = 0; i < ARRAY_SIZE(core_args); i++) {
		if (!strcasecmp(key, core_args[i].key))
			return dm_read_arg(&core_args[i].value, as,
					   (unsigned int *)((char *)c + core_args[i].offset),
					   &c->ti->error);
	}
	c->ti->error = "Invalid core argument";
	return -EINVAL;
}

static int parse_core_args(struct clone_target *c, struct dm_arg_set *as)
{
	struct dm_target *ti = c->ti;
	unsigned int n;
	int r;

	if (!as->argc)
		return 0;
	r = dm_read_arg_group(&nr_core_args_arg, as, &n, &ti->error);
	if (r)
		return r;
	if (n % 2) {
		ti->error = "Number of core arguments must be even";
		return -EINVAL;
	}

	for (; n; n -= 2) {
		r = parse_one_core_arg(c, as);
		if (r)
			return r;
	}
	return 0;
}

static int parse_tail(struct clone_target *c, struct dm_arg_set *as)
{
	int r;

	r = parse_region_size(c, as);
	if (!r)
		r = parse_features(c, as);
	if (!r)
		r = parse_core_args(c, as);
	if (!r && as->argc) {
		c->ti->error = "Unexpected arguments after the core arguments";
		r = -EINVAL;
	}
	return r;
}

static void free_table_args(struct clone_target *c)
{
	unsigned int i;

	for (i = 0; i < c->nr_table_args; i++)
		kfree(c->table_args[i]);
	kfree(c->table_args);
}

static int save_table_args(struct clone_target *c, unsigned int argc, char **argv)
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
	c->nr_table_args = 0;
	c->table_args = NULL;
	c->ti->error = "Cannot allocate the table line";
	return -ENOMEM;
}

/* Everything the I/O path needs besides devices and metadata. */
static int create_runtime(struct clone_target *c)
{
	struct dm_target *ti = c->ti;
	int r;

	hash_init(c->hydrating);
	spin_lock_init(&c->hydrating_lock);
	spin_lock_init(&c->lock);
	mutex_init(&c->commit_lock);
	init_waitqueue_head(&c->hydration_idle);
	atomic_set(&c->ios_in_flight, 0);
	atomic_set(&c->nr_hydrating, 0);
	bio_list_init(&c->ready);
	bio_list_init(&c->discards);
	bio_list_init(&c->after_commit);
	bio_list_init(&c->fua_overwrites);
	INIT_WORK(&c->worker, do_worker);
	INIT_DELAYED_WORK(&c->ticker, do_tick);

	r = mempool_init_slab_pool(&c->hydration_pool, HYDRATION_POOL_MIN, hydration_cache);
	if (r) {
		ti->error = "Cannot create the hydration pool";
		return r;
	}

	c->copier = clone_copier_create("dmkit-clone-copy", &hydration_throttle);
	if (IS_ERR(c->copier)) {
		r = PTR_ERR(c->copier);
		ti->error = "Cannot create the copy engine";
		goto bad_copier;
	}

	c->wq = alloc_workqueue("dmkit-clone", WQ_MEM_RECLAIM, 0);
	if (!c->wq) {
		r = -ENOMEM;
		ti->error = "Cannot create the workqueue";
		goto bad_wq;
	}
	return 0;

bad_wq:
	clone_copier_destroy(c->copier);
bad_copier:
	mempool_exit(&c->hydration_pool);
	return r;
}

static void destroy_runtime(struct clone_target *c)
{
	/* Again here: a resume racing with the removal may have re-armed it after postsuspend. */
	cancel_delayed_work_sync(&c->ticker);
	/*
	 * The copy engine goes first and waits for its last callback: copy_done() wakes our worker after
	 * the hydration it ends has let postsuspend go on, so the workqueue must outlive the engine.
	 */
	clone_copier_destroy(c->copier);
	destroy_workqueue(c->wq);
	mempool_exit(&c->hydration_pool);
	mutex_destroy(&c->commit_lock);
}

/*----------------------------------------------------------------------------------------------*/
/* Target methods */

static int ct_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dm_arg_set as = { .argc = argc, .argv = argv };
	struct clone_target *c;
	int r;

	if (argc < 4) {
		ti->error = "Invalid number of arguments";
		return -EINVAL;
	}

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		ti->error = "Cannot allocate the clone context";
		return -ENOMEM;
	}
	c->ti = ti;
	c->mode = CLONE_MODE_WRITE;
	__set_bit(CLONE_HYDRATION_ENABLED, &c->flags);
	__set_bit(CLONE_DISCARD_PASSDOWN, &c->flags);
	__set_bit(CLONE_SUSPENDED, &c->flags);
	c->hydration_threshold = 1;
	c->hydration_batch_size = 1;

	r = get_devices(c, &as);
	if (r)
		goto bad_devices;
	r = parse_tail(c, &as);
	if (r)
		goto bad_args;
	r = dm_set_target_max_io_len(ti, c->region_sectors);
	if (r)
		goto bad_args;
	r = save_table_args(c, argc - 3, argv + 3);
	if (r)
		goto bad_args;

	ti->error = "Failed to load metadata";
	c->md = clone_md_open(c->md_dev->bdev, ti->len, c->region_sectors, &ti->error);
	if (IS_ERR(c->md)) {
		r = PTR_ERR(c->md);
		goto bad_md;
	}
	c->hydration_announced = clone_md_fully_hydrated(c->md);
	c->last_commit = jiffies;

	r = create_runtime(c);
	if (r)
		goto bad_runtime;

	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	ti->num_discard_bios = 1;
	ti->discards_supported = true;
	ti->private = c;
	return 0;

bad_runtime:
	clone_md_close(c->md);
bad_md:
	free_table_args(c);
bad_args:
	put_devices(c);
bad_devices:
	kfree(c);
	return r;
}

static void ct_dtr(struct dm_target *ti)
{
	struct clone_target *c = ti->private;

	destroy_runtime(c);
	clone_md_close(c->md);
	free_table_args(c);
	put_devices(c);
	kfree(c);
}

static void ct_postsuspend(struct dm_target *ti)
{
	struct clone_target *c = ti->private;

	/* No new background copies from here on: the worker checks this bit before each one. */
	set_bit(CLONE_SUSPENDED, &c->flags);
	smp_mb__after_atomic();
	cancel_delayed_work_sync(&c->ticker);
	flush_workqueue(c->wq);

	/* Copies already started finish, then the worker passes their bios on and we commit. */
	wait_event(c->hydration_idle, !atomic_read(&c->nr_hydrating));
	flush_workqueue(c->wq);
	commit_metadata(c, NULL);
}

/*
 * A table's constructor runs while the table it replaces is still live: the metadata it read then may
 * since have changed (regions hydrated and committed by the old table, blocks allocated in its space
 * map). Only here, after the old table's postsuspend stopped its copies and committed, is the metadata
 * final, so the first resume of each table reads it again: one object per table, each reading the
 * metadata once the previous owner has let go of it, as dm-era loads its metadata in preresume.
 */
static int ct_preresume(struct dm_target *ti)
{
	struct clone_target *c = ti->private;
	struct clone_md *md;
	char *error = "cannot reopen the metadata";

	if (c->md_fresh)
		return 0;

	md = clone_md_open(c->md_dev->bdev, ti->len, c->region_sectors, &error);
	if (IS_ERR(md)) {
		DMERR("%s: %s: %ld", clone_name(c), error, PTR_ERR(md));
		return PTR_ERR(md);
	}
	if (get_mode(c) != CLONE_MODE_WRITE)
		clone_md_set_read_only(md);
	clone_md_close(c->md);
	c->md = md;
	c->md_fresh = true;
	c->hydration_announced = clone_md_fully_hydrated(md);
	c->next_region = 0;
	c->last_commit = jiffies;
	return 0;
}

static void ct_resume(struct dm_target *ti)
{
	struct clone_target *c = ti->private;

	clear_bit(CLONE_SUSPENDED, &c->flags);
	wake_worker(c);
	mod_delayed_work(c->wq, &c->ticker, COMMIT_PERIOD);
}

/* Discards go to the destination only: take its limits, or our own when they are not passed down. */
static void set_discard_limits(struct clone_target *c, struct queue_limits *limits)
{
	struct block_device *dest = c->dest->bdev;
	struct queue_limits *dl = &bdev_get_queue(dest)->limits;
	const char *why = NULL;

	if (test_bit(CLONE_DISCARD_PASSDOWN, &c->flags)) {
		if (!bdev_max_discard_sectors(dest))
			why = "does not support discards";
		else if (dl->max_discard_sectors < c->region_sectors)
			why = "cannot discard a whole region at once";
		if (why) {
			DMWARN("destination %pg %s: not passing discards down", dest, why);
			clear_bit(CLONE_DISCARD_PASSDOWN, &c->flags);
		}
	}

	if (!test_bit(CLONE_DISCARD_PASSDOWN, &c->flags)) {
		limits->discard_granularity = c->region_sectors << SECTOR_SHIFT;
		limits->max_discard_sectors = round_down(UINT_MAX >> SECTOR_SHIFT, c->region_sectors);
		limits->max_hw_discard_sectors = limits->max_discard_sectors;
		return;
	}
	limits->discard_granularity = dl->discard_granularity;
	limits->discard_alignment = dl->discard_alignment;
	limits->discard_misaligned = dl->discard_misaligned;
	limits->max_discard_sectors = dl->max_discard_sectors;
	limits->max_hw_discard_sectors = dl->max_hw_discard_sectors;
	limits->max_discard_segments = dl->max_discard_segments;
}

static void ct_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct clone_target *c = ti->private;
	sector_t io_opt = limits->io_opt >> SECTOR_SHIFT;

	/* Keep a stacked io_opt that is already a multiple of the region size. */
	if (io_opt < c->region_sectors || (io_opt & (c->region_sectors - 1))) {
		blk_limits_io_min(limits, c->region_sectors << SECTOR_SHIFT);
		blk_limits_io_opt(limits, c->region_sectors << SECTOR_SHIFT);
	}
	set_discard_limits(c, limits);
}

static int ct_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn, void *data)
{
	struct clone_target *c = ti->private;

	return fn(ti, c->source, 0, ti->len, data) ?: fn(ti, c->dest, 0, ti->len, data);
}

static struct target_type clone_target_type = {
	.name = "dmkit-clone",
	.version = { DMKIT_VERSION_MAJOR, DMKIT_VERSION_MINOR, DMKIT_VERSION_PATCH },
	.module = THIS_MODULE,
	.ctr = ct_ctr,
	.dtr = ct_dtr,
	.map = ct_map,
	.end_io = ct_end_io,
	.postsuspend = ct_postsuspend,
	.preresume = ct_preresume,
	.resume = ct_resume,
	.status = ct_status,
	.message = ct_message,
	.io_hints = ct_io_hints,
	.iterate_devices = ct_iterate_devices,
};

static int __init dmkit_clone_init(void)
{
	int r;

	hydration_cache = KMEM_CACHE(hydration, 0);
	if (!hydration_cache)
		return -ENOMEM;

	r = dm_register_target(&clone_target_type);
	if (r) {
		DMERR("register failed: %d", r);
		kmem_cache_destroy(hydration_cache);
	}
	return r;
}

static void __exit dmkit_clone_exit(void)
{
	dm_unregister_target(&clone_target_type);
	kmem_cache_destroy(hydration_cache);
}

module_init(dmkit_clone_init);
module_exit(dmkit_clone_exit);

MODULE_DESCRIPTION(DM_NAME " dmkit clone target (in-tree dm-clone compatible)");
MODULE_AUTHOR("dmkit developers");
MODULE_LICENSE("GPL");
MODULE_VERSION(DMKIT_VERSION_STRING);
