#!/bin/sh
# Build the .debs (harvester: the node; harvester-pool: the pool server)
# with Debian's own tooling and check them with lintian and systemd-analyze.
# usage: build-deb.sh BUILD   (the .debs land in BUILD/)
#
# dpkg-buildpackage wants debian/ at the top of the source tree and writes
# its results into the parent folder, so the build runs on a copy of the
# tree in BUILD/deb/harvester-VERSION with packaging/debian as its debian/:
# the work tree is never touched.
set -eu

build=${1:?usage: build-deb.sh BUILD}
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build"
build=$(cd "$build" && pwd)
version=$(sed -n '1s/.*(\([^)]*\)).*/\1/p' "$top/packaging/debian/changelog")
work=$build/deb
src=$work/harvester-$version

rm -rf "$work"
mkdir -p "$src"
# The files git knows (tracked, or new and not ignored); a tree without git
# (an unpacked tarball) is copied whole, less the build folder.
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
		(cd "$top" && xargs -0 cp --parents -t "$src" 2>/dev/null || true)
	# Deleted but not yet committed files show up in the list: tolerated.
else
	(cd "$top" && tar --exclude=./build --exclude="./${build#"$top"/}" -cf - .) | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"
rm -rf "$src/debian/.debhelper" "$src/debian/harvester" "$src/debian/harvester-pool" "$src/debian/tmp" \
	"$src/debian/files" "$src/debian/debhelper-build-stamp" "$src"/debian/*.substvars

echo "deb: building harvester $version in $src"
(cd "$src" && dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1) || {
	tail -n 60 "$work/build.log"
	echo "deb: dpkg-buildpackage failed (full log: $work/build.log)" >&2
	exit 1
}

pkgs="harvester harvester-pool"
for p in $pkgs; do
	rm -f "$build"/"$p"_*.deb "$build"/"$p"-dbgsym_*.deb
done
rm -f "$build"/harvester_*.changes "$build"/harvester_*.buildinfo
for f in "$work"/harvester_"$version"_*.changes "$work"/harvester_"$version"_*.buildinfo; do
	[ -e "$f" ] && mv "$f" "$build/"
done
debs=""
for p in $pkgs; do
	for f in "$work"/"$p"_"$version"_*.deb "$work"/"$p"-dbgsym_"$version"_*.deb; do
		[ -e "$f" ] && mv "$f" "$build/"
	done
	deb=$(ls "$build"/"$p"_"$version"_*.deb)
	echo "deb: $deb"
	debs="$debs $deb"
done

# The units must pass systemd's own check. On the build machine the
# binaries are not installed, so check copies that point at the packaged
# ones (the VM suite checks the installed units as they are); man pages
# are lintian's.
if command -v systemd-analyze >/dev/null; then
	rm -rf "$work/verify"
	mkdir -p "$work/verify"
	for p in $pkgs; do
		pkgroot=$src/debian/$p
		for u in "$pkgroot"/lib/systemd/system/*.service; do
			sed "s|^ExecStart=/usr/|ExecStart=$pkgroot/usr/|" "$u" >"$work/verify/$(basename "$u")"
		done
	done
	systemd-analyze verify --man=no "$work"/verify/*.service >"$work/verify.log" 2>&1 || true
	if [ -s "$work/verify.log" ]; then
		cat "$work/verify.log"
		echo "deb: systemd-analyze verify is not clean" >&2
		exit 1
	fi
	echo "deb: systemd-analyze verify: clean ($(cd "$work/verify" && echo *.service))"
	for u in "$work"/verify/*.service; do
		systemd-analyze security --offline=yes "$u" 2>/dev/null |
			sed -n 's/^→ Overall exposure level for \(.*\)/deb: security exposure of \1/p'
	done
fi

# lintian: errors fail the build, warnings are shown.
rc=0
# shellcheck disable=SC2086
lintian --fail-on error --tag-display-limit 0 --info $debs \
	"$build"/harvester_"$version"_*.changes >"$work/lintian.log" 2>&1 || rc=$?
cat "$work/lintian.log"
echo "deb: lintian: $(grep -c '^E:' "$work/lintian.log" || true) errors, $(grep -c '^W:' "$work/lintian.log" || true) warnings"
if [ $rc != 0 ]; then
	echo "deb: lintian found errors" >&2
	exit 1
fi
