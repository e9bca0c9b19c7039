// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-core: the smallest dmkit target. It proves the build -> load -> create path of the project and
 * that the private persistent-data headers match the running kernel.
 *
 * It is also the lab's counting fault injector: unlike dm-flakey, which fails by the clock, it can fail
 * exactly the Nth write or flush that reaches it, e.g. the one metadata write a commit must not survive.
 *
 * Table:    dmkit-core <dev> <offset in sectors>
 *           Remaps every bio to <dev> starting at <offset>, like linear.
 * Status:   INFO  "<dmkit version> <kernel release> <reverts|-> <selftest: -|pass|fail>
 *                  <writes> <flushes> <fault: off|armed|tripped> <failed>"
 *                  writes: bios carrying data to write (write, FUA write, discard, write zeroes) seen
 *                  flushes: bios with REQ_PREFLUSH seen, empty flushes included
 *                  failed: bios the fault failed or dropped
 *                  (all counted since the table was loaded, faulted ones included)
 *           TABLE "<dev maj:min> <offset>"
 * Messages: ping                  replies "pong"
 *           selftest              checksums a fixed 4 KiB pattern through persistent-data and crc32c,
 *                                 replies "pass <checksum hex>" or "fail <why>"
 *           fault writes <N> <error|drop>
 *                                 N more writes pass; from then on every write fails
 *           fault flushes <N> <error|drop>
 *                                 N more flushes pass; the next flush and every later write or flush fails
 *           fault off             disarm (a tripped fault stops failing)
 *           "error" completes a failed bio with an I/O error (the EIO model); "drop" completes it as if it
 *           had succeeded without sending it on (the power-cut model: nothing after the cut persists).
 *           Reads always pass. Arming again replaces the previous fault.
 *
 * The target advertises a volatile write cache (flush_supported) even over a device without one, such as
 * brd: otherwise the block layer completes flushes before they reach the table and none could be counted.
 */
#include <linux/device-mapper.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/crc32c.h>
#include <linux/kernel.h>
#include <linux/spinlock.h>

#include "dmkit-common.h"
#include "persistent-data/dm-block-manager.h"

#define DM_MSG_PREFIX "dmkit-core"

/* After DM_MSG_PREFIX: it logs with DMERR. */
#include "dmkit-sb.h"

#define SELFTEST_BLOCK_SIZE 4096

/* Used lengths of the superblocks the self-test checksums (the rest of the block zero). */
static const size_t selftest_used[] = { SELFTEST_BLOCK_SIZE, 4093, 333, 256, 9, 8, 5, 0 };

/* Any salt works for the self-test; this one is era's superblock salt, so the check exercises a real one. */
#define SELFTEST_SALT 146538381

enum selftest_state { SELFTEST_NOT_RUN, SELFTEST_PASSED, SELFTEST_FAILED };

/* What an armed fault counts down, and what it does to the bios it fails. */
enum fault_trigger { FAULT_ON_WRITES, FAULT_ON_FLUSHES };
enum fault_action { FAULT_ERROR, FAULT_DROP };
enum fault_state { FAULT_OFF, FAULT_ARMED, FAULT_TRIPPED };

struct core_fault {
	enum fault_state state;
	enum fault_trigger trigger;
	enum fault_action action;
	u64 passes_left;	/* bios of the trigger kind still let through while armed */
};

struct core_target {
	struct dm_dev *dev;
	sector_t offset;
	enum selftest_state selftest;

	/* Protects fault and the counters, so a bio's verdict and the counts it changed agree. */
	spinlock_t lock;
	struct core_fault fault;
	u64 writes_seen;
	u64 flushes_seen;
	u64 failed;
};

static int core_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct core_target *ct;
	unsigned long long offset;
	char trailing;
	int r;

	if (argc != 2) {
		ti->error = "Expected 2 arguments: <dev> <offset>";
		return -EINVAL;
	}
	if (sscanf(argv[1], "%llu%c", &offset, &trailing) != 1 || offset != (sector_t)offset) {
		ti->error = "Invalid offset";
		return -EINVAL;
	}

	ct = kzalloc(sizeof(*ct), GFP_KERNEL);
	if (!ct) {
		ti->error = "Cannot allocate target context";
		return -ENOMEM;
	}
	ct->offset = offset;
	spin_lock_init(&ct->lock);
	ct->fault.state = FAULT_OFF;

	r = dm_get_device(ti, argv[0], dm_table_get_mode(ti->table), &ct->dev);
	if (r) {
		ti->error = "Device lookup failed";
		kfree(ct);
		return r;
	}

	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	ti->num_discard_bios = 1;
	ti->private = ct;
	return 0;
}

static void core_dtr(struct dm_target *ti)
{
	struct core_target *ct = ti->private;

	dm_put_device(ti, ct->dev);
	kfree(ct);
}

static bool bio_writes_data(struct bio *bio)
{
	return op_is_write(bio_op(bio)) && bio_sectors(bio);
}

