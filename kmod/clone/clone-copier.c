// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-clone's copy engine (see clone-copier.h for why it exists).
 *
 * A fixed set of chunks, each a buffer of CHUNK_PAGES pages, moves the data. The engine's worker hands
 * idle chunks to queued copies in order; a chunk reads its piece of the source, comes back to the
 * worker, writes the piece to the destination, comes back again and goes idle. dm-io completes a chunk
 * in whatever context the device completes its bios, so completions only queue the chunk and kick the
 * worker; everything else (copies, idle chunks, callbacks) belongs to the worker, which the workqueue
 * never runs twice at once.
 *
 * Throttling: with a limit below 100 percent, the worker stops handing out chunks while the time
 * during which at least one chunk was out exceeds that share of the time elapsed in the current
 * window, and looks again when the share allows it (at most every THROTTLE_RECHECK, so a new limit
 * applies soon).
 */
#include "clone-copier.h"
#include "dmkit-common.h"

#include <linux/dm-io.h>
#include <linux/device-mapper.h>
#include <linux/err.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/ioprio.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#define DM_MSG_PREFIX "dmkit-clone"

#define CHUNK_PAGES	128U					/* 512 KiB with 4 KiB pages */
#define CHUNK_SECTORS	((sector_t)CHUNK_PAGES << (PAGE_SHIFT - SECTOR_SHIFT))
#define NR_CHUNKS	4U
#define THROTTLE_WINDOW_NS	NSEC_PER_SEC
#define THROTTLE_RECHECK	(HZ / 10)

DMKIT_TEST_KNOB(copy_start_delay_ms, "milliseconds a queued copy waits before its first chunk goes out");

struct chunk {
	struct clone_copier *cp;
	struct list_head node;		/* in idle (worker) or landed (lock) */
	struct clone_copy *copy;	/* NULL while idle */
	sector_t sector;
	sector_t count;
	bool writing;			/* the read is done; the write is in flight or done */
	unsigned long error;		/* dm-io's error bits for the last read or write */
	struct page_list pages[CHUNK_PAGES];
};

struct clone_copier {
	struct dm_io_client *io;
	struct workqueue_struct *wq;
	struct delayed_work work;
	const unsigned int *throttle;	/* percent; NULL: none */

	atomic_t copies;		/* queued and not yet called back */
	wait_queue_head_t idle_wait;	/* woken when copies drops to 0 */

	spinlock_t lock;		/* protects incoming and landed */
	struct list_head incoming;	/* copies queued since the worker last looked */
	struct list_head landed;	/* chunks whose read or write ended */

	/* Worker only. */
	struct list_head queue;		/* copies with sectors left to hand out, oldest first */
	struct list_head idle;
	unsigned int chunks_out;	/* all copies */
	u64 busy_since;			/* ns, while chunks_out > 0 */
	u64 busy_ns;			/* busy time in the current window, up to busy_since */
	u64 window_start;

	struct chunk chunks[NR_CHUNKS];
};

/* Run the worker now, even if it was set to look again later. Any context. */
static void kick(struct clone_copier *cp)
{
	mod_delayed_work(cp->wq, &cp->work, 0);
}

/* Jiffies to wait before handing out another chunk; 0: go. */
static unsigned long throttle_wait(struct clone_copier *cp)
{
	unsigned int limit = cp->throttle ? READ_ONCE(*cp->throttle) : 100;
	u64 now, busy, elapsed, needed;

	if (limit >= 100)
		return 0;

	now = ktime_get_ns();
	busy = cp->busy_ns + (cp->chunks_out ? now - cp->busy_since : 0);
	elapsed = now - cp->window_start;
	needed = div_u64(busy * 100, max(limit, 1U));
	if (needed > elapsed)
		return clamp_t(unsigned long, nsecs_to_jiffies(needed - elapsed), 1, THROTTLE_RECHECK);

	if (elapsed > THROTTLE_WINDOW_NS) {
		cp->window_start = now;
		cp->busy_ns = 0;
		cp->busy_since = now;
	}
	return 0;
}

static void account_out(struct clone_copier *cp)
{
	if (!cp->chunks_out++)
		cp->busy_since = ktime_get_ns();
}

static void account_back(struct clone_copier *cp)
{
	if (!--cp->chunks_out)
		cp->busy_ns += ktime_get_ns() - cp->busy_since;
}

