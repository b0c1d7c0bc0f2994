#!/bin/sh
# Install the Debian packages a target needs, quietly and only when missing,
# so repeated runs are fast and work with no network at all.
# usage: install-deps.sh build|test|vm|deb|bench ...
set -eu

build="make gcc clang llvm libbpf-dev bpftool pkg-config libsystemd-dev
libnng-dev libprotobuf-c-dev protobuf-c-compiler ocl-icd-opencl-dev
opencl-headers libsqlite3-dev libsodium-dev libseccomp-dev libinih-dev
libjansson-dev python3"
test="libcmocka-dev libclang-rt-14-dev pocl-opencl-icd nanomsg-utils nng-utils
libnanomsg-dev util-linux procps python3 socat"
vm="mmdebstrap qemu-system-x86 qemu-utils e2fsprogs debhelper lintian
dpkg-dev fakeroot systemd"
deb="debhelper lintian dpkg-dev fakeroot"
bench="rt-tests linux-perf sysbench boinc-client libboinc-app-dev g++ gnuplot-nox
python3 bpftool"

want=""
for g in "$@"; do
	case "$g" in
	build) want="$want $build" ;;
	test) want="$want $test" ;;
	vm) want="$want $vm" ;;
	deb) want="$want $deb" ;;
	bench) want="$want $bench" ;;
	*) echo "install-deps.sh: unknown group '$g' (build, test, vm, deb, bench)" >&2; exit 2 ;;
	esac
done

missing=""
for p in $want; do
	s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$s" = installed ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
