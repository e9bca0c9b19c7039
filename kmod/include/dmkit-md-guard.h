/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * One lock per metadata device, shared by every table of one module on that device. Commits hold it, and
 * so does a table reading the metadata in its ctr or preresume. Without it a table loaded while the live
 * one writes (LVM's preload) may read a superblock that is half written, or follow a committed root into
 * blocks that later commits have already reused: a spurious -EILSEQ at load time at best.
 *
 * Include it from one file per module: the registry is static to that file.
 */
#ifndef DMKIT_MD_GUARD_H
#define DMKIT_MD_GUARD_H

#include <linux/blkdev.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

struct dmkit_md_guard {
	struct list_head node;
	struct block_device *bdev;
	unsigned int refs;	/* under dmkit_md_guards_lock */
	struct mutex lock;
};

static DEFINE_MUTEX(dmkit_md_guards_lock);
static LIST_HEAD(dmkit_md_guards);

/* The guard of @bdev, made on first use; NULL when out of memory. */
static inline struct dmkit_md_guard *dmkit_md_guard_get(struct block_device *bdev)
{
	struct dmkit_md_guard *g, *spare = kzalloc(sizeof(*spare), GFP_KERNEL);

	mutex_lock(&dmkit_md_guards_lock);
	list_for_each_entry(g, &dmkit_md_guards, node) {
		if (g->bdev == bdev) {
			g->refs++;
			goto out;
		}
	}
	g = spare;
	spare = NULL;
	if (g) {
		g->bdev = bdev;
		g->refs = 1;
		mutex_init(&g->lock);
		list_add(&g->node, &dmkit_md_guards);
	}
out:
	mutex_unlock(&dmkit_md_guards_lock);
	kfree(spare);
	return g;
}

static inline void dmkit_md_guard_put(struct dmkit_md_guard *g)
{
	bool last;

	mutex_lock(&dmkit_md_guards_lock);
	last = --g->refs == 0;
	if (last)
		list_del(&g->node);
	mutex_unlock(&dmkit_md_guards_lock);
	if (last) {
		mutex_destroy(&g->lock);
		kfree(g);
	}
}

/*
 * While the guard is held a live table's commit waits for it, and that table's I/O may wait for the
 * commit: no allocation under it may recurse into I/O. Returns what dmkit_md_guard_unlock() restores.
 */
static inline unsigned int dmkit_md_guard_lock(struct dmkit_md_guard *g)
{
	mutex_lock(&g->lock);
	return memalloc_noio_save();
}

static inline void dmkit_md_guard_unlock(struct dmkit_md_guard *g, unsigned int noio)
{
	memalloc_noio_restore(noio);
	mutex_unlock(&g->lock);
}

#endif
