/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A stand-in for NVIDIA's CUDA driver (libcuda.so.1): the entry points
 * gpu/cuda.c loads, so the backend's own code (contexts, PTX modules,
 * buffers, launches on a low-priority stream, events) runs through the
 * queue, the tests and harvesterd on a machine with no NVIDIA GPU. The
 * driver cannot exist there; this is the one stand-in for it.
 *
 * What it does, and how it is as strict as the driver's documentation:
 *   - One device, "harvester stand-in GPU", compute capability 7.5.
 *   - Contexts: the primary context only, retained and released; every
 *     call that works "in the current context" (module load, allocation,
 *     stream, event, launch, priority range) refuses with
 *     CUDA_ERROR_INVALID_CONTEXT on a thread where it is not current.
 *   - Modules: PTX text only, checked line by line by a small assembler
 *     (directives, each instruction's opcode and modifiers, the entries'
 *     .param lists); a bad line gets CUDA_ERROR_INVALID_PTX and ptxas-like
 *     words in the JIT's error log buffer, its size option written back.
 *   - Memory: host memory behind device addresses of its own (not host
 *     pointers), filled with 0xa5 as device memory is not zeroed; copies
 *     must lie inside one allocation.
 *   - Launches: grid and block limits, the parameters read by the sizes
 *     of the entry's .param list. The kernel runs, synchronously on the
 *     calling thread, as the C twin of the PTX entry of the same name
 *     (scramble(), tests/gpu/kernels.h; an entry without a twin fails the
 *     launch with CUDA_ERROR_NOT_SUPPORTED), every load and store checked
 *     against the allocations. A stray one is CUDA_ERROR_ILLEGAL_ADDRESS,
 *     sticky as the documentation says: every later call in the process
 *     returns it.
 *   - Device time: the stream keeps a clock that each launch advances by
 *     the thread CPU time its twin took; events read that clock.
 * Types are written out here from the driver API's ABI, not taken from
 * gpu/cuda-api.h, so a mistake there is not repeated here.
 * Environment: FAKE_CUDA_INIT=N makes cuInit return N (100: no device).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake-cuda.h"

#define EXPORT __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum {
	OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, NO_DEVICE = 100,
	INVALID_DEVICE = 101, INVALID_IMAGE = 200, INVALID_CONTEXT = 201, NO_BINARY_FOR_GPU = 209,
	INVALID_PTX = 218, UNSUPPORTED_PTX_VERSION = 222, INVALID_HANDLE = 400, NOT_FOUND = 500,
	ILLEGAL_ADDRESS = 700, NOT_SUPPORTED = 801,
};

#define MAX_PARAMS 32
#define DEVICE_MEM (1ULL << 30)
#define DEVICE_BASE 0x7f0000000000ULL

/* Live modules, streams and events: each starts with a node on its list;
 * a handle is valid while its node is on the list. */
struct node { struct node *next; };
struct CUctx_st { int refs; };
struct entry;
struct CUfunc_st { struct CUmod_st *mod; const struct entry *e; };
struct CUmod_st {
	struct node node;
	unsigned n;
	struct entry {
		char name[128];
		unsigned n_params, size[MAX_PARAMS];
	} *entries;
	struct CUfunc_st *funcs;
};
struct CUstream_st { struct node node; int priority; uint64_t clock_ns; };
struct CUevent_st { struct node node; unsigned flags; int recorded; uint64_t t_ns; };
struct alloc { CUdeviceptr base; size_t size; unsigned char *host; struct alloc *next; };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int initialized;
static struct CUctx_st primary;
static __thread struct CUctx_st *current;
static struct node *modules, *streams, *events;
static struct CUstream_st null_stream;
static struct alloc *allocs;
static CUdeviceptr next_base = DEVICE_BASE;
static struct fake_cuda_stats st = { .least = 0, .greatest = -5 };

static void push(struct node **list, struct node *n)
{
	n->next = *list;
	*list = n;
}

static int live(const struct node *list, const void *x)
{
	for (; list; list = list->next)
		if ((const void *) list == x)
			return 1;
	return 0;
}

