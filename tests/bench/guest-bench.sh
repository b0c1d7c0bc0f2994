#!/bin/bash
# make bench, guest side: runs as root in the VM suite's Debian 12 guest
# (systemd as PID 1, cgroup v2 with the cpu controller, fentry), booted by
# tests/vm/driver.py. Prints its figures on the serial console:
#   VMTEST FIGURE name value...     VMTEST-KEY n (the host presses a key)
#   VMTEST PASS / FAIL name          VMTEST DONE
# The arms the host cannot run: harvesterd with cpu.max, a plain systemd
# CPUQuota= cap, and reaction to real keystrokes (QMP input-send-event into
# the guest kernel's input_event()); beside them the real BOINC client and
# hackbench where the image has them (boinc-client, linux-perf), budget
# precision under cpu.max (used/cap over 10 s and 60 s at caps 1/5/50 %, for
# harvesterd and BOINC), and the idle daemon's CPU and memory. The guest CPU
# is emulated (TCG): its latencies are in milliseconds and only the ratios
# between arms of the same run mean anything. cyclictest percentiles in the
# overflow read 50000. QUICK=1 (a file "quick" on the data disk): short.
set -u
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
M=/mnt/vmtest
ROUNDS=${ROUNDS:-2}
CYC_S=5
SYSB_S=3
HACK_LOOPS=40
REACT_N=50
PREC_S=60
NCPU=$(nproc)
if [ -e $M/quick ]; then
	ROUNDS=1 CYC_S=2 SYSB_S=1 HACK_LOOPS=10 REACT_N=5 PREC_S=20
fi

figure() { echo "VMTEST FIGURE $*"; }
# A status that does not come back in 10 s is a finding, not a hang.
st() { timeout 10 harvestctl --json status 2>/dev/null; }
stj() { st | jq -r "$@" 2>/dev/null; }
done_() {
	echo "VMTEST DONE"
	sync
	systemctl poweroff --no-block
	exit 0
}
now() { date +%s.%N; }

echo "VMTEST BOOTED bench"
deb=$(ls $M/harvester_*.deb | head -n 1)
if ! apt-get install -y -q "$deb" >/tmp/apt.log 2>&1; then
	echo "VMTEST FAIL install: $(tail -n 3 /tmp/apt.log | tr '\n' ' ')"
	done_
fi
install -m 0755 $M/burn /usr/local/bin/burn
for t in cyclictest sysbench; do
	command -v $t >/dev/null || { echo "VMTEST FAIL tools: $t missing in the image"; done_; }
done
# Optional arms: hackbench needs perf (linux-perf for the guest's kernel), the
# BOINC arm the client and the task built against the BOINC API (its shared
# library comes on the data disk: the image has only the client's).
HACK=0
perf bench sched messaging -g 1 -l 1 >/dev/null 2>&1 && HACK=1
BOINC=0
if command -v boinc >/dev/null && [ -x $M/burn-boinc ]; then
	# The package's own service would run a second client: not here.
	systemctl disable --now boinc-client >/dev/null 2>&1
	install -m 0644 $M/libboinc_api.so.7 /usr/local/lib/ 2>/dev/null && ldconfig
	install -m 0755 $M/burn-boinc /usr/local/bin/burn-boinc
	burn-boinc --help </dev/null >/dev/null 2>&1 & bp=$!; sleep 0.5
	# It runs (libraries found) when it is still alive or exited on its own.
	if ldd /usr/local/bin/burn-boinc | grep -q 'not found'; then
		echo "VMTEST NOTE boinc: $(ldd /usr/local/bin/burn-boinc | grep 'not found' | tr '\n' ' ')"
	else
		BOINC=1
	fi
	kill $bp 2>/dev/null; wait $bp 2>/dev/null
fi
figure g_arms "hackbench=$HACK" "boinc=$BOINC"
# The cap of the host arms: CPU=Burst=10% of the machine. MaxForegroundCPU
# 100%: the benchmark's own foreground must not pause harvesting (a
# deviation from the default policy, said in the table).
mkdir -p /etc/harvester/harvester.conf.d
cat >/etc/harvester/harvester.conf.d/bench.conf <<EOF
[Budget]
CPU=10%
Burst=10%
Window=1h

[Idle]
InputIdleSec=1s
MaxForegroundCPU=100%

[Jobs]
MaxJobs=$NCPU
EOF
systemctl start harvesterd
for _ in $(seq 50); do st >/dev/null && break; sleep 0.2; done
figure g_cap_mechanism "$(stj .cap_mechanism)"
figure g_input_source "$(stj .input_source)"
harvestctl pause >/dev/null
for _ in $(seq $NCPU); do harvestctl submit -- /usr/local/bin/burn >/dev/null; done

