#!/bin/sh
# SPDX-License-Identifier: MIT
# format-check.sh [--report-only] [SOURCE_DIR]: the C sources are formatted
# as .clang-format says (clang-format --dry-run -Werror), file by file.
#
# The sources: every .c and .h that git tracks under basic/ store/ stage/
# oci/ recover/ cli/ tests/ (every one found there outside git). Prints each
# file that differs with the number of its lines clang-format would change;
# exits 1 when one does, 0 when none does, and 77 (meson's skip) when
# clang-format is not installed (./dev installs it: PKGS). --report-only
# prints the same and exits 0: the check's mode until the tree is
# reformatted (README.md, "Tests").
set -eu
report_only=0
if [ "${1:-}" = --report-only ]; then
	report_only=1
	shift
fi
cd "${1:-$(dirname "$0")/../..}"

if ! command -v clang-format >/dev/null 2>&1; then
	echo "format: SKIP: clang-format is not installed (apt-get install clang-format, or ./dev as root)"
	exit 77
fi
echo "format: $(clang-format --version) with $(pwd)/.clang-format"

dirs="basic store stage oci recover cli tests"
if [ -d .git ] || [ -f .git ]; then
	# shellcheck disable=SC2086 # a list of folders
	files=$(git ls-files -- $dirs | grep -E '\.[ch]$' || true)
else
	# shellcheck disable=SC2086
	files=$(find $dirs -type f \( -name '*.c' -o -name '*.h' \) | sort)
fi

bad=0
lines=0
for f in $files; do
	if ! clang-format --style=file --dry-run -Werror "$f" >/dev/null 2>&1; then
		n=$(clang-format --style=file "$f" | diff "$f" - | grep -c '^<' || true)
		echo "format: $f: $n lines differ"
		bad=$((bad + 1))
		lines=$((lines + n))
	fi
done
total=$(echo "$files" | wc -w)
if [ "$bad" -eq 0 ]; then
	echo "format: all $total files are formatted"
	exit 0
fi
echo "format: $bad of $total files differ ($lines lines); see them with: clang-format FILE | diff FILE -"
if [ "$report_only" = 1 ]; then
	echo "format: report only: the tree is reformatted at the end of issue 19 (README.md, \"Tests\")"
	exit 0
fi
echo "format: to reformat: clang-format -i FILE..."
exit 1
