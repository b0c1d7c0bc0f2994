#!/bin/sh
# The VM suite: install the harvester .deb in a real Debian 12 guest
# (systemd as PID 1, unified cgroup v2, fentry) under QEMU/TCG, drive it as
# a user would, and check what it does; then the harvester-pool .deb, a
# pool on the guest's loopback and the node's link to it. usage: run.sh BUILD
#
# BUILD/harvester_*.deb and BUILD/harvester-pool_*.deb must exist (make
# vmtest and make check build them first). The guest image is cached in /var/cache/harvester-vm (see
# image.sh); the run's files (serial log, figures) go to BUILD/vm/.
# Exit 0 only if every guest assertion passed; 77 (skip) only when QEMU or
# mmdebstrap is not installed.
set -eu

build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
timeout=${HARVESTER_VM_TIMEOUT:-900}

for t in qemu-system-x86_64 mmdebstrap mkfs.ext4 python3 dpkg-deb; do
	if ! command -v "$t" >/dev/null; then
		echo "vm: $t is not installed (make deps-test installs it)"
		exit 77
	fi
done

deb=$(ls "$build"/harvester_*_*.deb 2>/dev/null | grep -v dbgsym | head -n 1 || true)
if [ -z "$deb" ]; then
	echo "vm: no $build/harvester_*.deb: run make deb first" >&2
	exit 1
fi
pooldeb=$(ls "$build"/harvester-pool_*_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$pooldeb" ]; then
	echo "vm: no $build/harvester-pool_*.deb: run make deb first" >&2
	exit 1
fi
echo "vm: packages $deb $pooldeb"

# The guest image holds the packages' runtime dependencies, so that
# "apt install ./harvester_*.deb" works offline there: first alternative of
# each, without versions.
deps=$(for d in "$deb" "$pooldeb"; do dpkg-deb -f "$d" Pre-Depends Depends; done |
	sed 's/^[A-Za-z-]*: //' | tr ',' '\n' |
	sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' | sort -u)
t0=$(date +%s)
image=$(sh "$here/image.sh" $deps)
t1=$(date +%s)
echo "vm: image $image ($(( t1 - t0 )) s here; built in $(cat "$image/build-seconds") s)"

work=$build/vm
rm -rf "$work"
mkdir -p "$work/data"
# HARVESTER_VM_GUEST: another guest script, for debugging the suite.
cp "${HARVESTER_VM_GUEST:-$here/guest-test.sh}" "$work/data/guest-test.sh"
cp "$here/guest-pool.sh" "$here/guest-gpu.sh" "$work/data/"
cp "$deb" "$pooldeb" "$work/data/"
# The stand-in CUDA driver and the PTX of scramble(), for CUDA pool tasks
# through the packaged daemon (guest-gpu.sh); that part fails without them.
[ -f "$build/tests/fake-cuda/libcuda.so.1" ] && cp "$build/tests/fake-cuda/libcuda.so.1" "$work/data/"
python3 - "$here/../gpu/kernels.h" "$work/data/scramble.ptx" <<'PY'
import re, sys
body = open(sys.argv[1]).read().split("gpu_test_scramble_ptx[] =", 1)[1].split(";\n", 1)[0]
text = "".join(bytes(s, "ascii").decode("unicode_escape") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', body))
open(sys.argv[2], "w").write(text)
PY
[ "${HARVESTER_VM_QUICK:-0}" = 1 ] && touch "$work/data/quick"
mkfs.ext4 -q -L vmtest -d "$work/data" "$work/data.ext4" 64M >&2

# The driver kills QEMU at its own deadline; timeout(1) is the backstop.
rc=0
timeout -k 10 $(( timeout + 60 )) python3 "$here/driver.py" --image "$image" \
	--data "$work/data.ext4" --workdir "$work" --timeout "$timeout" || rc=$?
t2=$(date +%s)

echo "== VM figures"
printf '%-34s %s\n' figure value
if [ $(( t1 - t0 )) -gt 5 ]; then
	printf '%-34s %s\n' image_build_s "$(( t1 - t0 ))"
else
	printf '%-34s %s\n' image_build_s "cached (built in $(cat "$image/build-seconds") s)"
fi
[ -f "$work/figures" ] && awk '{ v = $2; for (i = 3; i <= NF; i++) v = v " " $i; printf "%-34s %s\n", $1, v }' "$work/figures"
printf '%-34s %s\n' suite_total_s "$(( t2 - t0 ))"
echo "== end"
[ $rc = 0 ] || echo "vm: FAILED (serial log: $work/serial.log)"
exit $rc