/* Take x off the list: 1, or 0 if it was not on it. */
static int unlink_node(struct node **list, const void *x)
{
	for (; *list; list = &(*list)->next)
		if ((const void *) *list == x) {
			*list = (*list)->next;
			return 1;
		}
	return 0;
}

EXPORT void fake_cuda_stats(struct fake_cuda_stats *ret)
{
	pthread_mutex_lock(&lock);
	*ret = st;
	ret->ctx_refs = primary.refs;
	pthread_mutex_unlock(&lock);
}

/* Every call past cuInit: initialized, and no sticky fault. */
static CUresult ready(void)
{
	if (!initialized)
		return NOT_INITIALIZED;
	return st.sticky ? (CUresult) st.sticky : OK;
}

/* ... and a live context current on this thread. */
static CUresult in_context(void)
{
	CUresult r = ready();

	if (r == OK && (!current || current->refs <= 0)) {
		st.no_context++;
		r = INVALID_CONTEXT;
	}
	return r;
}

static CUresult bad_handle(void)
{
	st.bad_handle++;
	return INVALID_HANDLE;
}

#define LOCKED(expr) ({ pthread_mutex_lock(&lock); CUresult _r = (expr); pthread_mutex_unlock(&lock); _r; })

/* --- initialization and the device ------------------------------------------------ */

static CUresult do_init(unsigned flags)
{
	const char *e = getenv("FAKE_CUDA_INIT");

	if (flags)
		return INVALID_VALUE;
	if (e && atoi(e))
		return atoi(e);
	initialized = 1;
	return OK;
}
EXPORT CUresult cuInit(unsigned flags) { return LOCKED(do_init(flags)); }

EXPORT CUresult cuDriverGetVersion(int *v)
{
	if (!v)
		return INVALID_VALUE;
	*v = 12040;
	return OK;
}

EXPORT CUresult cuGetErrorString(CUresult e, const char **s)
{
	static const struct { CUresult e; const char *s; } names[] = {
		{ OK, "no error" }, { INVALID_VALUE, "invalid argument" }, { OUT_OF_MEMORY, "out of memory" },
		{ NOT_INITIALIZED, "initialization error" }, { NO_DEVICE, "no CUDA-capable device is detected" },
		{ INVALID_DEVICE, "invalid device ordinal" }, { INVALID_CONTEXT, "invalid device context" },
		{ INVALID_PTX, "a PTX JIT compilation failed" }, { INVALID_HANDLE, "invalid resource handle" },
		{ NOT_FOUND, "named symbol not found" }, { ILLEGAL_ADDRESS, "an illegal memory access was encountered" },
		{ NOT_SUPPORTED, "operation not supported" },
	};
	if (!s)
		return INVALID_VALUE;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].e == e) {
			*s = names[i].s;
			return OK;
		}
	*s = NULL;
	return INVALID_VALUE;
}

static CUresult device_ok(CUdevice d)
{
	CUresult r = ready();
	return r != OK ? r : d == 0 ? OK : INVALID_DEVICE;
}

EXPORT CUresult cuDeviceGetCount(int *n)
{
	CUresult r = LOCKED(ready());
	if (r == OK && !n)
		return INVALID_VALUE;
	if (r == OK)
		*n = 1;
	return r;
}

EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
	CUresult r = LOCKED(device_ok(ordinal));
	if (r == OK && !d)
		return INVALID_VALUE;
	if (r == OK)
		*d = ordinal;
	return r;
}

static CUresult copy_string(char *buf, int len, const char *s)
{
	if (!buf || len <= 0)
		return INVALID_VALUE;
	snprintf(buf, (size_t) len, "%s", s);
	return OK;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
	CUresult r = LOCKED(device_ok(d));
	return r != OK ? r : copy_string(name, len, "harvester stand-in GPU (fake-cuda)");
}

EXPORT CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice d)
{
	CUresult r = LOCKED(device_ok(d));
	if (r == OK && len < 13)
		return INVALID_VALUE;
	return r != OK ? r : copy_string(id, len, "00000000:fa:00.0");
}