cyc() { # p50 p99 p99.9 (us) of NCPU normal-priority threads, pooled
	cyclictest -q -m -t "$NCPU" -a -i 1000 -D "$CYC_S" -h 50000 --policy=other 2>/dev/null | awk '
		/^# Histogram Overflows:/ { for (i = 4; i <= NF; i++) over += $i; next }
		/^#/ { next }
		NF > 1 { n = 0; for (i = 2; i <= NF; i++) n += $i; if (n) { b[++k] = $1; c[k] = n; tot += n } }
		END {
			tot += over
			split("50 99 99.9", ps, " ")
			for (j = 1; j <= 3; j++) {
				want = ps[j] / 100 * tot; seen = 0; v = 50000
				for (i = 1; i <= k; i++) { seen += c[i]; if (seen >= want) { v = b[i]; break } }
				printf "%s%s", v, (j < 3 ? " " : "\n")
			}
		}'
}
hack() { # seconds, or - without perf
	[ $HACK = 1 ] || { echo -; return; }
	perf bench sched messaging -g 2 -l "$HACK_LOOPS" 2>/dev/null | awk '/Total time:/ { print $3 }'
}
# The real BOINC client on a hand-written offline data folder (as the host's
# bench.py writes it): one project, one app whose main program is
# burn-boinc, NCPU results, network off, cpu_usage_limit = $1 %. It runs in a
# cgroup of its own; the tasks' CPU = that cgroup's less the client's.
BOINC_N=0
boinc_start() { # LIMIT%
	BOINC_N=$((BOINC_N + 1))
	BDIR=/var/tmp/boinc$BOINC_N
	BCG=/sys/fs/cgroup/bench-boinc$BOINC_N
	local url=http://bench.invalid/ proj=$BDIR/projects/bench.invalid res="" i
	mkdir -p "$proj"
	cp /usr/local/bin/burn-boinc "$proj/burn"
	echo "<account><master_url>$url</master_url><authenticator>bench</authenticator><project_name>bench</project_name></account>" \
		>"$BDIR/account_bench.invalid.xml"
	echo "<cc_config><options><unsigned_apps_ok>1</unsigned_apps_ok><skip_cpu_benchmarks>1</skip_cpu_benchmarks></options></cc_config>" \
		>"$BDIR/cc_config.xml"
	echo "<global_preferences><cpu_usage_limit>$1</cpu_usage_limit><max_ncpus_pct>100</max_ncpus_pct><suspend_cpu_usage>0</suspend_cpu_usage><run_if_user_active>1</run_if_user_active><idle_time_to_run>0</idle_time_to_run></global_preferences>" \
		>"$BDIR/global_prefs_override.xml"
	for i in $(seq "$NCPU"); do
		res="$res<workunit><name>wu$i</name><app_name>burn</app_name><version_num>1</version_num><rsc_fpops_est>1e15</rsc_fpops_est><rsc_fpops_bound>1e18</rsc_fpops_bound><rsc_memory_bound>1e8</rsc_memory_bound><rsc_disk_bound>1e9</rsc_disk_bound></workunit>"
		res="$res<result><name>r$i</name><wu_name>wu$i</wu_name><final_cpu_time>0</final_cpu_time><state>2</state><platform>x86_64-pc-linux-gnu</platform><version_num>1</version_num><report_deadline>4000000000</report_deadline></result>"
	done
	cat >"$BDIR/client_state.xml" <<XML
<client_state>
<project><master_url>$url</master_url><project_name>bench</project_name><dont_request_more_work/></project>
<app><name>burn</name><user_friendly_name>burn</user_friendly_name></app>
<file_info><name>burn</name><nbytes>$(stat -c %s "$proj/burn")</nbytes><status>1</status><executable/></file_info>
<app_version><app_name>burn</app_name><version_num>1</version_num><platform>x86_64-pc-linux-gnu</platform><avg_ncpus>1</avg_ncpus><flops>1e9</flops><file_ref><file_name>burn</file_name><main_program/></file_ref></app_version>
$res
<user_network_request>3</user_network_request>
</client_state>
XML
	mkdir "$BCG"
	(cd "$BDIR" && echo $BASHPID >"$BCG/cgroup.procs" && exec boinc --dir "$BDIR" --no_gui_rpc --allow_multiple_clients) \
		>"$BDIR/client.log" 2>&1 &
	BPID=$!
	local end=$(( $(date +%s) + 30 ))
	while [ "$(date +%s)" -le $end ] && [ "$(pgrep -c -x burn -P "$BPID"; true)" -lt "$NCPU" ]; do
		sleep 0.2
	done
	# Started is not running yet: the API library takes a few seconds.
	local u0; u0=$(boinc_usage); end=$(( $(date +%s) + 5 ))
	while [ "$(date +%s)" -le $end ] && [ $(( $(boinc_usage) - u0 )) -lt 20000 ]; do sleep 0.2; done
}
boinc_usage() { # the tasks' CPU (usec): the cgroup's less the client's own
	local cg c
	cg=$(awk '$1 == "usage_usec" { print $2 }' "$BCG/cpu.stat")
	c=$(awk '{ print int($1 / 1000) }' /proc/$BPID/schedstat 2>/dev/null || echo 0)
	echo $(( cg - c ))
}
boinc_stop() {
	kill "$BPID" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
	echo 1 >"$BCG/cgroup.kill" 2>/dev/null
	wait "$BPID" 2>/dev/null
	for _ in $(seq 50); do rmdir "$BCG" 2>/dev/null && break; sleep 0.1; done
	rm -rf "$BDIR"
}
sysb() { sysbench cpu --threads="$NCPU" --time="$SYSB_S" run | awk -F: '/events per second/ { gsub(/ /, "", $2); print $2 }'; }
jobs_usage() { local cg; cg=$(stj .cgroup); case $cg in /sys/*) ;; *) cg=/sys/fs/cgroup$cg ;; esac; awk '$1 == "usage_usec" { print $2 }' "$cg/cpu.stat"; }
unit_usage() { systemctl show -p CPUUsageNSec --value "bench-quota-$r.service" | awk '{ print int($1 / 1000) }'; }

# --- intrusion: alone, a (harvesterd, cpu.max), b (BOINC), c (systemd CPUQuota=), d (nice 19 + SCHED_IDLE)
quota=$(( 10 * NCPU ))  # CPUQuota= is per CPU: 10 % of the machine
ARMS="alone a c d"
[ $BOINC = 1 ] && ARMS="alone a b c d"
for r in $(seq "$ROUNDS"); do
	for arm in $ARMS; do
		u0=0
		case $arm in
		a) harvestctl resume >/dev/null; sleep 1; u0=$(jobs_usage) ;;
		b) boinc_start 10; sleep 1; u0=$(boinc_usage) ;;
		c) systemd-run -q --collect --unit "bench-quota-$r" -p CPUQuota=${quota}% /bin/sh -c \
			"for i in \$(seq $NCPU); do /usr/local/bin/burn & done; wait"; sleep 1; u0=$(unit_usage) ;;
		d) for _ in $(seq "$NCPU"); do nice -n 19 chrt -i 0 /usr/local/bin/burn & done; sleep 1
		   pids=$(pgrep -x burn -P $$ | tr '\n' ' ') ;;
		esac
		t0=$(now)
		c=$(cyc)
		h=$(hack)
		s=$(sysb)
		t1=$(now)
		got=-
		case $arm in
		a) got=$(awk -v a="$u0" -v b="$(jobs_usage)" -v t="$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}')" -v n="$NCPU" 'BEGIN { printf "%.4f", (b-a)/1e6/(t*n) }')
		   harvestctl pause >/dev/null ;;
		b) got=$(awk -v a="$u0" -v b="$(boinc_usage)" -v t="$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}')" -v n="$NCPU" 'BEGIN { printf "%.4f", (b-a)/1e6/(t*n) }')
		   boinc_stop ;;
		c) got=$(awk -v a="$u0" -v b="$(unit_usage)" -v t="$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}')" -v n="$NCPU" 'BEGIN { printf "%.4f", (b-a)/1e6/(t*n) }')
		   systemctl stop "bench-quota-$r" ;;
		d) kill $pids; wait 2>/dev/null ;;
		esac
		figure g_intr "$r" "$arm" $c "$s" "$got" "$h"
		sleep 0.5
	done
done

# --- reaction: REACT_N keystrokes over QMP while the jobs run at the cap
harvestctl resume >/dev/null
sleep 2
react_end=$(( $(date +%s) + 360 ))
missed=0
for i in $(seq "$REACT_N"); do
	if [ "$(date +%s)" -gt $react_end ] || [ $missed -ge 3 ]; then
		echo "VMTEST NOTE reaction phase stopped after $((i - 1)) keys ($missed missed in a row)"
		break
	fi
	for _ in $(seq 50); do
		[ "$(st | jq -r '"\(.state) \(.frozen)"')" = "idle false" ] && break
		sleep 0.2
	done
	n0=$(stj .reaction.count)
	[ -n "$n0" ] || n0=0
	sleep "0.$(( RANDOM % 6 + 2 ))$(( RANDOM % 10 ))"  # a random phase
	t=$(now)
	echo "VMTEST-KEY $i"
	ok=0
	end=$(( $(date +%s) + 10 ))
	while [ "$(date +%s)" -le $end ]; do
		s=$(st)
		if [ "$(jq -r .reaction.count <<<"$s" 2>/dev/null || echo 0)" -gt "$n0" ] 2>/dev/null; then ok=1; break; fi
		sleep 0.2
	done
	if [ $ok = 1 ]; then
		missed=0
		figure g_react "$i" "$t" $(jq -r '.reaction.samples[-1] | "\(.[0]) \(.[1])"' <<<"$s")
	else
		missed=$((missed + 1))
		figure g_react "$i" "$t" none none
		echo "VMTEST NOTE key $i: no reaction in 10 s: $(st | jq -c '{state, reason, frozen, reaction: .reaction.count}' 2>/dev/null || echo 'no status')"
	fi
done
journalctl -u harvesterd -n 25 -o short-monotonic --no-pager 2>&1 | sed 's/^/VMTEST LOG /'
figure g_daemon_cpu_usec "$(stj .daemon.cpu_usec)" "$(cut -d' ' -f1 /proc/uptime)"

# --- budget precision: NCPU CPU-bound jobs under CPU=Burst=cap (a fresh,
# empty bucket, as on the host), used/cap from the jobs' cgroup cpu.stat
# sampled every 10 s for PREC_S s; then BOINC at cpu_usage_limit=cap, alone
# (not beside: harvest.slice is idle-class, so BOINC's tasks, at normal
# weight in a cgroup of their own, would take harvesterd's share in their
# on-seconds). g_prec ARM CAP t0 u0 t1 u1 ... (s, usec)
prec_windows() { # ARM:CAP:USAGE-COMMAND...
	local i t spec arm cap cmd
	declare -A line
	t=$(now)
	for spec in "$@"; do
		IFS=: read -r arm cap cmd <<<"$spec"
		line[$arm]="$arm $cap $t $($cmd)"
	done
	for i in $(seq $((PREC_S / 10))); do
		sleep "$(awk -v t0="$t" -v i="$i" -v n="$(now)" 'BEGIN { d = t0 + 10 * i - n; print (d > 0 ? d : 0) }')"
		for spec in "$@"; do
			IFS=: read -r arm cap cmd <<<"$spec"
			line[$arm]="${line[$arm]} $(now) $($cmd)"
		done
	done
	for spec in "$@"; do
		IFS=: read -r arm cap cmd <<<"$spec"
		figure g_prec ${line[$arm]}
	done
}
restart_fresh() { # CAP%: a fresh state folder (empty bucket, no jobs)
	systemctl stop harvesterd
	rm -rf /var/lib/harvester/*
	sed -i "s/^CPU=.*/CPU=$1%/; s/^Burst=.*/Burst=$1%/" /etc/harvester/harvester.conf.d/bench.conf
	systemctl start harvesterd
	for _ in $(seq 50); do st >/dev/null && break; sleep 0.2; done
}
# A fresh bucket starts empty (exhausted for its 1-s resume time) and the
# jobs' start can empty it once more: measure from 3 s of steady harvesting.
settle() {
	local since=0 end=$(( $(date +%s) + 20 ))
	while [ "$(date +%s)" -le $end ]; do
		if [ "$(stj .state)" = idle ]; then
			[ $since = 0 ] && since=$(date +%s)
			[ $(( $(date +%s) - since )) -ge 3 ] && return
		else
			since=0
		fi
		sleep 0.25
	done
}
for cap in 1 5 50; do
	restart_fresh $cap
	for _ in $(seq $NCPU); do harvestctl submit -- /usr/local/bin/burn >/dev/null; done
	for _ in $(seq 50); do [ "$(stj .jobs.running)" = "$NCPU" ] && break; sleep 0.2; done
	settle
	prec_windows harvesterd:$cap:jobs_usage
	if [ $BOINC = 1 ] && [ $cap != 50 ]; then
		restart_fresh 10        # no jobs while BOINC runs
		boinc_start $cap
		sleep 2
		prec_windows boinc:$cap:boinc_usage
		boinc_stop
	fi
done
# The idle daemon (no jobs), over BOINC's 50 % run (or as long alone): its
# own CPU from two status calls, and its memory.
restart_fresh 10
sleep 3
c0=$(stj .daemon.cpu_usec); t0=$(now)
if [ $BOINC = 1 ]; then
	boinc_start 50
	sleep 2
	prec_windows boinc:50:boinc_usage
	boinc_stop
else
	sleep "$PREC_S"
fi
c1=$(stj .daemon.cpu_usec); t1=$(now)
figure g_daemon_idle "$c0" "$c1" "$t0" "$t1" "$(stj .daemon.rss_bytes)"
systemctl stop harvesterd
echo "VMTEST PASS bench"
done_
