# The VM suite's GPU sections (sourced by guest-test.sh, which defines pass,
# fail, check, note, st/stj, setconf, job, mainpid, wait_until, wait_daemon
# and state_is; cuda_section also uses guest-pool.sh's hp). The
# guest has no GPU, but its PoCL CPU device goes through the same path a
# GPU's OpenCL driver does under the shipped, hardened harvesterd.service:
# the ICD loader and driver loaded in the daemon (seccomp filter,
# MemoryDenyWriteExecute, a read-only system, ProtectHome, a private /dev),
# the kernel compiled and cached (POCL_CACHE_DIR in CacheDirectory=), run
# in slices, charged to the GPU budget. As an admin would:
# OpenCLCPUDevices=yes and GPU= in the conffile, a restart, then
# `harvestctl submit-gpu`. Checks:
#   - status lists the OpenCL device, with a busy-detection mode;
#   - the job is done, its output equals a reference computed here in
#     shell arithmetic, and its device time was charged to the GPU bucket;
#   - PoCL's kernel cache is under /var/cache/harvester.

gpu_kernel='__kernel void scramble(__global const uint *in, __global uint *out, uint rounds) {
	uint i = (uint) get_global_id(0);
	uint x = in[i] ^ (i * 2654435761u);
	for (uint r = 0; r < rounds; r++)
		x = x * 1664525u + 1013904223u + i;
	out[i] = x;
}'

# gpu_reference FILE ROUNDS: scramble() of FILE's words, one a line
gpu_reference() {
	local i=0 w x r
	for w in $(od -An -tu4 -v "$1"); do
		x=$(( (w ^ ((i * 2654435761) & 0xFFFFFFFF)) & 0xFFFFFFFF ))
		for ((r = 0; r < $2; r++)); do
			x=$(( (x * 1664525 + 1013904223 + i) & 0xFFFFFFFF ))
		done
		echo "$x"
		i=$((i + 1))
	done
}

gpu_section() {
	local s n id out in=/var/tmp/gpu-in.bin src=/var/tmp/scramble.cl got want spent
	note "gpu: OpenCLCPUDevices=yes, GPU=50%, a restart"
	setconf OpenCLCPUDevices yes
	setconf GPU 50%
	systemctl restart harvesterd
	wait_daemon 60 state_is idle
	s=$(st)
	n=$(jq '[.gpu.devices[] | select(.backend == "opencl")] | length' <<<"$s" 2>/dev/null)
	note "gpu devices: $(jq -c '[.gpu.devices[] | {id, name, busy_detection}]' <<<"$s" 2>/dev/null)"
	check gpu-device-under-unit "OpenCL devices: ${n:-none}; opencl_absent: $(jq -r .gpu.opencl_absent <<<"$s" 2>/dev/null)" \
		test "${n:-0}" -ge 1

	printf '%s\n' "$gpu_kernel" >"$src"
	head -c 4096 /dev/urandom >"$in"
	id=$(harvestctl submit-gpu --source "$src" --kernel scramble --global 1024 --out-bytes 4096 --in "$in" \
		--uint 3 2>/tmp/gpu.err | tail -n 1 | tr -d '[:space:]')
	gpu_final() { case $(job "$id" state) in done|failed|cancelled) return 0 ;; esac; return 1; }
	wait_daemon 180 gpu_final
	out=$(job "$id" output)
	got=$(od -An -tu4 -v "$out" 2>/dev/null | tr -s ' ' '\n' | grep .)
	want=$(gpu_reference "$in" 3)
	check gpu-opencl-job-under-unit "job '$id' ($(cat /tmp/gpu.err)): state $(job "$id" state), reason '$(job "$id" reason)', \
$(grep -c . <<<"$got") words of output" test -n "$got" -a "$got" = "$want"
	spent=$(stj .gpu.budget.spent_total_usec)
	check gpu-budget-charged "GPU bucket spent ${spent:-?} us, the job's device time $(job "$id" device_usec) us" \
		test "${spent:-0}" -gt 0
	check gpu-kernel-cache "nothing under /var/cache/harvester/pocl: $(ls -A /var/cache/harvester 2>&1 | tr '\n' ' ')" \
		test -n "$(ls -A /var/cache/harvester/pocl 2>/dev/null)"

	setconf OpenCLCPUDevices no
	systemctl restart harvesterd
	wait_daemon 60 state_is idle
}

