// SPDX-License-Identifier: GPL-2.0-only
/*
 * Exception stores of dmkit-snapshot.
 *
 * Persistent layout on the COW device, in chunks, all little-endian (the in-tree target's format):
 *   chunk 0          header {magic "SnAp", valid, version 1, chunk size in sectors}; magic 0: new COW
 *   chunk 1          metadata area 0: {old chunk, new chunk} pairs of 16 bytes, up to chunk_bytes / 16;
 *                    a pair with new chunk 0 ends the table
 *   chunks 2 ..      the data chunks that area 0 describes, then area 1, its data chunks, and so on:
 *                    area a sits at chunk 1 + a * (exceptions per area + 1).
 * Only the last area has room; the one after it is zeroed before the last one is written full, so a
 * reader always finds a terminator. Each area write carries PREFLUSH|FUA: the copied data it names is
 * on stable storage first.
 *
 * The current area is kept in core as host-order pairs and encoded into its I/O buffer at every write,
 * from its first entry; a write covers only the used prefix of the area (up to the terminator), in
 * whole logical blocks, since the rest was zeroed before the area came into use.
 * The header has a buffer of its own (the fix of the in-tree target's header corruption on
 * invalidation); the snapshot-header revert builds it in the area buffer instead, where an exception
 * commit landing while the header is being written overwrites it.
 */
#include <linux/blkdev.h>
#include <linux/delay.h>
#include <linux/dm-bufio.h>
#include <linux/dm-io.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "dmkit-common.h"
#include "snap-store.h"

#define DM_MSG_PREFIX "dmkit-snapshot store"

#define SNAP_MAGIC 0x70416e53	/* "SnAp" */
#define SNAP_DISK_VERSION 1
#define DEFAULT_CHUNK_SECTORS 32
#define MAX_CHUNK_SECTORS (1U << 21)
#define FIRST_DATA_CHUNK 2
#define LOAD_PREFETCH_AREAS 12

DMKIT_TEST_KNOB(invalidate_delay_ms,
		"milliseconds between building the invalid header and writing it (snapshot-header race)");

struct snap_disk_header {
	__le32 magic;
	__le32 valid;
	__le32 version;
	__le32 chunk_size;
} __packed;

struct snap_disk_exception {
	__le64 old_chunk;
	__le64 new_chunk;
} __packed;

struct snap_pair {
	snap_chunk_t old_chunk;
	snap_chunk_t new_chunk;
};

struct snap_store {
	struct dm_dev *cow;
	bool persistent;
	unsigned int chunk_sectors;
	unsigned int chunk_shift;

	/* Transient: sectors handed out. Persistent: the next free chunk (never an area). */
	u64 next_free;

	/* Persistent only. */
	struct dm_io_client *io;
	unsigned int per_area;		/* exceptions per area */
	u64 current_area;
	unsigned int committed;		/* exceptions in the current area */
	bool dirty;			/* added since the last area write */
	struct snap_pair *pairs;	/* the current area, host order */
	void *area_buf;			/* the current area's I/O buffer */
	void *header_buf;		/* the header's own buffer */
	void *zero_buf;
};

static sector_t cow_sectors(struct snap_store *st)
{
	return bdev_nr_sectors(st->cow->bdev);
}

static u64 cow_chunks(struct snap_store *st)
{
	return cow_sectors(st) >> st->chunk_shift;
}

static size_t chunk_bytes(struct snap_store *st)
{
	return (size_t)st->chunk_sectors << SECTOR_SHIFT;
}

static u64 area_chunk(struct snap_store *st, u64 area)
{
	return 1 + area * ((u64)st->per_area + 1);
}

static bool is_area_chunk(struct snap_store *st, u64 chunk)
{
	return chunk % ((u64)st->per_area + 1) == 1;
}

/* I/O of the first `count` sectors of a chunk. */
static int chunk_io_part(struct snap_store *st, void *buf, u64 chunk, sector_t count, blk_opf_t opf)
{
	struct dm_io_region where = {
		.bdev = st->cow->bdev,
		.sector = chunk << st->chunk_shift,
		.count = count,
	};
	struct dm_io_request req = {
		.bi_opf = opf,
		.mem.type = DM_IO_VMA,
		.mem.ptr.vma = buf,
		.client = st->io,
		.notify.fn = NULL,
	};

	return dm_io(&req, 1, &where, NULL, IOPRIO_DEFAULT);
}

static int chunk_io(struct snap_store *st, void *buf, u64 chunk, blk_opf_t opf)
{
	return chunk_io_part(st, buf, chunk, st->chunk_sectors, opf);
}

