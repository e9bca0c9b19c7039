// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-snapshot: copy-on-write snapshots of a block device, compatible with the in-tree snapshot,
 * snapshot-origin and snapshot-merge targets (tables, status lines and the persistent COW format).
 *
 * Tables:   dmkit-origin   <origin dev>
 *           dmkit-snapshot <origin dev> <COW dev> <P|PO|N> <chunk size>
 *                          [<#features> discard_zeroes_cow [discard_passdown_origin]]
 *           dmkit-merge    <origin dev> <COW dev> <P|PO> <chunk size> [<#features> ...]
 * Status:   snapshot and merge INFO "<allocated>/<COW sectors> <metadata sectors>" or Invalid, Overflow,
 *           Merge failed; TABLE the table line with the chunk size in use. Origin: INFO empty, TABLE
 *           the origin device. No messages.
 *
 * Snapshots register under their origin's block device. A write through dmkit-origin to a chunk that
 * a snapshot has not copied yet waits while the chunk is copied into the COW device of every snapshot
 * that lacks it, with one copy per group of snapshots sharing a chunk size (one read, up to eight
 * writes; through snap-copier.c's preallocated buffers, or dm-kcopyd when they are short), and the
 * exceptions are committed; then the write goes on. Reads of a snapshot follow
 * its exception table to the COW device, else go to the origin. A write to a snapshot copies its chunk
 * first too. A full COW invalidates the snapshot (header valid = 0), except that with PO a write to the
 * snapshot itself only fails and the status reads Overflow; the origin goes on in every case.
 *
 * dmkit-merge replaces the origin device: it presents the snapshot's contents while it copies the
 * exceptions back to the origin, from the last one backwards; each step flushes the origin before it
 * commits the shortened exception table. Done when the status shows allocated == metadata. No handover
 * with a live dmkit-snapshot: remove the snapshot device (one COW, one user) before loading the merge.
 * The origin's other snapshots stay consistent: writes through the merge device and each merge step
 * first copy the chunks they change into them, as origin writes do. One merge per origin.
 *
 * Test knob (KNOBS=1 builds, /sys/module/dmkit_snapshot/parameters/invalidate_delay_ms, default 0):
 * invalidating a persistent snapshot builds the header, then sleeps that many milliseconds before
 * writing it. Exception commits keep running during the sleep, and a commit that starts once the
 * invalidation is under way first sleeps half as long, so that it lands inside the window even when
 * the copy engine has ended every copy in flight before the header was built. With the snapshot-header
 * revert the header is built in the area buffer that those commits re-encode, so a commit finishing
 * inside the window writes exception 0 over it (bad magic, chunk size 0) every time; with the fix
 * nothing changes.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/delay.h>
#include <linux/device-mapper.h>
#include <linux/dm-kcopyd.h>
#include <linux/hashtable.h>
#include <linux/log2.h>
#include <linux/mempool.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "dmkit-common.h"
#include "snap-copier.h"
#include "snap-store.h"

#define DM_MSG_PREFIX "dmkit-snapshot"

#define PENDING_HASH_BITS 10
#define TRACK_HASH_BITS 7
#define ORIGIN_HASH_BITS 6
#define MIN_EXCEPTION_BUCKETS 64
#define MAX_EXCEPTION_BUCKETS (1U << 18)
#define PENDING_POOL_SIZE 256
#define COPY_POOL_SIZE 64
#define MERGE_MAX_RUN 64
/* A commit waits for copies still under way unless this many finished copies wait for it. */
#define COMMIT_BATCH_MAX 64

/* A snapshot of one origin; dmkit-merge instances are snapshots with `merge` set. */
struct snap {
	struct dm_target *ti;
	struct dm_dev *origin;
	struct dm_dev *cow;
	struct snap_store *store;
	unsigned int chunk_sectors;
	unsigned int chunk_shift;
	bool merge;
	bool overflow_ok;		/* PO */
	bool discard_zeroes_cow;
	bool discard_passdown_origin;

	struct origin_set *set;
	struct list_head set_entry;

	/* Guards the state flags, both exception tables, the store's allocator and the merge range. */
	spinlock_t lock;
	bool valid;
	bool invalidating;		/* the header write is under way; no new exception */
	bool overflowed;
	bool merge_failed;
	int invalidate_error;
	struct hlist_head *exceptions;	/* completed: struct snap_ex by origin chunk */
	unsigned int exception_bits;
	DECLARE_HASHTABLE(pending, PENDING_HASH_BITS);
	struct list_head copied;	/* pending exceptions whose copy ended, for the next commit */
	unsigned int nr_copying;	/* pending exceptions whose copy has not ended */
	unsigned int nr_copied;		/* entries on `copied` */
	struct mutex commit_lock;	/* one commit at a time: the worker's or a copy callback's */

	atomic_t nr_pending;
	wait_queue_head_t pending_wait;

	/* Bios in flight to a chunk that may change under them (snapshot reads of the origin, merges). */
	spinlock_t track_lock;
	DECLARE_HASHTABLE(tracked, TRACK_HASH_BITS);

	struct workqueue_struct *wq;	/* ordered: commits and the merge */
	struct work_struct commit_work;
	struct work_struct invalidate_work;

	struct work_struct merge_work;
	bool merge_stop;
	snap_chunk_t merging_first;
	unsigned int merging_count;
	struct bio_list merge_held;
};

struct snap_ex {
	struct hlist_node node;
	snap_chunk_t old_chunk;
	snap_chunk_t new_chunk;
};

/* A chunk being copied into one snapshot's COW device, with the bios that wait for it. */
struct snap_pe {
	struct hlist_node node;
	struct list_head entry;		/* fresh list, then snap->copied */
	struct snap *s;
	snap_chunk_t old_chunk;
	snap_chunk_t new_chunk;
	struct bio_list origin_bios;	/* origin writes: run through the origin again */
	struct bio_list snap_bios;	/* snapshot writes: go to the new COW chunk */
	struct preserve_wait *preserve;	/* a merge step waiting for this copy, if any */
	int error;
};

/* One kcopyd job: one origin chunk into the COW devices of up to DM_KCOPYD_MAX_REGIONS snapshots. */
struct snap_copy {
	unsigned int nr;
	struct snap_pe *pes[DM_KCOPYD_MAX_REGIONS];
};

struct snap_track {
	struct hlist_node node;
	snap_chunk_t chunk;
	bool tracked;
};

/* The snapshots of one origin block device. */
struct origin_set {
	struct hlist_node node;
	dev_t dev;
	struct list_head snapshots;
};

struct snap_origin {
	struct dm_dev *dev;
};

static DECLARE_RWSEM(origins_lock);
static DEFINE_HASHTABLE(origins, ORIGIN_HASH_BITS);

static struct kmem_cache *ex_cache;
static struct kmem_cache *pe_cache;
static mempool_t pe_pool;
static mempool_t copy_pool;
static struct dm_kcopyd_client *kcopyd;

static const char *snap_name(struct snap *s)
{
	return dm_device_name(dm_table_get_md(s->ti->table));
}

/* ---- registry ---- */

static struct origin_set *find_set(dev_t dev)
{
	struct origin_set *set;

	hash_for_each_possible(origins, set, node, dev)
		if (set->dev == dev)
			return set;
	return NULL;
}

static bool cow_in_use(dev_t cow)
{
	struct origin_set *set;
	struct snap *s;
	int bkt;

	hash_for_each(origins, bkt, set, node)
		list_for_each_entry(s, &set->snapshots, set_entry)
			if (s->cow->bdev->bd_dev == cow)
				return true;
	return false;
}

/* One merge at a time per origin. */
static bool set_refuses(struct origin_set *set, struct snap *s)
{
	struct snap *other;

	if (!s->merge)
		return false;
	list_for_each_entry(other, &set->snapshots, set_entry)
		if (other->merge)
			return true;
	return false;
}

static int register_snapshot(struct snap *s)
{
	dev_t dev = s->origin->bdev->bd_dev;
	struct origin_set *set, *fresh;

	fresh = kzalloc(sizeof(*fresh), GFP_KERNEL);
	if (!fresh)
		return -ENOMEM;
	down_write(&origins_lock);
	if (cow_in_use(s->cow->bdev->bd_dev)) {
		up_write(&origins_lock);
		kfree(fresh);
		return -EBUSY;
	}
	set = find_set(dev);
	if (set && set_refuses(set, s)) {
		up_write(&origins_lock);
		kfree(fresh);
		return -EXDEV;
	}
	if (!set) {
		set = fresh;
		fresh = NULL;
		set->dev = dev;
		INIT_LIST_HEAD(&set->snapshots);
		hash_add(origins, &set->node, dev);
	}
	s->set = set;
	list_add_tail(&s->set_entry, &set->snapshots);
	up_write(&origins_lock);
	kfree(fresh);
	return 0;
}

static void unregister_snapshot(struct snap *s)
{
	down_write(&origins_lock);
	list_del(&s->set_entry);
	if (list_empty(&s->set->snapshots)) {
		hash_del(&s->set->node);
		kfree(s->set);
	}
	up_write(&origins_lock);
}

/* ---- exception tables (s->lock held) ---- */

static struct hlist_head *ex_bucket(struct snap *s, snap_chunk_t chunk)
{
	return &s->exceptions[hash_64(chunk, s->exception_bits)];
}

static struct snap_ex *lookup_ex(struct snap *s, snap_chunk_t chunk)
{
	struct snap_ex *e;

	hlist_for_each_entry(e, ex_bucket(s, chunk), node)
		if (e->old_chunk == chunk)
			return e;
	return NULL;
}

static struct snap_pe *lookup_pe(struct snap *s, snap_chunk_t chunk)
{
	struct snap_pe *pe;

	hash_for_each_possible(s->pending, pe, node, chunk)
		if (pe->old_chunk == chunk)
			return pe;
	return NULL;
}

static int load_exception(void *context, snap_chunk_t old_chunk, snap_chunk_t new_chunk)
{
	struct snap *s = context;
	struct snap_ex *e = lookup_ex(s, old_chunk);

	if (e) {
		e->new_chunk = new_chunk;	/* a later entry wins, as in the in-tree target */
		return 0;
	}
	e = kmem_cache_alloc(ex_cache, GFP_KERNEL);
	if (!e)
		return -ENOMEM;
	e->old_chunk = old_chunk;
	e->new_chunk = new_chunk;
	hlist_add_head(&e->node, ex_bucket(s, old_chunk));
	return 0;
}

static void free_exceptions(struct snap *s)
{
	struct hlist_node *tmp;
	struct snap_ex *e;
	unsigned int i;

	for (i = 0; i < (1U << s->exception_bits); i++)
		hlist_for_each_entry_safe(e, tmp, &s->exceptions[i], node)
			kmem_cache_free(ex_cache, e);
}

static int alloc_exception_table(struct snap *s, unsigned int chunk_sectors)
{
	u64 chunks = bdev_nr_sectors(s->cow->bdev) >> ilog2(chunk_sectors ? chunk_sectors : 32);
	unsigned int buckets = clamp_t(u64, chunks / 4, MIN_EXCEPTION_BUCKETS, MAX_EXCEPTION_BUCKETS);
	unsigned int i;

	buckets = rounddown_pow_of_two(buckets);
	s->exception_bits = ilog2(buckets);
	s->exceptions = kvmalloc_array(buckets, sizeof(*s->exceptions), GFP_KERNEL);
	if (!s->exceptions)
		return -ENOMEM;
	for (i = 0; i < buckets; i++)
		INIT_HLIST_HEAD(&s->exceptions[i]);
	return 0;
}

/* ---- tracking bios whose chunk may change under them ---- */

static void track_bio(struct snap *s, struct bio *bio, snap_chunk_t chunk)
{
	struct snap_track *t = dm_per_bio_data(bio, sizeof(*t));
	unsigned long flags;

	t->chunk = chunk;
	t->tracked = true;
	spin_lock_irqsave(&s->track_lock, flags);
	hash_add(s->tracked, &t->node, chunk);
	spin_unlock_irqrestore(&s->track_lock, flags);
}

static void untrack_bio(struct snap *s, struct bio *bio)
{
	struct snap_track *t = dm_per_bio_data(bio, sizeof(*t));
	unsigned long flags;

	if (!t->tracked)
		return;
	spin_lock_irqsave(&s->track_lock, flags);
	hash_del(&t->node);
	spin_unlock_irqrestore(&s->track_lock, flags);
	t->tracked = false;
}

static bool chunk_tracked(struct snap *s, snap_chunk_t chunk)
{
	struct snap_track *t;
	bool found = false;

	spin_lock_irq(&s->track_lock);
	hash_for_each_possible(s->tracked, t, node, chunk)
		if (t->chunk == chunk) {
			found = true;
			break;
		}
	spin_unlock_irq(&s->track_lock);
	return found;
}

/* Waits for the bios that went to this chunk's old place before it changed. */
static void wait_for_tracked(struct snap *s, snap_chunk_t chunk)
{
	while (chunk_tracked(s, chunk))
		msleep(1);
}

/* ---- remapping ---- */

static void remap_to_cow(struct snap *s, struct bio *bio, snap_chunk_t new_chunk)
{
	sector_t sector = dm_target_offset(s->ti, bio->bi_iter.bi_sector);

	bio_set_dev(bio, s->cow->bdev);
	bio->bi_iter.bi_sector = (new_chunk << s->chunk_shift) | (sector & (s->chunk_sectors - 1));
}

static void remap_to_origin(struct snap *s, struct bio *bio)
{
	bio_set_dev(bio, s->origin->bdev);
	bio->bi_iter.bi_sector = dm_target_offset(s->ti, bio->bi_iter.bi_sector);
}

/* ---- invalidation ---- */

static void invalidate(struct snap *s, int error)
{
	spin_lock(&s->lock);
	if (!s->valid || s->invalidating) {
		spin_unlock(&s->lock);
		return;
	}
	s->invalidating = true;
	s->invalidate_error = error;
	spin_unlock(&s->lock);
	queue_work(system_long_wq, &s->invalidate_work);
}

static void invalidate_worker(struct work_struct *work)
{
	struct snap *s = container_of(work, struct snap, invalidate_work);
	int r;

	/* As the in-tree target: the header is written first, commits in flight go on meanwhile. */
	r = snap_store_drop(s->store);
	if (r)
		DMERR("%s: cannot write the invalid header: %d", snap_name(s), r);
	DMERR("%s: snapshot invalidated: %s", snap_name(s),
	      s->invalidate_error == -ENOSPC ? "COW device full" : "COW device I/O error");
	spin_lock(&s->lock);
	s->valid = false;
	spin_unlock(&s->lock);
	dm_table_event(s->ti->table);
}

/* ---- copying ---- */

/*
 * A finished copy waits for a commit, which runs when no other copy of its snapshot is under way or
 * when COMMIT_BATCH_MAX copies wait: the writers blocked on copies started together then share one
 * exception-area write instead of one each (a copy in flight ends without waiting for anything, so
 * the commit always comes). Returns true when the commit should run now.
 */
static bool add_copied(struct snap *s, struct snap_pe *pe, int error)
{
	bool now;

	pe->error = error;
	spin_lock(&s->lock);
	list_add_tail(&pe->entry, &s->copied);
	s->nr_copied++;
	s->nr_copying--;
	now = !s->nr_copying || s->nr_copied >= COMMIT_BATCH_MAX;
	spin_unlock(&s->lock);
	return now;
}

static void commit_copied(struct snap *s);

/*
 * The copy into the snapshots of copy->pes ended. Called in process context outside a bio submission
 * (the copy engine's or kcopyd's worker), each snapshot whose batch is complete commits right here:
 * that spares a wake-up of its commit worker per batch (measured: fewer wake-ups beat running the
 * commits of several snapshots side by side on their workers), and while the commits run the copier
 * gathers the next batch. Otherwise the snapshot's worker commits.
 */
static void copies_ended(struct snap_copy *copy, int read_err, unsigned long write_err, bool may_commit)
{
	struct snap_pe *pes[DM_KCOPYD_MAX_REGIONS];
	unsigned int i, nr = copy->nr;

	memcpy(pes, copy->pes, nr * sizeof(*pes));
	mempool_free(copy, &copy_pool);
	for (i = 0; i < nr; i++) {
		struct snap *s = pes[i]->s;

		if (!add_copied(s, pes[i], (read_err || (write_err & (1UL << i))) ? -EIO : 0))
			continue;
		if (may_commit) {
			mutex_lock(&s->commit_lock);
			commit_copied(s);
			mutex_unlock(&s->commit_lock);
		} else {
			queue_work(s->wq, &s->commit_work);
		}
	}
}

static void copy_done(int read_err, unsigned long write_err, void *context)
{
	copies_ended(context, read_err, write_err, !current->bio_list);
}

static void start_copy(struct snap_copy *copy)
{
	struct snap *first = copy->pes[0]->s;
	sector_t origin_size = bdev_nr_sectors(first->origin->bdev);
	struct dm_io_region from, to[DM_KCOPYD_MAX_REGIONS];
	unsigned int i;

	from.bdev = first->origin->bdev;
	from.sector = copy->pes[0]->old_chunk << first->chunk_shift;
	if (from.sector >= origin_size) {
		copies_ended(copy, 0, 0, false);	/* past the origin's end: nothing to keep */
		return;
	}
	from.count = min_t(sector_t, first->chunk_sectors, origin_size - from.sector);
	for (i = 0; i < copy->nr; i++) {
		struct snap_pe *pe = copy->pes[i];

		to[i].bdev = pe->s->cow->bdev;
		to[i].sector = pe->new_chunk << pe->s->chunk_shift;
		to[i].count = from.count;
	}
	if (!snap_copier_copy(&from, copy->nr, to, copy_done, copy))
		dm_kcopyd_copy(kcopyd, &from, copy->nr, to, 0, copy_done, copy);
}

/*
 * Starts the copies of fresh pending exceptions. One copy reads one origin chunk for every snapshot
 * that needs it: pending exceptions share a copy only with the same chunk size and the same old chunk
 * (a merge step's list holds many chunks of one snapshot).
 */
static void start_copies(struct list_head *fresh)
{
	while (!list_empty(fresh)) {
		struct snap_pe *first = list_first_entry(fresh, struct snap_pe, entry);
		unsigned int chunk_sectors = first->s->chunk_sectors;
		struct snap_copy *copy = mempool_alloc(&copy_pool, GFP_NOIO);
		struct snap_pe *pe, *tmp;

		copy->nr = 0;
		list_for_each_entry_safe(pe, tmp, fresh, entry) {
			if (pe->s->chunk_sectors != chunk_sectors || pe->old_chunk != first->old_chunk)
				continue;
			list_del_init(&pe->entry);
			copy->pes[copy->nr++] = pe;
			if (copy->nr == DM_KCOPYD_MAX_REGIONS)
				break;
		}
		start_copy(copy);
	}
}

static void init_pe(struct snap *s, struct snap_pe *pe, snap_chunk_t chunk)
{
	pe->s = s;
	pe->old_chunk = chunk;
	pe->error = 0;
	pe->preserve = NULL;
	INIT_LIST_HEAD(&pe->entry);
	bio_list_init(&pe->origin_bios);
	bio_list_init(&pe->snap_bios);
	hash_add(s->pending, &pe->node, chunk);
	atomic_inc(&s->nr_pending);
	s->nr_copying++;
}

/* ---- origin writes ---- */

/*
 * The pending exception that copies `chunk` into snapshot s before the origin changes there: the one
 * under way, or a fresh one added to `fresh` (the caller starts it). NULL when s needs no copy (not
 * valid, being invalidated, or the chunk has its exception already) or its COW is full (s is then
 * invalidated). A pending exception is returned with s->lock held.
 */
static struct snap_pe *claim_chunk(struct snap *s, snap_chunk_t chunk, struct list_head *fresh)
{
	struct snap_pe *pe = NULL, *found;

	for (;;) {
		spin_lock(&s->lock);
		if (!s->valid || s->invalidating || lookup_ex(s, chunk)) {
			spin_unlock(&s->lock);
			if (pe)
				mempool_free(pe, &pe_pool);
			return NULL;
		}
		found = lookup_pe(s, chunk);
		if (found || pe)
			break;
		/* The chunk needs a copy: allocate outside the lock, then look again. */
		spin_unlock(&s->lock);
		pe = mempool_alloc(&pe_pool, GFP_NOIO);
	}
	if (found) {
		if (pe)
			mempool_free(pe, &pe_pool);
		return found;
	}
	if (snap_store_alloc(s->store, &pe->new_chunk)) {
		spin_unlock(&s->lock);
		mempool_free(pe, &pe_pool);
		invalidate(s, -ENOSPC);
		return NULL;
	}
	init_pe(s, pe, chunk);
	list_add_tail(&pe->entry, fresh);
	return pe;
}

/*
 * Makes sure every snapshot of the set has the chunk under this origin write, or is copying it.
 * Returns DM_MAPIO_REMAPPED when the write can go now, DM_MAPIO_SUBMITTED when it was queued on a
 * copy (it comes back here when that copy is committed). origins_lock is held for reading.
 */
static int origin_write(struct origin_set *set, struct bio *bio)
{
	sector_t sector = bio->bi_iter.bi_sector;
	bool queued = false;
	struct snap_pe *pe;
	LIST_HEAD(fresh);
	struct snap *s;

	list_for_each_entry(s, &set->snapshots, set_entry) {
		if (s->merge || sector >= s->ti->len)
			continue;
		pe = claim_chunk(s, sector >> s->chunk_shift, &fresh);
		if (!pe)
			continue;
		if (!queued) {
			bio_list_add(&pe->origin_bios, bio);
			queued = true;
		}
		spin_unlock(&s->lock);
	}
	start_copies(&fresh);
	return queued ? DM_MAPIO_SUBMITTED : DM_MAPIO_REMAPPED;
}

/*
 * An origin write from a map function (dmkit-origin, or dmkit-merge outside its exceptions), already
 * remapped to the origin: cut at the smallest chunk boundary of the set's snapshots, then as
 * origin_write(). Chunk sizes are powers of 2, so the smallest boundary is one of every snapshot.
 */
static void cut_at_smallest_chunk(struct origin_set *set, struct bio *bio, sector_t sector)
{
	unsigned int boundary = 0, room;
	struct snap *s;

	list_for_each_entry(s, &set->snapshots, set_entry)
		if (!s->merge && (!boundary || s->chunk_sectors < boundary))
			boundary = s->chunk_sectors;
	if (!boundary)
		return;
	room = boundary - (sector & (boundary - 1));
	if (bio_sectors(bio) > room)
		dm_accept_partial_bio(bio, room);
}

static int origin_map_write(struct origin_set *set, struct bio *bio)
{
	cut_at_smallest_chunk(set, bio, bio->bi_iter.bi_sector);
	return origin_write(set, bio);
}

/* What a merge step waits for: the copies origin_preserve() asked for or found under way. */
struct preserve_wait {
	atomic_t left;
	struct completion done;
};

/*
 * Makes every other snapshot of the set hold its own copy of the origin sectors [first, first + count)
 * before a merge overwrites them, and sleeps until those copies are committed or failed. origins_lock
 * is not held while sleeping: the commits that end the wait take it.
 */
static void origin_preserve(struct origin_set *set, sector_t first, sector_t count)
{
	struct preserve_wait w;
	struct snap *s;

	atomic_set(&w.left, 1);
	init_completion(&w.done);
	down_read(&origins_lock);
	list_for_each_entry(s, &set->snapshots, set_entry) {
		snap_chunk_t chunk, last;
		LIST_HEAD(fresh);

		if (s->merge || first >= s->ti->len)
			continue;
		last = (min_t(sector_t, first + count, s->ti->len) - 1) >> s->chunk_shift;
		for (chunk = first >> s->chunk_shift; chunk <= last; chunk++) {
			struct snap_pe *pe = claim_chunk(s, chunk, &fresh);

			if (!pe)
				continue;
			pe->preserve = &w;
			atomic_inc(&w.left);
			spin_unlock(&s->lock);
		}
		start_copies(&fresh);
	}
	up_read(&origins_lock);
	if (!atomic_dec_and_test(&w.left))
		wait_for_completion(&w.done);
}

static void redrive_origin_bios(struct bio_list *bios)
{
	struct bio *bio;

	if (bio_list_empty(bios))
		return;
	down_read(&origins_lock);
	while ((bio = bio_list_pop(bios))) {
		struct origin_set *set = find_set(bio->bi_bdev->bd_dev);

		if (!set || origin_write(set, bio) == DM_MAPIO_REMAPPED)
			submit_bio_noacct(bio);
	}
	up_read(&origins_lock);
}

/* ---- commits ---- */

static void finish_pe(struct snap *s, struct snap_pe *pe, bool ok)
{
	struct bio_list origin_bios, snap_bios;
	struct preserve_wait *preserve;
	struct snap_ex *e = NULL;
	struct bio *bio;

	if (ok)
		e = kmem_cache_alloc(ex_cache, GFP_NOIO | __GFP_NOFAIL);
	spin_lock(&s->lock);
	hash_del(&pe->node);
	if (e) {
		e->old_chunk = pe->old_chunk;
		e->new_chunk = pe->new_chunk;
		hlist_add_head(&e->node, ex_bucket(s, e->old_chunk));
	}
	origin_bios = pe->origin_bios;
	snap_bios = pe->snap_bios;
	preserve = pe->preserve;
	spin_unlock(&s->lock);

	/* Snapshot reads that went to the origin before the exception existed must end first. */
	if (e)
		wait_for_tracked(s, pe->old_chunk);
	while ((bio = bio_list_pop(&snap_bios))) {
		if (e) {
			remap_to_cow(s, bio, e->new_chunk);
			submit_bio_noacct(bio);
		} else {
			bio_io_error(bio);
		}
	}
	redrive_origin_bios(&origin_bios);
	if (preserve && atomic_dec_and_test(&preserve->left))
		complete(&preserve->done);
	mempool_free(pe, &pe_pool);
	if (atomic_dec_and_test(&s->nr_pending))
		wake_up(&s->pending_wait);
}

/* Commits the finished copies of s and releases what waited for them; s->commit_lock held. */
static void commit_copied(struct snap *s)
{
	struct snap_pe *pe, *tmp;
	LIST_HEAD(batch);
	int copy_error = 0;
	bool valid;
	int r = 0;

	spin_lock(&s->lock);
	/* Copies started since the wake-up join this commit: the last of them to end commits (or wakes us). */
	if (s->nr_copying && s->nr_copied < COMMIT_BATCH_MAX) {
		spin_unlock(&s->lock);
		return;
	}
	list_splice_init(&s->copied, &batch);
	s->nr_copied = 0;
	valid = s->valid;
	spin_unlock(&s->lock);
	if (list_empty(&batch))
		return;

	if (valid && READ_ONCE(s->invalidating) && snap_store_commit_delay_ms())
		msleep(snap_store_commit_delay_ms());
	if (valid) {
		list_for_each_entry(pe, &batch, entry) {
			if (pe->error) {
				copy_error = pe->error;
				continue;
			}
			r = snap_store_add(s->store, pe->old_chunk, pe->new_chunk);
			if (r)
				break;
		}
		if (!r)
			r = snap_store_commit(s->store);
		if (r) {
			DMERR_LIMIT("%s: cannot commit exceptions: %d", snap_name(s), r);
			invalidate(s, r);
		} else if (copy_error) {
			DMERR_LIMIT("%s: copying a chunk into the COW device failed", snap_name(s));
			invalidate(s, copy_error);
		}
	}
	list_for_each_entry_safe(pe, tmp, &batch, entry) {
		list_del(&pe->entry);
		finish_pe(s, pe, valid && !r && !pe->error);
	}
}

static void commit_worker(struct work_struct *work)
{
	struct snap *s = container_of(work, struct snap, commit_work);

	mutex_lock(&s->commit_lock);
	commit_copied(s);
	mutex_unlock(&s->commit_lock);
}

/* ---- dmkit-origin ---- */

static int origin_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct snap_origin *o;
	int r;

	if (argc != 1) {
		ti->error = "requires exactly one argument: <origin device>";
		return -EINVAL;
	}
	o = kzalloc(sizeof(*o), GFP_KERNEL);
	if (!o) {
		ti->error = "cannot allocate the origin context";
		return -ENOMEM;
	}
	r = dm_get_device(ti, argv[0], dm_table_get_mode(ti->table), &o->dev);
	if (r) {
		ti->error = "cannot open the origin device";
		kfree(o);
		return r;
	}
	ti->private = o;
	ti->num_flush_bios = 1;
	return 0;
}

static void origin_dtr(struct dm_target *ti)
{
	struct snap_origin *o = ti->private;

	dm_put_device(ti, o->dev);
	kfree(o);
}

static int origin_map(struct dm_target *ti, struct bio *bio)
{
	struct snap_origin *o = ti->private;
	struct origin_set *set;
	int r = DM_MAPIO_REMAPPED;

	bio_set_dev(bio, o->dev->bdev);
	bio->bi_iter.bi_sector = dm_target_offset(ti, bio->bi_iter.bi_sector);
	if (bio_op(bio) != REQ_OP_WRITE || !bio_sectors(bio))
		return DM_MAPIO_REMAPPED;

	down_read(&origins_lock);
	set = find_set(o->dev->bdev->bd_dev);
	if (set)
		r = origin_map_write(set, bio);
	up_read(&origins_lock);
	return r;
}

static void origin_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
			  char *result, unsigned int maxlen)
{
	struct snap_origin *o = ti->private;
	unsigned int sz = 0;

	switch (type) {
	case STATUSTYPE_INFO:
		result[0] = '\0';
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s", o->dev->name);
		break;
	case STATUSTYPE_IMA:
		DMEMIT("origin_name=%s;", o->dev->name);
		break;
	}
}

static int origin_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn, void *data)
{
	struct snap_origin *o = ti->private;

	return fn(ti, o->dev, 0, ti->len, data);
}