/* Counts one bio of the kind the armed fault watches; the one past the passes left trips the fault. */
static void fault_counts_down(struct core_fault *f, enum fault_trigger kind)
{
	if (f->state != FAULT_ARMED || f->trigger != kind)
		return;
	if (f->passes_left)
		f->passes_left--;
	else
		f->state = FAULT_TRIPPED;
}

enum fault_verdict { PASS_BIO, FAIL_BIO, DROP_BIO };

/*
 * Counts the bio and decides what happens to it. A data write carrying REQ_PREFLUSH counts as a flush
 * first, then as a write, the order in which the device sees them.
 */
static enum fault_verdict fault_verdict(struct core_target *ct, struct bio *bio)
{
	bool flush = bio->bi_opf & REQ_PREFLUSH;
	bool write = bio_writes_data(bio);
	enum fault_verdict v = PASS_BIO;
	unsigned long flags;

	if (!flush && !write)
		return PASS_BIO;

	spin_lock_irqsave(&ct->lock, flags);
	if (flush) {
		ct->flushes_seen++;
		fault_counts_down(&ct->fault, FAULT_ON_FLUSHES);
	}
	if (write) {
		ct->writes_seen++;
		fault_counts_down(&ct->fault, FAULT_ON_WRITES);
	}
	if (ct->fault.state == FAULT_TRIPPED) {
		ct->failed++;
		v = ct->fault.action == FAULT_DROP ? DROP_BIO : FAIL_BIO;
	}
	spin_unlock_irqrestore(&ct->lock, flags);
	return v;
}

static int core_map(struct dm_target *ti, struct bio *bio)
{
	struct core_target *ct = ti->private;

	switch (fault_verdict(ct, bio)) {
	case FAIL_BIO:
		return DM_MAPIO_KILL;
	case DROP_BIO:
		bio_endio(bio);
		return DM_MAPIO_SUBMITTED;
	case PASS_BIO:
		break;
	}

	bio_set_dev(bio, ct->dev->bdev);
	if (bio_sectors(bio) || op_is_zone_mgmt(bio_op(bio)))
		bio->bi_iter.bi_sector = ct->offset + dm_target_offset(ti, bio->bi_iter.bi_sector);
	return DM_MAPIO_REMAPPED;
}

/*
 * The persistent-data block checksum must equal crc32c(~0) ^ salt over everything after the csum field;
 * a mismatch means the headers we were built with do not describe the running dm-persistent-data.
 */
static int run_selftest(char *result, unsigned int maxlen)
{
	u8 *block;
	u32 via_pdata, via_crc, via_sb;
	size_t i;

	block = kmalloc(SELFTEST_BLOCK_SIZE, GFP_KERNEL);
	if (!block) {
		scnprintf(result, maxlen, "fail no-memory");
		return -ENOMEM;
	}
	for (i = 0; i < SELFTEST_BLOCK_SIZE; i++)
		block[i] = (u8)(i * 7 + 3);

	via_pdata = dm_bm_checksum(block + 4, SELFTEST_BLOCK_SIZE - 4, SELFTEST_SALT);
	via_crc = crc32c(~(u32)0, block + 4, SELFTEST_BLOCK_SIZE - 4) ^ SELFTEST_SALT;
	if (via_pdata != via_crc) {
		kfree(block);
		scnprintf(result, maxlen, "fail checksum %08x != %08x", via_pdata, via_crc);
		return -EIO;
	}

	/*
	 * The superblock checksum skips the block's zero tail (dmkit-sb.h): it must equal the plain one
	 * whatever the used length, down to a block with nothing after the flags.
	 */
	for (i = 0; i < ARRAY_SIZE(selftest_used); i++) {
		memset(block + selftest_used[i], 0, SELFTEST_BLOCK_SIZE - selftest_used[i]);
		via_crc = dmkit_sb_checksum((struct dmkit_sb_head *)block, SELFTEST_BLOCK_SIZE, SELFTEST_SALT);
		via_sb = dm_bm_checksum(block + 4, SELFTEST_BLOCK_SIZE - 4, SELFTEST_SALT);
		if (via_crc != via_sb) {
			kfree(block);
			scnprintf(result, maxlen, "fail superblock checksum over %zu bytes %08x != %08x",
				  selftest_used[i], via_crc, via_sb);
			return -EIO;
		}
	}
	kfree(block);

	scnprintf(result, maxlen, "pass %08x", via_pdata);
	return 0;
}

static const char *core_name(struct dm_target *ti)
{
	return dm_device_name(dm_table_get_md(ti->table));
}

static void set_fault(struct core_target *ct, const struct core_fault *f)
{
	spin_lock_irq(&ct->lock);
	ct->fault = *f;
	spin_unlock_irq(&ct->lock);
}

