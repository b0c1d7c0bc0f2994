#!/bin/sh
# make demo: run harvesterd in the foreground with a temporary config and
# state folder, submit a few local jobs, show `harvestctl status` while they
# run and their results at the end. Needs root (cgroups, the job user).
set -eu
BUILD=${1:-build}
D=$BUILD/harvesterd
C=$BUILD/harvestctl

if [ "$(id -u)" != 0 ]; then
	echo "make demo needs root: it creates cgroups and runs jobs as 'nobody'" >&2
	exit 1
fi

tmp=$(mktemp -d /var/tmp/harvester-demo.XXXXXX)
chmod 755 "$tmp"
sock=$tmp/run/control.sock
cat >"$tmp/harvester.conf" <<EOF
# The demo's configuration: see harvester.conf(5) for every key.
[Budget]
CPU=5%
Burst=25%
Window=1h

[Idle]
InputIdleSec=5s
MaxForegroundCPU=100%

[Jobs]
User=nobody
MemoryMax=256M
TasksMax=32

[Daemon]
CgroupRoot=/harvester-demo
EOF

echo "== harvesterd --check-config"
"$D" --check-config --config "$tmp/harvester.conf"

echo "== starting harvesterd (state in $tmp/state)"
"$D" --config "$tmp/harvester.conf" --state-dir "$tmp/state" --runtime-dir "$tmp/run" 2>&1 | sed 's/^/   [daemon] /' &
i=0
until [ -S "$sock" ] && "$C" --socket "$sock" status >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -lt 100 ] || { echo "harvesterd did not start" >&2; exit 1; }
	sleep 0.1
done
dpid=$(pgrep -f "harvesterd --config $tmp/harvester.conf" | head -n 1)
cleanup() {
	[ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null && sleep 1
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

ctl() { "$C" --socket "$sock" "$@"; }

echo "== submitting jobs"
ctl submit -- awk 'BEGIN { for (i = 2; i < 300000; i++) { p = 1; for (j = 2; j * j <= i; j++) if (i % j == 0) { p = 0; break }; c += p }; print c " primes below 300000" }'
ctl submit -- sh -c 'head -c 20000000 /dev/zero | sha256sum'
ctl submit -- sh -c 'echo "I am $(id -un), in $(pwd)"; echo scratch > note.txt; cat note.txt; echo x > /etc/owned'
ctl submit -- python3 -c 'import socket; socket.create_connection(("127.0.0.1", 80))'

sleep 2
echo "== harvestctl status (while the jobs run)"
ctl status
sleep 3
echo
ctl status | sed -n '1p;5,7p'

echo "== waiting for the jobs (the cap is Burst=25% of the machine)"
i=0
while [ "$(ctl --json status | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"]; print(j["queued"] + j["running"])')" != 0 ]; do
	i=$((i + 1))
	[ $i -lt 600 ] || { echo "jobs did not finish in 5 minutes" >&2; break; }
	sleep 0.5
done

echo "== harvestctl jobs"
ctl jobs
echo "== results"
for f in "$tmp"/state/jobs/*/stdout; do
	id=$(basename "$(dirname "$f")")
	echo "-- job $id stdout:"; sed 's/^/   /' "$f"
	if [ -s "$tmp/state/jobs/$id/stderr" ]; then
		echo "-- job $id stderr:"; tail -n 3 "$tmp/state/jobs/$id/stderr" | sed 's/^/   /'
	fi
done
echo "== harvestctl budget"
ctl budget
echo "== stopping harvesterd"
kill "$dpid"
wait 2>/dev/null || true
dpid=
echo "demo done"