EXPORT CUresult cuDeviceGetAttribute(int *v, int attribute, CUdevice d)
{
	CUresult r = LOCKED(device_ok(d));

	if (r != OK)
		return r;
	if (!v)
		return INVALID_VALUE;
	switch (attribute) {
	case 16: *v = 4; return OK;   /* multiprocessors */
	case 75: *v = 7; return OK;   /* compute capability */
	case 76: *v = 5; return OK;
	default: return INVALID_VALUE;
	}
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
	CUresult r = LOCKED(device_ok(d));
	if (r == OK && !bytes)
		return INVALID_VALUE;
	if (r == OK)
		*bytes = DEVICE_MEM;
	return r;
}

/* --- the primary context ------------------------------------------------------------ */

static void free_all(void);

static CUresult do_retain(struct CUctx_st **ctx, CUdevice d)
{
	CUresult r = device_ok(d);

	if (r != OK)
		return r;
	if (!ctx)
		return INVALID_VALUE;
	primary.refs++;
	*ctx = &primary;
	return OK;
}
EXPORT CUresult cuDevicePrimaryCtxRetain(struct CUctx_st **ctx, CUdevice d) { return LOCKED(do_retain(ctx, d)); }

static CUresult do_release(CUdevice d)
{
	CUresult r = device_ok(d);

	if (r != OK)
		return r;
	if (primary.refs <= 0)
		return INVALID_CONTEXT;
	/* The last release destroys the context and everything in it. */
	if (--primary.refs == 0)
		free_all();
	return OK;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return LOCKED(do_release(d)); }

static CUresult do_set_current(struct CUctx_st *ctx)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	if (ctx && (ctx != &primary || primary.refs <= 0))
		return INVALID_CONTEXT;
	current = ctx;
	return OK;
}
EXPORT CUresult cuCtxSetCurrent(struct CUctx_st *ctx) { return LOCKED(do_set_current(ctx)); }

static CUresult do_priority_range(int *least, int *greatest)
{
	CUresult r = in_context();

	if (r != OK)
		return r;
	if (least)
		*least = st.least;
	if (greatest)
		*greatest = st.greatest;
	return OK;
}
EXPORT CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) { return LOCKED(do_priority_range(least, greatest)); }

/* --- the assembler --------------------------------------------------------------------- */

static const char *const opcodes[] = {
	"ld", "st", "mov", "add", "sub", "mul", "mad", "fma", "div", "rem", "neg", "abs", "min", "max",
	"and", "or", "xor", "not", "shl", "shr", "setp", "selp", "cvt", "cvta", "bra", "ret", "exit",
	"bar", "atom", "red", "call",
};
static const char *const modifiers[] = {
	"u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "b8", "b16", "b32", "b64", "f16", "f32", "f64",
	"pred", "param", "global", "shared", "local", "const", "to", "eq", "ne", "lt", "le", "gt", "ge",
	"lo", "ls", "hi", "hs", "wide", "uni", "rn", "rz", "rm", "rp", "sat", "ftz", "approx", "full",
	"sync", "volatile", "relaxed", "acquire", "release", "nc", "v2", "v4", "add", "min", "max", "and",
	"or", "xor", "cas", "exch", "inc", "dec", "gpu", "sys", "cta",
};

static int known(const char *const *set, size_t n, const char *word, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(set[i]) == len && !strncmp(set[i], word, len))
			return 1;
	return 0;
}
#define KNOWN(set, w, l) known(set, sizeof(set) / sizeof(set[0]), w, l)

struct jit_log { char *buf; size_t size; };

__attribute__((format(printf, 4, 5)))
static CUresult ptx_error(struct jit_log *log, CUresult r, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!log->buf || !log->size)
		return r;
	n = snprintf(log->buf, log->size, "ptxas application ptx input, line %u; error   : ", line);
	if (n >= 0 && (size_t) n < log->size) {
		va_start(ap, fmt);
		vsnprintf(log->buf + n, log->size - n, fmt, ap);
		va_end(ap);
	}
	return r;
}