/* ---- dmkit-snapshot and dmkit-merge: construction ---- */

static int parse_features(struct dm_target *ti, struct snap *s, struct dm_arg_set *as)
{
	static const struct dm_arg feature_count = { 0, 2, "invalid number of features" };
	unsigned int n;
	int r;

	if (!as->argc)
		return 0;
	/* dm_read_arg() reads the count with "%u", which wraps a number past 32 bits: refuse that first. */
	if (kstrtouint(as->argv[0], 10, &n)) {
		ti->error = feature_count.error;
		return -EINVAL;
	}
	r = dm_read_arg_group(&feature_count, as, &n, &ti->error);
	if (r)
		return r;
	while (n--) {
		const char *f = dm_shift_arg(as);

		if (!strcasecmp(f, "discard_zeroes_cow")) {
			s->discard_zeroes_cow = true;
		} else if (!strcasecmp(f, "discard_passdown_origin")) {
			s->discard_passdown_origin = true;
		} else {
			ti->error = "unrecognised feature (discard_zeroes_cow, discard_passdown_origin)";
			return -EINVAL;
		}
	}
	if (as->argc) {
		ti->error = "too many arguments";
		return -EINVAL;
	}
	if (s->discard_passdown_origin && !s->discard_zeroes_cow) {
		ti->error = "discard_passdown_origin requires discard_zeroes_cow";
		return -EINVAL;
	}
	return 0;
}

