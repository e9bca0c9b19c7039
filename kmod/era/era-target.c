// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-era: remembers, for each fixed-size block of an origin device, in which era it was last written,
 * so backup tools can ask "what changed since era N" (era_invalidate, era_dump). Its metadata is the
 * in-tree era target's: either target and the era tools can read what the other wrote.
 *
 * Table:    dmkit-era <metadata dev> <origin dev> <block size in sectors, a multiple of 8>
 * Status:   INFO  "<metadata block size> <used>/<total metadata blocks> <current era> <held root|->"
 *           TABLE "<metadata maj:min> <origin maj:min> <block size>"
 * Messages: checkpoint           start a new era
 *           take_metadata_snap   roll the era over and keep a copy of the metadata for userspace
 *           drop_metadata_snap   release that copy
 *
 * I/O: every bio goes to the origin, whole (a bio may span blocks). A write to a block not yet marked
 * in the current era's in-core writeset waits for the worker, which marks the blocks of all waiting
 * writes on disk (each changed bitset word written once), lets writes deferred during the commit join
 * it, and only once the commit is durable marks them in core and submits the writes. Between bios the
 * worker digests archived writesets into the era array.
 *
 * Lifecycle: the ctr opens (or formats) the metadata to validate it, but the previous table of the
 * device may still be live and committing, so the metadata is read again at this instance's first
 * preresume, and only preresume resizes. postsuspend stops the worker, then archives the era and commits.
 *
 * "era fix N" in comments refers to the related dm-era fixes listed in the project's kernel facts.
 */
#include <linux/device-mapper.h>
#include <linux/delay.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/workqueue.h>

#include "dmkit-common.h"
#include "era-metadata.h"

/*
 * Holds each step of digesting an archived writeset (under md_lock) open this long, so that a suspend
 * reliably lands while a digest is under way: the era-postsuspend window (torture component, lab).
 */
DMKIT_TEST_KNOB(digest_step_delay_ms, "milliseconds each digest step holds the metadata lock");

#define DM_MSG_PREFIX "dmkit-era"

#define ERA_MIN_BLOCK_SECTORS 8

/* Metadata mode: write, or fail after a metadata error (unmarked writes then error; nothing commits). */
enum era_mode {
	ERA_MODE_WRITE,
	ERA_MODE_FAIL,
};

struct era {
	struct dm_target *ti;
	struct dm_dev *metadata_dev;
	struct dm_dev *origin_dev;
	u32 block_sectors;
	int block_shift;	/* log2(block_sectors), or -1 when it is not a power of two */
	u32 nr_blocks;		/* origin blocks covered by this table */

	/* Serialises every use of md and mode: the worker, messages, suspend hooks and status. */
	struct mutex md_lock;
	struct era_md *md;
	enum era_mode mode;
	bool md_reloaded;	/* md was read again by this instance's first preresume */

	struct workqueue_struct *wq;
	struct work_struct worker;

	/* Protects deferred and suspended; while suspended, wake-ups are ignored. */
	spinlock_t lock;
	struct bio_list deferred;
	bool suspended;
};

static const char *era_name(struct era *era)
{
	return dm_device_name(dm_table_get_md(era->ti->table));
}

/*----------------------------------------------------------------
 * Metadata mode
 *--------------------------------------------------------------*/

static void set_mode(struct era *era, enum era_mode mode)
{
	if (era->mode == mode)
		return;
	era->mode = mode;
	if (mode == ERA_MODE_FAIL)
		DMERR("%s: metadata switched to fail mode: writes to unmarked blocks will fail",
		      era_name(era));
}

/* Called with md_lock held after a metadata operation failed; returns @r. */
static int metadata_failed(struct era *era, const char *what, int r)
{
	DMERR("%s: %s failed: %d", era_name(era), what, r);
	set_mode(era, ERA_MODE_FAIL);
	return r;
}

static bool metadata_writable(struct era *era)
{
	return era->md && era->mode == ERA_MODE_WRITE;
}

static int commit_metadata(struct era *era)
{
	int r = era_md_commit(era->md);

	return r ? metadata_failed(era, "metadata commit", r) : 0;
}

/*----------------------------------------------------------------
 * Worker
 *--------------------------------------------------------------*/

/*
 * The worker runs on another CPU than the one waking it, which is usually the writer's: a commit then
 * overlaps with the writer sending more writes, which join it. The next online CPU spreads the workers
 * of devices written from different CPUs.
 */
