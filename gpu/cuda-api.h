/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The few CUDA driver API and NVML declarations the CUDA backend uses,
 * written here so the package builds without the CUDA toolkit; the
 * libraries are opened at run time. Names are our own (gcu_, gnv_) so this
 * header and the real cuda.h can be included together: tests/unit/
 * test-gpu-cuda.c does, where /usr/local/cuda/include/cuda.h exists, and
 * asserts at compile time that every function type here is compatible
 * with the real prototype of the symbol we dlsym. Struct tags are CUDA's
 * own, so the handle types are the very same types.
 */
#pragma once

#include <stddef.h>

typedef unsigned int gcu_result;   /* CUresult: an enum of non-negative values */
typedef int gcu_device;
typedef unsigned long long gcu_deviceptr;   /* 64-bit builds */
typedef struct CUctx_st *gcu_context;
typedef struct CUmod_st *gcu_module;
typedef struct CUfunc_st *gcu_function;
typedef struct CUstream_st *gcu_stream;
typedef struct CUevent_st *gcu_event;

#define GCU_SUCCESS 0
#define GCU_ERROR_INVALID_VALUE 1
#define GCU_ERROR_OUT_OF_MEMORY 2
#define GCU_ERROR_NO_DEVICE 100
#define GCU_ERROR_INVALID_DEVICE 101
#define GCU_ERROR_INVALID_IMAGE 200
#define GCU_ERROR_NO_BINARY_FOR_GPU 209
#define GCU_ERROR_INVALID_PTX 218
#define GCU_ERROR_UNSUPPORTED_PTX_VERSION 222
#define GCU_ERROR_NOT_FOUND 500
/* A kernel's fault. "This leaves the process in an inconsistent state and
 * any further CUDA work will return the same error. To continue using
 * CUDA, the process must be terminated and relaunched." (cuda.h) */
#define GCU_ERROR_ILLEGAL_ADDRESS 700
#define GCU_ERROR_LAUNCH_TIMEOUT 702
#define GCU_ERROR_ASSERT 710
#define GCU_ERROR_HARDWARE_STACK_ERROR 714
#define GCU_ERROR_ILLEGAL_INSTRUCTION 715
#define GCU_ERROR_MISALIGNED_ADDRESS 716
#define GCU_ERROR_INVALID_ADDRESS_SPACE 717
#define GCU_ERROR_INVALID_PC 718
#define GCU_ERROR_LAUNCH_FAILED 719
#define GCU_ERROR_STUB_LIBRARY 34           /* the toolkit's stub libcuda: no driver */
#define GCU_ERROR_SYSTEM_DRIVER_MISMATCH 803
#define GCU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define GCU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define GCU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define GCU_JIT_ERROR_LOG_BUFFER 5
#define GCU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6
#define GCU_STREAM_NON_BLOCKING 1
#define GCU_EVENT_DEFAULT 0

/* X(field, symbol, type): the symbols as the driver exports them (the
 * versioned names cuda.h's macros map the plain names to). */