static int parse_snapshot_args(struct dm_target *ti, struct snap *s, unsigned int argc, char **argv,
			       bool *persistent, unsigned int *chunk_sectors)
{
	struct dm_arg_set as = { .argc = argc - 4, .argv = argv + 4 };
	const char *store = argv[2];

	if (!strcasecmp(store, "P")) {
		*persistent = true;
	} else if (!strcasecmp(store, "PO")) {
		*persistent = true;
		s->overflow_ok = true;
	} else if (!strcasecmp(store, "N") && !s->merge) {
		*persistent = false;
	} else {
		ti->error = s->merge ? "store type must be P or PO (a merge needs a persistent store)"
				     : "store type must be P, PO or N";
		return -EINVAL;
	}
	if (kstrtouint(argv[3], 10, chunk_sectors)) {
		ti->error = "chunk size is not a number";
		return -EINVAL;
	}
	if (*chunk_sectors && !is_power_of_2(*chunk_sectors)) {
		ti->error = "chunk size is not a power of 2";
		return -EINVAL;
	}
	if (!*chunk_sectors && !*persistent) {
		ti->error = "a transient store needs a chunk size";
		return -EINVAL;
	}
	return parse_features(ti, s, &as);
}

static int snap_ctr_common(struct dm_target *ti, unsigned int argc, char **argv, bool merge)
{
	unsigned int chunk_sectors;
	const char *error = NULL;
	bool persistent;
	struct snap *s;
	int r;

	if (argc < 4) {
		ti->error = "requires at least 4 arguments: <origin> <COW device> <P|PO|N> <chunk size>";
		return -EINVAL;
	}
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s) {
		ti->error = "cannot allocate the snapshot context";
		return -ENOMEM;
	}
	s->ti = ti;
	s->merge = merge;
	s->valid = true;
	spin_lock_init(&s->lock);
	spin_lock_init(&s->track_lock);
	hash_init(s->pending);
	hash_init(s->tracked);
	INIT_LIST_HEAD(&s->copied);
	mutex_init(&s->commit_lock);
	INIT_LIST_HEAD(&s->set_entry);
	atomic_set(&s->nr_pending, 0);
	init_waitqueue_head(&s->pending_wait);
	bio_list_init(&s->merge_held);

	r = parse_snapshot_args(ti, s, argc, argv, &persistent, &chunk_sectors);
	if (r)
		goto bad_args;
	r = dm_get_device(ti, argv[0], merge ? dm_table_get_mode(ti->table) : FMODE_READ, &s->origin);
	if (r) {
		ti->error = "cannot open the origin device";
		goto bad_args;
	}
	/*
	 * Compared by device number before the COW is opened: opening the origin's device again with
	 * write access would upgrade the table's one reference to it and free the dm_dev s->origin holds.
	 */
	if (dm_get_dev_t(argv[1]) == s->origin->bdev->bd_dev) {
		ti->error = "the COW device cannot be the origin device";
		r = -EINVAL;
		goto bad_cow;
	}
	r = dm_get_device(ti, argv[1], dm_table_get_mode(ti->table), &s->cow);
	if (r) {
		ti->error = "cannot open the COW device";
		goto bad_cow;
	}
	s->store = snap_store_create(s->cow, persistent, chunk_sectors, &error);
	if (IS_ERR(s->store)) {
		r = PTR_ERR(s->store);
		s->store = NULL;
		ti->error = (char *)error;
		goto bad_store;
	}
	r = alloc_exception_table(s, chunk_sectors);
	if (r) {
		ti->error = "cannot allocate the exception table";
		goto bad_table;
	}
	r = snap_store_load(s->store, load_exception, s, &error);
	if (r < 0) {
		ti->error = (char *)error;
		goto bad_load;
	}
	if (r == 1) {
		if (merge) {
			ti->error = "cannot merge an invalid snapshot";
			r = -EINVAL;
			goto bad_load;
		}
		DMWARN("%s: the COW header says this snapshot is invalid", argv[1]);
		s->valid = false;
	}
	s->chunk_sectors = snap_store_chunk_sectors(s->store);
	s->chunk_shift = ilog2(s->chunk_sectors);

	s->wq = alloc_ordered_workqueue("dmkit-snap", WQ_MEM_RECLAIM);
	if (!s->wq) {
		ti->error = "cannot create the workqueue";
		r = -ENOMEM;
		goto bad_load;
	}
	INIT_WORK(&s->commit_work, commit_worker);
	INIT_WORK(&s->invalidate_work, invalidate_worker);

	r = dm_set_target_max_io_len(ti, s->chunk_sectors);
	if (r) {
		ti->error = "cannot set the chunk size as the I/O boundary";
		goto bad_wq;
	}
	ti->per_io_data_size = sizeof(struct snap_track);
	ti->num_flush_bios = merge ? 2 : 1;
	ti->private = s;

	r = register_snapshot(s);
	if (r) {
		ti->error = r == -EBUSY ? "the COW device is in use by another snapshot or merge" :
			    r == -EXDEV ? "the origin is already being merged" :
			    "cannot register the snapshot";
		if (r == -EXDEV)
			r = -EBUSY;
		goto bad_wq;
	}
	return 0;

