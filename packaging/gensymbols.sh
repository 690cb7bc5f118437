#!/bin/sh
# gensymbols.sh LIBRARY [VERSION]: prints packaging/debian/libstagelog0.symbols
# for LIBRARY (a built libstagelog.so.N), every exported symbol introduced in
# VERSION (default: meson's project version).
#
# Each symbol is a (regex) pattern "^NAME@", which matches NAME whatever its
# version node: @Base while the library has no version script, @STAGELOG_0
# once it has one. dpkg-gensymbols still fails the build when a listed
# symbol disappears (its pattern then matches nothing) and lists every new
# one; a version node that changes is the soname's business (the ABI
# baseline in the tree checks it), not this file's. Rerun this after a
# release adds symbols, and give the new ones the version that added them.
set -eu
lib=$1
version=${2:-$(sed -n "s/^  version : '\([^']*\)',\$/\1/p" "$(dirname "$0")/../meson.build" | head -1)}
soname=$(objdump -p "$lib" | sed -n 's/^ *SONAME *//p')
# libstagelog.so.0 -> package libstagelog0
pkg=$(echo "$soname" | sed 's/\.so\./ /' | awk '{print $1 $2}')
echo "$soname $pkg #MINVER#"
echo "* Build-Depends-Package: ${pkg%[0-9]}-dev"
# A version script's node names itself with an absolute symbol, which nm
# prints as STAGELOG_0 and dpkg-gensymbols as STAGELOG_0@STAGELOG_0.
nm -D --defined-only "$lib" | awk '$2 == "A" {sub(/@.*/, "", $3); print $3 "@" $3}' | sort -u |
	while read -r node; do
		printf ' %s %s\n' "$node" "$version"
	done
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWiu]$/ {print $3}' | sed 's/@.*//' | sort -u |
	while read -r sym; do
		printf ' (regex)"^%s@" %s\n' "$sym" "$version"
	done
