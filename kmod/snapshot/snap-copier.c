// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-snapshot's copy engine (see snap-copier.h for why it exists).
 *
 * A copy moves through three lists, all drained by the engine's one work item: queued (to read), read
 * (to write) and ended (to report). An I/O completion only moves its copy to the next list and queues
 * the work, so it may run in any context. When a ramdisk completes a bio inside its submission, the
 * completion runs in the draining worker itself: the copy is then only listed, and the same pass goes
 * on with it, without another round through the workqueue.
 */
#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#include "snap-copier.h"

#define DM_MSG_PREFIX "dmkit-snapshot"

/* 1 MiB of buffers: sixteen 64 KiB chunks in flight. A copy may take at most a quarter of them. */
#define POOL_PAGES 256
#define MAX_COPY_PAGES (POOL_PAGES / 4)

struct sc_copy {
	struct list_head node;
	struct dm_io_region from;
	struct dm_io_region to[DM_KCOPYD_MAX_REGIONS];
	unsigned int nr;
	struct page_list *pages;
	int read_err;
	unsigned long write_err;
	dm_kcopyd_notify_fn done;
	void *context;
};

static struct {
	spinlock_t lock;		/* the page pool, the three lists and draining */
	struct page_list *free_pages;
	unsigned int nr_free;
	struct list_head queued;
	struct list_head read;
	struct list_head ended;
	struct task_struct *draining;	/* the worker while it drains the lists, else NULL */

	struct workqueue_struct *wq;
	struct work_struct work;
	struct dm_io_client *io;
	struct kmem_cache *cache;
} sc;

/* ---- the page pool (sc.lock held) ---- */

static struct page_list *take_pages(unsigned int n)
{
	struct page_list *first = sc.free_pages, *last = first;
	unsigned int i;

	if (sc.nr_free < n)
		return NULL;
	for (i = 1; i < n; i++)
		last = last->next;
	sc.free_pages = last->next;
	last->next = NULL;
	sc.nr_free -= n;
	return first;
}

static void put_pages(struct page_list *pages)
{
	struct page_list *last = pages;
	unsigned int n = 1;

	while (last->next) {
		last = last->next;
		n++;
	}
	last->next = sc.free_pages;
	sc.free_pages = pages;
	sc.nr_free += n;
}

/* ---- moving a copy along ---- */

static void move_to(struct sc_copy *c, struct list_head *list)
{
	unsigned long flags;
	bool wake;

	spin_lock_irqsave(&sc.lock, flags);
	list_add_tail(&c->node, list);
	wake = sc.draining != current;
	spin_unlock_irqrestore(&sc.lock, flags);
	if (wake)
		queue_work(sc.wq, &sc.work);
}

static void read_done(unsigned long error, void *context)
{
	struct sc_copy *c = context;

	c->read_err = error ? 1 : 0;
	move_to(c, error ? &sc.ended : &sc.read);
}

static void write_done(unsigned long error, void *context)
{
	struct sc_copy *c = context;

	c->write_err = error;
	move_to(c, &sc.ended);
}

static void submit(struct sc_copy *c, bool write)
{
	struct dm_io_request req = {
		.bi_opf = write ? REQ_OP_WRITE : REQ_OP_READ,
		.mem.type = DM_IO_PAGE_LIST,
		.mem.ptr.pl = c->pages,
		.notify.fn = write ? write_done : read_done,
		.notify.context = c,
		.client = sc.io,
	};

	/* Asynchronous dm-io reports every failure through the callback, a refused request included. */
	if (write)
		dm_io(&req, c->nr, c->to, NULL, IOPRIO_DEFAULT);
	else
		dm_io(&req, 1, &c->from, NULL, IOPRIO_DEFAULT);
}

/* The buffers go back first: the callback may start copies of its own (writers it releases). */
static void report(struct sc_copy *c)
{
	unsigned long flags;

	spin_lock_irqsave(&sc.lock, flags);
	put_pages(c->pages);
	spin_unlock_irqrestore(&sc.lock, flags);
	c->done(c->read_err, c->write_err, c->context);
	kmem_cache_free(sc.cache, c);
}