static int worker_cpu(void)
{
	int here = raw_smp_processor_id(), cpu = cpumask_next(here, cpu_online_mask);

	if (cpu >= nr_cpu_ids)
		cpu = cpumask_first(cpu_online_mask);
	return cpu < nr_cpu_ids ? cpu : here;
}

static void wake_worker(struct era *era)
{
	spin_lock(&era->lock);
	if (!era->suspended)
		queue_work_on(worker_cpu(), era->wq, &era->worker);
	spin_unlock(&era->lock);
}

static bool is_suspended(struct era *era)
{
	bool suspended;

	spin_lock(&era->lock);
	suspended = era->suspended;
	spin_unlock(&era->lock);
	return suspended;
}

static void set_suspended(struct era *era, bool suspended)
{
	spin_lock(&era->lock);
	era->suspended = suspended;
	spin_unlock(&era->lock);
}

/*
 * Fix (a): after this nothing of the worker runs until resume. drain_workqueue() also waits for work
 * the worker queued on itself (a digest step re-queues), which flush_workqueue() does not, and taking
 * the flag under the lock means no one else queues while the queue drains.
 */
static void stop_worker(struct era *era)
{
	set_suspended(era, true);
	drain_workqueue(era->wq);
}

static void start_worker(struct era *era)
{
	set_suspended(era, false);
	wake_worker(era);
}

static u32 sector_to_block(struct era *era, sector_t sector)
{
	if (era->block_shift >= 0)
		return sector >> era->block_shift;
	sector_div(sector, era->block_sectors);
	return sector;
}

/* The blocks a remapped, non-empty bio touches (a discard can span several). */
static void bio_blocks(struct era *era, struct bio *bio, u32 *first, u32 *last)
{
	sector_t start = bio->bi_iter.bi_sector;

	*first = sector_to_block(era, start);
	*last = sector_to_block(era, start + bio_sectors(bio) - 1);
}

static void take_deferred(struct era *era, struct bio_list *bios)
{
	spin_lock(&era->lock);
	bio_list_merge(bios, &era->deferred);
	bio_list_init(&era->deferred);
	spin_unlock(&era->lock);
}

/* Records the blocks of @bios for the next commit. */
static int record_marks(struct era *era, struct bio_list *bios)
{
	struct bio *bio;
	u32 first, last;
	int r;

	bio_list_for_each(bio, bios) {
		bio_blocks(era, bio, &first, &last);
		r = era_md_mark(era->md, first, last);
		if (r < 0)
			return metadata_failed(era, "marking a written block", r);
	}
	return 0;
}

struct join_batch {
	struct era *era;
	struct bio_list *bios;
};

/*
 * Runs between the commit's pre-commit and its superblock: writes deferred meanwhile join the batch
 * when their marks cost no new metadata block; the others go back, ahead of any deferred later.
 */
static int join_deferred(void *context)
{
	struct join_batch *batch = context;
	struct era *era = batch->era;
	struct bio_list late, later;
	struct bio *bio;
	u32 first, last;
	int r = 0;

	bio_list_init(&late);
	bio_list_init(&later);
	take_deferred(era, &late);
	while ((bio = bio_list_pop(&late))) {
		bio_blocks(era, bio, &first, &last);
		if (r >= 0)
			r = era_md_mark_joining(era->md, first, last);
		if (r > 0)
			bio_list_add(batch->bios, bio);
		else
			bio_list_add(&later, bio);
	}
	spin_lock(&era->lock);
	bio_list_merge_head(&era->deferred, &later);
	spin_unlock(&era->lock);
	return min(r, 0);
}

/*
 * Marks the blocks of the deferred bios on disk and commits, once for the whole batch; the commit sets
 * them in core only once it is durable. A bit in core lets later writes to the block through without
 * waiting, so it must never claim more than is durable (era fix 2).
 *
 * A commit takes long against the time a writer needs to send its next write, so writes deferred while
 * it runs join it where that is cheap: after the first marks are in the on-disk bitset (shadowing its
 * blocks is a good part of a commit), and again after the pre-commit (era_md_commit_joining()).
 * Without that the writes would split into two groups taking turns, each waiting out the other's commit.
 */