bad_wq:
	destroy_workqueue(s->wq);
bad_load:
	free_exceptions(s);
	kvfree(s->exceptions);
bad_table:
	snap_store_destroy(s->store);
bad_store:
	dm_put_device(ti, s->cow);
bad_cow:
	dm_put_device(ti, s->origin);
bad_args:
	kfree(s);
	return r;
}

static void merge_worker(struct work_struct *work);

static int snap_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	return snap_ctr_common(ti, argc, argv, false);
}

static int merge_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	int r = snap_ctr_common(ti, argc, argv, true);

	if (!r) {
		struct snap *s = ti->private;

		INIT_WORK(&s->merge_work, merge_worker);
		s->merge_stop = true;
	}
	return r;
}

static void snap_dtr(struct dm_target *ti)
{
	struct snap *s = ti->private;

	unregister_snapshot(s);
	if (s->merge) {
		WRITE_ONCE(s->merge_stop, true);
		flush_work(&s->merge_work);
	}
	wait_event(s->pending_wait, !atomic_read(&s->nr_pending));
	/* A copy callback that committed may still be returning from that commit. */
	snap_copier_flush();
	dm_kcopyd_client_flush(kcopyd);
	flush_work(&s->invalidate_work);
	destroy_workqueue(s->wq);
	free_exceptions(s);
	kvfree(s->exceptions);
	snap_store_destroy(s->store);
	dm_put_device(ti, s->cow);
	dm_put_device(ti, s->origin);
	kfree(s);
}

