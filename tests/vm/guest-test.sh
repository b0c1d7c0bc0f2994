#!/bin/bash
# The VM suite's guest side: runs as root at every boot of the guest
# (vmtest.service), exactly as a user would: apt, /etc, systemctl,
# harvestctl. Each assertion prints one line on the serial console:
#   VMTEST PASS name      VMTEST FAIL name: why      VMTEST FIGURE name value
# "VMTEST-KEY n" asks the host to press a key (QMP input-send-event).
# The test spans two boots (the ledger must survive a reboot); the phase
# is kept in /var/lib/vmtest, on the root disk's overlay.
set -u
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
M=/mnt/vmtest
S=/var/lib/vmtest
CONF=/etc/harvester/harvester.conf
mkdir -p "$S"
phase=$(cat "$S/phase" 2>/dev/null || echo 1)

nfail=0
pass() { echo "VMTEST PASS $1"; }
fail() { echo "VMTEST FAIL $1: $2"; nfail=$((nfail + 1)); echo "$1" >>"$S/failed"; }
check() { # check NAME WHY-IF-NOT COMMAND...
	local name=$1 why=$2
	shift 2
	if "$@"; then pass "$name"; else fail "$name" "$why"; fi
}
figure() { echo "VMTEST FIGURE $1 $2"; }
note() { echo "VMTEST NOTE $*"; }
now_ns() { date +%s%N; }
now_s() { date +%s.%N; }
# Floating point with awk: calc 'expr'
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
ok_calc() { awk "BEGIN { exit !($1) }"; }

st() { harvestctl --json status 2>/dev/null; }
stj() { st | jq -r "$@" 2>/dev/null; }
# harvestctl --json jobs prints the list; the socket answers {"jobs": [...]}: take either.
jobsj() { harvestctl --json jobs 2>/dev/null | jq -c '{jobs: (if type == "array" then . else .jobs end)}' 2>/dev/null | jq -r "$@" 2>/dev/null; }
job() { # job ID FIELD
	jobsj ".jobs[] | select((.id | tostring) == \"$1\") | .$2"
}
mainpid() { systemctl show -p MainPID --value harvesterd; }
unit_active() { [ "$(systemctl is-active "$1")" = active ]; }
daemon_up() { [ "$(systemctl is-active harvesterd)" = active ] || [ "$(systemctl is-active harvesterd)" = activating ]; }

