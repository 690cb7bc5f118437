#!/bin/sh
# in-overlay.sh: install-test.sh's test, run inside the overlay on a fresh
# Debian 12 minbase (/mnt/debs: the three packages; /mnt/src: the tree;
# /mnt/upper: the overlay's upper folder; /mnt/lower: the pristine minbase;
# all read-only). Installs the packages with apt-get (dependencies from
# Debian's mirror), uses them as an operator and a C programmer would,
# purges them and checks that nothing is left.
set -eu
say() { printf 'in-overlay: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
# A step that fails without a message of its own (set -e) is still said.
# shellcheck disable=SC2154 # rc is the trap's own
trap 'rc=$?; [ $rc = 0 ] || say "FAILED: exit $rc"' EXIT
PKGS="stagelog libstagelog-dev libstagelog0"

# What the test itself needs, installed before the "before" listings so that
# they do not count as leftovers: a C compiler and pkg-config for the
# README's example, and systemd-tmpfiles (a minbase has no systemd) so that
# the package's tmpfiles.d snippet is applied on install, as on a real host.
say "apt-get update; apt-get install gcc libc6-dev pkgconf systemd-standalone-tmpfiles"
apt-get update -qq
apt-get install -y -qq --no-install-recommends gcc libc6-dev pkgconf systemd-standalone-tmpfiles >/tmp/apt-pre.log 2>&1 ||
	{ tail -20 /tmp/apt-pre.log >&2; fail "apt-get install of the test's tools"; }
apt-get clean

# The file system as it is, and the overlay's upper folder (what this
# overlay changed in the pristine minbase), before the packages.
listing() { find / -xdev -mindepth 1 | sort; }
upper() { (cd /mnt/upper && find . -mindepth 1 | sort); }
listing >/tmp/fs.before
upper >/tmp/upper.before

say "apt-get install /mnt/debs/*.deb"
apt-get install -y --no-install-recommends /mnt/debs/*.deb >/tmp/apt-install.log 2>&1 ||
	{ tail -30 /tmp/apt-install.log >&2; fail "apt-get install of the packages"; }
for p in $PKGS; do
	dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' "$p" | grep -q '^ii ' || fail "$p is not installed"
done
# shellcheck disable=SC2086 # a list of package names
dpkg -L $PKGS | sort -u >/tmp/pkg-files

# The tmpfiles.d snippet was applied: root's staging root and store folder.
for d in /run/stagelog /var/lib/stagelog; do
	[ "$(stat -c '%F %a %U' "$d" 2>/dev/null)" = "directory 700 root" ] ||
		fail "$d is not a 0700 directory of root's after install (tmpfiles.d not applied): $(stat -c '%F %a %U' "$d" 2>&1)"
done
# dh_installsystemd enabled the system unit; the user unit and the template
# are not enabled.
wants=/etc/systemd/system/multi-user.target.wants/stagelog-recover.service
[ "$(readlink "$wants")" = /lib/systemd/system/stagelog-recover.service ] ||
	fail "stagelog-recover.service is not enabled ($wants: $(readlink "$wants" || echo missing))"
enabled=$(find /etc/systemd -name 'stagelog-recover*' | sort)
[ "$enabled" = "$wants" ] || fail "unexpected unit links: $enabled"
# Each unit runs the installed program (meson's BINDIR is the package's).
for u in /lib/systemd/system/stagelog-recover.service /lib/systemd/system/stagelog-recover@.service \
	/usr/lib/systemd/user/stagelog-recover.service; do
	exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$u")
	if [ "$exe" != /usr/bin/stagelog ] || [ ! -x "$exe" ]; then
		fail "$u runs '$exe', not /usr/bin/stagelog"
	fi
done
say "installed; tmpfiles.d applied (/run/stagelog, /var/lib/stagelog 0700); stagelog-recover.service enabled; the units run /usr/bin/stagelog"

# The version: meson's project version, the package's upstream version.
upstream=$(dpkg-query -W -f='${Version}' stagelog)
upstream=${upstream%-*}
v=$(stagelog --version)
echo "$v" | grep -qF "$upstream" || fail "stagelog --version says '$v', the package is $upstream"
say "stagelog --version: $v"

# A bundle as the gateway ships it.
bundle=/tmp/bundle
mkdir -p "$bundle/rootfs/etc" "$bundle/rootfs/bin"
echo gateway >"$bundle/rootfs/etc/hostname"
printf '#!/bin/sh\necho hi\n' >"$bundle/rootfs/bin/app"
chmod 0755 "$bundle/rootfs/bin/app"
cat >"$bundle/config.json" <<'JSON'
{"ociVersion": "1.0.2", "process": {"args": ["/bin/app"], "env": ["PATH=/bin"]},
 "root": {"path": "rootfs"},
 "linux": {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1}]}}
JSON
secret="pkg-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"

# Staging with the package's defaults (root /run/stagelog, store
# /var/lib/stagelog/stagelog.db), then a crash: the launcher and its runtime
# SIGKILLed together (setsid: one process group), as in tests/demo.sh.
API_TOKEN=$secret setsid stagelog run --bundle "$bundle" --label pkgtest --env API_TOKEN -- sleep 300 &
launcher=$!
i=0
until stagelog list --no-legend 2>/dev/null | grep -q ' ready '; do
	i=$((i + 1))
	[ $i -lt 100 ] || fail "the stage never became ready"
	sleep 0.1
done
stage=$(stagelog list --no-legend | awk '{print $NF}')
case $stage in /run/stagelog/pkgtest-*) ;; *) fail "the stage is at '$stage', not under /run/stagelog" ;; esac
grep -q "$secret" "$stage/config.json" || fail "the secret is not in $stage/config.json"
kill -s KILL -- "-$launcher"
wait "$launcher" 2>/dev/null || true
[ -d "$stage" ] || fail "$stage went away with the crash: nothing left to recover"
stagelog list --no-legend | grep -q ' no ' || fail "the crashed stage's owner still counts as live: $(stagelog list)"
say "crashed with a stage in $stage; stagelog recover"
stagelog recover >&2 || fail "stagelog recover exited $?"
[ ! -e "$stage" ] || fail "$stage is still there after recover"
[ "$(stagelog --json list | tr -d ' \n')" = "[]" ] || fail "stagelog --json list is not empty: $(stagelog --json list)"
if grep -rqs -- "$secret" /run/stagelog /var/lib/stagelog; then
	fail "the secret is still on disk"
fi
say "recovered: $stage gone, stagelog --json list is [], the secret nowhere under /run/stagelog or /var/lib/stagelog"

# The README's C example against libstagelog-dev, as tests/install does it
# against a meson install, here also run: it recovers, stages the bundle
# at /usr/share/gateway/bundle and releases it.
awk '/^```c$/ {on = 1; next} /^```$/ {if (on) exit} on' /mnt/src/README.md >/tmp/example.c
[ -s /tmp/example.c ] || fail "README.md has no C example"
{
	grep '^#include' /tmp/example.c
	echo '#include <stdio.h>'
	echo '#include <stdlib.h>'
	printf '%s\n' 'static void die(const char *msg) { fprintf(stderr, "%s\n", msg); exit(1); }'
	printf '%s\n' 'static void run_runtime(const char *path) { printf("staged %s\n", path); }'
	echo 'int main(void) {'
	echo 'const char *token = "t";'
	grep -v '^#include' /tmp/example.c
	echo 'return 0;'
	echo '}'
} >/tmp/gateway.c
mkdir -p /usr/share/gateway
cp -a "$bundle" /usr/share/gateway/bundle
flags=$(pkg-config --cflags --libs stagelog)
# shellcheck disable=SC2086 # pkg-config's words
cc -std=c11 -Wall -Wextra -Werror -o /tmp/gateway /tmp/gateway.c $flags || fail "the README's example does not compile with: $flags"
/tmp/gateway >/tmp/gateway.out || fail "the README's example exited $?"
staged=$(sed -n 's/^staged //p' /tmp/gateway.out)
case $staged in /run/stagelog/gateway-*) ;; *) fail "the example staged at '$staged'" ;; esac
[ ! -e "$staged" ] || fail "the example's stage $staged is still there after sl_stage_release"
[ "$(stagelog --json list | tr -d ' \n')" = "[]" ] || fail "stagelog --json list is not empty after the example"
rm -rf /usr/share/gateway /tmp/gateway /tmp/gateway.c /tmp/example.c
say "the README's example compiled with '$flags', staged $staged and released it"

say "apt-get purge --autoremove $PKGS"
# shellcheck disable=SC2086 # a list of package names
apt-get purge -y --autoremove $PKGS >/tmp/apt-purge.log 2>&1 ||
	{ tail -30 /tmp/apt-purge.log >&2; fail "apt-get purge"; }
apt-get clean
for p in $PKGS; do
	if dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '[a-z]'; then
		fail "dpkg still knows $p: $(dpkg-query -W -f='${db:Status-Abbrev}' "$p")"
	fi
done

# Every path the packages shipped is gone, but those that were there before
# (/usr, /usr/share/man/man1, ...). dpkg -L names /lib/systemd/system, which
# the merged /usr makes /usr/lib/systemd/system: its folder is resolved
# (not the last name, which may be one of the package's symlinks).
left=$(while read -r f; do
	[ "$f" != /. ] || continue
	[ -e "$f" ] || [ -L "$f" ] || continue
	dir=$(readlink -f "$(dirname "$f")")
	real=${dir%/}/$(basename "$f")
	grep -qxF "$real" /tmp/fs.before || echo "$f ($real)"
done </tmp/pkg-files)
[ -z "$left" ] || fail "left after purge, from dpkg -L: $left"
for d in /var/lib/stagelog /run/stagelog; do
	[ ! -e "$d" ] || fail "$d is left after purge"
done
links=$(find /etc/systemd /var/lib/systemd -name '*stagelog*' 2>/dev/null || true)
[ -z "$links" ] || fail "unit links or state left after purge: $links"
# The whole file system, and the overlay's upper folder: what is new since
# before the install is only apt's and dpkg's bookkeeping.
bookkeeping='^(\./)?/?(var/lib/dpkg|var/lib/apt|var/cache|var/log|etc/ld\.so\.cache$)'
new_fs=$(listing | comm -13 /tmp/fs.before - | sed 's|^/||' | grep -Ev "$bookkeeping" || true)
# A folder of the minbase that a package wrote into was copied up, and stays
# there, empty, when the package goes: only what else is new counts.
new_upper=$(upper | comm -13 /tmp/upper.before - | sed 's|^\./||' | grep -Ev "$bookkeeping" |
	while read -r f; do
		if [ -d "/mnt/upper/$f" ] && [ ! -L "/mnt/upper/$f" ] && [ -d "/mnt/lower/$f" ] && [ ! -L "/mnt/lower/$f" ]; then
			continue
		fi
		echo "$f"
	done)
[ -z "$new_fs" ] || fail "new since before the install, after purge: $new_fs"
[ -z "$new_upper" ] || fail "new in the overlay's upper folder since before the install: $new_upper"
say "purged: every file of dpkg -L gone, no /var/lib/stagelog, /run/stagelog or unit link; the $(upper | comm -13 /tmp/upper.before - | wc -l) new entries of the upper folder are dpkg's and apt's bookkeeping and copied-up minbase folders"
