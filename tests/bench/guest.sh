#!/bin/sh
# make bench, guest arms: boot the VM suite's Debian 12 guest (its cached
# image, with rt-tests, sysbench, linux-perf and boinc-client added; its QMP
# driver) and run guest-bench.sh there. Figures land in
# BUILD/bench/vm/figures. BENCH_QUICK=1: a short run.
# usage: guest.sh BUILD   (exit 77 with a reason when it cannot run)
set -eu
build=${1:-build}
for t in qemu-system-x86_64 mmdebstrap mkfs.ext4 dpkg-deb; do
	command -v "$t" >/dev/null || { echo "guest: $t is not installed"; exit 77; }
done
deb=$(ls "$build"/harvester_*_*.deb 2>/dev/null | grep -v dbgsym | head -n 1 || true)
[ -n "$deb" ] || { echo "guest: no $build/harvester_*.deb (make deb)"; exit 77; }
# The package's runtime dependencies, as tests/vm/run.sh computes them, so
# the image differs from the suite's only by the benchmark's tools.
deps=$(dpkg-deb -f "$deb" Pre-Depends Depends | sed 's/^[A-Za-z-]*: //' | tr ',' '\n' |
	sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' | sort -u)
# The last line: a fresh build also lets mkfs.ext4 speak on stdout.
image=$(sh tests/vm/image.sh $deps rt-tests sysbench linux-perf boinc-client | tail -n 1)
work=$build/bench/vm
rm -rf "$work"
mkdir -p "$work/data"
cp tests/bench/guest-bench.sh "$work/data/guest-test.sh"
cp "$deb" "$build/bench/burn" "$work/data/"
# The BOINC arm: the task built against the BOINC API, and that API's shared
# library (the image has the client, whose package does not carry it).
if [ -x "$build/bench/burn-boinc" ] && [ -e /usr/lib/x86_64-linux-gnu/libboinc_api.so.7 ]; then
	cp "$build/bench/burn-boinc" "$work/data/"
	cp -L /usr/lib/x86_64-linux-gnu/libboinc_api.so.7 "$work/data/"
fi
[ "${BENCH_QUICK:-0}" = 1 ] && touch "$work/data/quick"
mkfs.ext4 -q -L vmtest -d "$work/data" "$work/data.ext4" 64M
exec timeout -k 10 1260 python3 tests/vm/driver.py --image "$image" --data "$work/data.ext4" \
	--workdir "$work" --timeout 1200