/* ---- dmkit-snapshot: I/O ---- */

static int snap_map(struct dm_target *ti, struct bio *bio)
{
	struct snap_track *t = dm_per_bio_data(bio, sizeof(*t));
	struct snap *s = ti->private;
	struct snap_pe *pe = NULL, *spare = NULL;
	bool write = bio_data_dir(bio) == WRITE;
	bool fresh = false, full = false;
	snap_chunk_t chunk;
	struct snap_ex *e;
	int r;

	t->tracked = false;
	if (bio->bi_opf & REQ_PREFLUSH) {
		bio_set_dev(bio, s->cow->bdev);
		return DM_MAPIO_REMAPPED;
	}
	if (bio_op(bio) != REQ_OP_READ && bio_op(bio) != REQ_OP_WRITE)
		return DM_MAPIO_KILL;
	chunk = dm_target_offset(ti, bio->bi_iter.bi_sector) >> s->chunk_shift;

relock:
	spin_lock(&s->lock);
	if (!s->valid || s->invalidating || (write && s->overflowed)) {
		r = DM_MAPIO_KILL;
		goto out;
	}
	e = lookup_ex(s, chunk);
	if (e) {
		remap_to_cow(s, bio, e->new_chunk);
		r = DM_MAPIO_REMAPPED;
		goto out;
	}
	if (!write) {
		remap_to_origin(s, bio);
		track_bio(s, bio, chunk);
		r = DM_MAPIO_REMAPPED;
		goto out;
	}
	pe = lookup_pe(s, chunk);
	if (!pe && !spare) {
		/* A copy is needed: allocate outside the lock, then look again. */
		spin_unlock(&s->lock);
		spare = mempool_alloc(&pe_pool, GFP_NOIO);
		goto relock;
	}
	if (!pe) {
		if (snap_store_alloc(s->store, &spare->new_chunk)) {
			if (s->overflow_ok) {
				if (!s->overflowed)
					DMERR("%s: snapshot overflowed: the COW device is full", snap_name(s));
				s->overflowed = true;
			} else {
				full = true;
			}
			r = DM_MAPIO_KILL;
			goto out;
		}
		pe = spare;
		spare = NULL;
		init_pe(s, pe, chunk);
		fresh = true;
	}
	bio_list_add(&pe->snap_bios, bio);
	r = DM_MAPIO_SUBMITTED;
out:
	spin_unlock(&s->lock);
	if (spare)
		mempool_free(spare, &pe_pool);
	if (full)
		invalidate(s, -ENOSPC);
	if (fresh) {
		LIST_HEAD(one);

		list_add(&pe->entry, &one);
		start_copies(&one);
	}
	return r;
}

