/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "gpu/slice.h"

void gpu_slicer_init(struct gpu_slicer *s, uint64_t total, uint64_t granule, uint64_t target_ns)
{
	if (granule == 0)
		granule = 1;
	*s = (struct gpu_slicer) {
		.total = total,
		.granule = granule,
		.target_ns = target_ns,
		.chunk = target_ns == 0 ? total : granule,
	};
}

uint64_t gpu_slicer_next(struct gpu_slicer *s, uint64_t *ret_offset)
{
	uint64_t left = s->total - s->next, n = s->chunk < left ? s->chunk : left;

	if (n == 0)
		return 0;
	*ret_offset = s->next;
	s->next += n;
	return n;
}

#define DECAY 0.8   /* weight of a chunk one chunk later */

static void refit(struct gpu_slicer *s)
{
	double mx = s->sx / s->w, my = s->sy / s->w;
	double var = s->sxx / s->w - mx * mx, cov = s->sxy / s->w - mx * my;

	/* Sizes too alike to separate overhead from per-unit cost (chunks
	 * have settled, or one sample): keep the overhead, refit the rest. */
	if (s->samples < 2 || var < 0.0025 * mx * mx) {
		if (s->overhead_ns > my)
			s->overhead_ns = 0;
		s->ns_per_unit = (my - s->overhead_ns) / mx;
		return;
	}
	s->ns_per_unit = cov / var;
	s->overhead_ns = my - s->ns_per_unit * mx;
	if (s->ns_per_unit <= 0 || s->overhead_ns < 0) {
		/* noise: fall back to the plain average, the cautious reading */
		s->overhead_ns = 0;
		s->ns_per_unit = my / mx;
	}
}

void gpu_slicer_account(struct gpu_slicer *s, uint64_t units, uint64_t device_ns)
{
	double x = (double) units, y = (double) (device_ns ? device_ns : 1), budget, want, b, marginal;
	uint64_t n, cap;

	s->accounted += units;
	if (s->target_ns == 0 || units == 0)
		return;

	/* Slower than the model by far: the device changed. Believe the new
	 * time at once (the owner must get the GPU back in time). */
	if (s->samples > 0 && y * 1000 > (s->overhead_ns + s->ns_per_unit * x) * GPU_SLICE_SLOWDOWN_PERMILLE) {
		s->w = s->sx = s->sy = s->sxx = s->sxy = 0;
		s->samples = 0;
		s->overhead_ns = 0;
		s->recent_ns_per_unit = 0;
		s->explored = false;
	}
	s->w = s->w * DECAY + 1;
	s->sx = s->sx * DECAY + x;
	s->sy = s->sy * DECAY + y;
	s->sxx = s->sxx * DECAY + x * x;
	s->sxy = s->sxy * DECAY + x * y;
	s->samples++;
	refit(s);
	if (s->samples >= 2 && s->sxx / s->w - (s->sx / s->w) * (s->sx / s->w) > 0)
		s->explored = true;

	/* The fit smooths over chunks; jitter between chunks it does not see.
	 * So also follow this chunk's own per-unit cost: up at once, down
	 * only gradually (one fast chunk may be luck), and size by whichever
	 * is slower. */
	b = s->ns_per_unit;
	if (s->samples >= 2) {
		marginal = (y - s->overhead_ns) / x;
		if (marginal > 0) {
			if (marginal > s->recent_ns_per_unit)
				s->recent_ns_per_unit = marginal;
			else
				s->recent_ns_per_unit = 0.75 * s->recent_ns_per_unit + 0.25 * marginal;
		}
		if (s->recent_ns_per_unit > b)
			b = s->recent_ns_per_unit;
	}

	budget = (double) s->target_ns * GPU_SLICE_FILL_PERMILLE / 1000.0;
	/* Where a launch alone eats most of the slice, no chunk can keep to
	 * it: give the work a quarter of the budget rather than shrinking to
	 * nothing, which would make the overhead all there is. */
	want = (s->overhead_ns < budget * 3 / 4 ? budget - s->overhead_ns : budget / 4) / b;
	cap = s->chunk * GPU_SLICE_MAX_GROWTH;
	n = want >= (double) cap ? cap : (uint64_t) want;
	/* A chunk under budget grows by at least a granule. And until two
	 * sizes have been seen the fit cannot tell overhead from work: a
	 * single granule over budget would stay the size forever, though
	 * the time might be all launch overhead; try one granule more, once. */
	if ((n <= units && y < budget) || (n < s->granule && !s->explored))
		n = units + s->granule;
	if (n > s->total)
		n = s->total;
	n -= n % s->granule;
	/* One work-group cannot be cut: if even that takes longer than the
	 * target, a chunk of one is the best there is. */
	s->chunk = n < s->granule ? s->granule : n;
}

bool gpu_slicer_finished(const struct gpu_slicer *s)
{
	return s->next >= s->total && s->accounted >= s->total;
}

void gpu_slicer_giveback(struct gpu_slicer *s, uint64_t offset)
{
	if (offset >= s->accounted && offset < s->next)
		s->next = offset;
}
