/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the stand-in libcuda.so.1 (fake-cuda.c) counts, for the tests that
 * load it (found with dlsym). CUDA's driver cannot exist on a machine
 * without an NVIDIA GPU; the stand-in lets the backend's real code path
 * (gpu/cuda.c through the queue and harvesterd) run everywhere. */
#ifndef HARVESTER_FAKE_CUDA_H
#define HARVESTER_FAKE_CUDA_H

struct fake_cuda_stats {
	/* live now */
	unsigned ctx_refs, modules, allocations, streams, events;
	unsigned long long bytes;
	/* since load */
	unsigned launches;
	unsigned no_context;         /* calls refused: no context current on the calling thread */
	unsigned bad_handle;         /* calls refused: a handle that is not live */
	int stream_priority;         /* of the last stream made */
	int least, greatest;         /* the priority range it reports */
	unsigned sticky;             /* the fault every call now returns (0: none) */
};

typedef void fake_cuda_stats_fn(struct fake_cuda_stats *ret);

#endif
