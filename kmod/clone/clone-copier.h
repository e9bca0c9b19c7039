/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * dmkit-clone's copy engine: copies sector ranges from one block device to another through dm-io, in
 * chunks whose pages are allocated once, when the engine is created.
 *
 * Why not dm-kcopyd: kcopyd takes fresh pages from the page allocator for every sub-job and gives them
 * back at its end. With init_on_alloc=1 (Debian's default) each of those pages is zeroed first, so a
 * copy through kcopyd writes every byte three times instead of twice; in the VM lab that alone cut
 * background hydration to a third (P2: 160 MB/s through kcopyd, 486 MB/s with init_on_alloc=0). A
 * hydrating clone copies its whole device, so its engine keeps its buffers.
 */
#ifndef DMKIT_CLONE_COPIER_H
#define DMKIT_CLONE_COPIER_H

#include <linux/blkdev.h>
#include <linux/list.h>

struct clone_copier;

/* Called once per copy, in the engine's worker (process context); @failed: a read or write failed. */
typedef void (*clone_copy_done_fn)(bool failed, void *context);

/* One copy request. The caller owns the memory and must not touch it until its callback runs. */
struct clone_copy {
	struct list_head node;
	struct block_device *from;
	struct block_device *to;
	sector_t next;			/* first sector not handed to a chunk yet */
	sector_t end;
	unsigned long not_before;	/* jiffies; the test knob copy_start_delay_ms holds it back */
	unsigned int chunks_out;	/* chunks reading or writing for this copy */
	bool failed;
	clone_copy_done_fn done;
	void *context;
};

/*
 * @name names the engine's workqueue. @throttle, read at each step, is the share of time in percent
 * the engine may keep I/O in flight (100 or more, or NULL: no limit). Returns an ERR_PTR on failure.
 * May sleep.
 */
struct clone_copier *clone_copier_create(const char *name, const unsigned int *throttle);

/* Waits until every queued copy has ended and its callback returned, then frees the engine. May sleep. */
void clone_copier_destroy(struct clone_copier *cp);

/*
 * Copy @count sectors at @sector of @from to the same place on @to. Copies run in the order they are
 * queued; @done runs when the last chunk of this one has been written or when one of them failed.
 * May be called from any context that may take a spinlock with interrupts disabled.
 */
void clone_copier_queue(struct clone_copier *cp, struct clone_copy *copy,
			struct block_device *from, struct block_device *to,
			sector_t sector, sector_t count,
			clone_copy_done_fn done, void *context);

#endif