static int snap_end_io(struct dm_target *ti, struct bio *bio, blk_status_t *error)
{
	untrack_bio(ti->private, bio);
	return DM_ENDIO_DONE;
}

static void snap_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
			    char *result, unsigned int maxlen)
{
	struct snap *s = ti->private;
	sector_t allocated, total, metadata;
	unsigned int sz = 0;
	bool valid, overflowed, merge_failed;

	switch (type) {
	case STATUSTYPE_INFO:
		spin_lock(&s->lock);
		valid = s->valid && !s->invalidating;	/* Invalid as soon as the invalidation starts */
		overflowed = s->overflowed;
		merge_failed = s->merge_failed;
		snap_store_usage(s->store, &allocated, &total, &metadata);
		spin_unlock(&s->lock);
		if (!valid)
			DMEMIT("Invalid");
		else if (merge_failed)
			DMEMIT("Merge failed");
		else if (overflowed)
			DMEMIT("Overflow");
		else
			DMEMIT("%llu/%llu %llu", (unsigned long long)allocated, (unsigned long long)total,
			       (unsigned long long)metadata);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s %s %u", s->origin->name, s->cow->name,
		       !snap_store_persistent(s->store) ? "N" : s->overflow_ok ? "PO" : "P",
		       s->chunk_sectors);
		if (s->discard_zeroes_cow)
			DMEMIT(" %u discard_zeroes_cow%s", s->discard_passdown_origin ? 2 : 1,
			       s->discard_passdown_origin ? " discard_passdown_origin" : "");
		break;
	case STATUSTYPE_IMA:
		DMEMIT("snap_origin_name=%s,snap_cow_name=%s,snap_valid=%c;", s->origin->name,
		       s->cow->name, READ_ONCE(s->valid) ? 'y' : 'n');
		break;
	}
}

