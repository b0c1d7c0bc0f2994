#!/bin/bash
# make bench, guest side: runs as root in the VM suite's Debian 12 guest
# (systemd as PID 1, cgroup v2 with the cpu controller, fentry), booted by
# tests/vm/driver.py. Prints its figures on the serial console:
#   VMTEST FIGURE name value...     VMTEST-KEY n (the host presses a key)
#   VMTEST PASS / FAIL name          VMTEST DONE
# The arms the host cannot run: harvesterd with cpu.max, a plain systemd
# CPUQuota= cap, and reaction to real keystrokes (QMP input-send-event into
# the guest kernel's input_event()). The guest CPU is emulated (TCG): its
# latencies are in milliseconds and only the ratios between arms of the same
# run mean anything. cyclictest percentiles in the overflow read 50000.
set -u
export LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
M=/mnt/vmtest
ROUNDS=${ROUNDS:-3}
CYC_S=5
SYSB_S=3
REACT_N=50
NCPU=$(nproc)

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
sysb() { sysbench cpu --threads="$NCPU" --time="$SYSB_S" run | awk -F: '/events per second/ { gsub(/ /, "", $2); print $2 }'; }
jobs_usage() { local cg; cg=$(stj .cgroup); case $cg in /sys/*) ;; *) cg=/sys/fs/cgroup$cg ;; esac; awk '$1 == "usage_usec" { print $2 }' "$cg/cpu.stat"; }
unit_usage() { systemctl show -p CPUUsageNSec --value "bench-quota-$r.service" | awk '{ print int($1 / 1000) }'; }

# --- intrusion: alone, a (harvesterd, cpu.max), c (systemd CPUQuota=), d (nice 19 + SCHED_IDLE)
quota=$(( 10 * NCPU ))  # CPUQuota= is per CPU: 10 % of the machine
for r in $(seq "$ROUNDS"); do
	for arm in alone a c d; do
		u0=0
		case $arm in
		a) harvestctl resume >/dev/null; sleep 1; u0=$(jobs_usage) ;;
		c) systemd-run -q --collect --unit "bench-quota-$r" -p CPUQuota=${quota}% /bin/sh -c \
			"for i in \$(seq $NCPU); do /usr/local/bin/burn & done; wait"; sleep 1; u0=$(unit_usage) ;;
		d) for _ in $(seq "$NCPU"); do nice -n 19 chrt -i 0 /usr/local/bin/burn & done; sleep 1
		   pids=$(pgrep -x burn -P $$ | tr '\n' ' ') ;;
		esac
		t0=$(now)
		c=$(cyc)
		s=$(sysb)
		t1=$(now)
		got=-
		case $arm in
		a) got=$(awk -v a="$u0" -v b="$(jobs_usage)" -v t="$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}')" -v n="$NCPU" 'BEGIN { printf "%.4f", (b-a)/1e6/(t*n) }')
		   harvestctl pause >/dev/null ;;
		c) got=$(awk -v a="$u0" -v b="$(unit_usage)" -v t="$(awk -v x="$t0" -v y="$t1" 'BEGIN{print y-x}')" -v n="$NCPU" 'BEGIN { printf "%.4f", (b-a)/1e6/(t*n) }')
		   systemctl stop "bench-quota-$r" ;;
		d) kill $pids; wait 2>/dev/null ;;
		esac
		figure g_intr "$r" "$arm" $c "$s" "$got"
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
systemctl stop harvesterd
echo "VMTEST PASS bench"
done_
