/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Devices of every backend, behind one list. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/backend.h"

int gpu_devices_find(struct gpu_device ***ret_devices)
{
	struct gpu_device **cl = NULL, **cu = NULL, **all;
	int ncl, ncu;

	/* An absent backend is a normal state, not an error of the list. */
	ncl = gpu_opencl_devices(&cl);
	if (ncl < 0 && ncl != -ENOENT && ncl != -ENODEV && ncl != -ENOSYS)
		return ncl;
	ncu = gpu_cuda_devices(&cu);
	if (ncu < 0 && ncu != -ENOENT && ncu != -ENODEV && ncu != -ENOSYS) {
		gpu_devices_free(cl, ncl > 0 ? ncl : 0);
		return ncu;
	}
	ncl = ncl > 0 ? ncl : 0;
	ncu = ncu > 0 ? ncu : 0;
	all = calloc(ncl + ncu + 1, sizeof(*all));
	if (!all) {
		gpu_devices_free(cl, ncl);
		gpu_devices_free(cu, ncu);
		return -ENOMEM;
	}
	if (ncl)
		memcpy(all, cl, ncl * sizeof(*all));
	if (ncu)
		memcpy(all + ncl, cu, ncu * sizeof(*all));
	free(cl);
	free(cu);
	*ret_devices = all;
	return ncl + ncu;
}

void gpu_devices_free(struct gpu_device **devices, int n)
{
	if (!devices)
		return;
	for (int i = 0; i < n; i++)
		if (devices[i])
			devices[i]->ops->free(devices[i]);
	free(devices);
}

const struct gpu_device_info *gpu_device_get_info(const struct gpu_device *d)
{
	return &d->info;
}

int gpu_device_others_busy(struct gpu_device *d)
{
	return d->ops->others_busy(d);
}