/* Ending copies first releases their writers soonest; a fresh copy reads last. */
static void drain(struct work_struct *work)
{
	struct list_head *list;
	struct sc_copy *c;
	unsigned long flags;

	spin_lock_irqsave(&sc.lock, flags);
	sc.draining = current;
	for (;;) {
		if (!list_empty(&sc.ended))
			list = &sc.ended;
		else if (!list_empty(&sc.read))
			list = &sc.read;
		else if (!list_empty(&sc.queued))
			list = &sc.queued;
		else
			break;
		c = list_first_entry(list, struct sc_copy, node);
		list_del(&c->node);
		spin_unlock_irqrestore(&sc.lock, flags);

		if (list == &sc.ended)
			report(c);
		else
			submit(c, list == &sc.read);
		cond_resched();
		spin_lock_irqsave(&sc.lock, flags);
	}
	sc.draining = NULL;
	spin_unlock_irqrestore(&sc.lock, flags);
}

/* ---- interface ---- */

bool snap_copier_copy(const struct dm_io_region *from, unsigned int nr, const struct dm_io_region *to,
		      dm_kcopyd_notify_fn done, void *context)
{
	unsigned int nr_pages = DIV_ROUND_UP(from->count << SECTOR_SHIFT, PAGE_SIZE);
	unsigned long flags;
	struct sc_copy *c;

	if (!nr || nr > DM_KCOPYD_MAX_REGIONS || !nr_pages || nr_pages > MAX_COPY_PAGES)
		return false;
	c = kmem_cache_alloc(sc.cache, GFP_NOWAIT | __GFP_NOWARN);
	if (!c)
		return false;
	c->from = *from;
	memcpy(c->to, to, nr * sizeof(*to));
	c->nr = nr;
	c->read_err = 0;
	c->write_err = 0;
	c->done = done;
	c->context = context;

	spin_lock_irqsave(&sc.lock, flags);
	c->pages = take_pages(nr_pages);
	if (c->pages)
		list_add_tail(&c->node, &sc.queued);
	spin_unlock_irqrestore(&sc.lock, flags);
	if (!c->pages) {
		kmem_cache_free(sc.cache, c);
		return false;
	}
	queue_work(sc.wq, &sc.work);
	return true;
}

/* Callbacks run only in the work item, so waiting for its current run waits for them. */
void snap_copier_flush(void)
{
	flush_work(&sc.work);
}

static void free_pool(void)
{
	struct page_list *pl;

	while ((pl = sc.free_pages)) {
		sc.free_pages = pl->next;
		__free_page(pl->page);
		kfree(pl);
	}
	sc.nr_free = 0;
}

int snap_copier_init(void)
{
	struct page_list *pl;
	unsigned int i;

	spin_lock_init(&sc.lock);
	INIT_LIST_HEAD(&sc.queued);
	INIT_LIST_HEAD(&sc.read);
	INIT_LIST_HEAD(&sc.ended);
	INIT_WORK(&sc.work, drain);

	for (i = 0; i < POOL_PAGES; i++) {
		pl = kmalloc(sizeof(*pl), GFP_KERNEL);
		if (pl)
			pl->page = alloc_page(GFP_KERNEL);
		if (!pl || !pl->page) {
			kfree(pl);
			goto bad_pool;
		}
		pl->next = sc.free_pages;
		sc.free_pages = pl;
		sc.nr_free++;
	}
	sc.cache = KMEM_CACHE(sc_copy, 0);
	if (!sc.cache)
		goto bad_pool;
	sc.io = dm_io_client_create();
	if (IS_ERR(sc.io))
		goto bad_io;
	sc.wq = alloc_workqueue("dmkit-snap-copy", WQ_MEM_RECLAIM, 1);
	if (!sc.wq)
		goto bad_wq;
	return 0;

bad_wq:
	dm_io_client_destroy(sc.io);
bad_io:
	kmem_cache_destroy(sc.cache);
bad_pool:
	free_pool();
	return -ENOMEM;
}

/* Every target is gone by now, so no copy is under way. */
void snap_copier_exit(void)
{
	destroy_workqueue(sc.wq);
	dm_io_client_destroy(sc.io);
	kmem_cache_destroy(sc.cache);
	free_pool();
}
