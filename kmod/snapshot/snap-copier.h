/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * dmkit-snapshot's copy engine for exception copies: one origin chunk read once through dm-io into
 * pages taken from a pool allocated at module load, then written to the COW device of every snapshot
 * that needs it.
 *
 * Why not only dm-kcopyd: kcopyd takes fresh pages for every job and frees them at its end, and with
 * init_on_alloc=1 (Debian's default) each one is zeroed first, on the path of the origin write that
 * waits for the copy (dmkit-clone's engine exists for the same reason). The pool is bounded: a copy
 * that finds too few free pages, or no memory for its job, is left to kcopyd by the caller.
 */
#ifndef DMKIT_SNAP_COPIER_H
#define DMKIT_SNAP_COPIER_H

#include <linux/dm-io.h>
#include <linux/dm-kcopyd.h>

int snap_copier_init(void);
void snap_copier_exit(void);

/*
 * Copies @from into @to[0..@nr) (@nr <= DM_KCOPYD_MAX_REGIONS, every count equal to @from's) and
 * then calls @done as kcopyd would (read error, a bit per failed write), in the engine's worker, outside
 * any bio submission. Returns false, having done nothing, when the pool cannot take the copy now.
 * Never sleeps.
 */
bool snap_copier_copy(const struct dm_io_region *from, unsigned int nr, const struct dm_io_region *to,
		      dm_kcopyd_notify_fn done, void *context);

/*
 * Waits until a @done running now has returned (callbacks run only in the engine's work item). It
 * does not wait for copies whose I/O is still in flight: the caller first waits for its own copies to
 * end. May sleep.
 */
void snap_copier_flush(void);

#endif