# --- CUDA through the pool, on the stand-in driver -------------------------------
# No GPU here, so the packaged daemon loads the stand-in libcuda.so.1 (tests/
# unit/fake-cuda.c, on the data disk) through a drop-in setting
# HARVESTER_LIBCUDA. Called after pool_section (the pool runs, the node is
# pinned to it). Checks, under the shipped unit and real systemd:
#   - status lists the CUDA device; a PTX task from the pool gives the
#     reference bytes;
#   - a PTX task that reads past its buffer faults: its result is failed
#     with the driver's words, harvesterd exits with status 75, and systemd
#     starts it again (RestartForceExitStatus=75, NRestarts grows);
#   - after that restart a CUDA task gives the reference bytes again.
cuda_task_done() { [ "$(hp --json tasks | jq -r --arg t "$1" '.[] | select(.id == $t) | .state')" = done ]; }
pool_connected() { [ "$(stj .pool.connected)" = true ]; }
cuda_result() { hp --json results --task "$1" --outputs | jq -r ".[0].$2"; }
# cuda_submit ID INPUT THREADS: scramble(), 1 round, THREADS threads over INPUT
cuda_submit() {
	hp submit --id "$1" --kind cuda --source $M/scramble.ptx --kernel scramble --global "$3" --local 256 \
		--arg "in:in=$2" --arg out:out=1024 --arg "u32:$3" --arg u32:1 >/dev/null
	wait_until 120 cuda_task_done "$1"
}
# cuda_output_ok ID INPUT: the task's output equals scramble() of INPUT
cuda_output_ok() {
	local got
	got=$(hp --json results --task "$1" --outputs | jq -r '.[0].outputs[] | select(.name == "out") | .data_base64' |
		base64 -d 2>/dev/null | od -An -tu4 -v | tr -s ' ' '\n' | grep .)
	[ -n "$got" ] && [ "$got" = "$(gpu_reference "$2" 1)" ]
}

cuda_section() {
	local lib=/usr/local/lib/harvester-stand-in/libcuda.so.1 dropin=/etc/systemd/system/harvesterd.service.d/stand-in.conf
	local in=/var/tmp/cuda-in.bin nr0 nr1 pid0 pid1 since why
	if [ ! -f $M/libcuda.so.1 ] || [ "$(stj .pool.connected)" != true ]; then
		fail cuda-stand-in "needs $M/libcuda.so.1 ($(ls $M/libcuda.so.1 2>&1)) and a connected pool ($(stj .pool.connected))"
		return
	fi
	install -D -m 0644 $M/libcuda.so.1 $lib
	mkdir -p "${dropin%/*}"
	printf '[Service]\nEnvironment=HARVESTER_LIBCUDA=%s\n' "$lib" >"$dropin"
	systemctl daemon-reload
	systemctl restart harvesterd
	wait_daemon 60 state_is idle
	wait_until 30 pool_connected
	check cuda-device-under-unit "devices $(stj -c '[.gpu.devices[] | {id, name}]'), cuda_absent: $(stj .gpu.cuda_absent)" \
		test "$(stj '[.gpu.devices[] | select(.backend == "cuda")] | length')" = 1
	head -c 1024 /dev/urandom >$in
	cuda_submit cu-ok $in 256
	check cuda-task-under-unit "status $(cuda_result cu-ok status), reason $(cuda_result cu-ok reason)" cuda_output_ok cu-ok $in

	nr0=$(systemctl show -p NRestarts --value harvesterd); pid0=$(mainpid); since=$(date '+%Y-%m-%d %H:%M:%S')
	cuda_submit cu-fault $in 8192
	why=$(hp --json results --task cu-fault --outputs | jq -r '.[0].outputs[] | select(.name == "reason") | .data_base64' | base64 -d 2>/dev/null)
	check cuda-fault-result "status $(cuda_result cu-fault status), reason '$why'" \
		test "$(cuda_result cu-fault status)" = failed -a -n "$(grep 'faulted.*illegal memory access' <<<"$why")"
	wait_until 60 bash -c "[ \"\$(systemctl show -p NRestarts --value harvesterd)\" -gt $nr0 ] && [ \"\$(systemctl is-active harvesterd)\" = active ]"
	nr1=$(systemctl show -p NRestarts --value harvesterd); pid1=$(mainpid)
	check cuda-fault-systemd-restarts "NRestarts $nr0 -> $nr1, pid $pid0 -> $pid1, $(systemctl is-active harvesterd); journal: $(journalctl -u harvesterd --since "$since" -o cat --no-pager | grep -E 'faulted|Exiting for a restart' | head -n 2 | tr '\n' '|')" \
		test "$nr1" -gt "$nr0" -a "$pid1" != "$pid0" -a -n "$(journalctl -u harvesterd --since "$since" -o cat --no-pager | grep 'Exiting for a restart (status 75)')"
	wait_daemon 60 state_is idle
	wait_until 30 pool_connected
	cuda_submit cu-after $in 256
	check cuda-after-restart "status $(cuda_result cu-after status), reason $(cuda_result cu-after reason)" cuda_output_ok cu-after $in

	rm -f "$dropin" $lib
	systemctl daemon-reload
	systemctl restart harvesterd
	wait_daemon 60 state_is idle
}