static void free_buffers(struct snap_store *st)
{
	vfree(st->pairs);
	vfree(st->area_buf);
	vfree(st->header_buf);
	vfree(st->zero_buf);
	st->pairs = NULL;
	st->area_buf = st->header_buf = st->zero_buf = NULL;
}

static int set_chunk_size(struct snap_store *st, unsigned int chunk_sectors, const char **error)
{
	unsigned int lbs = bdev_logical_block_size(st->cow->bdev) >> SECTOR_SHIFT;

	if (!chunk_sectors || !is_power_of_2(chunk_sectors)) {
		*error = "chunk size is not a power of 2";
		return -EINVAL;
	}
	if (chunk_sectors > MAX_CHUNK_SECTORS) {
		*error = "chunk size is too large";
		return -EINVAL;
	}
	if (chunk_sectors & (lbs - 1)) {
		*error = "chunk size is not a multiple of the COW device's logical block size";
		return -EINVAL;
	}
	st->chunk_sectors = chunk_sectors;
	st->chunk_shift = ilog2(chunk_sectors);
	st->per_area = chunk_bytes(st) / sizeof(struct snap_disk_exception);
	return 0;
}

static void *zalloc_quiet(size_t len)
{
	return __vmalloc(len, GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN);
}

static int alloc_buffers(struct snap_store *st, const char **error)
{
	free_buffers(st);
	if (area_chunk(st, 0) >= cow_chunks(st)) {
		*error = "COW device is too small for its metadata";
		return -EINVAL;
	}
	st->pairs = zalloc_quiet(array_size(st->per_area, sizeof(*st->pairs)));
	st->area_buf = zalloc_quiet(chunk_bytes(st));
	st->header_buf = zalloc_quiet(chunk_bytes(st));
	st->zero_buf = zalloc_quiet(chunk_bytes(st));
	if (!st->pairs || !st->area_buf || !st->header_buf || !st->zero_buf) {
		free_buffers(st);
		*error = "cannot allocate the metadata buffers";
		return -ENOMEM;
	}
	return 0;
}

struct snap_store *snap_store_create(struct dm_dev *cow, bool persistent, unsigned int chunk_sectors,
				     const char **error)
{
	struct snap_store *st;
	int r;

	if (!persistent && !chunk_sectors) {
		*error = "a transient store needs a chunk size";
		return ERR_PTR(-EINVAL);
	}
	st = kzalloc(sizeof(*st), GFP_KERNEL);
	if (!st) {
		*error = "cannot allocate the exception store";
		return ERR_PTR(-ENOMEM);
	}
	st->cow = cow;
	st->persistent = persistent;
	if (chunk_sectors) {
		r = set_chunk_size(st, chunk_sectors, error);
		if (r)
			goto bad;
	}
	if (persistent) {
		st->io = dm_io_client_create();
		if (IS_ERR(st->io)) {
			r = PTR_ERR(st->io);
			st->io = NULL;
			*error = "cannot create the metadata I/O client";
			goto bad;
		}
	}
	return st;

bad:
	kfree(st);
	return ERR_PTR(r);
}

void snap_store_destroy(struct snap_store *st)
{
	if (st->io)
		dm_io_client_destroy(st->io);
	free_buffers(st);
	kfree(st);
}

unsigned int snap_store_chunk_sectors(struct snap_store *st)
{
	return st->chunk_sectors;
}

bool snap_store_persistent(struct snap_store *st)
{
	return st->persistent;
}

/* ---- header ---- */

static void build_header(void *buf, size_t len, bool valid, unsigned int chunk_sectors)
{
	struct snap_disk_header *h = buf;

	memset(buf, 0, len);
	h->magic = cpu_to_le32(SNAP_MAGIC);
	h->valid = cpu_to_le32(valid ? 1 : 0);
	h->version = cpu_to_le32(SNAP_DISK_VERSION);
	h->chunk_size = cpu_to_le32(chunk_sectors);
}

static int write_header(struct snap_store *st, bool valid)
{
	/* The fix: never the area buffer, which exception commits rewrite at any time. */
	void *buf = dmkit_reverted(SNAPSHOT_HEADER) ? st->area_buf : st->header_buf;

	build_header(buf, chunk_bytes(st), valid, st->chunk_sectors);
	if (!valid && dmkit_knob(invalidate_delay_ms))
		msleep(dmkit_knob(invalidate_delay_ms));
	return chunk_io(st, buf, 0, REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA);
}