static unsigned param_size(const char *p)
{
	static const struct { const char *type; unsigned size; } sizes[] = {
		{ ".u64", 8 }, { ".s64", 8 }, { ".b64", 8 }, { ".f64", 8 }, { ".u32", 4 }, { ".s32", 4 },
		{ ".b32", 4 }, { ".f32", 4 }, { ".u16", 2 }, { ".s16", 2 }, { ".b16", 2 }, { ".u8", 1 },
		{ ".s8", 1 }, { ".b8", 1 },
	};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		const char *t = strstr(p, sizes[i].type);
		if (t && (t[strlen(sizes[i].type)] == ' ' || t[strlen(sizes[i].type)] == '\t'))
			return sizes[i].size;
	}
	return 0;
}

/* One instruction (guard, opcode, modifiers), or 0 with the log written. */
static CUresult check_instruction(struct jit_log *log, unsigned line, const char *s)
{
	size_t n;

	if (*s == '@') {                      /* a guard: @%p1 or @!%p1 */
		s += strcspn(s, " \t");
		s += strspn(s, " \t");
	}
	n = strcspn(s, " \t;.");
	if (!KNOWN(opcodes, s, n))
		return ptx_error(log, INVALID_PTX, line, "Unknown instruction '%.*s'", (int) n, s);
	s += n;
	while (*s == '.') {
		s++;
		n = strcspn(s, " \t;.");
		if (!KNOWN(modifiers, s, n))
			return ptx_error(log, INVALID_PTX, line, "Unknown modifier '.%.*s'", (int) n, s);
		s += n;
	}
	if (!strchr(s, ';'))
		return ptx_error(log, INVALID_PTX, line, "syntax error: no ';' after '%s'", s);
	return OK;
}

/* Assemble the PTX text: its entries with their parameter sizes. */
static CUresult assemble(const char *image, struct jit_log *log, struct CUmod_st *m)
{
	enum { TOP, PARAMS, OPEN, BODY } state = TOP;
	char *text = strdup(image);
	unsigned line = 0, depth = 0, version_seen = 0;
	struct entry *e = NULL;
	CUresult r = OK;

	if (!text)
		return OUT_OF_MEMORY;
	for (char *l = text, *next; l && r == OK; l = next) {
		char *c;

		next = strchr(l, '\n');
		if (next)
			*next++ = 0;
		line++;
		if ((c = strstr(l, "//")))
			*c = 0;
		l += strspn(l, " \t\r");
		for (c = l + strlen(l); c > l && strchr(" \t\r", c[-1]); c--)
			*c = 0;
		if (!*l)
			continue;
		switch (state) {
		case TOP:
			if (!strncmp(l, ".version", 8)) {
				unsigned major = 0, minor = 0;
				if (sscanf(l + 8, "%u.%u", &major, &minor) != 2)
					r = ptx_error(log, INVALID_PTX, line, "bad .version '%s'", l);
				else if (major > 8 || (major == 8 && minor > 4))
					r = ptx_error(log, UNSUPPORTED_PTX_VERSION, line,
						      "Unsupported .version%s; current version is '8.4'", l + 8);
				version_seen = 1;
			} else if (!version_seen) {
				r = ptx_error(log, INVALID_PTX, line, "no .version before '%s'", l);
			} else if (!strncmp(l, ".target", 7)) {
				unsigned sm = 0;
				if (sscanf(l + 7, " sm_%u", &sm) != 1 || sm > 75)
					r = ptx_error(log, NO_BINARY_FOR_GPU, line,
						      "SM version specified by .target is higher than the device's (sm_75): '%s'", l);
			} else if (!strncmp(l, ".address_size", 13)) {
				if (atoi(l + 13) != 64)
					r = ptx_error(log, INVALID_PTX, line, "'%s': only 64-bit addresses", l);
			} else if (strstr(l, ".entry ")) {
				char *name = strstr(l, ".entry ") + 7, *paren = strchr(name, '(');
				size_t n = paren ? (size_t) (paren - name) : strcspn(name, " \t");

				if (!n || n >= sizeof(e->name) || m->n >= 16) {
					r = ptx_error(log, INVALID_PTX, line, "bad .entry '%s'", l);
					break;
				}
				e = &m->entries[m->n++];
				memcpy(e->name, name, n);
				e->name[n] = 0;
				state = paren && strchr(paren, ')') ? OPEN : PARAMS;
			} else {
				r = ptx_error(log, INVALID_PTX, line, "syntax error near '%.*s'", (int) strcspn(l, " \t"), l);
			}
			break;
		case PARAMS:
			if (*l == ')') {
				state = OPEN;
			} else if (!strncmp(l, ".param", 6) && param_size(l) && e->n_params < MAX_PARAMS) {
				e->size[e->n_params++] = param_size(l);
				if (strchr(l, ')'))
					state = OPEN;
			} else {
				r = ptx_error(log, INVALID_PTX, line, "bad parameter '%s'", l);
			}
			break;
		case OPEN:
			if (*l != '{')
				r = ptx_error(log, INVALID_PTX, line, "'{' expected, not '%s'", l);
			state = BODY;
			depth = 1;
			break;
		case BODY:
			if (*l == '{') {
				depth++;
			} else if (*l == '}') {
				if (--depth == 0)
					state = TOP;
			} else if (l[strlen(l) - 1] == ':' || *l == '.') {
				;                         /* a label, .reg, .pragma, .loc */
			} else {
				r = check_instruction(log, line, l);
			}
			break;
		}
	}
	if (r == OK && state != TOP)
		r = ptx_error(log, INVALID_PTX, line, "unexpected end of input in '%s'", e ? e->name : "");
	if (r == OK && !version_seen)
		r = ptx_error(log, INVALID_PTX, 1, "no .version");
	free(text);
	return r;
}

