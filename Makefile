# harvester: one Makefile, out-of-tree builds under $(BUILD).
#
#   make            build harvesterd, harvestctl and the probe
#   make demo       install what it needs, build, run the demo
#   make check      install what it needs, run every test (unit, host, VM)
#   make deb        build the Debian package
#   make vmtest     the VM suite alone
#   make bench      benchmarks beside the real BOINC client (slow; not in check)
#
# SAN=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (make
# check uses it for the unit and host tests, in $(BUILD)/san).

BUILD    ?= build
SAN      ?= 0
VERSION  ?= $(or $(shell awk -F'[()]' 'NR==1 {print $$2}' packaging/debian/changelog 2>/dev/null),0.1.0)
PREFIX   ?= /usr
DESTDIR  ?=

CC       ?= cc
CLANG    ?= clang
BPFTOOL  ?= bpftool
PKGS     := libsystemd libbpf libseccomp inih jansson libsodium

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter \
            -Wshadow -Wformat=2 -Wno-format-truncation -fno-strict-aliasing -D_GNU_SOURCE \
            -DHARVESTER_VERSION='"$(VERSION)"' \
            -DCL_TARGET_OPENCL_VERSION=300 \
            -I. -I$(BUILD) $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS)) -lelf -lz -lm -lOpenCL -ldl -lpthread

ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif

