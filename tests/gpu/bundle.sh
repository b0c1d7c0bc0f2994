#!/bin/sh
# Build what run-on-gpu.sh runs, and put beside it the shared libraries a
# machine without our build dependencies lacks, so that the tree can be
# copied to a bare GPU machine and run there with PREBUILT=1:
#   sh tests/gpu/bundle.sh [BUILD]        (default build/gpu)
#   (copy the checkout and BUILD there)   PREBUILT=1 sh tests/gpu/run-on-gpu.sh BUILD
# BUILD/lib gets every library the binaries link, except the C library's own
# (libc, libm, libpthread, libdl, librt, the dynamic loader): those come from
# the target, whose C library must be at least as new as this one's.
set -eu
B=${1:-build/gpu}
BINS="$B/tests/test-gpu-slice $B/tests/test-gpu-queue-mock $B/tests/test-gpu-drm $B/tests/test-gpu-cuda $B/tests/test-gpu-cuda-run $B/tests/test-gpu-queue $B/tests/bench/gpu-bench $B/harvesterd $B/harvestctl $B/harvest-pool"
# shellcheck disable=SC2086
make -s BUILD="$B" $BINS
rm -rf "$B/lib"
mkdir -p "$B/lib"
# shellcheck disable=SC2086
ldd $BINS | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
while read -r lib; do
	case ${lib##*/} in
	libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) continue ;;
	esac
	cp -L "$lib" "$B/lib/"
done
printf 'bundle: %s, %s libraries in %s/lib (%s)\n' "$(du -sh "$B" | cut -f1)" \
	"$(find "$B/lib" -type f | wc -l)" "$B" "$(ldd --version | head -n 1)"