static int snap_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn, void *data)
{
	struct snap *s = ti->private;
	int r;

	r = fn(ti, s->origin, 0, ti->len, data);
	if (!r)
		r = fn(ti, s->cow, 0, bdev_nr_sectors(s->cow->bdev), data);
	return r;
}

/* ---- dmkit-merge ---- */

static bool in_merge_range(struct snap *s, snap_chunk_t chunk)
{
	return s->merging_count && chunk >= s->merging_first &&
	       chunk < s->merging_first + s->merging_count;
}

static int merge_route(struct snap *s, struct bio *bio, snap_chunk_t chunk);

static int merge_map(struct dm_target *ti, struct bio *bio)
{
	struct snap_track *t = dm_per_bio_data(bio, sizeof(*t));
	struct snap *s = ti->private;
	snap_chunk_t chunk;

	t->tracked = false;
	if (bio->bi_opf & REQ_PREFLUSH) {
		bio_set_dev(bio, dm_bio_get_target_bio_nr(bio) ? s->cow->bdev : s->origin->bdev);
		return DM_MAPIO_REMAPPED;
	}
	if (bio_op(bio) != REQ_OP_READ && bio_op(bio) != REQ_OP_WRITE)
		return DM_MAPIO_KILL;
	if (bio_op(bio) == REQ_OP_WRITE) {
		down_read(&origins_lock);
		cut_at_smallest_chunk(s->set, bio, dm_target_offset(ti, bio->bi_iter.bi_sector));
		up_read(&origins_lock);
	}
	chunk = dm_target_offset(ti, bio->bi_iter.bi_sector) >> s->chunk_shift;
	return merge_route(s, bio, chunk);
}

/* Where a bio of the merge device goes; also for the bios a merge step held back. */
static int merge_route(struct snap *s, struct bio *bio, snap_chunk_t chunk)
{
	struct snap_ex *e;
	int r;

	spin_lock(&s->lock);
	if (!s->valid) {
		r = DM_MAPIO_KILL;
	} else if (in_merge_range(s, chunk)) {
		bio_list_add(&s->merge_held, bio);
		r = DM_MAPIO_SUBMITTED;
	} else if ((e = lookup_ex(s, chunk))) {
		remap_to_cow(s, bio, e->new_chunk);
		track_bio(s, bio, chunk);
		r = DM_MAPIO_REMAPPED;
	} else {
		remap_to_origin(s, bio);
		r = DM_MAPIO_REMAPPED;
	}
	spin_unlock(&s->lock);

	/*
	 * An origin write: the origin's other snapshots copy the chunk first, as through dmkit-origin.
	 * merge_map() already cut it at the smallest chunk of the set: held bios come back here outside
	 * their map call, where dm_accept_partial_bio() must not run.
	 */
	if (r == DM_MAPIO_REMAPPED && bio->bi_bdev == s->origin->bdev && bio_op(bio) == REQ_OP_WRITE) {
		down_read(&origins_lock);
		r = origin_write(s->set, bio);
		up_read(&origins_lock);
	}
	return r;
}

static void release_merge_held(struct snap *s)
{
	struct bio_list held;
	struct bio *bio;

	spin_lock(&s->lock);
	s->merging_count = 0;
	held = s->merge_held;
	bio_list_init(&s->merge_held);
	spin_unlock(&s->lock);
	while ((bio = bio_list_pop(&held))) {
		snap_chunk_t chunk = dm_target_offset(s->ti, bio->bi_iter.bi_sector) >> s->chunk_shift;

		switch (merge_route(s, bio, chunk)) {
		case DM_MAPIO_REMAPPED:
			submit_bio_noacct(bio);
			break;
		case DM_MAPIO_KILL:
			bio_io_error(bio);
			break;
		}
	}
}

struct merge_copy {
	struct completion done;
	int error;
};

static void merge_copy_done(int read_err, unsigned long write_err, void *context)
{
	struct merge_copy *mc = context;

	mc->error = (read_err || write_err) ? -EIO : 0;
	complete(&mc->done);
}

static int merge_copy(struct snap *s, snap_chunk_t old_chunk, snap_chunk_t new_chunk, unsigned int n)
{
	sector_t origin_size = bdev_nr_sectors(s->origin->bdev);
	struct dm_io_region from, to;
	struct merge_copy mc;

	if (old_chunk >= DIV_ROUND_UP_SECTOR_T(origin_size, s->chunk_sectors))
		return 0;	/* past the origin's end (a shrunk origin or a damaged table) */
	to.bdev = s->origin->bdev;
	to.sector = old_chunk << s->chunk_shift;
	to.count = min_t(sector_t, (sector_t)n << s->chunk_shift, origin_size - to.sector);
	from.bdev = s->cow->bdev;
	from.sector = new_chunk << s->chunk_shift;
	from.count = to.count;
	init_completion(&mc.done);
	dm_kcopyd_copy(kcopyd, &from, 1, &to, 0, merge_copy_done, &mc);
	wait_for_completion(&mc.done);
	return mc.error;
}

