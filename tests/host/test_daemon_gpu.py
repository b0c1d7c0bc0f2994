#!/usr/bin/env python3
"""Host integration test of harvesterd's GPU side on this machine's OpenCL
device (PoCL's CPU device): the device is listed in status; an OpenCL job
submitted with harvestctl gives the bytes a reference computed here gives;
the GPU budget is spent by the device time the job measured; no chunk is
dispatched while paused or while the owner types, and dispatch resumes
after; the GPU spending survives a restart through the ledger; a small
GPU= budget holds dispatch to its rate; a job running at a stop runs again;
a crash with GPU work queued is charged the worst case at the next start.
Exits 0 on pass, 77 to skip."""

import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_daemon import Daemon, check, cgroup2_mount, failures, write_conf  # noqa: E402
from harness import HARVESTCTL, remove_cgroup_tree, wait_for  # noqa: E402

KERNEL = """
__kernel void scramble(__global const uint *in, __global uint *out, uint rounds) {
	uint i = (uint) get_global_id(0);
	uint x = in[i] ^ (i * 2654435761u);
	for (uint r = 0; r < rounds; r++)
		x = x * 1664525u + 1013904223u + i;
	out[i] = x;
}
"""
M = 0xFFFFFFFF

# PoCL and the ICD loader keep allocations for the process's life.


def input_words(n):
    return [(i * 2246822519 + 3266489917) & M for i in range(n)]


def reference(words, rounds):
    """The kernel's result, by the closed form of its recurrence:
    x_R = a^R x_0 + c (a^(R-1) + ... + 1), with c = 1013904223 + i."""
    a = 1664525
    a_r = pow(a, rounds, 1 << 32)
    s = 0
    p = 1
    for _ in range(rounds):
        s = (s + p) & M
        p = (p * a) & M
    return struct.pack("<%dI" % len(words),
                       *[(a_r * (w ^ ((i * 2654435761) & M)) + ((1013904223 + i) & M) * s) & M
                         for i, w in enumerate(words)])


def gpu(d):
    return d.status()["gpu"]


def spent(d):
    return gpu(d)["budget"]["spent_total_usec"]


def submit_gpu(d, src, n, rounds, infile):
    r = d.ctl("submit-gpu", "--source", src, "--kernel", "scramble", "--global", str(n),
              "--out-bytes", str(4 * n), "--in", infile, "--uint", str(rounds))
    return int(r.stdout.strip())


