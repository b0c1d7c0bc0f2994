# The VM suite's pool section (sourced by guest-test.sh, which defines pass,
# fail, check, figure, note, st/stj, setconf, mainpid, unit_active, wait_until, calc and
# ok_calc). As an operator and an owner would, on real systemd: with the
# harvester-pool package installed (phase 1 installs it beside harvester,
# in one apt call), `harvest-pool init`, Listen= on 127.0.0.1,
# `systemctl enable --now harvest-pool`; pin the printed key in
# /etc/harvester/harvester.conf and restart harvesterd, which brings
# harvester-link.service with it. Then:
#   - harvesterd has no network (its own net namespace, lo only), the link
#     runs unprivileged (uid not 0, no capabilities);
#   - tasks submitted at the pool are all done, each accepted exactly once,
#     signed by this node, and status shows the pool connected via the link;
#   - with netem on lo (10 % loss, 20 ms delay: the link's TCP hop to the
#     pool), every task still ends done, accepted exactly once;
#   - systemd-analyze verify and security of both new units.

POOL_URL=tcp://127.0.0.1:7450
POOL_DIR=/var/lib/harvest-pool
LINK_SOCK=ipc:///run/harvester-link/link.ipc

hp() { harvest-pool "$@" 2>>/tmp/harvest-pool.err; }
# pool_submit PREFIX N: N small tasks named PREFIX1..N, as one batch (one
# transaction, one start of the CLI); prints their ids
pool_submit() {
	seq 1 "$2" | jq -c --arg p "$1" '{id: "\($p)\(.)", argv: ["/bin/sh", "-c", "echo \($p) $((6 * \(.)))"]}' |
		hp submit --batch -
}
# tasks_done PREFIX N: every task PREFIX* is done, and there are N of them
tasks_done() {
	[ "$(hp --json tasks | jq --arg p "$1" '[.[] | select(.id | startswith($p)) | select(.state == "done")] | length')" = "$2" ]
}
# accepted_once PREFIX N: N tasks with exactly one accepted result each, and
# no task with more than one result row of any kind
accepted_once() {
	hp --json results | jq -e --arg p "$1" --argjson n "$2" '
		[.[] | select(.task | startswith($p))] as $r
		| ($r | map(select(.accepted)) | group_by(.task) | map(length)) as $acc
		| ($acc | length) == $n and ($acc | all(. == 1)) and ($r | length) == $n' >/dev/null
}
pool_note_state() {
	note "pool tasks: $(hp --json tasks | jq -c --arg p "$1" '[.[] | select(.id | startswith($p)) | {id, state, leased, results}]')"
	note "pool results: $(hp --json results | jq -c --arg p "$1" '[.[] | select(.task | startswith($p)) | {task, accepted}]')"
	note "node: $(stj -c .pool)"
}
exposure() { systemd-analyze security "$1" 2>/dev/null | sed -n "s/.*Overall exposure level for $1: \([0-9.]*\).*/\1/p"; }