static int mark_bios(struct era *era, struct bio_list *bios)
{
	struct join_batch batch = { era, bios };
	struct bio_list late;
	int r;

	if (!metadata_writable(era))
		return -EIO;
	r = record_marks(era, bios);
	if (r || !era_md_marks_pending(era->md))
		return r;

	r = era_md_write_marks(era->md);
	if (r)
		return metadata_failed(era, "marking a written block", r);
	bio_list_init(&late);
	take_deferred(era, &late);
	r = record_marks(era, &late);
	bio_list_merge(bios, &late);
	if (r)
		return r;

	r = era_md_commit_joining(era->md, join_deferred, &batch);
	return r ? metadata_failed(era, "metadata commit", r) : 0;
}

/* One bounded step of digesting archived writesets; true when there is more to do. */
static bool digest_some(struct era *era)
{
	int r;

	if (!metadata_writable(era) || !era_md_digest_pending(era->md))
		return false;
	r = era_md_digest_step(era->md);
	if (dmkit_knob(digest_step_delay_ms))
		msleep(dmkit_knob(digest_step_delay_ms));
	if (r < 0) {
		metadata_failed(era, "digesting an archived era", r);
		return false;
	}
	return r > 0;
}

static void issue_bios(struct bio_list *bios, int r)
{
	struct blk_plug plug;
	struct bio *bio;

	blk_start_plug(&plug);
	while ((bio = bio_list_pop(bios))) {
		if (r)
			bio_io_error(bio);
		else
			submit_bio_noacct(bio);
	}
	blk_finish_plug(&plug);
}

static bool deferred_empty(struct era *era)
{
	bool empty;

	spin_lock(&era->lock);
	empty = bio_list_empty(&era->deferred);
	spin_unlock(&era->lock);
	return empty;
}

/*
 * After a commit, while the writer answers the writes just issued and nothing waits: shadow the bitset
 * blocks the next commit will likely mark, so that it starts without copying them.
 */
static void prepare_next_commit(struct era *era)
{
	int r;

	if (!deferred_empty(era))
		return;
	mutex_lock(&era->md_lock);
	if (metadata_writable(era)) {
		r = era_md_prepare_marks(era->md);
		if (r)
			metadata_failed(era, "shadowing bitset blocks ahead of a commit", r);
	}
	mutex_unlock(&era->md_lock);
}

static void do_worker(struct work_struct *work)
{
	struct era *era = container_of(work, struct era, worker);
	struct bio_list bios;
	bool more_digest, committed = false;
	int r = 0;

	bio_list_init(&bios);
	take_deferred(era, &bios);

	mutex_lock(&era->md_lock);
	if (!bio_list_empty(&bios)) {
		r = mark_bios(era, &bios);
		committed = !r;
	}
	more_digest = digest_some(era);
	mutex_unlock(&era->md_lock);

	issue_bios(&bios, r);
	if (committed)
		prepare_next_commit(era);
	if (more_digest)
		wake_worker(era);
}

static void defer_bio(struct era *era, struct bio *bio)
{
	spin_lock(&era->lock);
	bio_list_add(&era->deferred, bio);
	spin_unlock(&era->lock);
	wake_worker(era);
}

/*----------------------------------------------------------------
 * Constructor and destructor
 *--------------------------------------------------------------*/

enum era_arg {
	ERA_ARG_METADATA_DEV,
	ERA_ARG_ORIGIN_DEV,
	ERA_ARG_BLOCK_SIZE,
	ERA_NR_ARGS,
};

static const struct dm_arg era_block_size_arg = {
	ERA_MIN_BLOCK_SECTORS, UINT_MAX, "Invalid block size: expected a multiple of 8 sectors"
};

static int parse_block_size(struct era *era, struct dm_arg_set *as, char **error)
{
	unsigned int sectors;
	int r;

	r = dm_read_arg(&era_block_size_arg, as, &sectors, error);
	if (r)
		return r;
	if (sectors % ERA_MIN_BLOCK_SECTORS) {
		*error = era_block_size_arg.error;
		return -EINVAL;
	}
	era->block_sectors = sectors;
	era->block_shift = is_power_of_2(sectors) ? __ffs(sectors) : -1;
	return 0;
}

static int size_from_table(struct era *era, char **error)
{
	sector_t nr_blocks = dm_sector_div_up(era->ti->len, era->block_sectors);

	if (nr_blocks > ERA_MD_MAX_BLOCKS) {
		*error = "Too many origin blocks: use a larger block size";
		return -EINVAL;
	}
	era->nr_blocks = nr_blocks;
	return 0;
}

static int open_table_device(struct era *era, struct dm_arg_set *as, struct dm_dev **dev,
			     char **error, const char *what)
{
	int r = dm_get_device(era->ti, dm_shift_arg(as), FMODE_READ | FMODE_WRITE, dev);

	if (r)
		*error = (char *)what;
	return r ? -EINVAL : 0;
}

