#!/bin/sh
# install-test.sh DEB...: installs the three packages into a fresh Debian 12
# minbase and exercises them there, then purges them and checks that nothing
# is left (run by ./dev deb, as root).
#
# The minbase is debootstrapped once into $STAGELOG_DEB_MINBASE (default
# /var/tmp/stagelog-deb-minbase) and never written again: each run mounts an
# overlayfs on it (upper and work folders in a scratch folder), enters it in
# its own mount and pid namespaces with pivot_root (unshare; no chroot: the
# host's root is unmounted inside), with /proc, a tmpfs /dev with the host's
# null, zero, full, random, urandom and tty, its own devpts and /dev/shm,
# tmpfs on /run and /tmp, the host's /etc/resolv.conf bound over the
# minbase's, and read-only under /mnt the packages, the tree, the upper
# folder and the minbase. in-overlay.sh runs there.
# When it exits, the pid namespace takes every process it started with it,
# the mount namespace its mounts; the trap removes the scratch folder, on
# failure too.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
say() { printf 'install-test: %s\n' "$*" >&2; }

if [ "${1:-}" = --in-namespace ]; then
	# Inside unshare: $2 the minbase, $3 the scratch folder.
	lower=$2
	s=$3
	r=$s/root
	mount -t overlay overlay -o "lowerdir=$lower,upperdir=$s/upper,workdir=$s/work" "$r"
	mkdir -p "$r/.oldroot"
	# A /dev of its own, as a container gets: the host's device nodes it
	# needs bound in, a new devpts instance and a private /dev/shm (the
	# host's /dev/shm is not in sight, nor the mounts others keep there).
	mount -t tmpfs -o mode=0755,nosuid dev "$r/dev"
	for d in null zero full random urandom tty; do
		touch "$r/dev/$d"
		mount --bind "/dev/$d" "$r/dev/$d"
	done
	mkdir "$r/dev/pts" "$r/dev/shm"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
	ln -s pts/ptmx "$r/dev/ptmx"
	ln -s /proc/self/fd "$r/dev/fd"
	ln -s /proc/self/fd/0 "$r/dev/stdin"
	ln -s /proc/self/fd/1 "$r/dev/stdout"
	ln -s /proc/self/fd/2 "$r/dev/stderr"
	mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
	mount -t tmpfs -o mode=0755,nosuid,nodev run "$r/run"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$r/tmp"
	mount --bind /etc/resolv.conf "$r/etc/resolv.conf"
	mount -t tmpfs -o mode=0755 mnt "$r/mnt"
	mkdir "$r/mnt/debs" "$r/mnt/upper" "$r/mnt/lower" "$r/mnt/src"
	for m in debs:"$s/debs" upper:"$s/upper" lower:"$lower" src:"$here/.."; do
		mount --bind "${m#*:}" "$r/mnt/${m%%:*}"
		mount -o remount,bind,ro "$r/mnt/${m%%:*}"
	done
	cd "$r"
	pivot_root . .oldroot
	mount -t proc proc /proc
	umount -l /.oldroot
	exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
		/bin/sh /mnt/src/packaging/in-overlay.sh
fi

[ "$(id -u)" = 0 ] || { say "run as root"; exit 1; }
[ $# -eq 3 ] || { say "usage: install-test.sh LIBSTAGELOG0.deb LIBSTAGELOG-DEV.deb STAGELOG.deb"; exit 64; }

MINBASE=${STAGELOG_DEB_MINBASE:-/var/tmp/stagelog-deb-minbase}
# Two runs at once (two worktrees) debootstrap once: the second waits.
exec 9>"$MINBASE.lock"
flock 9
if [ ! -x "$MINBASE/usr/bin/apt-get" ]; then
	say "debootstrap --variant=minbase bookworm $MINBASE (once: later runs reuse it)"
	rm -rf "$MINBASE.new"
	if ! debootstrap --variant=minbase bookworm "$MINBASE.new" http://deb.debian.org/debian >"$MINBASE.log" 2>&1; then
		tail -20 "$MINBASE.log" >&2
		say "FAILED: debootstrap (log: $MINBASE.log)"
		exit 1
	fi
	mv "$MINBASE.new" "$MINBASE"
fi
flock -u 9

scratch=$(mktemp -d /var/tmp/stagelog-deb-test.XXXXXX)
# The namespaces' mounts end with them; a lazy unmount catches one that a
# killed run could leave, before the folder goes.
trap 'umount -R -l "$scratch/root" 2>/dev/null || true; rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM
mkdir "$scratch/upper" "$scratch/work" "$scratch/root" "$scratch/debs"
chmod 0755 "$scratch/debs"
cp "$@" "$scratch/debs/"
chmod 0644 "$scratch/debs/"*

say "overlay on $MINBASE (upper: $scratch/upper), entered with unshare + pivot_root"
unshare --mount --pid --fork --propagation private sh "$here/install-test.sh" --in-namespace "$MINBASE" "$scratch"
say "passed"