pool_section() {
	local t0 key lpid dpid ppid v score n
	t0=$(now_s)
	if [ "$(dpkg-query -W -f='${db:Status-Status}' harvester-pool 2>/dev/null)" = installed ] &&
		[ -x /usr/bin/harvest-pool ] && [ -e /lib/systemd/system/harvest-pool.service ] &&
		[ -e /usr/share/man/man8/harvest-pool.8.gz ]; then
		pass pool-installed
	else
		fail pool-installed "harvester-pool: $(dpkg-query -W -f='${db:Status-Status}' harvester-pool 2>&1)"
		return
	fi
	check pool-install-user "no system user harvest-pool" getent passwd harvest-pool
	check pool-install-disabled "harvest-pool.service is $(systemctl is-enabled harvest-pool 2>&1)" \
		test "$(systemctl is-enabled harvest-pool 2>&1)" = disabled
	v=$(systemd-analyze verify --man=no harvest-pool.service harvester-link.service 2>&1)
	check pool-units-verify "systemd-analyze verify: $v" test -z "$v"
	score=$(exposure harvest-pool.service)
	figure pool_unit_exposure "${score:-unknown}"
	check pool-unit-exposure-at-most-2.0 "exposure ${score:-unknown}" ok_calc "${score:-99} <= 2.0"

	# The operator: init prints the key to pin; listen on loopback; short
	# leases, so a fetch reply that netem drops costs seconds, not minutes.
	key=$(harvest-pool init 2>/tmp/pool-init.err)
	check pool-init-prints-key "init said '$key' $(tr '\n' ' ' </tmp/pool-init.err)" test "${#key}" = 44
	sed -i "s|^#\? \?Listen=.*|Listen=$POOL_URL|; s|^LeaseSec=.*|LeaseSec=15|" $POOL_DIR/pool.conf
	if systemctl enable --now harvest-pool >/tmp/pool-enable.log 2>&1 &&
		wait_until 20 hp --json status >/dev/null && wait_until 20 bash -c "echo >/dev/tcp/127.0.0.1/7450" 2>/dev/null; then
		pass pool-service-starts
	else
		fail pool-service-starts "$(tr '\n' ' ' </tmp/pool-enable.log) $(systemctl is-active harvest-pool)"
		journalctl -u harvest-pool -n 20 --no-pager -o cat | sed 's/^/VMTEST LOG /'
		return
	fi
	ppid=$(systemctl show -p MainPID --value harvest-pool)
	check pool-runs-as-its-user "pid $ppid user $(ps -o user= -p "$ppid"), pool.key owned by $(stat -c %U $POOL_DIR/pool.key)" \
		test "$(ps -o user= -p "$ppid" | tr -d ' ')" = harvest-pool -a "$(stat -c %U $POOL_DIR/pool.key)" = harvest-pool

	# The owner: [Pool] in /etc with the printed key; harvesterd restarts
	# and brings harvester-link with it.
	setconf URL "$POOL_URL"
	setconf Key "$key"
	setconf MaxTasks 4
	systemctl restart harvesterd
	wait_until 20 unit_active harvester-link
	wait_until 20 test -S /run/harvester-link/link.ipc
	lpid=$(systemctl show -p MainPID --value harvester-link); dpid=$(mainpid)
	local luid lcap
	luid=$(awk '/^Uid:/ { print $2 }' /proc/"$lpid"/status 2>/dev/null)
	lcap=$(awk '/^CapEff:/ { print $2 }' /proc/"$lpid"/status 2>/dev/null)
	check link-unprivileged "harvester-link pid $lpid uid '$luid' CapEff '$lcap' ($(systemctl is-active harvester-link))" \
		test -n "$luid" -a "$luid" != 0 -a "$lcap" = 0000000000000000
	local dns pns difs
	dns=$(readlink /proc/"$dpid"/ns/net); pns=$(readlink /proc/1/ns/net)
	difs=$(awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/"$dpid"/net/dev | tr '\n' ' ')
	check daemon-has-no-network "harvesterd net ns $dns (PID 1: $pns), interfaces: $difs" \
		test -n "$dns" -a "$dns" != "$pns" -a "$difs" = "lo "
	score=$(exposure harvester-link.service)
	figure link_unit_exposure "${score:-unknown}"
	figure daemon_unit_exposure_with_link "$(exposure harvesterd.service)"

	# Tasks through pool -> link -> harvesterd -> jobs, and back.
	local t1 ids
	t1=$(now_s)
	ids=$(pool_submit vm 6 | wc -w)
	check pool-submit-batch "$ids ids printed; $(tail -n 2 /tmp/harvest-pool.err 2>/dev/null | tr '\n' ' ')" test "$ids" = 6
	if wait_until 120 tasks_done vm 6; then pass pool-tasks-done; else fail pool-tasks-done "not all 6 done in 120 s"; pool_note_state vm; fi
	figure pool_6_tasks_s "$(calc "$(now_s) - $t1")"
	check pool-each-accepted-once "results: $(hp --json results | jq -c '[.[] | select(.task | startswith("vm")) | {task, accepted}]')" \
		wait_until 10 accepted_once vm 6
	local wkey out
	wkey=$(stj .pool.worker_id)
	n=$(hp --json results | jq --arg w "$wkey" '[.[] | select(.task | startswith("vm")) | select(.worker == $w)] | length')
	check pool-results-signed-by-node "$n of 6 results from worker $wkey" test "$n" = 6
	out=$(hp --json results --task vm5 --outputs | jq -r '.[0].outputs[0].data_base64' | base64 -d 2>/dev/null)
	check pool-result-output "task vm5 output '$out'" test "$out" = "vm 30"
	check pool-status-via-link "status.pool: $(stj -c '.pool | {url, via, connected, done, results_accepted}')" \
		test "$(stj .pool.connected)" = true -a "$(stj .pool.via)" = "$LINK_SOCK" -a "$(stj .pool.url)" = "$POOL_URL"

	# Loss and delay on the link's TCP hop (lo); the ipc hop is a Unix socket.
	if tc qdisc add dev lo root netem loss 10% delay 20ms 2>/tmp/tc.err; then
		note "netem: $(tc qdisc show dev lo)"
		t1=$(now_s)
		pool_submit ne 8 >/dev/null
		if wait_until 180 tasks_done ne 8; then pass netem-tasks-done; else fail netem-tasks-done "not all 8 done in 180 s"; pool_note_state ne; fi
		figure netem_8_tasks_s "$(calc "$(now_s) - $t1") (loss 10%, delay 20ms)"
		check netem-each-accepted-once "results: $(hp --json results | jq -c '[.[] | select(.task | startswith("ne")) | {task, accepted}]')" \
			wait_until 20 accepted_once ne 8
		tc qdisc del dev lo root
	else
		fail netem-available "tc qdisc add ... netem: $(tr '\n' ' ' </tmp/tc.err)"
	fi
	figure pool_section_s "$(calc "$(now_s) - $t0")"
}