/* --- modules ------------------------------------------------------------------------------ */

static CUresult do_module_load(struct CUmod_st **ret, const void *image, unsigned n, const int *options, void **values)
{
	struct jit_log log = { NULL, 0 };
	size_t *size_slot = NULL;
	struct CUmod_st *m;
	CUresult r = in_context();

	if (r != OK)
		return r;
	if (!ret || !image || (n && (!options || !values)))
		return INVALID_VALUE;
	for (unsigned i = 0; i < n; i++) {
		if (options[i] == 5)              /* CU_JIT_ERROR_LOG_BUFFER */
			log.buf = values[i];
		else if (options[i] == 6)         /* CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: in and out */
			size_slot = (size_t *) &values[i];
		else if (options[i] < 0 || options[i] > 30)
			return INVALID_VALUE;
	}
	if (size_slot)
		log.size = (unsigned) (uintptr_t) *size_slot;
	if (log.buf && log.size)
		log.buf[0] = 0;
	if (!memcmp(image, "\177ELF", 4))
		return NO_BINARY_FOR_GPU;         /* a cubin: the stand-in takes PTX only */
	m = calloc(1, sizeof(*m));
	if (!m || !(m->entries = calloc(16, sizeof(*m->entries))) || !(m->funcs = calloc(16, sizeof(*m->funcs)))) {
		if (m)
			free(m->entries);
		free(m);
		return OUT_OF_MEMORY;
	}
	r = assemble(image, &log, m);
	if (size_slot)
		*size_slot = log.buf ? strlen(log.buf) + 1 : 0;
	if (r != OK) {
		free(m->entries);
		free(m->funcs);
		free(m);
		return r;
	}
	push(&modules, &m->node);
	st.modules++;
	*ret = m;
	return OK;
}
EXPORT CUresult cuModuleLoadDataEx(struct CUmod_st **m, const void *image, unsigned n, int *options, void **values)
{
	return LOCKED(do_module_load(m, image, n, options, values));
}


static CUresult do_get_function(struct CUfunc_st **f, struct CUmod_st *m, const char *name)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	if (!f || !name)
		return INVALID_VALUE;
	if (!live(modules, m))
		return bad_handle();
	for (unsigned i = 0; i < m->n; i++)
		if (!strcmp(m->entries[i].name, name)) {
			m->funcs[i] = (struct CUfunc_st) { m, &m->entries[i] };
			*f = &m->funcs[i];
			return OK;
		}
	return NOT_FOUND;
}
EXPORT CUresult cuModuleGetFunction(struct CUfunc_st **f, struct CUmod_st *m, const char *name)
{
	return LOCKED(do_get_function(f, m, name));
}

