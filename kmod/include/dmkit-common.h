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

/*
 * Test knobs: module parameters that only test builds (make -C kmod KNOBS=1, what the VM lab builds)
 * compile in, to hold a race window open long enough that a test hits it every time. Elsewhere a knob
 * reads as 0 and costs nothing. Declare with DMKIT_TEST_KNOB(name, "what it delays"), read with
 * dmkit_knob(name).
 */
#ifdef DMKIT_TEST_KNOBS
#define DMKIT_TEST_KNOB(name, desc)					\
	static unsigned int name;					\
	module_param(name, uint, 0644);					\
	MODULE_PARM_DESC(name, "test builds only: " desc)
#define dmkit_knob(name) READ_ONCE(name)
#else
#define DMKIT_TEST_KNOB(name, desc)
#define dmkit_knob(name) 0U
#endif

#endif
