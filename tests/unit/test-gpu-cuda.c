/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The CUDA backend where it cannot run: it must build without the toolkit,
 * match the real cuda.h where one exists (checked at compile time, below),
 * and report an absent driver as a normal state with a reason. Runs (and
 * passes) everywhere; test-gpu-cuda-run runs kernels where a GPU exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpu/backend.h"
#include "gpu/cuda-api.h"
#include "gpu/gpu.h"

/*
 * Build-time check of our declarations against the toolkit's cuda.h: every
 * symbol we dlsym() has, in cuda.h, a prototype whose pointer type must be
 * compatible with ours; the handle types must be the same types, and the
 * constants the same values. A mismatch fails the build of this test.
 */
#if __has_include(</usr/local/cuda/include/cuda.h>)
#include </usr/local/cuda/include/cuda.h>
#define CUDA_H_CHECKED 1
#define CHECK(field, symbol, type) \
	_Static_assert(__builtin_types_compatible_p(__typeof__(&symbol), type), \
		       #symbol ": our declaration differs from cuda.h");
GCU_FUNCTIONS(CHECK)
#undef CHECK
_Static_assert(__builtin_types_compatible_p(gcu_result, CUresult), "CUresult");
_Static_assert(__builtin_types_compatible_p(gcu_device, CUdevice), "CUdevice");
_Static_assert(__builtin_types_compatible_p(gcu_deviceptr, CUdeviceptr), "CUdeviceptr");
_Static_assert(__builtin_types_compatible_p(gcu_context, CUcontext), "CUcontext");
_Static_assert(__builtin_types_compatible_p(gcu_module, CUmodule), "CUmodule");
_Static_assert(__builtin_types_compatible_p(gcu_function, CUfunction), "CUfunction");
_Static_assert(__builtin_types_compatible_p(gcu_stream, CUstream), "CUstream");
_Static_assert(__builtin_types_compatible_p(gcu_event, CUevent), "CUevent");
_Static_assert(GCU_SUCCESS == CUDA_SUCCESS, "CUDA_SUCCESS");
_Static_assert(GCU_ERROR_INVALID_VALUE == CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE");
_Static_assert(GCU_ERROR_OUT_OF_MEMORY == CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY");
_Static_assert(GCU_ERROR_NO_DEVICE == CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE");
_Static_assert(GCU_ERROR_INVALID_DEVICE == CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE");
_Static_assert(GCU_ERROR_STUB_LIBRARY == CUDA_ERROR_STUB_LIBRARY, "CUDA_ERROR_STUB_LIBRARY");
_Static_assert(GCU_ERROR_SYSTEM_DRIVER_MISMATCH == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, "driver mismatch");
_Static_assert(GCU_ERROR_INVALID_IMAGE == CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE");
_Static_assert(GCU_ERROR_NO_BINARY_FOR_GPU == CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU");
_Static_assert(GCU_ERROR_INVALID_PTX == CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX");
_Static_assert(GCU_ERROR_UNSUPPORTED_PTX_VERSION == CUDA_ERROR_UNSUPPORTED_PTX_VERSION, "PTX version");
_Static_assert(GCU_ERROR_NOT_FOUND == CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND");
_Static_assert(GCU_ERROR_ILLEGAL_ADDRESS == CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS");
_Static_assert(GCU_ERROR_LAUNCH_TIMEOUT == CUDA_ERROR_LAUNCH_TIMEOUT, "CUDA_ERROR_LAUNCH_TIMEOUT");
_Static_assert(GCU_ERROR_ASSERT == CUDA_ERROR_ASSERT, "CUDA_ERROR_ASSERT");
_Static_assert(GCU_ERROR_HARDWARE_STACK_ERROR == CUDA_ERROR_HARDWARE_STACK_ERROR, "stack error");
_Static_assert(GCU_ERROR_ILLEGAL_INSTRUCTION == CUDA_ERROR_ILLEGAL_INSTRUCTION, "illegal instruction");
_Static_assert(GCU_ERROR_MISALIGNED_ADDRESS == CUDA_ERROR_MISALIGNED_ADDRESS, "misaligned address");
_Static_assert(GCU_ERROR_INVALID_ADDRESS_SPACE == CUDA_ERROR_INVALID_ADDRESS_SPACE, "address space");
_Static_assert(GCU_ERROR_INVALID_PC == CUDA_ERROR_INVALID_PC, "CUDA_ERROR_INVALID_PC");
_Static_assert(GCU_ERROR_LAUNCH_FAILED == CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED");
_Static_assert(GCU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count");
_Static_assert(GCU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "cc");
_Static_assert(GCU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "cc");
_Static_assert(GCU_JIT_ERROR_LOG_BUFFER == CU_JIT_ERROR_LOG_BUFFER, "CU_JIT_ERROR_LOG_BUFFER");
_Static_assert(GCU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, "log size");
_Static_assert(GCU_STREAM_NON_BLOCKING == CU_STREAM_NON_BLOCKING, "CU_STREAM_NON_BLOCKING");
_Static_assert(GCU_EVENT_DEFAULT == CU_EVENT_DEFAULT, "CU_EVENT_DEFAULT");
#else
#define CUDA_H_CHECKED 0
#endif

/* The same for NVML, where its header is installed (the toolkit here has
 * none: then only the driver run checks NVML). */
#if __has_include(<nvml.h>) || __has_include(</usr/local/cuda/include/nvml.h>)
#if __has_include(<nvml.h>)
#include <nvml.h>
#else
#include </usr/local/cuda/include/nvml.h>
#endif
#define NVML_H_CHECKED 1
#define CHECK(field, symbol, type) \
	_Static_assert(__builtin_types_compatible_p(__typeof__(&symbol), \
		       __typeof__(type)) || sizeof(&symbol) == sizeof(type), #symbol);
GNV_FUNCTIONS(CHECK)
#undef CHECK
_Static_assert(sizeof(gnv_process_info) == sizeof(nvmlProcessInfo_t), "nvmlProcessInfo_t");
_Static_assert(sizeof(gnv_process_utilization) == sizeof(nvmlProcessUtilizationSample_t), "samples");
#else
#define NVML_H_CHECKED 0
#endif

static void test_declarations_checked(void **state)
{
	printf("cuda.h declarations check: %s\n", CUDA_H_CHECKED ? "compiled against /usr/local/cuda/include/cuda.h"
				: "skipped at build time: no /usr/local/cuda/include/cuda.h");
	printf("nvml.h declarations check: %s\n", NVML_H_CHECKED ? "compiled against nvml.h" : "no nvml.h here");
	/* 64-bit device pointers are what the driver's _v2 entry points take. */
	assert_int_equal(sizeof(gcu_deviceptr), 8);
	assert_int_equal(sizeof(gnv_process_info), 24);
	assert_int_equal(sizeof(gnv_process_utilization), 32);
}

/* Here: whatever the backend says, it must agree with what dlopen sees,
 * and come with a reason. */
static void test_absent_is_clean(void **state)
{
	struct gpu_device **devs = NULL;
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	int n = gpu_cuda_devices(&devs);

	printf("libcuda.so.1: %s; gpu_cuda_devices: %d (%s)\n", lib ? "loads" : "absent", n,
	       n < 0 ? gpu_cuda_absent_reason(n) : "devices");
	if (!lib) {
		assert_int_equal(n, -ENOENT);
		assert_null(devs);                  /* ret_* untouched on failure */
		assert_non_null(strstr(gpu_cuda_absent_reason(n), "no driver"));
	} else {
		dlclose(lib);
		assert_true(n > 0 || n == -ENODEV || n == -ENOSYS || n == -EIO);
		if (n > 0)
			gpu_devices_free(devs, n);
	}
	/* Asking again gives the same answer (the load is done once). */
	if (n < 0)
		assert_int_equal(gpu_cuda_devices(&devs), n);
	/* NVML absent here as well: -ENOENT, not a crash or a "busy". */
	if (!dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_NOLOAD) && !lib) {
		assert_int_equal(gpu_nvml_others_busy("0000:01:00.0", false), -ENOENT);
	}
}

/* The list of all devices does not fail for an absent backend. */
static void test_devices_find_without_cuda(void **state)
{
	struct gpu_device **all = NULL, **cl = NULL;
	int n = gpu_devices_find(&all), ncl = gpu_opencl_devices(&cl);

	assert_true(n >= 0);
	struct gpu_device **cu = NULL;
	int ncu = gpu_cuda_devices(&cu);
	/* every OpenCL device and every CUDA device, absent backends adding none */
	assert_int_equal(n, (ncl > 0 ? ncl : 0) + (ncu > 0 ? ncu : 0));
	if (ncu > 0)
		gpu_devices_free(cu, ncu);
	for (int i = 0; i < n; i++)
		assert_non_null(gpu_device_get_info(all[i])->id[0] ? all[i] : NULL);
	gpu_devices_free(all, n);
	if (ncl > 0)
		gpu_devices_free(cl, ncl);
}

/* In a fresh process (this program again, re-executed), so the once-only
 * load starts over: a library that is not CUDA is -ENOSYS ("lacks a
 * function"), a missing one -ENOENT. */
static int child_result(const char *libname)
{
	int fds[2], r = 0, status;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char fd[16];
		snprintf(fd, sizeof(fd), "%d", fds[1]);
		setenv("HARVESTER_LIBCUDA", libname, 1);
		execl("/proc/self/exe", "test-gpu-cuda", "--probe", fd, (char *) NULL);
		_exit(127);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &r, sizeof(r)), sizeof(r));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return r;
}

static void test_wrong_library(void **state)
{
	assert_int_equal(child_result("libharvester-no-such-cuda.so.1"), -ENOENT);
	assert_int_equal(child_result("libm.so.6"), -ENOSYS);
	assert_non_null(strstr(gpu_cuda_absent_reason(-ENOSYS), "lacks"));
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--probe") == 0) {
		struct gpu_device **d = NULL;
		int r = gpu_cuda_devices(&d);
		return write(atoi(argv[2]), &r, sizeof(r)) == sizeof(r) ? 0 : 1;
	}

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_declarations_checked),
		cmocka_unit_test(test_absent_is_clean),
		cmocka_unit_test(test_devices_find_without_cuda),
		cmocka_unit_test(test_wrong_library),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
