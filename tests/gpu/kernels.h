/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Kernels shared by the GPU tests and the benchmark: one computation,
 * scramble(), as OpenCL C and as PTX. Each work-item's result depends on its
 * global id and on `rounds` (the compute-bound knob), so a chunk that ran at
 * the wrong offset, twice or not at all shows in the bytes.
 */
#pragma once

#include <stdint.h>

static const char gpu_test_scramble_cl[] =
	"__kernel void scramble(__global const uint *in, __global uint *out, uint rounds) {\n"
	"	uint i = (uint) get_global_id(0);\n"
	"	uint x = in[i] ^ (i * 2654435761u);\n"
	"	for (uint r = 0; r < rounds; r++)\n"
	"		x = x * 1664525u + 1013904223u + i;\n"
	"	out[i] = x;\n"
	"}\n";

/*
 * The same for CUDA, from nvcc 13 -ptx -arch=compute_75 (.version lowered
 * to 7.0, which ptxas accepts for sm_75 and sm_90, so drivers from CUDA 11.0
 * on can load it). Source:
 *
 *   extern "C" __global__ void scramble(const unsigned *in, unsigned *out, unsigned n,
 *                                       unsigned rounds, unsigned bx, unsigned by, unsigned bz)
 *   {
 *       unsigned i = (blockIdx.x + bx) * blockDim.x + threadIdx.x;
 *       if (i >= n)
 *           return;
 *       unsigned x = in[i] ^ (i * 2654435761u);
 *       for (unsigned r = 0; r < rounds; r++)
 *           x = x * 1664525u + 1013904223u + i;
 *       out[i] = x;
 *   }
 *
 * bx, by, bz are the block offsets the queue appends to every CUDA launch.
 */
static const char gpu_test_scramble_ptx[] =
	".version 7.0\n"
	".target sm_75\n"
	".address_size 64\n"
	"\n"
	"	// .globl	scramble\n"
	"\n"
	".visible .entry scramble(\n"
	"	.param .u64 scramble_param_0,\n"
	"	.param .u64 scramble_param_1,\n"
	"	.param .u32 scramble_param_2,\n"
	"	.param .u32 scramble_param_3,\n"
	"	.param .u32 scramble_param_4,\n"
	"	.param .u32 scramble_param_5,\n"
	"	.param .u32 scramble_param_6\n"
	")\n"
	"{\n"
	"	.reg .pred 	%p<7>;\n"
	"	.reg .b32 	%r<38>;\n"
	"	.reg .b64 	%rd<10>;\n"
	"\n"
	"\n"
	"	ld.param.u64 	%rd2, [scramble_param_0];\n"
	"	ld.param.u64 	%rd3, [scramble_param_1];\n"
	"	ld.param.u32 	%r18, [scramble_param_2];\n"
	"	ld.param.u32 	%r17, [scramble_param_3];\n"
	"	ld.param.u32 	%r19, [scramble_param_4];\n"
	"	mov.u32 	%r20, %ctaid.x;\n"
	"	add.s32 	%r21, %r20, %r19;\n"
	"	mov.u32 	%r22, %ntid.x;\n"
	"	mov.u32 	%r23, %tid.x;\n"
	"	mad.lo.s32 	%r1, %r21, %r22, %r23;\n"
	"	setp.ge.u32 	%p1, %r1, %r18;\n"
	"	@%p1 bra 	$L__BB0_8;\n"
	"\n"
	"	cvta.to.global.u64 	%rd4, %rd2;\n"
	"	cvt.u64.u32 	%rd1, %r1;\n"
	"	mul.wide.u32 	%rd5, %r1, 4;\n"
	"	add.s64 	%rd6, %rd4, %rd5;\n"
	"	mul.lo.s32 	%r24, %r1, -1640531535;\n"
	"	ld.global.u32 	%r25, [%rd6];\n"
	"	xor.b32  	%r37, %r25, %r24;\n"
	"	setp.eq.s32 	%p2, %r17, 0;\n"
	"	@%p2 bra 	$L__BB0_7;\n"
	"\n"
	"	add.s32 	%r3, %r1, 1013904223;\n"
	"	and.b32  	%r36, %r17, 3;\n"
	"	add.s32 	%r27, %r17, -1;\n"
	"	setp.lt.u32 	%p3, %r27, 3;\n"
	"	@%p3 bra 	$L__BB0_5;\n"
	"\n"
	"	sub.s32 	%r32, %r17, %r36;\n"
	"\n"
	"$L__BB0_4:\n"
	"	mad.lo.s32 	%r28, %r37, 1664525, %r3;\n"
	"	mad.lo.s32 	%r29, %r28, 1664525, %r3;\n"
	"	mad.lo.s32 	%r30, %r29, 1664525, %r3;\n"
	"	mad.lo.s32 	%r37, %r30, 1664525, %r3;\n"
	"	add.s32 	%r32, %r32, -4;\n"
	"	setp.ne.s32 	%p4, %r32, 0;\n"
	"	@%p4 bra 	$L__BB0_4;\n"
	"\n"
	"$L__BB0_5:\n"
	"	setp.eq.s32 	%p5, %r36, 0;\n"
	"	@%p5 bra 	$L__BB0_7;\n"
	"\n"
	"$L__BB0_6:\n"
	"	.pragma \"nounroll\";\n"
	"	mad.lo.s32 	%r37, %r37, 1664525, %r3;\n"
	"	add.s32 	%r36, %r36, -1;\n"
	"	setp.ne.s32 	%p6, %r36, 0;\n"
	"	@%p6 bra 	$L__BB0_6;\n"
	"\n"
	"$L__BB0_7:\n"
	"	cvta.to.global.u64 	%rd7, %rd3;\n"
	"	shl.b64 	%rd8, %rd1, 2;\n"
	"	add.s64 	%rd9, %rd7, %rd8;\n"
	"	st.global.u32 	[%rd9], %r37;\n"
	"\n"
	"$L__BB0_8:\n"
	"	ret;\n"
	"\n"
	"}\n"
;

static inline uint32_t gpu_test_scramble_host(uint32_t in, uint32_t i, uint32_t rounds)
{
	uint32_t x = in ^ (i * 2654435761u);
	for (uint32_t r = 0; r < rounds; r++)
		x = x * 1664525u + 1013904223u + i;
	return x;
}

static inline uint32_t gpu_test_input(uint32_t i)
{
	return i * 2246822519u + 3266489917u;
}