/* fault off | fault <writes|flushes> <N> <error|drop> (argv[0] is "fault"). */
static int fault_message(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct core_target *ct = ti->private;
	struct core_fault f = { .state = FAULT_ARMED };

	if (argc == 2 && !strcasecmp(argv[1], "off")) {
		f.state = FAULT_OFF;
		set_fault(ct, &f);
		return 0;
	}
	if (argc != 4) {
		DMERR("%s: fault: expected 'off' or '<writes|flushes> <N> <error|drop>', got %u argument(s)",
		      core_name(ti), argc - 1);
		return -EINVAL;
	}

	if (!strcasecmp(argv[1], "writes"))
		f.trigger = FAULT_ON_WRITES;
	else if (!strcasecmp(argv[1], "flushes"))
		f.trigger = FAULT_ON_FLUSHES;
	else {
		DMERR("%s: fault: unknown trigger '%s' (expected writes or flushes)", core_name(ti), argv[1]);
		return -EINVAL;
	}

	if (kstrtou64(argv[2], 10, &f.passes_left)) {
		DMERR("%s: fault: invalid count '%s' (expected a whole number)", core_name(ti), argv[2]);
		return -EINVAL;
	}

	if (!strcasecmp(argv[3], "error"))
		f.action = FAULT_ERROR;
	else if (!strcasecmp(argv[3], "drop"))
		f.action = FAULT_DROP;
	else {
		DMERR("%s: fault: unknown action '%s' (expected error or drop)", core_name(ti), argv[3]);
		return -EINVAL;
	}

	set_fault(ct, &f);
	return 0;
}

static int core_message(struct dm_target *ti, unsigned int argc, char **argv,
			char *result, unsigned int maxlen)
{
	struct core_target *ct = ti->private;
	int r;

	/* Returning 1 tells dm-ioctl that `result` holds a reply for userspace (DM_DATA_OUT). */
	if (argc == 1 && !strcasecmp(argv[0], "ping")) {
		scnprintf(result, maxlen, "pong");
		return 1;
	}
	if (argc == 1 && !strcasecmp(argv[0], "selftest")) {
		r = run_selftest(result, maxlen);
		ct->selftest = r ? SELFTEST_FAILED : SELFTEST_PASSED;
		return 1;
	}
	if (argc >= 1 && !strcasecmp(argv[0], "fault"))
		return fault_message(ti, argc, argv);
	DMERR("%s: unsupported message '%s' with %u argument(s)",
	      core_name(ti), argc ? argv[0] : "", argc);
	return -EINVAL;
}

static const char *selftest_name(enum selftest_state s)
{
	switch (s) {
	case SELFTEST_PASSED:
		return "pass";
	case SELFTEST_FAILED:
		return "fail";
	default:
		return "-";
	}
}

static const char *fault_state_name(enum fault_state s)
{
	switch (s) {
	case FAULT_ARMED:
		return "armed";
	case FAULT_TRIPPED:
		return "tripped";
	default:
		return "off";
	}
}

static void core_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
			char *result, unsigned int maxlen)
{
	struct core_target *ct = ti->private;
	unsigned int sz = 0;
	u64 writes, flushes, failed;
	enum fault_state state;

	switch (type) {
	case STATUSTYPE_INFO:
		spin_lock_irq(&ct->lock);
		writes = ct->writes_seen;
		flushes = ct->flushes_seen;
		failed = ct->failed;
		state = ct->fault.state;
		spin_unlock_irq(&ct->lock);
		DMEMIT("%s %s %s %s %llu %llu %s %llu", DMKIT_VERSION_STRING, DMKIT_KERNEL_RELEASE,
		       DMKIT_REVERTS, selftest_name(ct->selftest), (unsigned long long)writes,
		       (unsigned long long)flushes, fault_state_name(state), (unsigned long long)failed);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %llu", ct->dev->name, (unsigned long long)ct->offset);
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",device_name=%s,start=%llu;", ct->dev->name, (unsigned long long)ct->offset);
		break;
	}
}

static int core_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn, void *data)
{
	struct core_target *ct = ti->private;

	return fn(ti, ct->dev, ct->offset, ti->len, data);
}

static struct target_type core_target_type = {
	.name = "dmkit-core",
	.version = { DMKIT_VERSION_MAJOR, DMKIT_VERSION_MINOR, DMKIT_VERSION_PATCH },
	.features = DM_TARGET_PASSES_INTEGRITY,
	.module = THIS_MODULE,
	.ctr = core_ctr,
	.dtr = core_dtr,
	.map = core_map,
	.status = core_status,
	.message = core_message,
	.iterate_devices = core_iterate_devices,
};

static int __init dmkit_core_init(void)
{
	int r = dm_register_target(&core_target_type);

	if (r)
		DMERR("register failed: %d", r);
	return r;
}

static void __exit dmkit_core_exit(void)
{
	dm_unregister_target(&core_target_type);
}

module_init(dmkit_core_init);
module_exit(dmkit_core_exit);

MODULE_DESCRIPTION(DM_NAME " dmkit core: build and self-test target");
MODULE_AUTHOR("dmkit developers");
MODULE_LICENSE("GPL");
MODULE_VERSION(DMKIT_VERSION_STRING);