static void module_free(struct CUmod_st *m)
{
	free(m->entries);
	free(m->funcs);
	free(m);
	st.modules--;
}

static CUresult do_module_unload(struct CUmod_st *m)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	if (!unlink_node(&modules, m))
		return bad_handle();
	module_free(m);
	return OK;
}
EXPORT CUresult cuModuleUnload(struct CUmod_st *m) { return LOCKED(do_module_unload(m)); }

/* --- memory ----------------------------------------------------------------------------------- */

static CUresult do_mem_alloc(CUdeviceptr *p, size_t size)
{
	struct alloc *a;
	CUresult r = in_context();

	if (r != OK)
		return r;
	if (!p || size == 0)
		return INVALID_VALUE;      /* as documented: a size of 0 is an error */
	if (size > DEVICE_MEM - st.bytes)
		return OUT_OF_MEMORY;
	a = calloc(1, sizeof(*a));
	if (!a || !(a->host = malloc(size))) {
		free(a);
		return OUT_OF_MEMORY;
	}
	memset(a->host, 0xa5, size);
	a->size = size;
	a->base = next_base;
	next_base += (size + 511) / 512 * 512 + 512;   /* aligned, a gap between */
	a->next = allocs;
	allocs = a;
	st.allocations++;
	st.bytes += size;
	*p = a->base;
	return OK;
}
EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size) { return LOCKED(do_mem_alloc(p, size)); }

static void alloc_free(struct alloc *a)
{
	st.allocations--;
	st.bytes -= a->size;
	free(a->host);
	free(a);
}

static CUresult do_mem_free(CUdeviceptr p)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	for (struct alloc **q = &allocs; *q; q = &(*q)->next)
		if ((*q)->base == p) {
			struct alloc *a = *q;
			*q = a->next;
			alloc_free(a);
			return OK;
		}
	return INVALID_VALUE;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return LOCKED(do_mem_free(p)); }

/* Host memory of [p, p + n) if it lies inside one allocation, else NULL. */
static unsigned char *translate(CUdeviceptr p, size_t n)
{
	for (struct alloc *a = allocs; a; a = a->next)
		if (p >= a->base && p - a->base <= a->size && n <= a->size - (p - a->base))
			return a->host + (p - a->base);
	return NULL;
}

static CUresult do_copy(void *host, CUdeviceptr dev, size_t n, int to_device)
{
	unsigned char *d;
	CUresult r = ready();

	if (r != OK)
		return r;
	if (!host || !(d = translate(dev, n)))
		return INVALID_VALUE;
	if (to_device)
		memcpy(d, host, n);
	else
		memcpy(host, d, n);
	return OK;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { return LOCKED(do_copy((void *) src, dst, n, 1)); }
EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { return LOCKED(do_copy(dst, src, n, 0)); }

/* --- streams and events ------------------------------------------------------------------------ */

static CUresult do_stream_create(struct CUstream_st **ret, unsigned flags, int priority)
{
	struct CUstream_st *s;
	CUresult r = in_context();

	if (r != OK)
		return r;
	if (!ret || flags > 1)
		return INVALID_VALUE;
	s = calloc(1, sizeof(*s));
	if (!s)
		return OUT_OF_MEMORY;
	/* out of the range: clamped, as the driver does */
	s->priority = priority > st.least ? st.least : priority < st.greatest ? st.greatest : priority;
	push(&streams, &s->node);
	st.streams++;
	st.stream_priority = s->priority;
	*ret = s;
	return OK;
}
EXPORT CUresult cuStreamCreateWithPriority(struct CUstream_st **s, unsigned flags, int priority)
{
	return LOCKED(do_stream_create(s, flags, priority));
}

/* The stream a handle names (NULL: the legacy default stream), or NULL. */
static struct CUstream_st *stream_of(struct CUstream_st *s)
{
	return !s ? &null_stream : live(streams, s) ? s : NULL;
}

static CUresult do_stream_destroy(struct CUstream_st *s)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	if (!unlink_node(&streams, s))
		return bad_handle();
	free(s);
	st.streams--;
	return OK;
}
EXPORT CUresult cuStreamDestroy_v2(struct CUstream_st *s) { return LOCKED(do_stream_destroy(s)); }

