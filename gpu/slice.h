/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Chunk sizing for one task: cut a range of units (work-items of the sliced
 * dimension) into chunks that each take at most target_ns of device time,
 * from the times measured on the chunks already run. Pure: the timings are
 * inputs, so tests drive it exactly.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Aim below the target: chunk times jitter (caches, clocks, other queues),
 * and the target is a bound, not an average. */
#define GPU_SLICE_FILL_PERMILLE 750
/* Grow at most this much per chunk: a cold first chunk (code upload, cache
 * misses) overstates the cost, a lucky one understates it. */
#define GPU_SLICE_MAX_GROWTH 4
/* A chunk this much slower than the model predicts means the device
 * changed (clocks, a foreground job): forget the past and refit. */
#define GPU_SLICE_SLOWDOWN_PERMILLE 1500

struct gpu_slicer {
	uint64_t total;        /* units in the range */
	uint64_t granule;      /* chunks are multiples of this (the work-group size) */
	uint64_t target_ns;    /* 0: one chunk, unsliced */
	uint64_t next;         /* first unit not yet handed out */
	uint64_t accounted;    /* units whose time came back */
	uint64_t chunk;        /* size of the next chunk */
	/* The cost model: a chunk of n units takes overhead_ns + n * ns_per_unit
	 * (a launch costs time of its own, which an average per unit would
	 * blame on the units and so shrink the chunks to nothing). Fitted by
	 * least squares over the recent chunks, older ones weighing less. */
	double w, sx, sy, sxx, sxy;
	unsigned samples;
	bool explored;         /* the fit has seen two chunk sizes */
	double overhead_ns, ns_per_unit;
	double recent_ns_per_unit;  /* this chunk's, smoothed: up at once, down slowly */
};

/* total and granule >= 1, total a multiple of granule (the last chunk may
 * still be short of chunk). Starts with one granule: nothing is known yet. */
void gpu_slicer_init(struct gpu_slicer *s, uint64_t total, uint64_t granule, uint64_t target_ns);
/* The next chunk: returns its size in units (0 when all were handed out)
 * and writes its first unit to ret_offset. Hands out consecutive chunks. */
uint64_t gpu_slicer_next(struct gpu_slicer *s, uint64_t *ret_offset);
/* A chunk of units took device_ns: update the estimate and the size of the
 * chunks after it. */
void gpu_slicer_account(struct gpu_slicer *s, uint64_t units, uint64_t device_ns);
/* Every unit was handed out and accounted. */
bool gpu_slicer_finished(const struct gpu_slicer *s);
/* The chunk just handed out was not run (the device turned busy): hand it
 * out again next. */
void gpu_slicer_giveback(struct gpu_slicer *s, uint64_t offset);
