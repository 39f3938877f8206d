// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The datapath object: sock_ops option I/O, our congestion control, and the SYN option rewriter.
 * They share the maps of datapath_maps.h. */
#include "sockops.h"
#include "congestion.h"
#include "synopts.h"

char LICENSE[] SEC("license") = "GPL";
