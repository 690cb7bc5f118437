#!/bin/sh
# deb.sh: the work of ./dev deb (as root, with ./dev's DEB_PKGS installed).
#
# Copies the tree (git's tracked and untracked, not ignored, files) to a
# scratch folder under /var/tmp with packaging/debian as debian/, builds the
# binary packages there with dpkg-buildpackage -us -uc -b, copies them to
# build-deb/, runs lintian on them (an error fails), then install-test.sh.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
say() { printf 'deb: %s\n' "$*" >&2; }

upstream=$(sed -n "s/^  version : '\([^']*\)',\$/\1/p" meson.build | head -1)
version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
case $version in
"$upstream"-*) ;;
*)
	say "packaging/debian/changelog's version $version is not meson's project version $upstream with a Debian revision: add a changelog entry (dch -v $upstream-1)"
	exit 1
	;;
esac

scratch=$(mktemp -d /var/tmp/stagelog-deb.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM
src=$scratch/stagelog-$upstream
mkdir "$src"
git ls-files -z --cached --others --exclude-standard |
	tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$src"
cp -r packaging/debian "$src/debian"

say "dpkg-buildpackage -us -uc -b in $src (log: build-deb/build.log)"
rm -rf build-deb
mkdir build-deb
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >build-deb/build.log 2>&1; then
	tail -40 build-deb/build.log >&2
	say "FAILED: dpkg-buildpackage (build-deb/build.log)"
	exit 1
fi
# New or lost symbols (dpkg-gensymbols fails the build on a lost one).
grep -A20 '^dpkg-gensymbols: warning' build-deb/build.log >&2 || true
for f in "$scratch"/*.deb "$scratch"/*.changes "$scratch"/*.buildinfo; do
	[ -e "$f" ] && cp "$f" build-deb/
done
# The -dbgsym packages (dh_strip's, the Debian way) are kept aside.
mkdir build-deb/dbgsym
mv build-deb/*-dbgsym_*.deb build-deb/dbgsym/
debs=$(ls build-deb/*.deb)
[ "$(echo "$debs" | wc -l)" = 3 ] || { say "expected 3 .deb files, got: $debs"; exit 1; }

# lintian as root says so on stderr; the tags go to stdout. Every warning is
# overridden with a reason (packaging/debian/*.lintian-overrides) or
# explained in packaging/README.md; only an error fails the run.
say "lintian --fail-on error (info tags shown too)"
lintian --fail-on error --display-info --show-overrides "$scratch"/*.changes 2>build-deb/lintian.stderr |
	tee build-deb/lintian.log
rc=$(grep -c '^E: ' build-deb/lintian.log || true)
[ "$rc" = 0 ] || { say "FAILED: lintian reported $rc errors"; exit 1; }

sh packaging/install-test.sh build-deb/*.deb

say "the packages:"
for d in $debs; do
	echo "$top/$d"
done