# Library code: every .c of the layer folders, less the BPF programs and the
# three programs' mains. Each layer folder adds its files by existing; nothing
# here needs editing when one is added.
LIB_SRCS := $(filter-out %.bpf.c harvester/harvesterd.c harvester/harvestctl.c harvester/harvester-link.c, \
              $(wildcard bpf/*.c cgroup/*.c harvester/*.c gpu/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)

UNIT_SRCS := $(wildcard tests/unit/test-*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
HOST_SRCS := $(wildcard tests/host/*.c)
HOST_BINS := $(HOST_SRCS:tests/host/%.c=$(BUILD)/tests/host-%)

PROGS := $(BUILD)/harvesterd $(BUILD)/harvestctl $(BUILD)/harvester-link

# The link (net/, a library both ends link) and the pool server (pool/).
PB_SRCS    := $(patsubst net/%.proto,$(BUILD)/net/%.pb-c.c,$(wildcard net/*.proto))
PB_HDRS    := $(PB_SRCS:.c=.h)
NET_OBJS   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard net/*.c)) $(PB_SRCS:.c=.o)
POOL_OBJS  := $(patsubst %.c,$(BUILD)/%.o,$(filter-out pool/harvest-pool.c,$(wildcard pool/*.c)))
NET_LIBS   := -lnng -lsodium -lprotobuf-c -lpthread
POOL_LIBS  := $(NET_LIBS) -lsqlite3 $(shell pkg-config --libs jansson)
NET_TESTS  := $(patsubst tests/net/%.c,$(BUILD)/tests/%,$(wildcard tests/net/test-*.c))
POOL_TESTS := $(patsubst tests/pool/%.c,$(BUILD)/tests/%,$(wildcard tests/pool/test-*.c))
FUZZERS    := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz-*.c))

.PHONY: all pool fuzz bench-pool tests deps-build deps-test demo check check-unit check-host \
        vmtest bench deb install clean bench-gpu bench-probe
.DELETE_ON_ERROR:
# Keep intermediate objects: a second build (or make check after make) reuses them.
.SECONDARY:

all: $(PROGS) pool

pool: $(BUILD)/harvest-pool

tests: $(UNIT_BINS) $(HOST_BINS) $(PROGS) $(NET_TESTS) $(POOL_TESTS) $(BUILD)/tests/pool-worker pool $(FAKES)

# --- BPF: vmlinux.h -> .bpf.o -> .skel.h ------------------------------------
$(BUILD)/vmlinux.h:
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c bpf/*.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_x86 -I. -I$(BUILD) -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@

# --- C ------------------------------------------------------------------------
$(BUILD)/%.o: %.c $(BPF_SKELS) $(PB_HDRS) $(wildcard */*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libharvester.a: $(LIB_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/harvesterd: $(BUILD)/harvester/harvesterd.o $(BUILD)/libharvester.a $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $(NET_LIBS) -o $@

$(BUILD)/harvestctl: $(BUILD)/harvester/harvestctl.o $(BUILD)/libharvester.a
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The node's unprivileged network half: config parser and relay only, so it
# links none of the daemon's BPF, cgroup or OpenCL libraries.
$(BUILD)/harvester-link: $(BUILD)/harvester/harvester-link.o $(BUILD)/libharvester.a $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(shell pkg-config --libs inih libsodium) $(NET_LIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libharvester.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -lutil -o $@

# NVIDIA's driver (CUDA, NVML) cannot exist without the GPU: where there is
# none, the tests load these stand-ins for it (tests/unit/fake-nvml.c,
# tests/unit/fake-cuda.c), and harvesterd does in the pool GPU test.
FAKES := $(BUILD)/tests/fake-nvml/libnvidia-ml.so.1 $(BUILD)/tests/fake-cuda/libcuda.so.1
$(BUILD)/tests/fake-nvml/libnvidia-ml.so.1: tests/unit/fake-nvml.c tests/unit/fake-nvml.h
$(BUILD)/tests/fake-cuda/libcuda.so.1: tests/unit/fake-cuda.c tests/unit/fake-cuda.h
$(FAKES):
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -fPIC -shared -Wl,-soname,$(@F) $< -o $@
$(BUILD)/tests/test-gpu-nvml $(BUILD)/tests/test-gpu-cuda-run: | $(FAKES)

$(BUILD)/tests/host-%: $(BUILD)/tests/host/%.o $(BUILD)/libharvester.a
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lutil -o $@

# GPU queue benchmark: chunk times against the slice, cost of slicing.
$(BUILD)/tests/bench/gpu-bench: tests/bench/gpu-bench.c $(BUILD)/libharvester.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) $^ $(LDLIBS) -o $@

bench-gpu: $(BUILD)/tests/bench/gpu-bench
	$(BUILD)/tests/bench/gpu-bench

# The probe's cost per event (kernel BPF run-time stats), by state of jobs/.
$(BUILD)/tests/bench/baseline.bpf.o: tests/bench/baseline.bpf.c $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_x86 -I. -I$(BUILD) -c $< -o $@

$(BUILD)/tests/bench/baseline.skel.h: $(BUILD)/tests/bench/baseline.bpf.o
	$(BPFTOOL) gen skeleton $< > $@

$(BUILD)/tests/bench/probe-cost: tests/bench/probe-cost.c $(BUILD)/tests/bench/baseline.skel.h $(BUILD)/libharvester.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libharvester.a $(LDLIBS) -o $@

bench-probe: $(BUILD)/tests/bench/probe-cost
	$(BUILD)/tests/bench/probe-cost

# --- the link and the pool -----------------------------------------------------
$(BUILD)/net/%.pb-c.c $(BUILD)/net/%.pb-c.h: net/%.proto
	@mkdir -p $(@D)
	protoc-c --c_out=$(BUILD) $<

$(BUILD)/net/%.pb-c.o: $(BUILD)/net/%.pb-c.c $(PB_HDRS)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libharvester-net.a: $(NET_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/libharvest-pool.a: $(POOL_OBJS)
	$(AR) rcs $@ $^

$(BUILD)/harvest-pool: $(BUILD)/pool/harvest-pool.o $(BUILD)/libharvest-pool.a $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(POOL_LIBS) -o $@

$(NET_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/net/%.o $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(NET_LIBS) -lcmocka -o $@

$(POOL_TESTS): $(BUILD)/tests/%: $(BUILD)/tests/pool/%.o $(BUILD)/libharvest-pool.a $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(POOL_LIBS) -lcmocka -o $@

# A simulated worker for the pool's end-to-end tests.
$(BUILD)/tests/pool-worker: $(BUILD)/tests/pool/worker.o $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(NET_LIBS) -o $@

# Dispatch + result round trips per second, 1 to 1000 simulated workers.
$(BUILD)/tests/bench-pool: $(BUILD)/tests/pool/bench-pool.o $(BUILD)/libharvest-pool.a $(BUILD)/libharvester-net.a
	$(CC) $(LDFLAGS) $^ $(POOL_LIBS) -o $@

# One task a request, then workers that hold 8 and report them together.
bench-pool: $(BUILD)/tests/bench-pool
	$(BUILD)/tests/bench-pool
	$(BUILD)/tests/bench-pool --batch 8

# libFuzzer targets for the decoder: make fuzz, then tests/host/fuzz-link.sh.
fuzz: $(FUZZERS)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/net/link.pb-c.c net/link.c net/link.h
	@mkdir -p $(@D)
	$(CLANG) -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -I. -I$(BUILD) \
	  $< net/link.c $(BUILD)/net/link.pb-c.c -lsodium -lprotobuf-c -o $@

# --- set-up -------------------------------------------------------------------
deps-build:
	@sh packaging/install-deps.sh build

deps-test:
	@sh packaging/install-deps.sh build test vm deb

# --- demo and tests -----------------------------------------------------------
demo: deps-build
	$(MAKE) all
	sh tests/demo.sh $(BUILD)
	sh tests/demo-pool.sh $(BUILD)

check-unit: deps-test
	$(MAKE) BUILD=$(BUILD)/san SAN=1 tests
	sh tests/run.sh unit $(BUILD)/san

check-host: deps-test
	$(MAKE) BUILD=$(BUILD)/san SAN=1 tests
	sh tests/run.sh host $(BUILD)/san

# The VM suite also loads the stand-in CUDA driver into the packaged daemon.
vmtest: deps-test
	$(MAKE) deb $(BUILD)/tests/fake-cuda/libcuda.so.1
	sh tests/vm/run.sh $(BUILD)

check: deps-test
	$(MAKE) BUILD=$(BUILD)/san SAN=1 tests
	$(MAKE) deb $(BUILD)/tests/fake-cuda/libcuda.so.1
	sh tests/run.sh all $(BUILD)/san $(BUILD)

bench: deps-build
	@sh packaging/install-deps.sh bench vm deb
	$(MAKE) all
	$(MAKE) deb
	sh tests/bench/run.sh $(BUILD)

# --- package --------------------------------------------------------------------
deb:
	sh packaging/build-deb.sh $(BUILD)

install: all
	install -D -m 0755 $(BUILD)/harvesterd $(DESTDIR)$(PREFIX)/sbin/harvesterd
	install -D -m 0755 $(BUILD)/harvestctl $(DESTDIR)$(PREFIX)/bin/harvestctl
	install -D -m 0755 $(BUILD)/harvester-link $(DESTDIR)$(PREFIX)/libexec/harvester/harvester-link
	install -D -m 0755 $(BUILD)/harvest-pool $(DESTDIR)$(PREFIX)/bin/harvest-pool

clean:
	rm -rf $(BUILD)
