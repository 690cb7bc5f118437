#!/bin/sh
# run-mutant.sh MUTANT [HARNESS OPTIONS...]
#
# Copies the tree to a scratch folder, applies one mutation from
# tests/mutants/pl-MUTANT.mut (suite: powerloss; see tests/mutants/mutate.py
# for the format), builds that stagelog with meson and runs the
# power-loss harness against it. The mutant is caught when the harness
# reports at least one violation; each violation names the crash point, the
# seed and the first broken invariant.
#
# The harness itself comes from the normal build (build/ unless $BUILD says
# otherwise): only stagelog is mutated. Without options, the harness runs
# the matrix named on the mutant's "args:" line, which the unmutated code
# passes. Exit: 0 caught, 1 not caught, 77 skipped or pending, 2 error.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD:-$top/build}
say() { printf 'run-mutant: %s\n' "$*" >&2; }

[ $# -ge 1 ] || { echo "usage: run-mutant.sh MUTANT [HARNESS OPTIONS...]" >&2; exit 64; }
name=${1#pl-}
name=pl-$name
shift
file=$top/tests/mutants/$name.mut
[ -f "$file" ] || { say "no such mutant: $name (see tests/mutants/pl-*.mut)"; exit 64; }
harness=$build/tests/powerloss/powerloss
fused=$build/tests/powerloss/pl-fused
[ -x "$harness" ] && [ -x "$fused" ] || { say "build the harness first (./dev build)"; exit 2; }

scratch=$(mktemp -d /dev/shm/stagelog-mutant.XXXXXX)
trap 'rm -rf "$scratch"' EXIT INT TERM
mkdir "$scratch/src"
# The tree as git sees it (tracked and new files, not build folders).
(cd "$top" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$scratch/src"
# The one mutation mechanism of the project (tests/mutants/mutate.py).
python3 "$top/tests/mutants/mutate.py" apply "$name" "$scratch/src" || exit 2

meson setup "$scratch/build" "$scratch/src" -Dtests=false -Dpowerloss=disabled -Dsystemd=false -Dfuzz=disabled \
	>"$scratch/setup.log" 2>&1 || { cat "$scratch/setup.log" >&2; exit 2; }
meson compile -C "$scratch/build" cli/stagelog >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log" >&2; exit 2; }

if [ $# -eq 0 ]; then
	# shellcheck disable=SC2046 # the args line is a list of options
	set -- $(sed -n 's/^args: //p' "$file")
fi
say "$name: powerloss $*"
set +e
"$harness" --stagelog "$scratch/build/cli/stagelog" --fused "$fused" --work "$scratch" "$@"
rc=$?
set -e
case $rc in
1) say "$name: caught"; exit 0 ;;
0) say "$name: NOT caught: the harness found no violation"; exit 1 ;;
77) exit 77 ;;
*) say "$name: harness error ($rc)"; exit 2 ;;
esac