#define GCU_FUNCTIONS(X) \
	X(Init, cuInit, gcu_result (*)(unsigned int)) \
	X(DriverGetVersion, cuDriverGetVersion, gcu_result (*)(int *)) \
	X(GetErrorString, cuGetErrorString, gcu_result (*)(gcu_result, const char **)) \
	X(DeviceGetCount, cuDeviceGetCount, gcu_result (*)(int *)) \
	X(DeviceGet, cuDeviceGet, gcu_result (*)(gcu_device *, int)) \
	X(DeviceGetName, cuDeviceGetName, gcu_result (*)(char *, int, gcu_device)) \
	X(DeviceGetAttribute, cuDeviceGetAttribute, gcu_result (*)(int *, unsigned int, gcu_device)) \
	X(DeviceTotalMem, cuDeviceTotalMem_v2, gcu_result (*)(size_t *, gcu_device)) \
	X(DeviceGetPCIBusId, cuDeviceGetPCIBusId, gcu_result (*)(char *, int, gcu_device)) \
	X(DevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, gcu_result (*)(gcu_context *, gcu_device)) \
	X(DevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, gcu_result (*)(gcu_device)) \
	X(CtxSetCurrent, cuCtxSetCurrent, gcu_result (*)(gcu_context)) \
	X(CtxGetStreamPriorityRange, cuCtxGetStreamPriorityRange, gcu_result (*)(int *, int *)) \
	X(ModuleLoadDataEx, cuModuleLoadDataEx, gcu_result (*)(gcu_module *, const void *, unsigned int, unsigned int *, void **)) \
	X(ModuleGetFunction, cuModuleGetFunction, gcu_result (*)(gcu_function *, gcu_module, const char *)) \
	X(ModuleUnload, cuModuleUnload, gcu_result (*)(gcu_module)) \
	X(MemAlloc, cuMemAlloc_v2, gcu_result (*)(gcu_deviceptr *, size_t)) \
	X(MemFree, cuMemFree_v2, gcu_result (*)(gcu_deviceptr)) \
	X(MemcpyHtoD, cuMemcpyHtoD_v2, gcu_result (*)(gcu_deviceptr, const void *, size_t)) \
	X(MemcpyDtoH, cuMemcpyDtoH_v2, gcu_result (*)(void *, gcu_deviceptr, size_t)) \
	X(StreamCreateWithPriority, cuStreamCreateWithPriority, gcu_result (*)(gcu_stream *, unsigned int, int)) \
	X(StreamDestroy, cuStreamDestroy_v2, gcu_result (*)(gcu_stream)) \
	X(StreamSynchronize, cuStreamSynchronize, gcu_result (*)(gcu_stream)) \
	X(EventCreate, cuEventCreate, gcu_result (*)(gcu_event *, unsigned int)) \
	X(EventRecord, cuEventRecord, gcu_result (*)(gcu_event, gcu_stream)) \
	X(EventSynchronize, cuEventSynchronize, gcu_result (*)(gcu_event)) \
	X(EventElapsedTime, cuEventElapsedTime_v2, gcu_result (*)(float *, gcu_event, gcu_event)) \
	X(EventDestroy, cuEventDestroy_v2, gcu_result (*)(gcu_event)) \
	X(LaunchKernel, cuLaunchKernel, gcu_result (*)(gcu_function, unsigned int, unsigned int, unsigned int, \
						       unsigned int, unsigned int, unsigned int, unsigned int, \
						       gcu_stream, void **, void **))

/* Drivers older than CUDA 12.8 export only the unversioned name, with the
 * same type. */
#define GCU_FALLBACK_EventElapsedTime "cuEventElapsedTime"

/* NVML (libnvidia-ml.so.1). */
typedef unsigned int gnv_return;   /* nvmlReturn_t */
typedef struct nvmlDevice_st *gnv_device;
#define GNV_SUCCESS 0
#define GNV_ERROR_NOT_SUPPORTED 3
#define GNV_ERROR_NOT_FOUND 6
#define GNV_ERROR_INSUFFICIENT_SIZE 7

/* nvmlProcessInfo_t of the _v2 and _v3 process queries (API 11 and 12). */
typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId;
	unsigned int computeInstanceId;
} gnv_process_info;

/* nvmlProcessUtilizationSample_t */
typedef struct {
	unsigned int pid;
	unsigned long long timeStamp;
	unsigned int smUtil, memUtil, encUtil, decUtil;
} gnv_process_utilization;

#define GNV_FUNCTIONS(X) \
	X(Init, nvmlInit_v2, gnv_return (*)(void)) \
	X(DeviceGetHandleByPciBusId, nvmlDeviceGetHandleByPciBusId_v2, gnv_return (*)(const char *, gnv_device *)) \
	X(DeviceGetComputeRunningProcesses, nvmlDeviceGetComputeRunningProcesses_v3, \
	  gnv_return (*)(gnv_device, unsigned int *, gnv_process_info *)) \
	X(DeviceGetGraphicsRunningProcesses, nvmlDeviceGetGraphicsRunningProcesses_v3, \
	  gnv_return (*)(gnv_device, unsigned int *, gnv_process_info *)) \
	X(DeviceGetProcessUtilization, nvmlDeviceGetProcessUtilization, \
	  gnv_return (*)(gnv_device, gnv_process_utilization *, unsigned int *, unsigned long long))

/* Drivers before R510 have the _v2 queries, same struct. */
#define GNV_FALLBACK_DeviceGetComputeRunningProcesses "nvmlDeviceGetComputeRunningProcesses_v2"
#define GNV_FALLBACK_DeviceGetGraphicsRunningProcesses "nvmlDeviceGetGraphicsRunningProcesses_v2"
