#!/bin/sh
# The pool demo: a local harvest-pool and two harvesterd workers render the
# Mandelbrot set tile by tile (tests/demo/mandel.py, shipped to the workers
# as a task input), under each worker's CPU budget; the accepted results are
# assembled into a PNG. Prints where the picture is and the figures of the
# run. Needs root (cgroups, jobs run as 'nobody') and a build:
#   make all && sh tests/demo-pool.sh build
set -eu
BUILD=${1:-build}
D=$BUILD/harvesterd
C=$BUILD/harvestctl
P=$BUILD/harvest-pool
HERE=$(cd "$(dirname "$0")" && pwd)
W=480 H=360 TW=120 TH=90 NWORKERS=2

if [ "$(id -u)" != 0 ]; then
	echo "the pool demo needs root: it creates cgroups and runs jobs as 'nobody'" >&2
	exit 1
fi
for b in "$D" "$C" "$P"; do
	[ -x "$b" ] || { echo "$b is not built: make BUILD=$BUILD all" >&2; exit 1; }
done

tmp=$(mktemp -d /var/tmp/harvester-pool-demo.XXXXXX)
chmod 755 "$tmp"
outdir=$BUILD/demo-pool
mkdir -p "$outdir"
pids=""
cleanup() {
	for pid in $pids; do kill "$pid" 2>/dev/null || true; done
	sleep 1
	for i in $(seq 1 $NWORKERS); do
		for cg in /sys/fs/cgroup/unified/harvester-pool-demo-$i /sys/fs/cgroup/harvester-pool-demo-$i; do
			[ -d "$cg" ] || continue
			find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		done
	done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=tcp://127.0.0.1:$port
echo "== harvest-pool init and serve on $url"
key=$("$P" init --state-dir "$tmp/pool")
"$P" serve --state-dir "$tmp/pool" --listen "$url" --lease-sec 30 >"$tmp/pool.log" 2>&1 &
pids="$pids $!"
echo "   pool key (pinned in each worker's [Pool] Key=): $key"

echo "== submitting $((W / TW * (H / TH))) tiles of a ${W}x${H} Mandelbrot set"
y=0
while [ $y -lt $H ]; do
	x=0
	while [ $x -lt $W ]; do
		"$P" submit --state-dir "$tmp/pool" --id "tile-$x-$y" --input "mandel.py=$HERE/demo/mandel.py" \
			-- python3 mandel.py $W $H $x $y $TW $TH 200 >/dev/null
		x=$((x + TW))
	done
	y=$((y + TH))
done
ntiles=$("$P" tasks --state-dir "$tmp/pool" --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')

for i in $(seq 1 $NWORKERS); do
	w=$tmp/worker$i
	mkdir -p "$w/pts" "$w/input"
	cat >"$w/harvester.conf" <<CONF
# Worker $i of the pool demo: see harvester.conf(5).
[Budget]
CPU=25%
Burst=50%
Window=1h

[Idle]
InputIdleSec=2s
MaxForegroundCPU=100%
MaxMemoryPressure=100%

[Jobs]
User=nobody
MemoryMax=256M

[Daemon]
CgroupRoot=/harvester-pool-demo-$i

[Pool]
URL=$url
Key=$key
MaxTasks=2
CONF
	# The demo's own (empty) terminal and input folders: typing elsewhere on
	# this machine would freeze the workers, as it should on a real desktop.
	"$D" --config "$w/harvester.conf" --state-dir "$w/state" --runtime-dir "$w/run" \
		--tty-dir "$w/pts" --input-dir "$w/input" >"$w/daemon.log" 2>&1 &
	pids="$pids $!"
	echo "== harvesterd worker $i started (state in $w/state)"
done

start=$(date +%s)
while :; do
	done_n=$("$P" tasks --state-dir "$tmp/pool" --json |
		python3 -c 'import json, sys; print(sum(t["state"] == "done" for t in json.load(sys.stdin)))')
	printf '   %s/%s tiles done after %ss\n' "$done_n" "$ntiles" "$(($(date +%s) - start))"
	[ "$done_n" -lt "$ntiles" ] || break
	if [ $(($(date +%s) - start)) -gt 300 ]; then
		echo "the tiles did not finish within 300 s" >&2
		exit 1
	fi
	sleep 3
done

echo "== worker 1: harvestctl status"
"$C" --socket "$tmp/worker1/run/control.sock" status | sed 's/^/   /'

png=$outdir/mandelbrot.png
"$P" results --state-dir "$tmp/pool" --outputs --json >"$tmp/results.json"
python3 "$HERE/demo/assemble.py" "$tmp/results.json" $W $H "$png" >/dev/null
for i in $(seq 1 $NWORKERS); do
	"$C" --socket "$tmp/worker$i/run/control.sock" --json status >"$tmp/status$i.json"
done
python3 - "$tmp" "$NWORKERS" "$ntiles" "$(($(date +%s) - start))" <<'PY'
import json, sys
tmp, n, ntiles, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
res = [r for r in json.load(open(tmp + "/results.json")) if r["accepted"]]
by = {}
for r in res:
    by.setdefault(r["worker"], []).append(r)
print("== figures")
print("   tiles: %d of %d accepted, in %d s" % (len(res), ntiles, secs))
print("   workers: %d (%s)" % (len(by), ", ".join("%s…: %d tiles" % (k[:8], len(v)) for k, v in by.items())))
cpu = sum(r["cpu_usec"] for r in res)
print("   CPU used by the tiles: %.2f s" % (cpu / 1e6))
for i in range(1, n + 1):
    st = json.load(open("%s/status%d.json" % (tmp, i)))
    b, p = st["budget"], st["pool"]
    print("   worker %d: budget CPU=%g%% Burst=%g%%, spent %.2f s of CPU in all (cap: %s), %d tiles, %.2f s contributed"
          % (i, b["cpu_ppm"] / 1e4, b["burst_ppm"] / 1e4, b["spent_total_usec"] / 1e6, st["cap_mechanism"],
             p["done"], p["cpu_contributed_usec"] / 1e6))
PY
echo "== the picture: $(cd "$(dirname "$png")" && pwd)/$(basename "$png")"
