# The VM suite's GPU section (sourced by guest-test.sh, which defines pass,
# fail, check, note, st/stj, setconf, job, wait_daemon and state_is). The
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