static CUresult do_stream_sync(struct CUstream_st *s)
{
	CUresult r = ready();
	return r != OK ? r : stream_of(s) ? OK : bad_handle();
}
EXPORT CUresult cuStreamSynchronize(struct CUstream_st *s) { return LOCKED(do_stream_sync(s)); }

static CUresult do_event_create(struct CUevent_st **ret, unsigned flags)
{
	struct CUevent_st *e;
	CUresult r = in_context();

	if (r != OK)
		return r;
	if (!ret || flags > 7)
		return INVALID_VALUE;
	e = calloc(1, sizeof(*e));
	if (!e)
		return OUT_OF_MEMORY;
	e->flags = flags;
	push(&events, &e->node);
	st.events++;
	*ret = e;
	return OK;
}
EXPORT CUresult cuEventCreate(struct CUevent_st **e, unsigned flags) { return LOCKED(do_event_create(e, flags)); }


static CUresult do_event_record(struct CUevent_st *e, struct CUstream_st *s)
{
	CUresult r = ready();
	struct CUstream_st *str;

	if (r != OK)
		return r;
	if (!live(events, e) || !(str = stream_of(s)))
		return bad_handle();
	e->recorded = 1;
	e->t_ns = str->clock_ns;
	return OK;
}
EXPORT CUresult cuEventRecord(struct CUevent_st *e, struct CUstream_st *s) { return LOCKED(do_event_record(e, s)); }

static CUresult do_event_sync(struct CUevent_st *e)
{
	CUresult r = ready();
	return r != OK ? r : live(events, e) ? OK : bad_handle();
}
EXPORT CUresult cuEventSynchronize(struct CUevent_st *e) { return LOCKED(do_event_sync(e)); }

static CUresult do_elapsed(float *ms, struct CUevent_st *a, struct CUevent_st *b)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	if (!ms)
		return INVALID_VALUE;
	/* unrecorded, or made with CU_EVENT_DISABLE_TIMING (2) */
	if (!live(events, a) || !live(events, b) || !a->recorded || !b->recorded || ((a->flags | b->flags) & 2))
		return bad_handle();
	*ms = (float) (((double) b->t_ns - (double) a->t_ns) / 1e6);
	return OK;
}
EXPORT CUresult cuEventElapsedTime_v2(float *ms, struct CUevent_st *a, struct CUevent_st *b)
{
	return LOCKED(do_elapsed(ms, a, b));
}

static CUresult do_event_destroy(struct CUevent_st *e)
{
	CUresult r = ready();

	if (r != OK)
		return r;
	if (!unlink_node(&events, e))
		return bad_handle();
	free(e);
	st.events--;
	return OK;
}
EXPORT CUresult cuEventDestroy_v2(struct CUevent_st *e) { return LOCKED(do_event_destroy(e)); }

/* --- launches ------------------------------------------------------------------------------------ */

struct launch {
	unsigned grid[3], block[3];
	unsigned char params[MAX_PARAMS][8];
	int fault;                 /* a load or store outside every allocation */
};

static uint32_t load32(struct launch *l, CUdeviceptr p)
{
	unsigned char *h = translate(p, 4);
	uint32_t v = 0;

	if (!h)
		l->fault = 1;
	else
		memcpy(&v, h, 4);
	return v;
}

static void store32(struct launch *l, CUdeviceptr p, uint32_t v)
{
	unsigned char *h = translate(p, 4);

	if (!h)
		l->fault = 1;
	else
		memcpy(h, &v, 4);
}

#define P64(l, i) (*(uint64_t *) (l)->params[i])
#define P32(l, i) (*(uint32_t *) (l)->params[i])

