#!/bin/sh
# demo.sh STAGELOG: a real staging -> crash -> list -> recover session.
# Staging root on tmpfs (/dev/shm), store on disk (/var/tmp), as in
# production (/run and /var/lib).
set -eu
SL=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
work=$(mktemp -d /dev/shm/stagelog-demo.XXXXXX)
state=$(mktemp -d /var/tmp/stagelog-demo.XXXXXX)
root=$work/root
db=$state/stagelog.db
secret="demo-token-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
trap 'rm -rf "$work" "$state"' EXIT

show() {
	printf '\n$ %s\n' "$*"
	"$@"
}

# stagelog ARGS: echo the command as a user would type it, then run it.
sl() {
	printf '\n$ stagelog %s\n' "$*"
	"$SL" "$@"
}

# A packaged bundle, as the gateway ships it.
mkdir -p "$work/bundle/rootfs/etc" "$work/bundle/rootfs/bin"
echo "gateway" >"$work/bundle/rootfs/etc/hostname"
printf '#!/bin/sh\necho hi\n' >"$work/bundle/rootfs/bin/app"
chmod 0755 "$work/bundle/rootfs/bin/app"
cat >"$work/bundle/config.json" <<JSON
{"ociVersion": "1.0.2", "process": {"args": ["/bin/app"], "env": ["PATH=/bin"]},
 "root": {"path": "rootfs"},
 "linux": {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1}]}}
JSON

echo "stagelog demo: staging root $root (tmpfs), store $db (disk)"
echo "the API token is a fake secret: $secret"

# The gateway's launch: stage the bundle and run a "runtime" on it. setsid
# gives the pair its own process group, so that one SIGKILL takes both.
export API_TOKEN="$secret"
printf '\n$ stagelog --db %s run --root %s --bundle %s --env API_TOKEN -- sleep 300 &\n' "$db" "$root" "$work/bundle"
setsid "$SL" --db "$db" run --root "$root" --bundle "$work/bundle" --env API_TOKEN -- sleep 300 &
unset API_TOKEN
launcher=$!

# Wait for the stage to be ready.
i=0
until "$SL" --db "$db" list 2>/dev/null | grep -q ready; do
	i=$((i + 1))
	[ $i -lt 100 ] || { echo "demo: the stage never became ready" >&2; exit 1; }
	sleep 0.1
done
sl --db "$db" list
show ls -l "$root"/*/
printf '\n$ grep -l "$API_TOKEN" %s/*/config.json   # the token is in the bundle\n' "$root"
grep -l "$secret" "$root"/*/config.json

printf '\n$ kill -KILL -- -%s   # the gateway and its runtime are SIGKILLed\n' "$launcher"
env kill -s KILL -- "-$launcher"
wait "$launcher" 2>/dev/null || true
sleep 0.2
sl --db "$db" list
sl --db "$db" recover
sl --db "$db" list
show ls -la "$root"

echo
if grep -rqs -- "$secret" "$root" "$state"; then
	echo "demo: FAILED: the secret is still on disk" >&2
	exit 1
fi
if [ -n "$(ls -A "$root")" ]; then
	echo "demo: FAILED: the staging root is not empty" >&2
	exit 1
fi
echo "demo: the secret is gone: nothing under the staging root, nothing in the store."