# wait_until SECONDS COMMAND...: poll every 0.2 s until COMMAND succeeds. COMMAND
# runs anew each time, so it must be a command or function, not a "$(...)"
# argument (that is expanded once, before the first try).
wait_until() {
	local t=$1 end
	shift
	end=$(( $(date +%s) + t ))
	while [ "$(date +%s)" -le $end ]; do
		"$@" && return 0
		sleep 0.2
	done
	return 1
}
wait_daemon() { # wait_daemon SECONDS COMMAND... : same, but stops when the daemon is down
	local t=$1 end
	shift
	end=$(( $(date +%s) + t ))
	while [ "$(date +%s)" -le $end ]; do
		"$@" && return 0
		daemon_up || return 1
		sleep 0.2
	done
	return 1
}
state_is() { [ "$(stj .state)" = "$1" ]; }
idle_thawed() { local s; s=$(st) && [ "$(jq -r .state <<<"$s")" = idle ] && [ "$(jq -r .frozen <<<"$s")" = false ]; }
cgpath() { # the jobs/ cgroup as an absolute path (status may give either form)
	local p
	p=$(stj .cgroup)
	case $p in /sys/fs/cgroup/*) echo "$p" ;; /*) echo "/sys/fs/cgroup$p" ;; *) echo "" ;; esac
}
# sample_usage CG: set U (usage_usec) and T (ns) with no fork between the
# read and the clock, so a 1 s rate is not skewed by a slow fork under TCG.
sample_usage() {
	local k v
	U=""
	while read -r k v; do
		[ "$k" = usage_usec ] && U=$v
	done <"$1/cpu.stat"
	T=${EPOCHREALTIME//[.,]/}000
}
# setconf KEY VALUE: set a key in the shipped conffile, as an admin would
# (the shipped file has each key once, commented out at its default).
setconf() {
	if grep -q "^#\?$1=" "$CONF"; then
		sed -i "s|^#\?$1=.*|$1=$2|" "$CONF"
	else
		fail setconf "$1 is not in $CONF"
	fi
}
journal_tail() {
	journalctl -u harvesterd -n "${1:-60}" -o short-monotonic --no-pager 2>&1 | sed 's/^/VMTEST LOG /'
}
finish() {
	[ -s "$S/failed" ] && journal_tail 80
	echo "VMTEST DONE ($(sort -u "$S/failed" 2>/dev/null | wc -l) failed)"
	sync
	systemctl poweroff --no-block
	exit 0
}
sub() { # sub CMD ARGS...: submit a job, print its id
	harvestctl submit -- "$@" 2>"$S/submit.err" | tail -n 1 | tr -d '[:space:]'
}
# p50 and max of numbers on stdin (one a line, "null" skipped)
stats() { grep -v '^null$' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "none none"; exit } printf "%s %s\n", v[int((NR + 1) / 2)], v[NR] }'; }

echo "VMTEST BOOTED phase $phase uptime $(cut -d' ' -f1 /proc/uptime)"
[ "$phase" = 1 ] && figure guest_boot_to_test_s "$(cut -d' ' -f1 /proc/uptime)"

if [ "$phase" = 1 ]; then
	# --- the harness itself: a key sent with QMP reaches /dev/input/event0 ---
	name=$(cat /sys/class/input/event0/device/name 2>/dev/null)
	note "event0 is '$name'"
	timeout 15 cat /dev/input/event0 >/tmp/ev0 &
	catpid=$!
	sleep 0.5
	echo "VMTEST-KEY 0"
	wait_until 12 test -s /tmp/ev0
	check harness-qmp-key-reaches-event0 "no input event on /dev/input/event0 ($name) within 12 s" test -s /tmp/ev0
	kill $catpid 2>/dev/null

	# --- install, as a user would ---
	# The node and the pool server in one apt call (each call costs some
	# 20 s on the emulated CPU); the pool is set up in phase 2.
	deb=$(ls $M/harvester_*.deb | head -n 1)
	pooldeb=$(ls $M/harvester-pool_*.deb 2>/dev/null | head -n 1)
	if apt-get install -y -q "$deb" ${pooldeb:+"$pooldeb"} >/tmp/apt.log 2>&1; then
		pass install
	else
		fail install "apt-get install $deb $pooldeb: $(tail -n 3 /tmp/apt.log | tr '\n' ' ')"
		finish
	fi
	check install-leaves-service-disabled "after install: is-enabled=$(systemctl is-enabled harvesterd 2>&1) is-active=$(systemctl is-active harvesterd 2>&1)" \
		test "$(systemctl is-enabled harvesterd 2>&1)" = disabled -a "$(systemctl is-active harvesterd 2>&1)" = inactive
	check install-creates-job-user "no user harvester" getent passwd harvester
	missing=""
	for f in /usr/sbin/harvesterd /usr/bin/harvestctl /lib/systemd/system/harvesterd.service /lib/systemd/system/harvest.slice \
		/usr/libexec/harvester/harvester-link /lib/systemd/system/harvester-link.service \
		/usr/share/man/man8/harvester-link.8.gz \
		/usr/lib/sysusers.d/harvester.conf /usr/share/man/man8/harvesterd.8.gz \
		/usr/share/man/man1/harvestctl.1.gz /usr/share/man/man5/harvester.conf.5.gz \
		/usr/share/bash-completion/completions/harvestctl; do
		[ -e "$f" ] || missing="$missing $f"
	done
	check install-files "missing:$missing" test -z "$missing"
	check install-conffile "$CONF is not a conffile" grep -q "^ $CONF " <(dpkg-query -W -f='${Conffiles}\n' harvester)
	v=$(systemd-analyze verify --man=no harvesterd.service harvester-link.service 2>&1)
	check unit-verify "systemd-analyze verify: $v" test -z "$v"
	score=$(systemd-analyze security harvesterd.service 2>/dev/null | sed -n 's/.*Overall exposure level for harvesterd.service: \([0-9.]*\).*/\1/p')
	figure unit_exposure "${score:-unknown}"
	check unit-exposure-at-most-3.0 "exposure ${score:-unknown}" ok_calc "${score:-99} <= 3.0"

	# --- the cap and short idle timeouts, in /etc ---
	# CPU just under Burst: the bucket fills almost as fast as a job at the
	# cap drains it, so the cap and key tests never run it dry.
	setconf CPU 24%
	setconf Burst 25%
	setconf Window 10min
	setconf InputIdleSec 2s
	# The test's own polling is foreground work on a slow (emulated) CPU.
	setconf MaxForegroundCPU 0%
	setconf MemoryMax 64M
	setconf TasksMax 32
	setconf MaxJobs 5
	setconf RuntimeMaxSec 10min
	note "config: $(grep -v '^#' $CONF | grep -v '^$' | tr '\n' ' ')"

	t=$(now_s)
	# Bounded: a start that hangs says where (once, in CI, it hung here
	# for the whole suite's 900 s and left no trace).
	if timeout 180 systemctl enable --now harvesterd >/tmp/enable.log 2>&1; then
		pass enable-now
	else
		fail enable-now "exit $?: $(tr '\n' ' ' </tmp/enable.log)"
		journal_tail 40
		systemctl status --no-pager harvesterd harvester-link 2>&1 | sed 's/^/VMTEST LOG /'
		systemctl list-jobs --no-pager 2>&1 | sed 's/^/VMTEST LOG /'
	fi
	figure daemon_start_s "$(calc "$(now_s) - $t")"
	harvestctl status >/tmp/status.txt 2>&1
	rc=$?
	sed 's/^/VMTEST NOTE status: /' /tmp/status.txt
	check harvestctl-status "exit $rc" test $rc = 0
	# harvesterd wants harvester-link, which ends cleanly with no pool set.
	check link-exits-without-pool "harvester-link: $(systemctl show -p ActiveState,Result,ExecMainStatus --value harvester-link | tr '\n' ' ')" \
		wait_until 10 bash -c '[ "$(systemctl show -p ActiveState --value harvester-link)" = inactive ] &&
			[ "$(systemctl show -p Result --value harvester-link)" = success ] &&
			journalctl -u harvester-link -o cat --no-pager | grep -q "No \[Pool\] URL="'
	check harvestctl-status-unprivileged "status as nobody failed" \
		setpriv --reuid=nobody --regid=nogroup --clear-groups harvestctl status
	check harvestctl-pause-refused-unprivileged "pause as nobody was accepted" \
		bash -c '! setpriv --reuid=nobody --regid=nogroup --clear-groups harvestctl pause 2>/dev/null'
	pid=$(mainpid)
	check daemon-normal-priority "nice $(ps -o ni= -p "$pid") policy $(ps -o cls= -p "$pid")" \
		test "$(ps -o ni= -p "$pid" | tr -d ' ')" = 0 -a "$(ps -o cls= -p "$pid" | tr -d ' ')" = TS
	check daemon-in-supervisor-cgroup "$(cat /proc/"$pid"/cgroup)" \
		grep -q '^0::/harvest.slice/harvesterd.service/supervisor$' /proc/"$pid"/cgroup
	# Idle-class at the top of the tree, where the owner's work competes
	# with it, and the jobs idle against the daemon inside.
	check harvest-slice-idle "harvest.slice cpu.idle '$(cat /sys/fs/cgroup/harvest.slice/cpu.idle 2>&1)', jobs/ cpu.idle '$(cat /sys/fs/cgroup/harvest.slice/harvesterd.service/jobs/cpu.idle 2>&1)'" \
		test "$(cat /sys/fs/cgroup/harvest.slice/cpu.idle)" = 1 -a "$(cat /sys/fs/cgroup/harvest.slice/harvesterd.service/jobs/cpu.idle)" = 1

	# HARVESTER_VM_QUICK=1 (a file "quick" on the data disk) skips items
	# 1-3, the slow ones, to debug the rest of the suite faster.
	if [ -e $M/quick ]; then
		fail quick-mode "items 1-3 were skipped (HARVESTER_VM_QUICK)"
		busy=$(sub /bin/sh -c 'while :; do :; done & while :; do :; done')
		echo "$busy" >"$S/busy"
	else
	# --- 1. BPF probe with fentry input, cpu.max cap, idle ---
	wait_daemon 20 state_is idle
	s=$(st)
	note "status: $(jq -c '{state, reason, input_source, time_source, fallback_reason, cap_mechanism, cgroup}' <<<"$s")"
	check status-input-bpf "input_source=$(jq -r .input_source <<<"$s") ($(jq -r .fallback_reason <<<"$s"))" \
		test "$(jq -r .input_source <<<"$s")" = bpf
	check status-cap-cpu-max "cap_mechanism=$(jq -r .cap_mechanism <<<"$s")" \
		test "$(jq -r .cap_mechanism <<<"$s")" = cpu.max
	check status-idle "state=$(jq -r .state <<<"$s"): $(jq -r .reason <<<"$s")" \
		test "$(jq -r .state <<<"$s")" = idle

	# The daemon's own CPU while idle, with no job (2 status calls only).
	c0=$(stj .daemon.cpu_usec); t0=$(now_ns)
	sleep 10
	c1=$(stj .daemon.cpu_usec); t1=$(now_ns)
	if [ -n "$c0" ] && [ "$c0" != null ] && [ -n "$c1" ] && [ "$c1" != null ]; then
		figure daemon_idle_cpu_pct "$(calc "100 * ($c1 - $c0) * 1000 / ($t1 - $t0)")"
		figure daemon_rss_kib "$(( $(stj .daemon.rss_bytes) / 1024 ))"
	fi

	# --- 2. a CPU-bound job runs at the cap ---
	# Let the bucket (a fresh ledger starts empty) fill for the 10 s measured.
	wait_daemon 60 ok_calc "$(stj '.budget.tokens_usec // 0') >= 6000000"
	note "budget: $(stj -c .budget)"
	busy=$(sub /bin/sh -c 'while :; do :; done & while :; do :; done')
	note "busy job $busy"
	echo "$busy" >"$S/busy"
	if ! wait_daemon 20 test "$(job "$busy" state)" = running; then
		note "busy job not running: $(jobsj -c '.jobs[-1]')"
		journal_tail 30
	fi
	cg=$(cgpath)
	ncpu=$(nproc)
	burst_ppm=$(stj .budget.burst_ppm)
	cap=$(calc "${burst_ppm:-0} * $ncpu / 1000000")   # CPUs
	cpumax=$(cat "$cg/cpu.max" 2>/dev/null)
	note "jobs cgroup $cg cpu.max '$cpumax', Burst ${burst_ppm} ppm x $ncpu CPUs = cap $cap CPU"
	# harvesterd aims cpu.max at 98 % of the cap (the kernel overruns a
	# small quota by a few percent).
	want_quota=$(calc "${burst_ppm:-0} * $ncpu * 98 / 1000" | cut -d. -f1)
	check cap-cpu-max-set "cpu.max '$cpumax', expected '$want_quota 100000'" test "$cpumax" = "$want_quota 100000"
	jcg=$cg/$busy
	[ -d "$jcg" ] || jcg=$cg
	sleep 2
	s0=$(stj .state)
	sample_usage "$jcg"; u0=$U; t0=$T; prev_u=$u0; prev_t=$t0; max1=0
	for i in 1 2 3 4 5 6 7 8 9 10; do
		sleep 1
		sample_usage "$jcg"; u=$U; t=$T
		r=$(calc "($u - $prev_u) * 1000 / ($t - $prev_t)")
		ok_calc "$r > $max1" && max1=$r
		prev_u=$u; prev_t=$t
	done
	s1=$(stj .state)
	avg=$(calc "($prev_u - $u0) * 1000 / ($prev_t - $t0)")
	err=$(calc "100 * ($avg - $cap) / ($cap > 0 ? $cap : 1)")
	figure cap_cpus "$cap"
	figure cap_measured_cpus_10s "$avg"
	figure cap_error_pct "$err"
	figure cap_max_1s_cpus "$max1"
	# Stated tolerance: the 10 s average within 5 % of the cap and at most
	# 2 % above it; no 1 s sample above cap + one period's quota (10 %).
	check cap-precision "avg $avg CPU vs cap $cap (error $err %, state $s0 -> $s1)" \
		ok_calc "\"$s0\" == \"idle\" && \"$s1\" == \"idle\" && $err >= -5 && $err <= 2"
	check cap-never-above "a 1 s sample used $max1 CPU, cap $cap" ok_calc "$max1 <= $cap * 1.10 + 0.01"

	# --- 3. keystrokes freeze the job; it thaws after InputIdleSec ---
	n0=$(stj .reaction.count)
	nkeys=22 froze=0 thawed=0 thaw_s="" misses=0
	# frozen_is V: the jobs/ cgroup's own cgroup.events says "frozen V" (read
	# directly, not through the daemon, and cheaply: no fork for the read).
	frozen_is() { local l; while read -r l; do [ "$l" = "frozen $1" ] && return 0; done <"$cg/cgroup.events"; return 1; }
	poll_events() { # poll_events SECONDS V
		local end=$(( $(date +%s) + $1 ))
		while [ "$(date +%s)" -le $end ]; do frozen_is "$2" && return 0; sleep 0.02; done
		return 1
	}
	thawed_prev=no
	for k in $(seq 1 $nkeys); do
		# After a thaw seen in cgroup.events the daemon is idle again; ask it
		# only when that is not known (status calls are slow on TCG).
		if [ $thawed_prev = no ]; then
			wait_daemon 15 idle_thawed || { note "key $k: not idle and thawed: $(stj -c '{state,reason,frozen}')"; continue; }
		fi
		thawed_prev=no
		echo "VMTEST-KEY $k"
		if poll_events 10 1; then
			froze=$((froze + 1))
			tf=$(now_s)
			if poll_events 15 0; then
				thawed=$((thawed + 1))
				th=$(calc "$(now_s) - $tf")
				thaw_s="$thaw_s $th"
				thawed_prev=yes
			else
				th=never
			fi
			note "key $k: frozen, thawed after $th s"
		else
			note "key $k: not frozen within 10 s: $(stj -c '{state, reason, frozen, last_activity_ago_usec, jobs}')"
			misses=$((misses + 1))
			# Three keys in a row without a freeze: the rest would not either.
			[ "$misses" -ge 3 ] && [ "$froze" = 0 ] && break
		fi
	done
	n1=$(stj .reaction.count)
	got=$(( ${n1:-0} - ${n0:-0} ))
	note "reaction samples (to last run, to frozen; usec): $(stj -c ".reaction.samples[-$got:]")"
	figure keystrokes "$nkeys sent, $got reactions, $froze frozen, $thawed thawed"
	check key-freezes-job "$froze of $nkeys keys froze the job (frozen 1 in jobs/ cgroup.events within 10 s)" test "$froze" -ge 20 -a "$froze" = "$nkeys"
	samples=$(stj ".reaction.samples[-$got:][] | map(tostring) | join(\"\t\")")
	[ "$got" -gt 0 ] || samples=""
	read -r lr50 lrmax <<<"$(cut -f1 <<<"$samples" | stats)"
	read -r fz50 fzmax <<<"$(cut -f2 <<<"$samples" | stats)"
	nlr=$(cut -f1 <<<"$samples" | grep -cv '^null$\|^$')
	figure reaction_to_last_run_ms_p50_max "$(calc "${lr50/none/-1000} / 1000") $(calc "${lrmax/none/-1000} / 1000") (n=$nlr)"
	figure reaction_to_frozen_ms_p50_max "$(calc "${fz50/none/-1000} / 1000") $(calc "${fzmax/none/-1000} / 1000") (n=$got)"
	check reaction-both-ways "$nlr samples with input-to-last-run of $got (need 20)" test "$nlr" -ge 20 -a "$got" -ge 20
	# Event-driven freezing takes milliseconds, even on an emulated CPU:
	# Event-driven, not polled: a 1 s poll would give a p50 near 500 ms. The
	# bound leaves room for the emulated CPU on a busy 2-core host (TCG runs
	# the guest 10-50x slower); the figures above are what to read.
	check reaction-event-driven "to last run p50/max ${lr50}/${lrmax} us, to frozen ${fz50}/${fzmax} us" \
		ok_calc "\"$fz50\" != \"none\" && \"$lr50\" != \"none\" && $fz50 <= 250000 && $lr50 <= 250000"
	read -r th50 thmax <<<"$(tr ' ' '\n' <<<"$thaw_s" | grep -v '^$' | stats)"
	figure thaw_after_key_s_p50_max "$th50 $thmax (InputIdleSec=2s)"
	# Thawed InputIdleSec after the key (counted from the freeze), give or
	# take the 20 ms polling and the daemon's own timer slack.
	check job-thaws-after-idle "$thawed of $froze thawed; after $th50 s (p50), $thmax s (max); InputIdleSec=2s" \
		ok_calc "$thawed == $froze && $froze > 0 && \"$th50\" != \"none\" && $th50 >= 1.8 && $thmax <= 4"

	fi # quick

	# --- 4. budget exhaustion; the ledger survives restart and reboot ---
	setconf CPU 1%
	setconf Window 1min
	systemctl reload harvesterd
	exhausted_frozen() { local s; s=$(st) && [ "$(jq -r .state <<<"$s")" = exhausted ] && [ "$(jq -r .frozen <<<"$s")" = true ]; }
	if wait_daemon 40 exhausted_frozen; then
		pass budget-exhaustion-freezes
	else
		fail budget-exhaustion-freezes "$(stj -c '{state, reason, frozen, budget}')"
	fi
	check ledger-file "no /var/lib/harvester/ledger" test -s /var/lib/harvester/ledger
	b1=$(stj -c .budget); t1=$(date +%s.%N)
	note "budget before restart: $b1"
	systemctl restart harvesterd
	wait_daemon 20 test -n "$(stj .budget.spent_total_usec)"
	b2=$(stj -c .budget); t2=$(date +%s.%N)
	note "budget after restart: $b2"
	sp1=$(jq .spent_total_usec <<<"$b1"); sp2=$(jq .spent_total_usec <<<"$b2")
	tk1=$(jq .tokens_usec <<<"$b1"); tk2=$(jq .tokens_usec <<<"$b2"); rate=$(jq .rate_usec_per_sec <<<"$b1")
	check ledger-survives-restart "spent $sp1 -> $sp2, tokens $tk1 -> $tk2 in $(calc "$t2 - $t1") s at $rate/s" \
		ok_calc "$sp1 > 0 && $sp2 >= $sp1 && $tk2 <= $tk1 + $rate * ($t2 - $t1) + 300000"
	jq -n --argjson b "$b2" --arg t "$t2" '$b + {t: ($t|tonumber)}' >"$S/budget.json"
	echo 2 >"$S/phase"
	sync
	echo "VMTEST REBOOT"
	systemctl reboot
	sleep infinity
fi

if [ "$phase" = 2 ]; then
	echo 3 >"$S/phase"
	# The unit was enabled: it starts at boot by itself.
	check enabled-starts-at-boot "harvesterd is $(systemctl is-active harvesterd) after reboot" \
		wait_until 60 unit_active harvesterd
	wait_daemon 20 test -n "$(stj .budget.spent_total_usec)"
	b=$(stj -c .budget); t=$(date +%s.%N)
	note "budget after reboot: $b"
	sp1=$(jq .spent_total_usec "$S/budget.json"); tk1=$(jq .tokens_usec "$S/budget.json")
	t1=$(jq .t "$S/budget.json"); rate=$(jq .rate_usec_per_sec "$S/budget.json")
	sp2=$(jq .spent_total_usec <<<"$b"); tk2=$(jq .tokens_usec <<<"$b")
	check ledger-survives-reboot "spent $sp1 -> $sp2, tokens $tk1 -> $tk2 in $(calc "$t - $t1") s at $rate/s" \
		ok_calc "$sp1 > 0 && $sp2 >= $sp1 && $tk2 <= $tk1 + $rate * ($t - $t1) + 300000"
	busy=$(cat "$S/busy")
	check job-survives-reboot "busy job $busy is '$(job "$busy" state)' after reboot" \
		test -n "$(job "$busy" state)"
	setconf CPU 24%
	setconf Window 10min

	# --- 5. a bad value in /etc: start fails, the journal names file, line, key ---
	cp "$CONF" /tmp/good.conf
	sed -i 's/^CPU=.*/CPU=lots/' "$CONF"
	line=$(grep -n '^CPU=lots$' "$CONF" | cut -d: -f1)
	systemctl stop harvesterd
	since=$(date '+%Y-%m-%d %H:%M:%S')
	sleep 1
	if timeout 60 systemctl start harvesterd 2>/dev/null; then
		fail bad-config-start-fails "systemctl start succeeded with CPU=lots at line $line"
	else
		pass bad-config-start-fails
	fi
	want="$CONF:$line: CPU=lots"
	j=$(journalctl -u harvesterd --since "$since" -o cat --no-pager 2>&1)
	check bad-config-journal-names-file-line-key "no '$want' in: $(grep -i 'conf' <<<"$j" | head -n 3 | tr '\n' '|')" \
		grep -qF "$want" <<<"$j"
	out=$(harvesterd --check-config 2>&1); rc=$?
	if [ $rc != 0 ] && grep -qF "$want" <<<"$out"; then pass check-config-rejects
	else fail check-config-rejects "exit $rc: $(tr '\n' '|' <<<"$out")"; fi
	cp /tmp/good.conf "$CONF"
	systemctl reset-failed harvesterd
	check good-config-starts "$(systemctl start harvesterd 2>&1)" systemctl start harvesterd

	# --- 7. misbehaving jobs fail with their reason; the daemon goes on ---
	[ -n "$busy" ] && harvestctl cancel "$busy" >/dev/null 2>&1
	rm -f /tmp/net-hits /var/tmp/harvester-escape /etc/harvester-escape
	socat -u TCP-LISTEN:7777,bind=127.0.0.1,reuseaddr,fork OPEN:/tmp/net-hits,creat,append &
	sockpid=$!
	sleep 1
	echo probe-from-host-netns >/dev/tcp/127.0.0.1/7777
	pid0=$(mainpid); nr0=$(systemctl show -p NRestarts --value harvesterd)
	wait_daemon 30 state_is idle
	good=$(sub /bin/sh -c 'i=0; while [ $i -lt 2000 ]; do i=$((i + 1)); done; sleep 8; echo good-done')
	mem=$(sub /usr/bin/tail /dev/zero)
	pids=$(sub /bin/sh -c 'while :; do sleep 1000 & done')
	net=$(sub /bin/bash -c 'echo from-job >/dev/tcp/127.0.0.1/7777 && echo connected')
	wr=$(sub /bin/sh -ec 'echo x >/var/tmp/harvester-escape; echo x >/etc/harvester-escape; echo escaped')
	note "jobs: good $good mem $mem pids $pids net $net write $wr"
	final() { case $(job "$1" state) in done|failed|cancelled) return 0 ;; esac; return 1; }
	all_final() { final "$good" && final "$mem" && final "$pids" && final "$net" && final "$wr"; }
	wait_daemon 150 all_final
	for id in $good $mem $pids $net $wr; do
		note "job $id: $(jobsj -c ".jobs[] | select((.id | tostring) == \"$id\") | {argv, state, exit_code, signal, reason}")"
	done
	# verdict NAME OK WHY: pass when OK is 0 (the exit status of the test before it)
	verdict() { if [ "$2" = 0 ]; then pass "$1"; else fail "$1" "$3"; fi; }
	st_=$(job "$mem" state); r=$(job "$mem" reason)
	[ "$st_" = failed ] && grep -qi memory <<<"$r"
	verdict job-memory-limit $? "state $st_, reason '$r'"
	st_=$(job "$pids" state); r=$(job "$pids" reason)
	[ "$st_" = failed ] && grep -qiE 'process|pids|tasks' <<<"$r"
	verdict job-process-limit $? "state $st_, reason '$r'"
	st_=$(job "$net" state); r=$(job "$net" reason); hits=$(tr '\n' '|' </tmp/net-hits 2>/dev/null)
	[ "$st_" = failed ] && [ -n "$r" ] && [ "$r" != null ] && ! grep -q from-job <<<"$hits" && grep -q probe-from-host-netns <<<"$hits"
	verdict job-no-network $? "state $st_, reason '$r', the listener got '$hits'"
	st_=$(job "$wr" state); r=$(job "$wr" reason); out=$(cat "$(job "$wr" stdout)" 2>/dev/null)
	esc=$(ls /var/tmp/harvester-escape /etc/harvester-escape 2>/dev/null | tr '\n' ' ')
	[ "$st_" = failed ] && [ -n "$r" ] && [ "$r" != null ] && [ -z "$esc" ] && ! grep -q escaped <<<"$out"
	verdict job-no-write-outside-scratch $? "state $st_, reason '$r', stdout '$out', files written: '$esc'"
	st_=$(job "$good" state); ec=$(job "$good" exit_code); out=$(cat "$(job "$good" stdout)" 2>/dev/null)
	[ "$st_" = done ] && [ "$ec" = 0 ] && grep -q good-done <<<"$out"
	verdict good-job-unaffected $? "state $st_, exit $ec, stdout '$out'"
	pid1=$(mainpid); nr1=$(systemctl show -p NRestarts --value harvesterd)
	[ "$pid1" = "$pid0" ] && [ "$nr1" = "$nr0" ] && harvestctl status >/dev/null 2>&1
	verdict daemon-goes-on $? "pid $pid0 -> $pid1, restarts $nr0 -> $nr1, $(systemctl is-active harvesterd)"
	kill $sockpid 2>/dev/null

	# --- 7b. GPU: an OpenCL job under the hardened unit (PoCL's CPU device) ---
	# shellcheck source=guest-gpu.sh
	. $M/guest-gpu.sh
	gpu_section

	# --- 8. the pool path: harvest-pool.service, harvester-link, no network in harvesterd ---
	# shellcheck source=guest-pool.sh
	. $M/guest-pool.sh
	pool_section
	cuda_section

	# --- upgrade: restarts the running service, keeps ledger and queue ---
	note "upgrade: pause, queue a job, reinstall the package"
	timeout 20 harvestctl pause >/dev/null
	q=$(sub /bin/true)
	[ -n "$q" ] || note "upgrade: submit while paused failed: $(tr '\n' ' ' <"$S/submit.err")"
	sp1=$(stj .budget.spent_total_usec); pid1=$(mainpid)
	lpid1=$(systemctl show -p MainPID --value harvester-link)
	t=$(now_s)
	timeout 120 apt-get install -y -q --reinstall "$(ls $M/harvester_*.deb | head -n 1)" >/tmp/apt.log 2>&1 ||
		note "reinstall: $(tail -n 3 /tmp/apt.log | tr '\n' ' ')"
	figure upgrade_reinstall_s "$(calc "$(now_s) - $t")"
	wait_until 20 unit_active harvesterd
	wait_daemon 20 test -n "$(stj .budget.spent_total_usec)"
	sp2=$(stj .budget.spent_total_usec); pid2=$(mainpid)
	check upgrade-restarts-keeps-state "pid $pid1 -> $pid2, spent $sp1 -> $sp2, queued job $q is '$(job "$q" state)'" \
		ok_calc "$pid2 != $pid1 && $pid2 > 0 && $sp2 >= $sp1 && \"$(job "$q" state)\" == \"queued\""
	# harvester-link is left alone by the maintainer scripts: it follows
	# harvesterd (PartOf=), so the daemon's restart restarts it too.
	lpid2=$(systemctl show -p MainPID --value harvester-link)
	check upgrade-restarts-link-with-daemon "harvester-link pid $lpid1 -> $lpid2, $(systemctl is-active harvester-link)" \
		test "$lpid1" != 0 -a "$lpid2" != 0 -a "$lpid2" != "$lpid1"
	timeout 20 harvestctl resume >/dev/null

	# --- 6. stop leaves no job process; purge leaves no state ---
	b=$(sub /bin/sh -c 'while :; do :; done')
	wait_daemon 30 test "$(job "$b" state)" = running
	cg=$(cgpath)
	jpids=$(cat "$cg"/*/cgroup.procs 2>/dev/null | tr '\n' ' ')
	note "running job $b pids: $jpids"
	note "stop: job $b running"
	t=$(now_s)
	timeout 90 systemctl stop harvesterd
	figure stop_s "$(calc "$(now_s) - $t")"
	left=""
	for p in $jpids; do [ -d /proc/$p ] && left="$left $p"; done
	byuser=$(pgrep -u harvester | tr '\n' ' ')
	unitprocs=$(cat /sys/fs/cgroup/harvest.slice/harvesterd.service/cgroup.procs \
		/sys/fs/cgroup/harvest.slice/harvesterd.service/*/cgroup.procs \
		/sys/fs/cgroup/harvest.slice/harvesterd.service/*/*/cgroup.procs 2>/dev/null | tr '\n' ' ')
	check stop-leaves-no-job-process "job pids '$jpids' left '$left', user harvester '$byuser', unit cgroup '$unitprocs'" \
		test -n "$jpids" -a -z "$left$byuser" -a -z "$(tr -d ' ' <<<"$unitprocs")"
	check stop-stops-link "harvester-link is $(systemctl is-active harvester-link), /run/harvester-link $(ls -d /run/harvester-link 2>&1)" \
		test "$(systemctl is-active harvester-link)" = inactive -a ! -e /run/harvester-link
	note "purge"
	pooled=$(dpkg-query -W -f='${db:Status-Status}' harvester-pool 2>/dev/null)
	timeout 120 apt-get purge -y -q harvester $([ "$pooled" = installed ] && echo harvester-pool) >/tmp/apt.log 2>&1
	left=$(ls -d /var/lib/harvester /var/cache/harvester /etc/harvester /run/harvester /lib/systemd/system/harvesterd.service /lib/systemd/system/harvest.slice \
		/etc/systemd/system/multi-user.target.wants/harvesterd.service /run/harvester-link \
		/lib/systemd/system/harvester-link.service /usr/libexec/harvester 2>/dev/null | tr '\n' ' ')
	check purge-leaves-no-state "left: $left" test -z "$left"
	if [ "$pooled" = installed ]; then
		left=$(ls -d /var/lib/harvest-pool /var/lib/private/harvest-pool /lib/systemd/system/harvest-pool.service \
			/etc/systemd/system/multi-user.target.wants/harvest-pool.service 2>/dev/null | tr '\n' ' ')
		check pool-purge-leaves-no-state "left: $left; harvest-pool is $(systemctl is-active harvest-pool)" \
			test -z "$left" -a "$(systemctl is-active harvest-pool)" != active
	fi
	finish
fi

# Phase 3 or later: the test already ran (an unexpected extra boot).
fail unexpected-boot "phase $phase"
finish