/* dm-io's completion: any context. */
static void chunk_landed(unsigned long error, void *context)
{
	struct chunk *ch = context;
	struct clone_copier *cp = ch->cp;
	unsigned long flags;

	ch->error = error;
	spin_lock_irqsave(&cp->lock, flags);
	list_add_tail(&ch->node, &cp->landed);
	spin_unlock_irqrestore(&cp->lock, flags);
	kick(cp);
}

static void start_io(struct chunk *ch)
{
	struct clone_copy *copy = ch->copy;
	struct dm_io_region where = {
		.bdev = ch->writing ? copy->to : copy->from,
		.sector = ch->sector,
		.count = ch->count,
	};
	struct dm_io_request req = {
		.bi_opf = ch->writing ? REQ_OP_WRITE : REQ_OP_READ,
		.mem.type = DM_IO_PAGE_LIST,
		.mem.offset = 0,
		.mem.ptr.pl = ch->pages,
		.notify.fn = chunk_landed,
		.notify.context = ch,
		.client = ch->cp->io,
	};
	int r;

	r = dm_io(&req, 1, &where, NULL, IOPRIO_DEFAULT);
	if (r) {
		/* Refused before any bio went out: report it like a failed transfer. */
		DMERR_LIMIT("copy engine: dm-io refused a chunk: %d", r);
		chunk_landed(1, ch);
	}
}

/* A copy is over once no chunk is out for it and it either failed or handed out its last sector. */
static bool copy_over(struct clone_copy *copy)
{
	return !copy->chunks_out && (copy->failed || copy->next >= copy->end);
}

/* The callback may free @copy; the count drops only once it has returned. */
static void finish_copy(struct clone_copier *cp, struct clone_copy *copy)
{
	copy->done(copy->failed, copy->context);
	if (atomic_dec_and_test(&cp->copies))
		wake_up_all(&cp->idle_wait);
}

/* The chunk's write ended, or its read failed: give it back and maybe end its copy. */
static void retire_chunk(struct clone_copier *cp, struct chunk *ch)
{
	struct clone_copy *copy = ch->copy;

	ch->copy = NULL;
	list_add(&ch->node, &cp->idle);
	account_back(cp);

	copy->chunks_out--;
	if (ch->error && !copy->failed) {
		copy->failed = true;
		/* Stop handing out its sectors; it may still be queued. */
		if (copy->next < copy->end)
			list_del_init(&copy->node);
	}
	if (copy_over(copy))
		finish_copy(cp, copy);
}

static void process_landed(struct clone_copier *cp)
{
	struct chunk *ch, *tmp;
	LIST_HEAD(landed);

	spin_lock_irq(&cp->lock);
	list_splice_init(&cp->landed, &landed);
	spin_unlock_irq(&cp->lock);

	list_for_each_entry_safe(ch, tmp, &landed, node) {
		list_del_init(&ch->node);
		if (!ch->writing && !ch->error && !ch->copy->failed) {
			ch->writing = true;
			start_io(ch);
		} else {
			retire_chunk(cp, ch);
		}
	}
}

/* Hand idle chunks to the oldest copies. */
static void dispatch(struct clone_copier *cp)
{
	struct clone_copy *copy;
	struct chunk *ch;
	unsigned long wait;

	spin_lock_irq(&cp->lock);
	list_splice_tail_init(&cp->incoming, &cp->queue);
	spin_unlock_irq(&cp->lock);

	while (!list_empty(&cp->queue)) {
		copy = list_first_entry(&cp->queue, struct clone_copy, node);
		if (copy->next >= copy->end) {
			/* Only an empty copy gets here: the others leave the queue with their last chunk. */
			list_del_init(&copy->node);
			if (copy_over(copy))
				finish_copy(cp, copy);
			continue;
		}
		if (list_empty(&cp->idle))
			break;
		if (time_before(jiffies, copy->not_before)) {
			queue_delayed_work(cp->wq, &cp->work, copy->not_before - jiffies);
			break;
		}
		wait = throttle_wait(cp);
		if (wait) {
			queue_delayed_work(cp->wq, &cp->work, wait);
			break;
		}

		ch = list_first_entry(&cp->idle, struct chunk, node);
		list_del_init(&ch->node);
		ch->copy = copy;
		ch->sector = copy->next;
		ch->count = min_t(sector_t, copy->end - copy->next, CHUNK_SECTORS);
		ch->writing = false;
		ch->error = 0;
		copy->next += ch->count;
		copy->chunks_out++;
		account_out(cp);
		if (copy->next >= copy->end)
			list_del_init(&copy->node);
		start_io(ch);
	}
}