/* Test builds: a commit that starts while an invalidation is under way waits half its header window. */
unsigned int snap_store_commit_delay_ms(void)
{
	return dmkit_knob(invalidate_delay_ms) / 2;
}

/*
 * Reads the header through a bufio client of the COW's logical block size (the chunk size is not known
 * yet). Returns 1 for a new COW, 0 for an existing one, with *valid and *chunk_sectors set.
 */
static int read_header(struct snap_store *st, bool *valid, unsigned int *chunk_sectors, const char **error)
{
	struct dm_bufio_client *bc;
	struct snap_disk_header *h;
	struct dm_buffer *b;
	unsigned int lbs = bdev_logical_block_size(st->cow->bdev);
	int r = 0;

	bc = dm_bufio_client_create(st->cow->bdev, lbs, 1, 0, NULL, NULL, 0);
	if (IS_ERR(bc)) {
		*error = "cannot create a bufio client for the COW header";
		return PTR_ERR(bc);
	}
	h = dm_bufio_read(bc, 0, &b);
	if (IS_ERR(h)) {
		r = PTR_ERR(h);
		*error = "cannot read the COW header";
		goto out;
	}
	if (le32_to_cpu(h->magic) == 0) {
		r = 1;
	} else if (le32_to_cpu(h->magic) != SNAP_MAGIC) {
		DMERR("COW header magic %#x is not a snapshot's", le32_to_cpu(h->magic));
		*error = "COW device has a bad header magic";
		r = -EINVAL;
	} else if (le32_to_cpu(h->version) != SNAP_DISK_VERSION) {
		DMERR("COW header version %u is not supported (only %u)", le32_to_cpu(h->version),
		      SNAP_DISK_VERSION);
		*error = "COW device has an unsupported header version";
		r = -EINVAL;
	} else {
		*valid = le32_to_cpu(h->valid) != 0;
		*chunk_sectors = le32_to_cpu(h->chunk_size);
	}
	dm_bufio_release(b);
out:
	dm_bufio_client_destroy(bc);
	return r;
}

/* ---- areas ---- */

/* Sectors at the start of an area that hold `slots` entries, in whole logical blocks of the COW. */
static sector_t area_prefix(struct snap_store *st, unsigned int slots)
{
	size_t len = round_up((size_t)slots * sizeof(struct snap_disk_exception),
			      bdev_logical_block_size(st->cow->bdev));

	return min(len, chunk_bytes(st)) >> SECTOR_SHIFT;
}

/*
 * Writes the current area's first `slots` entry slots, encoded again from the in-core copy: the
 * exceptions, then zeroes. Everything past them is already zero on disk (areas are zeroed before use),
 * so only the used prefix goes out.
 */
static int write_area(struct snap_store *st, unsigned int slots)
{
	struct snap_disk_exception *de = st->area_buf;
	sector_t count = area_prefix(st, min(slots, st->per_area));
	unsigned int end = (count << SECTOR_SHIFT) / sizeof(*de);
	unsigned int i;

	for (i = 0; i < st->committed; i++) {
		de[i].old_chunk = cpu_to_le64(st->pairs[i].old_chunk);
		de[i].new_chunk = cpu_to_le64(st->pairs[i].new_chunk);
	}
	if (end > i)
		memset(de + i, 0, (end - i) * sizeof(*de));
	return chunk_io_part(st, st->area_buf, area_chunk(st, st->current_area), count,
			     REQ_OP_WRITE | REQ_PREFLUSH | REQ_FUA);
}

static int zero_area(struct snap_store *st, u64 area)
{
	if (area_chunk(st, area) >= cow_chunks(st))
		return 0;	/* past the device: no exception can ever be stored there */
	return chunk_io(st, st->zero_buf, area_chunk(st, area), REQ_OP_WRITE | REQ_FUA);
}

static void note_allocated(struct snap_store *st, snap_chunk_t new_chunk)
{
	if (new_chunk >= st->next_free) {
		st->next_free = new_chunk + 1;
		if (is_area_chunk(st, st->next_free))
			st->next_free++;
	}
}