static void merge_fail(struct snap *s, const char *what, int r)
{
	DMERR("%s: merge failed: %s: %d", snap_name(s), what, r);
	spin_lock(&s->lock);
	s->merge_failed = true;
	spin_unlock(&s->lock);
	dm_table_event(s->ti->table);
}

/*
 * One step: the last run of exceptions is copied back to the origin, the origin is flushed, and only
 * then the shortened table is committed, so a crash never forgets an exception whose data is not yet
 * stable on the origin. Bios to the run wait meanwhile.
 */
static void merge_worker(struct work_struct *work)
{
	struct snap *s = container_of(work, struct snap, merge_work);

	while (!READ_ONCE(s->merge_stop) && !READ_ONCE(s->merge_failed) && READ_ONCE(s->valid)) {
		snap_chunk_t old_chunk, new_chunk, c;
		unsigned int i;
		int n, r;

		n = snap_store_merge_prepare(s->store, MERGE_MAX_RUN, &old_chunk, &new_chunk);
		if (n < 0) {
			merge_fail(s, "cannot read a metadata area", n);
			break;
		}
		if (!n) {
			DMINFO("%s: merge complete", snap_name(s));
			dm_table_event(s->ti->table);
			break;
		}
		spin_lock(&s->lock);
		s->merging_first = old_chunk;
		s->merging_count = n;
		spin_unlock(&s->lock);
		for (c = old_chunk; c < old_chunk + n; c++)
			wait_for_tracked(s, c);

		origin_preserve(s->set, old_chunk << s->chunk_shift, (sector_t)n << s->chunk_shift);
		r = merge_copy(s, old_chunk, new_chunk, n);
		if (r) {
			merge_fail(s, "cannot copy chunks back to the origin", r);
			break;
		}
		r = blkdev_issue_flush(s->origin->bdev);
		if (r) {
			merge_fail(s, "cannot flush the origin", r);
			break;
		}
		r = snap_store_merge_commit(s->store, n);
		if (r) {
			merge_fail(s, "cannot commit the merged exceptions", r);
			break;
		}
		spin_lock(&s->lock);
		for (i = 0; i < n; i++) {
			struct snap_ex *e = lookup_ex(s, old_chunk + i);

			if (e) {
				hlist_del(&e->node);
				kmem_cache_free(ex_cache, e);
			}
		}
		spin_unlock(&s->lock);
		release_merge_held(s);
		cond_resched();
	}
	release_merge_held(s);
}

static void merge_presuspend(struct dm_target *ti)
{
	struct snap *s = ti->private;

	WRITE_ONCE(s->merge_stop, true);
	flush_work(&s->merge_work);
}

static void merge_resume(struct dm_target *ti)
{
	struct snap *s = ti->private;

	WRITE_ONCE(s->merge_stop, false);
	queue_work(s->wq, &s->merge_work);
}

/* ---- registration ---- */

static struct target_type origin_target = {
	.name = "dmkit-origin",
	.version = {1, 9, 0},
	.module = THIS_MODULE,
	.ctr = origin_ctr,
	.dtr = origin_dtr,
	.map = origin_map,
	.status = origin_status,
	.iterate_devices = origin_iterate_devices,
};

static struct target_type snapshot_target = {
	.module = THIS_MODULE,
	.name = "dmkit-snapshot",
	.version = {1, 16, 0},
	.ctr = snap_ctr,
	.dtr = snap_dtr,
	.map = snap_map,
	.end_io = snap_end_io,
	.status = snap_status,
	.iterate_devices = snap_iterate_devices,
};

static struct target_type merge_target = {
	.name = "dmkit-merge",
	.version = {1, 5, 0},
	.module = THIS_MODULE,
	.ctr = merge_ctr,
	.dtr = snap_dtr,
	.map = merge_map,
	.end_io = snap_end_io,
	.presuspend = merge_presuspend,
	.resume = merge_resume,
	.status = snap_status,
	.iterate_devices = snap_iterate_devices,
};

static int __init dmkit_snapshot_init(void)
{
	int r = -ENOMEM;

	ex_cache = KMEM_CACHE(snap_ex, 0);
	if (!ex_cache)
		goto bad_ex;
	pe_cache = KMEM_CACHE(snap_pe, 0);
	if (!pe_cache)
		goto bad_pe;
	r = mempool_init_slab_pool(&pe_pool, PENDING_POOL_SIZE, pe_cache);
	if (r)
		goto bad_pe_pool;
	r = mempool_init_kmalloc_pool(&copy_pool, COPY_POOL_SIZE, sizeof(struct snap_copy));
	if (r)
		goto bad_copy_pool;
	kcopyd = dm_kcopyd_client_create(NULL);
	if (IS_ERR(kcopyd)) {
		r = PTR_ERR(kcopyd);
		goto bad_kcopyd;
	}
	r = snap_copier_init();
	if (r)
		goto bad_copier;
	r = dm_register_target(&origin_target);
	if (r)
		goto bad_origin;
	r = dm_register_target(&snapshot_target);
	if (r)
		goto bad_snapshot;
	r = dm_register_target(&merge_target);
	if (r)
		goto bad_merge;
	return 0;

bad_merge:
	dm_unregister_target(&snapshot_target);
bad_snapshot:
	dm_unregister_target(&origin_target);
bad_origin:
	snap_copier_exit();
bad_copier:
	dm_kcopyd_client_destroy(kcopyd);
bad_kcopyd:
	mempool_exit(&copy_pool);
bad_copy_pool:
	mempool_exit(&pe_pool);
bad_pe_pool:
	kmem_cache_destroy(pe_cache);
bad_pe:
	kmem_cache_destroy(ex_cache);
bad_ex:
	DMERR("cannot register the targets: %d", r);
	return r;
}

static void __exit dmkit_snapshot_exit(void)
{
	dm_unregister_target(&merge_target);
	dm_unregister_target(&snapshot_target);
	dm_unregister_target(&origin_target);
	snap_copier_exit();
	dm_kcopyd_client_destroy(kcopyd);
	mempool_exit(&copy_pool);
	mempool_exit(&pe_pool);
	kmem_cache_destroy(pe_cache);
	kmem_cache_destroy(ex_cache);
}

module_init(dmkit_snapshot_init);
module_exit(dmkit_snapshot_exit);

MODULE_DESCRIPTION(DM_NAME " dmkit snapshot, origin and merge targets (in-tree snapshot compatible)");
MODULE_AUTHOR("dmkit developers");
MODULE_LICENSE("GPL");