static int open_metadata(struct era *era, bool may_format, const char **error)
{
	struct era_md *md;

	md = era_md_open(era->metadata_dev->bdev, era->block_sectors, may_format, error);
	if (IS_ERR(md))
		return PTR_ERR(md);
	era->md = md;
	return 0;
}

static void init_era(struct era *era, struct dm_target *ti)
{
	era->ti = ti;
	era->mode = ERA_MODE_WRITE;
	mutex_init(&era->md_lock);
	spin_lock_init(&era->lock);
	bio_list_init(&era->deferred);
	era->suspended = true;	/* until the first resume */
	INIT_WORK(&era->worker, do_worker);
}

static int dmkit_era_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dm_arg_set as = { .argc = argc, .argv = argv };
	const char *md_error = NULL;
	struct era *era;
	int r;

	if (argc != ERA_NR_ARGS) {
		ti->error = "Expected 3 arguments: <metadata dev> <origin dev> <block size>";
		return -EINVAL;
	}

	era = kzalloc(sizeof(*era), GFP_KERNEL);
	if (!era) {
		ti->error = "Cannot allocate the era context";
		return -ENOMEM;
	}
	init_era(era, ti);

	r = open_table_device(era, &as, &era->metadata_dev, &ti->error, "Cannot open the metadata device");
	if (r)
		goto bad_metadata_dev;
	r = open_table_device(era, &as, &era->origin_dev, &ti->error, "Cannot open the origin device");
	if (r)
		goto bad_origin_dev;
	/* Formatting the metadata would overwrite the data it is meant to track. */
	if (era->metadata_dev->bdev == era->origin_dev->bdev) {
		ti->error = "The metadata and origin devices must differ";
		r = -EINVAL;
		goto bad_args;
	}
	r = parse_block_size(era, &as, &ti->error);
	if (r)
		goto bad_args;
	r = size_from_table(era, &ti->error);
	if (r)
		goto bad_args;

	era->wq = alloc_workqueue("dmkit-era", WQ_MEM_RECLAIM, 1);
	if (!era->wq) {
		ti->error = "Cannot allocate the workqueue";
		r = -ENOMEM;
		goto bad_args;
	}

	r = open_metadata(era, true, &md_error);
	if (r) {
		ti->error = (char *)md_error;
		goto bad_metadata;
	}

	ti->private = era;
	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	ti->num_discard_bios = 1;
	return 0;

bad_metadata:
	destroy_workqueue(era->wq);
bad_args:
	dm_put_device(ti, era->origin_dev);
bad_origin_dev:
	dm_put_device(ti, era->metadata_dev);
bad_metadata_dev:
	kfree(era);
	return r;
}

static void dmkit_era_dtr(struct dm_target *ti)
{
	struct era *era = ti->private;

	/* Normally stopped by postsuspend already; a table that never went live was never started. */
	stop_worker(era);
	destroy_workqueue(era->wq);
	if (era->md)
		era_md_close(era->md);	/* frees both in-core bitmaps too (era fix 4) */
	dm_put_device(ti, era->origin_dev);
	dm_put_device(ti, era->metadata_dev);
	kfree(era);
}

/*----------------------------------------------------------------
 * I/O
 *--------------------------------------------------------------*/

static int dmkit_era_map(struct dm_target *ti, struct bio *bio)
{
	struct era *era = ti->private;
	u32 first, last;

	bio_set_dev(bio, era->origin_dev->bdev);
	bio->bi_iter.bi_sector = dm_target_offset(ti, bio->bi_iter.bi_sector);

	/* Reads and empty flushes change nothing an era records. */
	if (!op_is_write(bio_op(bio)) || !bio_sectors(bio))
		return DM_MAPIO_REMAPPED;

	bio_blocks(era, bio, &first, &last);
	if (era_md_range_marked(era->md, first, last))
		return DM_MAPIO_REMAPPED;

	defer_bio(era, bio);
	return DM_MAPIO_SUBMITTED;
}

/*----------------------------------------------------------------
 * Suspend and resume
 *--------------------------------------------------------------*/

static void archive_and_commit(struct era *era)
{
	int r;

	mutex_lock(&era->md_lock);
	if (metadata_writable(era)) {
		r = era_md_archive(era->md);
		if (r)
			metadata_failed(era, "archiving the current era", r);
		else
			commit_metadata(era);
	}
	mutex_unlock(&era->md_lock);
}