/* Decodes one area into st->pairs; returns the number of exceptions in it. */
static int load_area(struct snap_store *st, const struct snap_disk_exception *de, u64 area,
		     const char **error)
{
	u64 limit = cow_chunks(st);
	unsigned int i;

	for (i = 0; i < st->per_area; i++) {
		snap_chunk_t old_chunk = le64_to_cpu(de[i].old_chunk);
		snap_chunk_t new_chunk = le64_to_cpu(de[i].new_chunk);

		if (!new_chunk)
			break;
		if (new_chunk < FIRST_DATA_CHUNK || new_chunk >= limit || is_area_chunk(st, new_chunk)) {
			DMERR("exception %u of area %llu maps chunk %llu to COW chunk %llu, outside the %llu data chunks",
			      i, area, old_chunk, new_chunk, limit);
			*error = "COW metadata has an exception outside the COW device";
			return -EINVAL;
		}
		st->pairs[i].old_chunk = old_chunk;
		st->pairs[i].new_chunk = new_chunk;
	}
	return i;
}

static int read_exceptions(struct snap_store *st, snap_load_fn fn, void *context, const char **error)
{
	struct dm_bufio_client *bc;
	u64 area, limit = cow_chunks(st);
	int r = 0;

	bc = dm_bufio_client_create(st->cow->bdev, chunk_bytes(st), 1, 0, NULL, NULL, 0);
	if (IS_ERR(bc)) {
		*error = "cannot create a bufio client for the COW metadata";
		return PTR_ERR(bc);
	}
	st->next_free = FIRST_DATA_CHUNK;
	for (area = 0;; area++) {
		u64 where = area_chunk(st, area);
		struct dm_buffer *b;
		void *data;
		int i, n;

		if (where >= limit) {
			/* Every area that fits is full: the last one stays current, with no room. */
			if (!area) {
				*error = "COW device is too small for its metadata";
				r = -EINVAL;
			} else {
				st->current_area = area - 1;
				st->committed = st->per_area;
			}
			break;
		}
		if (area % LOAD_PREFETCH_AREAS == 0) {
			u64 a;

			for (a = area; a < area + LOAD_PREFETCH_AREAS && area_chunk(st, a) < limit; a++)
				dm_bufio_prefetch(bc, area_chunk(st, a), 1);
		}
		data = dm_bufio_read(bc, where, &b);
		if (IS_ERR(data)) {
			r = PTR_ERR(data);
			*error = "cannot read a COW metadata area";
			break;
		}
		n = load_area(st, data, area, error);
		dm_bufio_release(b);
		if (n < 0) {
			r = n;
			break;
		}
		for (i = 0; i < n; i++) {
			r = fn(context, st->pairs[i].old_chunk, st->pairs[i].new_chunk);
			if (r) {
				*error = "cannot record an exception in core";
				goto out;
			}
			note_allocated(st, st->pairs[i].new_chunk);
		}
		if (n < st->per_area) {
			/* The terminator: this area is the current one, and st->pairs holds it. */
			st->current_area = area;
			st->committed = n;
			break;
		}
	}
out:
	dm_bufio_client_destroy(bc);
	return r;
}

static int format_new(struct snap_store *st, const char **error)
{
	int r;

	st->next_free = FIRST_DATA_CHUNK;
	st->current_area = 0;
	st->committed = 0;
	if (area_chunk(st, 0) >= cow_chunks(st)) {
		*error = "COW device is too small for its metadata";
		return -EINVAL;
	}
	/* Area 0 first: a header on disk always comes with a terminated area 0. */
	r = zero_area(st, 0);
	if (!r)
		r = write_header(st, true);
	if (r)
		*error = "cannot format the COW device";
	return r;
}

int snap_store_load(struct snap_store *st, snap_load_fn fn, void *context, const char **error)
{
	unsigned int disk_chunk = 0;
	bool valid = true;
	int r;

	if (!st->persistent) {
		st->next_free = 0;
		return 0;
	}
	r = read_header(st, &valid, &disk_chunk, error);
	if (r < 0)
		return r;
	if (r == 1) {
		/* New COW: the table's chunk size, or the default. */
		if (!st->chunk_sectors) {
			unsigned int lbs = bdev_logical_block_size(st->cow->bdev) >> SECTOR_SHIFT;

			r = set_chunk_size(st, max_t(unsigned int, DEFAULT_CHUNK_SECTORS, lbs), error);
			if (r)
				return r;
		}
		r = alloc_buffers(st, error);
		return r ? r : format_new(st, error);
	}

	if (!disk_chunk || !is_power_of_2(disk_chunk)) {
		DMERR("COW header chunk size %u is not a power of 2", disk_chunk);
		*error = "COW header has a bad chunk size";
		return -EINVAL;
	}
	if (st->chunk_sectors && st->chunk_sectors != disk_chunk)
		DMWARN("chunk size %u in the table differs from %u in the COW header: using %u",
		       st->chunk_sectors, disk_chunk, disk_chunk);
	r = set_chunk_size(st, disk_chunk, error);
	if (r) {
		DMERR("COW header chunk size %u: %s", disk_chunk, *error);
		*error = "COW header has a bad chunk size";
		return r;
	}
	r = alloc_buffers(st, error);
	if (r)
		return r;
	if (!valid)
		return 1;
	return read_exceptions(st, fn, context, error);
}