/* scramble(in, out, n, rounds, bx, by, bz) of tests/gpu/kernels.h */
static void twin_scramble(struct launch *l)
{
	uint32_t n = P32(l, 2), rounds = P32(l, 3), bx = P32(l, 4);

	for (uint32_t b = 0; b < l->grid[0] && !l->fault; b++)
		for (uint32_t t = 0; t < l->block[0] && !l->fault; t++) {
			uint32_t i = (b + bx) * l->block[0] + t, x;

			if (i >= n)
				continue;
			x = load32(l, P64(l, 0) + 4ULL * i) ^ (i * 2654435761u);
			for (uint32_t r = 0; r < rounds; r++)
				x = x * 1664525u + 1013904223u + i;
			store32(l, P64(l, 1) + 4ULL * i, x);
		}
}

static const struct twin {
	const char *name;
	unsigned n_params, size[MAX_PARAMS];
	void (*run)(struct launch *l);
} twins[] = {
	{ "scramble", 7, { 8, 8, 4, 4, 4, 4, 4 }, twin_scramble },
};

static uint64_t thread_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static CUresult do_launch(struct CUfunc_st *f, const unsigned grid[3], const unsigned block[3], unsigned shared,
			  struct CUstream_st *s, void **params, void **extra)
{
	const struct twin *tw = NULL;
	struct CUstream_st *str;
	struct launch l = {};
	uint64_t t0;
	CUresult r = in_context();

	if (r != OK)
		return r;
	if (!f || !live(modules, f->mod) || !(str = stream_of(s)))
		return bad_handle();
	if (grid[0] < 1 || grid[1] < 1 || grid[2] < 1 || grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535 ||
	    block[0] < 1 || block[1] < 1 || block[2] < 1 || block[0] > 1024 || block[1] > 1024 || block[2] > 64 ||
	    (unsigned long long) block[0] * block[1] * block[2] > 1024 || shared > 48 * 1024 || extra ||
	    (f->e->n_params && !params))
		return INVALID_VALUE;
	for (unsigned i = 0; i < f->e->n_params; i++) {
		if (!params[i])
			return INVALID_VALUE;
		memcpy(l.params[i], params[i], f->e->size[i]);
	}
	for (size_t i = 0; i < sizeof(twins) / sizeof(twins[0]); i++)
		if (!strcmp(twins[i].name, f->e->name) && twins[i].n_params == f->e->n_params &&
		    !memcmp(twins[i].size, f->e->size, sizeof(unsigned) * f->e->n_params))
			tw = &twins[i];
	if (!tw) {
		fprintf(stderr, "fake-cuda: no C twin for the kernel %s with these parameters\n", f->e->name);
		return NOT_SUPPORTED;
	}
	memcpy(l.grid, grid, sizeof(l.grid));
	memcpy(l.block, block, sizeof(l.block));
	st.launches++;
	t0 = thread_ns();
	tw->run(&l);
	str->clock_ns += thread_ns() - t0 + 3000;    /* and a launch's few microseconds */
	if (l.fault)
		st.sticky = ILLEGAL_ADDRESS;      /* asynchronous: the launch itself succeeds */
	return OK;
}

EXPORT CUresult cuLaunchKernel(struct CUfunc_st *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
			       unsigned bz, unsigned shared, struct CUstream_st *s, void **params, void **extra)
{
	const unsigned grid[3] = { gx, gy, gz }, block[3] = { bx, by, bz };
	return LOCKED(do_launch(f, grid, block, shared, s, params, extra));
}

/* Streams and events: a node and nothing else to free. */
static void free_list(struct node **list, unsigned *count)
{
	while (*list) {
		struct node *n = *list;
		*list = n->next;
		free(n);
		(*count)--;
	}
}

/* The context's end: everything in it goes. */
static void free_all(void)
{
	while (modules) {
		struct CUmod_st *m = (struct CUmod_st *) modules;
		modules = modules->next;
		module_free(m);
	}
	while (allocs) {
		struct alloc *a = allocs;
		allocs = a->next;
		alloc_free(a);
	}
	free_list(&streams, &st.streams);
	free_list(&events, &st.events);
}