static void dmkit_era_postsuspend(struct dm_target *ti)
{
	struct era *era = ti->private;

#if dmkit_reverted(ERA_POSTSUSPEND)
	/* Reverted fix (a): commit while the worker may still digest, then stop it with flush_workqueue. */
	archive_and_commit(era);
	set_suspended(era, true);
	flush_workqueue(era->wq);
#else
	/*
	 * Fix (a): stop the worker first. A digest step after the commit would leave dirty, uncommitted
	 * metadata behind, which the dtr writes out over whatever a newer table has made of those blocks.
	 */
	stop_worker(era);
	archive_and_commit(era);
#endif
}

/*
 * The previous table's postsuspend has committed by now, so what this instance's ctr read may be stale:
 * read the metadata again, once, before first using it.
 */
static int reload_metadata(struct era *era)
{
	const char *error = NULL;
	int r;

	if (era->md)
		era_md_close(era->md);
	era->md = NULL;
	/* Nothing was changed yet, so a failure here fails the resume but not the metadata. */
	r = open_metadata(era, false, &error);
	if (r) {
		DMERR("%s: reading the metadata again failed: %s (%d)", era_name(era), error, r);
		return r;
	}
	era->md_reloaded = true;
	return 0;
}

/* Called with md_lock held while the device is suspended and the worker stopped. */
static int prepare_metadata(struct era *era)
{
	int r;

	if (!era->md_reloaded) {
		r = reload_metadata(era);
		if (r)
			return r;
	}
	if (!metadata_writable(era))
		return 0;	/* resume in fail mode: reads and marked writes still work */

	/* Only here is the metadata resized: the table is about to go live (era fix 7). */
	if (!era_md_sized_for(era->md, era->nr_blocks)) {
		r = era_md_resize(era->md, era->nr_blocks);
		if (r)
			return metadata_failed(era, "resizing the metadata", r);
	}

	/* Archives the current writeset if there is one, recovered after a crash included (era fix 1). */
	r = era_md_rollover(era->md);
	if (r == -ENOSPC) {
		/* Full metadata, nothing changed: the data stays reachable (reads, marked writes) in fail mode. */
		metadata_failed(era, "starting a new era", r);
		return 0;
	}
	if (r)
		return metadata_failed(era, "starting a new era", r);
	return commit_metadata(era);
}

static int dmkit_era_preresume(struct dm_target *ti)
{
	struct era *era = ti->private;
	unsigned int noio;
	int r;

	/* No allocation here may wait for I/O to a suspended device. */
	noio = memalloc_noio_save();
	mutex_lock(&era->md_lock);
	r = prepare_metadata(era);
	mutex_unlock(&era->md_lock);
	memalloc_noio_restore(noio);
	return r;
}

static void dmkit_era_resume(struct dm_target *ti)
{
	start_worker(ti->private);
}

/*----------------------------------------------------------------
 * Messages
 *--------------------------------------------------------------*/

static int msg_checkpoint(struct era *era)
{
	int r = era_md_rollover(era->md);

	if (r)
		return metadata_failed(era, "checkpoint", r);
	return commit_metadata(era);
}

static int msg_take_snap(struct era *era)
{
	int r;

	if (era_md_snap_held(era->md)) {
		DMERR("%s: a metadata snapshot is already held", era_name(era));
		return -EINVAL;
	}
	r = era_md_take_snap(era->md);
	if (r)
		return metadata_failed(era, "take_metadata_snap", r);
	return commit_metadata(era);
}

static int msg_drop_snap(struct era *era)
{
	int r;

	if (!era_md_snap_held(era->md)) {
		DMERR("%s: no metadata snapshot is held", era_name(era));
		return -EINVAL;
	}
	r = era_md_drop_snap(era->md);
	if (r)
		return metadata_failed(era, "drop_metadata_snap", r);
	return commit_metadata(era);
}

struct dmkit_era_message {
	const char *name;
	int (*run)(struct era *era);
};

static const struct dmkit_era_message era_messages[] = {
	{ "checkpoint", msg_checkpoint },
	{ "take_metadata_snap", msg_take_snap },
	{ "drop_metadata_snap", msg_drop_snap },
};

static const struct dmkit_era_message *find_message(unsigned int argc, char **argv)
{
	unsigned int i;

	if (argc != 1)
		return NULL;
	for (i = 0; i < ARRAY_SIZE(era_messages); i++)
		if (!strcasecmp(argv[0], era_messages[i].name))
			return &era_messages[i];
	return NULL;
}

