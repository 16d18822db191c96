// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

#include "textflag.h"

// func cpuRelax()
// One PAUSE: tells the core this is a spin-wait loop (it saves power, yields execution resources to a sibling
// hyperthread, and avoids the memory-order mis-speculation penalty when the awaited line changes).
TEXT ·cpuRelax(SB), NOSPLIT|NOFRAME, $0-0
	PAUSE
	RET
