// SPDX-License-Identifier: GPL-2.0-only
/*
 * dmkit-core: the smallest dmkit target. It proves the build -> load -> create path of the project and
 * that the private persistent-data headers match the running kernel.
 *
 * Table:    dmkit-core <dev> <offset in sectors>
 *           Remaps every bio to <dev> starting at <offset>, like linear.
 * Status:   INFO  "<dmkit version> <kernel release> <reverts|-> <selftest: -|pass|fail>"
 *           TABLE "<dev maj:min> <offset>"
 * Messages: ping                  replies "pong"
 *           selftest              checksums a fixed 4 KiB pattern through persistent-data and crc32c,
 *                                 replies "pass <checksum hex>" or "fail <why>"
 */
#include <linux/device-mapper.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/crc32c.h>

#include "dmkit-common.h"
#include "persistent-data/dm-block-manager.h"

#define DM_MSG_PREFIX "dmkit-core"

#define SELFTEST_BLOCK_SIZE 4096
/* Any salt works for the self-test; this one is era's superblock salt, so the check exercises a real one. */
#define SELFTEST_SALT 146538381

enum selftest_state { SELFTEST_NOT_RUN, SELFTEST_PASSED, SELFTEST_FAILED };

struct core_target {
	struct dm_dev *dev;
	sector_t offset;
	enum selftest_state selftest;
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

	r = dm_get_device(ti, argv[0], dm_table_get_mode(ti->table), &ct->dev);
	if (r) {
		ti->error = "Device lookup failed";
		kfree(ct);
		return r;
	}

	ti->num_flush_bios = 1;
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

static int core_map(struct dm_target *ti, struct bio *bio)
{
	struct core_target *ct = ti->private;

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
	u32 via_pdata, via_crc;
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
	kfree(block);

	if (via_pdata != via_crc) {
		scnprintf(result, maxlen, "fail checksum %08x != %08x", via_pdata, via_crc);
		return -EIO;
	}
	scnprintf(result, maxlen, "pass %08x", via_pdata);
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
	DMERR("%s: unsupported message '%s' with %u argument(s)",
	      dm_device_name(dm_table_get_md(ti->table)), argc ? argv[0] : "", argc);
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

static void core_status(struct dm_target *ti, status_type_t type, unsigned int status_flags,
			char *result, unsigned int maxlen)
{
	struct core_target *ct = ti->private;
	unsigned int sz = 0;

	switch (type) {
	case STATUSTYPE_INFO:
		DMEMIT("%s %s %s %s", DMKIT_VERSION_STRING, DMKIT_KERNEL_RELEASE, DMKIT_REVERTS,
		       selftest_name(ct->selftest));
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