static int dmkit_era_message(struct dm_target *ti, unsigned int argc, char **argv,
		       char *result, unsigned int maxlen)
{
	struct era *era = ti->private;
	const struct dmkit_era_message *msg = find_message(argc, argv);
	int r;

	if (!msg) {
		DMERR("%s: unsupported message '%s' with %u argument(s)",
		      era_name(era), argc ? argv[0] : "", argc ? argc - 1 : 0);
		return -EINVAL;
	}

	/*
	 * Messages run here rather than in the worker: md_lock orders them with it. Once postsuspend has
	 * committed, the metadata must stay as it is until resume (a newer table may be reading it).
	 */
	mutex_lock(&era->md_lock);
	if (is_suspended(era)) {
		DMERR("%s: '%s' refused: the device is suspended", era_name(era), msg->name);
		r = -EBUSY;
	} else if (!metadata_writable(era)) {
		DMERR("%s: '%s' refused: metadata is in fail mode", era_name(era), msg->name);
		r = -EIO;
	} else {
		r = msg->run(era);
	}
	mutex_unlock(&era->md_lock);

	if (!r)
		wake_worker(era);	/* a newly archived era is waiting to be digested */
	return r;
}

/*----------------------------------------------------------------
 * Status and limits
 *--------------------------------------------------------------*/

static void dmkit_era_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
		       char *result, unsigned int maxlen)
{
	struct era *era = ti->private;
	struct era_md_usage usage;
	unsigned int sz = 0;
	int r;

	switch (type) {
	case STATUSTYPE_INFO:
		mutex_lock(&era->md_lock);
		r = era->md ? era_md_usage(era->md, &usage) : -EIO;
		mutex_unlock(&era->md_lock);
		if (r) {
			DMEMIT("Error");
			break;
		}
		DMEMIT("%u %llu/%llu %u", ERA_MD_BLOCK_SECTORS, (unsigned long long)usage.used,
		       (unsigned long long)usage.total, usage.era);
		if (usage.held_root)
			DMEMIT(" %llu", (unsigned long long)usage.held_root);
		else
			DMEMIT(" -");
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s %u", era->metadata_dev->name, era->origin_dev->name, era->block_sectors);
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",metadata_device=%s,origin_device=%s,block_size=%u;",
		       era->metadata_dev->name, era->origin_dev->name, era->block_sectors);
		break;
	}
}

static int dmkit_era_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn, void *data)
{
	struct era *era = ti->private;

	return fn(ti, era->origin_dev, 0, ti->len, data);
}

static void dmkit_era_io_hints(struct dm_target *ti, struct queue_limits *limits)
{
	struct era *era = ti->private;
	u64 block_bytes = (u64)era->block_sectors << SECTOR_SHIFT;

	/* Keep a stacked optimal I/O size that is whole era blocks; otherwise suggest one block. */
	if (block_bytes > UINT_MAX || (limits->io_opt && !(limits->io_opt % (u32)block_bytes)))
		return;
	blk_limits_io_opt(limits, block_bytes);
}

static struct target_type era_target_type = {
	.name = "dmkit-era",
	.version = { DMKIT_VERSION_MAJOR, DMKIT_VERSION_MINOR, DMKIT_VERSION_PATCH },
	.module = THIS_MODULE,
	.ctr = dmkit_era_ctr,
	.dtr = dmkit_era_dtr,
	.map = dmkit_era_map,
	.postsuspend = dmkit_era_postsuspend,
	.preresume = dmkit_era_preresume,
	.resume = dmkit_era_resume,
	.status = dmkit_era_status,
	.message = dmkit_era_message,
	.iterate_devices = dmkit_era_iterate_devices,
	.io_hints = dmkit_era_io_hints,
};

static int __init dmkit_era_init(void)
{
	int r = dm_register_target(&era_target_type);

	if (r)
		DMERR("register failed: %d", r);
	return r;
}

static void __exit dmkit_era_exit(void)
{
	dm_unregister_target(&era_target_type);
}

module_init(dmkit_era_init);
module_exit(dmkit_era_exit);

MODULE_DESCRIPTION(DM_NAME " dmkit era target: tracks the era in which each block was last written");
MODULE_AUTHOR("dmkit developers");
MODULE_LICENSE("GPL");
MODULE_VERSION(DMKIT_VERSION_STRING);