def main():
    if os.geteuid() != 0:
        print("needs root (cgroups, job user)")
        return 77
    mnt = cgroup2_mount()
    if not mnt:
        print("no cgroup2 mount")
        return 77
    tmp = tempfile.mkdtemp(prefix="harvester-gpu-", dir="/var/tmp")
    os.chmod(tmp, 0o755)
    cg_root = f"harvester-gpu-test-{os.getpid()}"
    conf = os.path.join(tmp, "harvester.conf")
    base_conf = f"""[Budget]
CPU=10%
GPU=100%
Burst=10%
Window=1h

[Idle]
InputIdleSec=2s
MaxForegroundCPU=100%
MaxMemoryPressure=100%

[Jobs]
User=nobody

[Daemon]
CgroupRoot=/{cg_root}
# PoCL is a CPU device: only a test lets its work run in the daemon.
OpenCLCPUDevices=yes
"""
    src = os.path.join(tmp, "scramble.cl")
    with open(src, "w") as f:
        f.write(KERNEL)

    d = Daemon(tmp, conf)
    try:
        write_conf(conf, base_conf)
        d.start()
        st = d.status()
        g = st["gpu"]
        print("gpu status:", json.dumps({k: g[k] for k in ("devices", "opencl_absent", "cuda_absent", "budget")}))
        cl = [x for x in g["devices"] if x["backend"] == "opencl"]
        if not cl:
            print("no OpenCL device here (%s): install pocl-opencl-icd" % g["opencl_absent"])
            d.stop()
            return 77

        # --- the device in status ------------------------------------------------------
        dev = cl[0]
        check(dev["id"].startswith("opencl:") and dev["name"] and "opencl" in dev["backends"],
              f"OpenCL device listed: {dev['id']} {dev['name']}")
        check(isinstance(dev["low_priority"], bool) and dev["busy_detection"] in ("none", "nvml", "drm-fdinfo"),
              f"low priority ({dev['low_priority']}) and busy detection ({dev['busy_detection']}) shown")
        pocl = "pocl" in dev["version"].lower()
        if pocl:
            check(dev["busy_detection"] == "none", "PoCL's CPU device cannot tell: it runs only while the owner is idle")
        check(g["cuda_absent"] is not None or any(x["backend"] == "cuda" or "cuda" in x["backends"] for x in g["devices"]),
              f"CUDA: present or its absence explained: {g['cuda_absent']}")
        check(g["budget"]["gpu_ppm"] == 1000000 and g["budget"]["devices"] == len(g["devices"]) and
              g["budget"]["capacity_usec"] == 3600 * 1000000 * len(g["devices"]),
              f"GPU bucket: GPU=100% x {len(g['devices'])} device(s) x 1h: {g['budget']['capacity_usec']}")
        human = d.ctl("status").stdout
        print("\n".join(l for l in human.splitlines() if l.startswith(("GPU", "  "))))
        check("GPU:" in human and dev["id"] in human and "GPU budget:" in human, "human status lists the GPU")

        # --- a small job: the bytes, and the charge ------------------------------------------
        check(wait_for(lambda: gpu(d)["dispatch"], 5), "GPU dispatch on once the new bucket holds 1 s")
        n = 65536
        words = input_words(n)
        infile = os.path.join(tmp, "in.bin")
        with open(infile, "wb") as f:
            f.write(struct.pack("<%dI" % n, *words))
        s0 = spent(d)
        t0 = time.monotonic()
        jid = submit_gpu(d, src, n, 64, infile)
        j = d.wait_job(jid, timeout=60)
        wall_us = (time.monotonic() - t0) * 1e6
        check(j and j["state"] == "done", f"OpenCL job {jid} done: {j and j['state']} {j and j['reason']}")
        check(j["kind"] == "opencl", "jobs shows kind opencl")
        out = open(j["output"], "rb").read()
        check(out == reference(words, 64), f"output ({len(out)} bytes in {j['output']}) equals the reference")
        s1 = spent(d)
        print(f"small job: {j['device_usec']} us of device time in {j['chunks']} chunks; GPU spent grew {s1 - s0} us; "
              f"{wall_us / 1e6:.2f} s wall from submit to done")
        check(j["device_usec"] > 0 and j["chunks"] >= 1, "the job measured device time")
        check(abs((s1 - s0) - j["device_usec"]) <= 1, f"GPU spent grew by the job's device time: {s1 - s0} vs {j['device_usec']}")
        check(s1 - s0 <= wall_us, "no more device time than wall time")

        # --- an input only the caller can see: harvestctl sends its descriptor --------------
        # (harvesterd.service has a private /tmp and no home: a path would not do.)
        private = os.path.join(tmp, "private")
        os.makedirs(private)
        sh = ("mount -t tmpfs none {p} && cp {i} {p}/in.bin && {c} --socket {s} submit-gpu --source {src} "
              "--kernel scramble --global 4096 --out-bytes 16384 --in {p}/in.bin --uint 5").format(
            p=private, i=infile, c=HARVESTCTL, s=d.sock, src=src)
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh], capture_output=True, text=True)
        check(r.returncode == 0 and not os.listdir(private), "submitted from a mount the daemon cannot see: %s %s" % (
            r.stdout.strip(), r.stderr.strip()))
        j = d.wait_job(int(r.stdout.strip() or 0), timeout=60)
        check(j and j["state"] == "done" and open(j["output"], "rb").read() == reference(words[:4096], 5),
              "its output equals the reference: the daemon read the caller's file (%s)" % (j and j["state"]))
        r = subprocess.run([HARVESTCTL, "--socket", d.sock, "submit-gpu", "--source", src, "--kernel", "scramble",
                            "--global", "64", "--out-bytes", "256", "--in", tmp], capture_output=True, text=True)
        check(r.returncode != 0 and ("not a regular file" in r.stderr or "directory" in r.stderr),
              "a folder as input is refused: %s" % r.stderr.strip())
        eid = d.submit("true")
        ej = d.wait_job(eid)
        check(ej["kind"] == "exec" and eid > jid, f"exec jobs say kind exec and take the next id ({eid})")
        r = d.ctl("submit-gpu", "--source", src, "--kernel", "nosuch", "--global", "64", "--out-bytes", "256",
                  "--in", infile, "--uint", "1")
        bad = d.wait_job(int(r.stdout), timeout=60)
        check(bad["state"] == "failed" and "nosuch" in (bad["reason"] or ""), f"a missing kernel fails with a reason: {bad['reason']}")
        r = d.ctl("submit-gpu", "--source", src, "--kernel", "scramble", "--global", "100", "--local", "64",
                  "--out-bytes", "400", check_rc=False)
        check(r.returncode != 0 and "multiple" in r.stderr, "a global size not a multiple of local is refused: " + r.stderr.strip())
        r = d.ctl("submit-gpu", "--source", src, "--kernel", "scramble", "--global", "64", "--out-bytes", "256",
                  user="nobody", check_rc=False)
        check(r.returncode != 0 and "root" in r.stderr, "submit-gpu needs root")

        # --- a long job: pause and input stop dispatch, resume restarts it ------------------------
        big = 1 << 20
        bwords = input_words(big)
        binfile = os.path.join(tmp, "big.bin")
        with open(binfile, "wb") as f:
            f.write(struct.pack("<%dI" % big, *bwords))
        rounds = 2000
        b0 = spent(d)
        bid = submit_gpu(d, src, big, rounds, binfile)
        check(wait_for(lambda: d.jobs()[bid]["chunks"] >= 3, 60), "long job running in chunks")

        d.ctl("pause")
        time.sleep(0.3)       # the chunk in flight ends (a chunk is ~2 ms)
        a = spent(d)
        g = gpu(d)
        time.sleep(2)
        b = spent(d)
        q = gpu(d)["devices"][0]["queue"]
        print(f"paused: spent {a} -> {b} us over 2 s; dispatch {g['dispatch']} ({g['not_dispatching_because']})")
        check(not g["dispatch"] and "paused" in (g["not_dispatching_because"] or ""), "status says why: paused")
        check(b == a and not q["in_flight"], "no chunk dispatched while paused")
        d.ctl("resume")
        c = wait_for(lambda: spent(d) > b + 10000 and spent(d), 5)
        check(c and c > b, f"resumed: spent {b} -> {c} us")

        master, slave = pty.openpty()
        os.symlink(os.ttyname(slave), os.path.join(d.pts, "0"))
        time.sleep(0.2)
        os.write(master, b"x\n")
        os.read(slave, 16)    # a read of terminal input: the owner typed
        time.sleep(0.3)
        st = d.status()
        a = st["gpu"]["budget"]["spent_total_usec"]
        time.sleep(1.2)       # within InputIdleSec=2s
        b = spent(d)
        print(f"active: state {st['state']}, spent {a} -> {b} us over 1.2 s")
        check(st["state"] == "active" and not st["gpu"]["dispatch"], f"terminal input -> active, no GPU dispatch: {st['state']}")
        check(b == a, "no chunk dispatched while the owner types")
        os.close(master)
        os.close(slave)
        c = wait_for(lambda: spent(d) > b + 10000 and spent(d), 6)
        check(c and c > b, f"dispatch resumes after InputIdleSec: spent {b} -> {c} us")

        j = d.wait_job(bid, timeout=90)
        check(j["state"] == "done", f"long job done: {j['state']} {j['reason']}")
        b1 = spent(d)
        print(f"long job: {j['device_usec']} us of device time in {j['chunks']} chunks "
              f"({j['device_usec'] / max(j['chunks'], 1):.0f} us a chunk); GPU spent grew {b1 - b0} us")
        check(abs((b1 - b0) - j["device_usec"]) <= 1, "GPU spent grew by its device time")
        check(open(j["output"], "rb").read() == reference(bwords, rounds), "long job's output equals the reference")

        # --- restart: the ledger keeps the GPU spending; a 5% budget holds the rate ---------------
        before = spent(d)
        rc = d.stop()
        check(rc == 0, f"SIGTERM: clean exit ({rc})")
        with open(os.path.join(d.state, "ledger")) as f:
            led = json.load(f)
        check(led["gpu_spent_total_usec"] == before and led["gpu_busy"] is False,
              f"ledger has the GPU spending ({led['gpu_spent_total_usec']}), idle at a clean stop")
        # Start from an empty GPU bucket at GPU=5%: it fills 50 ms of device time a second.
        led["gpu_tokens_usec"] = 0
        with open(os.path.join(d.state, "ledger"), "w") as f:
            json.dump(led, f)
        write_conf(conf, base_conf.replace("GPU=100%", "GPU=5%"))
        d.start()
        after = spent(d)
        check(after == before, f"restart keeps the GPU spending: {before} -> {after}")
        bid2 = submit_gpu(d, src, big, rounds, binfile)
        t0, b0 = time.monotonic(), gpu(d)["budget"]
        s0, tokens0 = b0["spent_total_usec"], max(b0["tokens_usec"], 0)
        saw_exhausted = False
        while time.monotonic() - t0 < 6:
            g = gpu(d)
            saw_exhausted |= g["budget"]["exhausted"]
            time.sleep(0.1)
        wall = time.monotonic() - t0
        s1 = spent(d)
        q = gpu(d)["devices"][0]["queue"]
        # What was in the bucket, the fill, and one chunk that may overdraw it.
        allowed = tokens0 + 0.05 * wall * 1e6 + q["max_chunk_usec"] + 1000
        print(f"GPU=5%: spent {s1 - s0} us of device time in {wall:.1f} s (at most {allowed:.0f} allowed: "
              f"{tokens0} in the bucket + 5% of the wall time + a chunk of {q['max_chunk_usec']} us); "
              f"exhausted seen: {saw_exhausted}")
        check(0.03 * wall * 1e6 <= s1 - s0 <= allowed, "a 5% GPU budget holds device time to its rate, and uses it")
        check(saw_exhausted, "status shows the GPU budget exhausted between refills")
        check(d.jobs()[bid2]["state"] == "running", "the job runs on, slowly")

        # --- a job running at a stop runs again after it ---------------------------------------
        rc = d.stop()
        check(rc == 0, f"SIGTERM with a GPU job running: clean exit ({rc})")
        with open(os.path.join(d.state, "jobs", str(bid2), "gpu-task.json")) as f:
            check(json.load(f)["state"] in ("queued", "running"), "its record is left unfinished on disk")
        d.start()
        j = d.jobs()[bid2]
        check(j["state"] in ("queued", "running") and j["attempts"] == 2 and "requeued" in (j["reason"] or ""),
              f"requeued at start: {j['state']}, attempt {j['attempts']}, {j['reason']}")

        # --- a crash with GPU work queued: the next start charges the worst case ----------------
        time.sleep(1.5)
        before_kill = spent(d)
        d.proc.kill()
        d.proc.wait()
        with open(os.path.join(d.state, "ledger")) as f:
            led = json.load(f)
        check(led["gpu_busy"] is True, "the ledger written while GPU work was queued says so")
        d.start()
        since_save = time.time() * 1e6 - led["saved_realtime_usec"]
        after_kill = spent(d)
        charged = after_kill - led["gpu_spent_total_usec"]
        print(f"crash: {charged} us of device time charged for {since_save / 1e6:.2f} s since the last save "
              f"(spent {before_kill} us before the kill, {after_kill} us after the restart)")
        check(0 < charged <= min(5e6, since_save) and after_kill >= before_kill,
              "SIGKILL: the time since the last save is charged as device time (at most 5 s), none handed out twice")
        j = d.jobs()[bid2]
        check(j["state"] in ("queued", "running") and j["attempts"] == 3, f"requeued again: attempt {j['attempts']}")
        d.ctl("cancel", str(bid2))
        j = d.wait_job(bid2, timeout=10)
        check(j["state"] == "cancelled", f"cancel stops a GPU job: {j['state']}")
        rc = d.stop()
        check(rc == 0, f"clean exit ({rc})")
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        print("--- daemon log ---")
        try:
            print(open(d.log).read()[-4000:])
        except OSError:
            pass
        base = f"{mnt}/{cg_root}"
        remove_cgroup_tree(base)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
