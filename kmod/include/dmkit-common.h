/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shared definitions for every dmkit module: version, log prefix and the build's revert switches.
 */
#ifndef DMKIT_COMMON_H
#define DMKIT_COMMON_H

#include "dmkit-build.h"

#define DMKIT_VERSION_MAJOR 0
#define DMKIT_VERSION_MINOR 1
#define DMKIT_VERSION_PATCH 0
#define DMKIT_VERSION_STRING "0.1.0"

/* True when this build puts the old behaviour of a known fix back (see kmod/reverts.mk). */
#define dmkit_reverted(name) IS_ENABLED(DMKIT_REVERT_##name)

#endif