int snap_store_alloc(struct snap_store *st, snap_chunk_t *new_chunk)
{
	if (!st->persistent) {
		if (cow_sectors(st) < st->next_free + st->chunk_sectors)
			return -ENOSPC;
		*new_chunk = st->next_free >> st->chunk_shift;
		st->next_free += st->chunk_sectors;
		return 0;
	}
	if (cow_sectors(st) < ((st->next_free + 1) << st->chunk_shift))
		return -ENOSPC;
	*new_chunk = st->next_free++;
	if (is_area_chunk(st, st->next_free))
		st->next_free++;
	return 0;
}

int snap_store_add(struct snap_store *st, snap_chunk_t old_chunk, snap_chunk_t new_chunk)
{
	int r;

	if (!st->persistent)
		return 0;
	if (WARN_ON_ONCE(st->committed >= st->per_area))
		return -ENOSPC;
	st->pairs[st->committed].old_chunk = old_chunk;
	st->pairs[st->committed].new_chunk = new_chunk;
	st->committed++;
	st->dirty = true;
	if (st->committed < st->per_area)
		return 0;

	/* Full: terminate the table in the next area before this one stops being its end. */
	r = zero_area(st, st->current_area + 1);
	if (!r)
		r = write_area(st, st->per_area);
	if (r)
		return r;
	st->current_area++;
	st->committed = 0;
	st->dirty = false;
	return 0;
}

int snap_store_commit(struct snap_store *st)
{
	int r;

	if (!st->persistent || !st->dirty)
		return 0;
	r = write_area(st, st->committed + 1);	/* with the terminator */
	if (!r)
		st->dirty = false;
	return r;
}

int snap_store_drop(struct snap_store *st)
{
	if (!st->persistent)
		return 0;
	return write_header(st, false);
}

void snap_store_usage(struct snap_store *st, sector_t *allocated, sector_t *total, sector_t *metadata)
{
	*total = cow_sectors(st);
	if (!st->persistent) {
		*allocated = st->next_free;
		*metadata = 0;
		return;
	}
	*allocated = st->next_free << st->chunk_shift;
	*metadata = (st->current_area + 2) << st->chunk_shift;
}

/* ---- merge ---- */

static int read_previous_area(struct snap_store *st)
{
	struct snap_disk_exception *de = st->area_buf;
	unsigned int i;
	int r;

	r = chunk_io(st, st->area_buf, area_chunk(st, st->current_area - 1), REQ_OP_READ);
	if (r)
		return r;
	for (i = 0; i < st->per_area; i++) {
		st->pairs[i].old_chunk = le64_to_cpu(de[i].old_chunk);
		st->pairs[i].new_chunk = le64_to_cpu(de[i].new_chunk);
		if (!st->pairs[i].new_chunk)
			return -EINVAL;	/* a full area has no terminator */
	}
	st->current_area--;
	st->committed = st->per_area;
	return 0;
}

int snap_store_merge_prepare(struct snap_store *st, unsigned int max, snap_chunk_t *old_chunk,
			     snap_chunk_t *new_chunk)
{
	unsigned int i, n;
	int r;

	if (!st->committed) {
		if (!st->current_area)
			return 0;
		r = read_previous_area(st);
		if (r)
			return r;
	}
	i = st->committed - 1;
	for (n = 1; n < max && i > 0; n++, i--) {
		if (st->pairs[i - 1].old_chunk + 1 != st->pairs[i].old_chunk ||
		    st->pairs[i - 1].new_chunk + 1 != st->pairs[i].new_chunk)
			break;
	}
	*old_chunk = st->pairs[i].old_chunk;
	*new_chunk = st->pairs[i].new_chunk;
	return n;
}

int snap_store_merge_commit(struct snap_store *st, unsigned int n)
{
	unsigned int kept = st->committed;
	int r;

	if (WARN_ON_ONCE(n > st->committed))
		return -EINVAL;
	st->committed -= n;
	r = write_area(st, kept);	/* clears the merged slots; the old terminator was already zero */
	if (r) {
		st->committed = kept;
		return r;
	}
	st->dirty = false;
	st->next_free = area_chunk(st, st->current_area) + st->committed + 1;
	return 0;
}
