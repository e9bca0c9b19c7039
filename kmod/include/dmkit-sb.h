/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The superblock validator shared by dmkit's persistent-data targets (era, clone, cache). Their
 * superblocks all start with the same head (facts §2): a salted crc32c of the rest of the block, flags,
 * the block's own number, a uuid, the target's magic and a format version. What differs per target
 * (name, magic, salt, the versions it reads) is a struct dmkit_sb_kind; the validator finds it from the
 * dm_block_validator it is embedded in. Include it after DM_MSG_PREFIX is defined (it logs with DMERR).
 */
#ifndef DMKIT_SB_H
#define DMKIT_SB_H

#include <linux/crc32.h>
#include <linux/crc32c.h>
#include <linux/device-mapper.h>
#include <linux/stddef.h>

#include "persistent-data/dm-block-manager.h"

struct dmkit_sb_head {
	__le32 csum;
	__le32 flags;
	__le64 blocknr;
	u8 uuid[16];
	__le64 magic;
	__le32 version;
} __packed;

/* A target's superblock struct must start with the head, field for field. */
#define DMKIT_SB_HEAD_CHECK(type)							\
	static_assert(offsetof(type, csum) == offsetof(struct dmkit_sb_head, csum) &&	\
		      offsetof(type, blocknr) == offsetof(struct dmkit_sb_head, blocknr) &&	\
		      offsetof(type, magic) == offsetof(struct dmkit_sb_head, magic) &&	\
		      offsetof(type, version) == offsetof(struct dmkit_sb_head, version))

struct dmkit_sb_validator {
	struct dm_block_validator v;	/* first: what dm_bm_*_lock take */
	const char *target;		/* "era", "clone", "cache": for log lines */
	u64 magic;
	u32 salt;
	u32 min_version;
	u32 max_version;
};

static inline const struct dmkit_sb_validator *dmkit_sb_kind(struct dm_block_validator *v)
{
	return container_of(v, struct dmkit_sb_validator, v);
}

/*
 * The salted crc32c of the block after its csum field, as dm_bm_checksum() computes it (crc32c seeded
 * with ~0, then xor the salt). A superblock fills only its first few hundred bytes and the rest is
 * zero: the CRC of n more zero bytes is the CRC so far times x^(8n) modulo the polynomial, which
 * __crc32c_le_shift() computes in a few dozen steps, so only the used part is fed to crc32c. A commit
 * saves most of a 4 KiB checksum that way, which is measurable where crc32c is slow (emulated CPUs).
 * The block must be 8-byte aligned and sized, as metadata blocks are.
 */
static inline u32 dmkit_sb_checksum(struct dmkit_sb_head *h, size_t block_bytes, u32 salt)
{
	const u64 *words = (const u64 *)h;
	size_t used = block_bytes / sizeof(u64);
	size_t head = offsetof(struct dmkit_sb_head, flags);

	/* Word 0 holds the csum and the flags: the scan stops above it. */
	while (used > 1 && !words[used - 1])
		used--;
	used *= sizeof(u64);
	return __crc32c_le_shift(crc32c(~(u32)0, &h->flags, used - head), block_bytes - used) ^ salt;
}

static inline void dmkit_sb_prepare_for_write(struct dm_block_validator *v, struct dm_block *b,
					      size_t block_bytes)
{
	struct dmkit_sb_head *h = dm_block_data(b);

	h->blocknr = cpu_to_le64(dm_block_location(b));
	h->csum = cpu_to_le32(dmkit_sb_checksum(h, block_bytes, dmkit_sb_kind(v)->salt));
}

static inline int dmkit_sb_check(struct dm_block_validator *v, struct dm_block *b, size_t block_bytes)
{
	const struct dmkit_sb_validator *k = dmkit_sb_kind(v);
	struct dmkit_sb_head *h = dm_block_data(b);
	u64 where = dm_block_location(b);
	u32 version = le32_to_cpu(h->version);

	if (le64_to_cpu(h->blocknr) != where) {
		DMERR("%s superblock in block %llu says it is block %llu", k->target, where,
		      le64_to_cpu(h->blocknr));
		return -ENOTBLK;
	}
	if (le64_to_cpu(h->magic) != k->magic) {
		DMERR("block %llu is not a %s superblock (magic %#llx)", where, k->target,
		      le64_to_cpu(h->magic));
		return -EILSEQ;
	}
	if (le32_to_cpu(h->csum) != dmkit_sb_checksum(h, block_bytes, k->salt)) {
		DMERR("%s superblock in block %llu has a bad checksum", k->target, where);
		return -EILSEQ;
	}
	if (version < k->min_version || version > k->max_version) {
		DMERR("%s metadata version %u is not supported (%u..%u)", k->target, version,
		      k->min_version, k->max_version);
		return -EINVAL;
	}
	return 0;
}

#define DMKIT_SB_VALIDATOR(vname, tname, tmagic, tsalt, vmin, vmax)	\
	static struct dmkit_sb_validator vname = {			\
		.v = {							\
			.name = tname " superblock",			\
			.prepare_for_write = dmkit_sb_prepare_for_write, \
			.check = dmkit_sb_check,			\
		},							\
		.target = tname,					\
		.magic = (tmagic),					\
		.salt = (tsalt),					\
		.min_version = (vmin),					\
		.max_version = (vmax),					\
	}

#endif
