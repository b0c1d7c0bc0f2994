#!/bin/sh
# Build (or find in the cache) the Debian 12 guest image for the VM suite.
# usage: image.sh EXTRA_PACKAGES...   prints the cache folder on stdout
#
# The cache is keyed by the package list and by this script itself, so a
# change to either builds a new image and an unchanged one is reused. It
# lives outside the build folder (/var/cache/harvester-vm, or
# $HARVESTER_VM_CACHE) because building it costs a minute or two of
# downloads and `make clean` should not throw that away.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${HARVESTER_VM_CACHE:-/var/cache/harvester-vm}

# What the guest needs besides the harvester package's own dependencies
# (passed in by run.sh): systemd as PID 1, the kernel, and the tools the
# guest test uses (jq for JSON, procps for pgrep, socat for the listener
# that a job must not reach, iproute2 for tc netem on the pool's loopback,
# pocl-opencl-icd for an OpenCL device under the shipped unit).
# The libraries harvester links are listed too, so that the key (and the
# image) stays the same whether the .deb at hand was built with all of them
# or not.
base="systemd systemd-sysv udev dbus kmod linux-image-amd64 jq procps socat
e2fsprogs util-linux mount apt iproute2 libc6 libbpf1 libelf1 zlib1g libseccomp2
libinih1 libjansson4 libsodium23 libsystemd0 libnng1 libprotobuf-c1
ocl-icd-libopencl1 libsqlite3-0 pocl-opencl-icd"

pkgs=$(printf '%s\n' $base "$@" | sort -u | tr '\n' ' ')
key=$( (echo "$pkgs"; cat "$0") | sha256sum | cut -c1-16)
dir=$cache_root/$key

if [ -f "$dir/done" ]; then
	echo "$dir"
	exit 0
fi

mkdir -p "$cache_root"
# Only one builder at a time; a second run waits and then finds it done.
exec 9>"$cache_root/.lock"
flock 9
if [ -f "$dir/done" ]; then
	echo "$dir"
	exit 0
fi

rm -rf "$dir"
mkdir -p "$dir"
root=$dir/root
start=$(date +%s)
echo "image: building $key with: $pkgs" >&2

# The guest's test unit: mounts the second disk (the .deb and the test
# script, made fresh for every run) and runs its entry point. Only this
# stable wrapper is baked into the image, so editing the guest test does
# not rebuild the image.
unit='[Unit]
Description=harvester VM suite
After=multi-user.target
Wants=multi-user.target

[Service]
Type=simple
ExecStart=/bin/sh -c "mkdir -p /mnt/vmtest && mount -o ro /dev/vdb /mnt/vmtest && exec /bin/bash /mnt/vmtest/guest-test.sh"
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStopSec=5

[Install]
WantedBy=multi-user.target'

# The initramfs holds only what this guest needs to mount its root
# (virtio disk, ext4): building Debian's default "most modules" one is most
# of the image build time.
mmdebstrap --quiet --variant=minbase \
	--setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list > "$1/etc/initramfs-tools/conf.d/vmtest"' \
	--include="$(echo "$pkgs" | tr ' ' ',' | sed 's/,$//')" \
	--customize-hook='echo harvester-vm > "$1/etc/hostname"' \
	--customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"' \
	--customize-hook="printf '%s\n' '$unit' > \"\$1/etc/systemd/system/vmtest.service\"" \
	--customize-hook='ln -s /etc/systemd/system/vmtest.service "$1/etc/systemd/system/multi-user.target.wants/vmtest.service"' \
	--customize-hook='ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"' \
	--customize-hook='ln -sf /dev/null "$1/etc/systemd/system/getty@tty1.service"' \
	--customize-hook='ln -sf /dev/null "$1/etc/systemd/system/apt-daily.timer"' \
	--customize-hook='ln -sf /dev/null "$1/etc/systemd/system/apt-daily-upgrade.timer"' \
	--customize-hook='passwd --root "$1" -d root >/dev/null' \
	--customize-hook='printf "%s\n" virtio_pci virtio_blk ext4 >> "$1/etc/initramfs-tools/modules"' \
	--customize-hook='chroot "$1" update-initramfs -u -k all >/dev/null' \
	bookworm "$root" >&2

cp -L "$root"/boot/vmlinuz-* "$dir/vmlinuz"
cp -L "$root"/boot/initrd.img-* "$dir/initrd.img"
mkfs.ext4 -q -L vmroot -d "$root" "$dir/root.ext4" 3G >&2  # it says "Creating regular file" on stdout
rm -rf "$root"
echo "$pkgs" > "$dir/packages"
echo $(( $(date +%s) - start )) > "$dir/build-seconds"
touch "$dir/done"
echo "image: built in $(cat "$dir/build-seconds") s" >&2
echo "$dir"
