#!/bin/sh
# Every GPU check in one run, for a machine with an NVIDIA GPU (and anywhere
# else, where the CUDA parts skip and say why). Under 5 minutes:
#   build, the CUDA declaration check and backend tests, the sliced-kernel
#   checks (CUDA on the GPU, OpenCL on whatever ICD is installed), the
#   chunk-sizing and DRM unit tests, make bench-gpu, and (as root, where
#   harvesterd and harvest-pool build) GPU tasks from a real pool through two
#   real harvesterd workers: tests/host/test_daemon_pool_gpu.py, which runs
#   a PTX task on the GPU and an OpenCL one on any OpenCL device.
# usage: sh tests/gpu/run-on-gpu.sh [BUILD]     (default build/gpu)
# With PREBUILT=1 it runs what BUILD already holds (a machine without the
# build dependencies: tests/gpu/bundle.sh builds it with its libraries in
# BUILD/lib; copy the tree with BUILD). There it also finds the driver's
# libraries where the loader's cache does not list them, and registers the
# NVIDIA OpenCL driver with the ICD loader when no vendor file names it.
set -u
B=${1:-build/gpu}
T0=$(date +%s)
fail=0 skip=0 pass=0 failed=""
say() { printf '%s\n' "== $*"; }

say "machine: $(uname -srm), $(nproc) CPUs"
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv,noheader 2>&1 | sed 's/^/   GPU: /'
	# the driver is here: a CUDA test must not fall back to the stand-in
	export HARVESTER_REQUIRE_CUDA=1
else
	say "no nvidia-smi: the CUDA checks below will skip (no driver)"
fi

# Where the driver's libraries are, on a machine set up for containers.
find_lib() {
	ldconfig -p 2>/dev/null | awk -v l="$1" '$1 == l { print $NF; exit }' | grep . && return
	for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
		[ -e "$d/$1" ] && { echo "$d/$1"; return; }
	done
	return 1
}
if [ "${PREBUILT:-0}" = 1 ]; then
	[ -d "$B/lib" ] && LD_LIBRARY_PATH="$(cd "$B/lib" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	for l in libcuda.so.1 libnvidia-ml.so.1; do
		p=$(find_lib $l) || { say "$l: not found"; continue; }
		say "$l: $p"
		case ":${LD_LIBRARY_PATH:-}:" in *":${p%/*}:"*) ;; *) LD_LIBRARY_PATH="$LD_LIBRARY_PATH:${p%/*}" ;; esac
	done
	export LD_LIBRARY_PATH
	if [ -z "${OCL_ICD_VENDORS:-}" ] && ! grep -qs nvidia /etc/OpenCL/vendors/*.icd &&
	   p=$(find_lib libnvidia-opencl.so.1); then
		OCL_ICD_VENDORS=$(mktemp -d)
		cp /etc/OpenCL/vendors/*.icd "$OCL_ICD_VENDORS/" 2>/dev/null
		echo "$p" >"$OCL_ICD_VENDORS/nvidia.icd"
		export OCL_ICD_VENDORS
		say "OpenCL: registered $p beside $(ls /etc/OpenCL/vendors 2>/dev/null | tr '\n' ' ')"
	fi
fi

BINS="$B/tests/test-gpu-slice $B/tests/test-gpu-queue-mock $B/tests/test-gpu-drm $B/tests/test-gpu-cuda $B/tests/test-gpu-cuda-run $B/tests/test-gpu-queue $B/tests/bench/gpu-bench"
if [ "${PREBUILT:-0}" != 1 ]; then
	say "build ($B)"
	# shellcheck disable=SC2086
	if ! timeout 240 make -s BUILD="$B" $BINS; then
		say "FAIL: build (the build dependencies: packaging/install-deps.sh build test)"
		exit 1
	fi
fi

run() {
	name=$1; shift
	start=$(date +%s)
	out=$(timeout 120 "$@" 2>&1)
	rc=$?
	secs=$(( $(date +%s) - start ))
	case $rc in
	0) pass=$((pass + 1)); say "PASS $name (${secs}s)"; printf '%s\n' "$out" | grep -v '^\[ *\(RUN\|OK\) *\]' | sed 's/^/   /' ;;
	77) skip=$((skip + 1)); say "SKIP $name: $(printf '%s\n' "$out" | tail -n 1)" ;;
	*) fail=$((fail + 1)); failed="$failed $name"; say "FAIL $name (exit $rc, ${secs}s)"; printf '%s\n' "$out" | tail -n 40 | sed 's/^/   /' ;;
	esac
}

# The daemon side needs the whole build (BPF skeleton, NNG, SQLite): where it
# does not build, that check says so and skips; the rest still counts.
POOL_BINS="$B/harvesterd $B/harvestctl $B/harvest-pool"
pool_ok=1
if [ "${PREBUILT:-0}" != 1 ]; then
	say "build the daemon and the pool ($B)"
	# shellcheck disable=SC2086
	timeout 240 make -s BUILD="$B" $POOL_BINS >"$B/pool-build.log" 2>&1 || pool_ok=0
fi
for f in $POOL_BINS; do [ -x "$f" ] || pool_ok=0; done

export HARVESTER_BUILD="$B"
run cuda-declarations-and-absence "$B/tests/test-gpu-cuda"
run cuda-sliced-kernel "$B/tests/test-gpu-cuda-run"
run opencl-sliced-kernel "$B/tests/test-gpu-queue"
run chunk-sizing "$B/tests/test-gpu-slice"
run queue-logic "$B/tests/test-gpu-queue-mock"
run drm-fdinfo "$B/tests/test-gpu-drm"
if [ "$pool_ok" = 1 ]; then
	run pool-gpu-tasks python3 tests/host/test_daemon_pool_gpu.py
else
	skip=$((skip + 1))
	say "SKIP pool-gpu-tasks: harvesterd/harvest-pool did not build here ($(tail -n 3 "$B/pool-build.log" 2>/dev/null | tr '\n' ' '))"
fi

say "make bench-gpu"
if [ "${PREBUILT:-0}" = 1 ]; then
	timeout 150 "$B/tests/bench/gpu-bench"
else
	timeout 150 make -s BUILD="$B" bench-gpu
fi
rc=$?
case $rc in
0) pass=$((pass + 1)) ;;
77) skip=$((skip + 1)); say "SKIP bench-gpu: no OpenCL or CUDA device" ;;
*) fail=$((fail + 1)); failed="$failed bench-gpu"; say "FAIL bench-gpu (exit $rc)" ;;
esac

say "gpu checks: $pass passed, $fail failed, $skip skipped in $(( $(date +%s) - T0 ))s${failed:+ (failed:$failed)}"
[ "$fail" -eq 0 ]
