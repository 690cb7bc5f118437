#!/bin/sh
# deb.sh: the work of ./dev deb (as root, with ./dev's DEB_PKGS installed).
#
# Copies the tree (git's tracked and untracked, not ignored, files) to a
# scratch folder under /var/tmp with packaging/debian as debian/, builds the
# binary packages there with dpkg-buildpackage -us -uc -b (and the source
# package, for lintian), copies them to build-deb/, runs lintian on them (an
# error fails), then install-test.sh.
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
# The source package too (3.0 (quilt): the tree as the orig tarball), only
# so that lintian checks debian/ itself (rules, control, copyright).
(cd "$scratch" && tar --sort=name -czf "stagelog_$upstream.orig.tar.gz" "stagelog-$upstream")
cp -r packaging/debian "$src/debian"
(cd "$src" && dpkg-source -b .) >"$scratch/source.log" 2>&1 || { cat "$scratch/source.log" >&2; say "FAILED: dpkg-source -b"; exit 1; }

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
for f in "$scratch"/*.deb "$scratch"/*.changes "$scratch"/*.buildinfo "$scratch"/*.dsc "$scratch"/*.tar.*; do
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
say "lintian --fail-on error on the binary and source packages (info tags and overrides shown too)"
rc=0
lintian --fail-on error --display-info --show-overrides "$scratch"/*.changes "$scratch"/*.dsc \
	>build-deb/lintian.log 2>build-deb/lintian.stderr || rc=$?
cat build-deb/lintian.log
# Not 0: an error tag (lintian 2.116 exits 2 then), or lintian itself
# failed (lintian.stderr).
if [ $rc != 0 ] || grep -q '^E: ' build-deb/lintian.log; then
	cat build-deb/lintian.stderr >&2
	say "FAILED: lintian (exit $rc, $(grep -c '^E: ' build-deb/lintian.log) errors)"
	exit 1
fi

sh packaging/install-test.sh build-deb/*.deb

say "the packages:"
for d in $debs; do
	echo "$top/$d"
done