static void copier_work(struct work_struct *work)
{
	struct clone_copier *cp = container_of(to_delayed_work(work), struct clone_copier, work);

	process_landed(cp);
	dispatch(cp);
}

void clone_copier_queue(struct clone_copier *cp, struct clone_copy *copy,
			struct block_device *from, struct block_device *to,
			sector_t sector, sector_t count,
			clone_copy_done_fn done, void *context)
{
	unsigned long flags;

	copy->from = from;
	copy->to = to;
	copy->next = sector;
	copy->end = sector + count;
	copy->not_before = jiffies + msecs_to_jiffies(dmkit_knob(copy_start_delay_ms));
	copy->chunks_out = 0;
	copy->failed = false;
	copy->done = done;
	copy->context = context;

	atomic_inc(&cp->copies);
	spin_lock_irqsave(&cp->lock, flags);
	list_add_tail(&copy->node, &cp->incoming);
	spin_unlock_irqrestore(&cp->lock, flags);
	kick(cp);
}

static void free_chunk_pages(struct chunk *ch)
{
	unsigned int i;

	for (i = 0; i < CHUNK_PAGES && ch->pages[i].page; i++)
		__free_page(ch->pages[i].page);
}

static int alloc_chunk_pages(struct chunk *ch)
{
	unsigned int i;

	for (i = 0; i < CHUNK_PAGES; i++) {
		ch->pages[i].page = alloc_page(GFP_KERNEL);
		if (!ch->pages[i].page)
			return -ENOMEM;
		ch->pages[i].next = i + 1 < CHUNK_PAGES ? &ch->pages[i + 1] : NULL;
	}
	return 0;
}

static void free_copier(struct clone_copier *cp)
{
	unsigned int i;

	for (i = 0; i < NR_CHUNKS; i++)
		free_chunk_pages(&cp->chunks[i]);
	if (cp->wq)
		destroy_workqueue(cp->wq);
	if (!IS_ERR_OR_NULL(cp->io))
		dm_io_client_destroy(cp->io);
	kvfree(cp);
}

struct clone_copier *clone_copier_create(const char *name, const unsigned int *throttle)
{
	struct clone_copier *cp;
	unsigned int i;
	int r = -ENOMEM;

	cp = kvzalloc(sizeof(*cp), GFP_KERNEL);
	if (!cp)
		return ERR_PTR(-ENOMEM);

	atomic_set(&cp->copies, 0);
	init_waitqueue_head(&cp->idle_wait);
	spin_lock_init(&cp->lock);
	INIT_LIST_HEAD(&cp->incoming);
	INIT_LIST_HEAD(&cp->landed);
	INIT_LIST_HEAD(&cp->queue);
	INIT_LIST_HEAD(&cp->idle);
	INIT_DELAYED_WORK(&cp->work, copier_work);
	cp->throttle = throttle;
	cp->window_start = ktime_get_ns();

	for (i = 0; i < NR_CHUNKS; i++) {
		struct chunk *ch = &cp->chunks[i];

		ch->cp = cp;
		INIT_LIST_HEAD(&ch->node);
		if (alloc_chunk_pages(ch))
			goto bad;
		list_add_tail(&ch->node, &cp->idle);
	}

	cp->io = dm_io_client_create();
	if (IS_ERR(cp->io)) {
		r = PTR_ERR(cp->io);
		goto bad;
	}

	/* Its own rescuer: hydrations the clone's worker may wait for must not queue behind it. */
	cp->wq = alloc_workqueue("%s", WQ_MEM_RECLAIM, 1, name);
	if (!cp->wq)
		goto bad;
	return cp;

bad:
	free_copier(cp);
	return ERR_PTR(r);
}

void clone_copier_destroy(struct clone_copier *cp)
{
	/* Queued copies run to their end and every callback returns before anything goes away. */
	wait_event(cp->idle_wait, !atomic_read(&cp->copies));
	cancel_delayed_work_sync(&cp->work);
	flush_workqueue(cp->wq);
	WARN_ON(!list_empty(&cp->queue) || !list_empty(&cp->incoming) || !list_empty(&cp->landed));
	free_copier(cp);
}
