#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""GPU tasks from the pool, on loopback: a real `harvest-pool serve` (plain
tcp) and two real harvesterd workers, separate processes. Worker "gpu" has
[Daemon] OpenCLCPUDevices=yes (this machine's PoCL CPU device is its OpenCL
device); worker "cpu" has the default (no), so it has no device it will use.

  - hello: the "gpu" worker's hello lists its OpenCL device (the pool's
    workers listing counts it); the "cpu" worker lists none, and never loaded
    PoCL/LLVM into its process (its maps; RSS of both printed)
  - three OpenCL tasks (scramble: an input buffer, an output buffer, a uint)
    and two exec tasks: every OpenCL task's result comes from the "gpu"
    worker only, status ok, its output bytes equal the reference computed
    here, its device_usec > 0 and its cpu_usec 0 (harvesterd does not
    charge its own CPU to a GPU task); both exec tasks are done too (on a
    machine with a real GPU both workers see it: then "only" means only
    workers whose hello lists a device)
  - the GPU ledger was charged: the "gpu" worker's GPU bucket spent the
    device time of its pool GPU jobs, and its ledger file says so after stop
  - a kernel with a syntax error comes back failed, its "reason" output
    holding the compiler's message (the undeclared name, "error")
  - batch: `submit --batch` of JSON lines with an OpenCL task (source,
    inputs_base64, local_size, args) and an exec task: both done, the
    OpenCL one on the OpenCL worker with the reference bytes and
    device_usec > 0; a batch whose GPU entry breaks a link rule (an "in"
    argument naming no input) is refused whole, nothing of it stored
  - listings: `harvest-pool results` shows a DEVICE_USEC column, `status
    --json` a device_usec total equal to the results' sum; `harvestctl
    status` prints the pool's GPU task count and device time
  - CUDA: where a worker has a CUDA device, a PTX task gives the reference
    bytes and one that does not assemble fails saying so. Where no
    libcuda.so.1 loads, the "gpu" worker runs with the stand-in driver and
    NVML (tests/unit/fake-cuda.c, fake-nvml.c: HARVESTER_LIBCUDA and
    LD_LIBRARY_PATH), so the daemon's whole CUDA path runs here too; then,
    with that worker stopped, a CUDA task that reaches the "cpu" worker
    comes back failed with "no CUDA device"
  - a CUDA fault (stand-in only: a PTX task that reads past its buffer):
    its result is failed with the driver's words, `harvestctl status`
    shows the device FAULTED, and with no job running the worker exits
    with status 75 for a restart; started again, it runs a CUDA task with
    the reference bytes
Exits 0 on pass, 77 to skip (not root, no writable cgroup2, nothing built,
no OpenCL and no CUDA device); a part that cannot run here says "skip:".
"""
import base64
import ctypes
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import cgroup2_mount, check, failures, remove_cgroup_tree, wait_for  # noqa: E402
from test_daemon_pool import BUILD, HARVESTCTL, HARVESTERD, POOL, Daemon, Pool, spawned  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL = """
__kernel void scramble(__global const uint *in, __global uint *out, uint rounds) {
	uint i = (uint) get_global_id(0);
	uint x = in[i] ^ (i * 2654435761u);
	for (uint r = 0; r < rounds; r++)
		x = x * 1664525u + 1013904223u + i;
	out[i] = x;
}
"""
BAD_KERNEL = """
__kernel void broken(__global uint *out) {
	out[get_global_id(0)] = not_declared_anywhere + 1
}
"""
M = 0xFFFFFFFF
# PoCL and the ICD loader keep allocations for the process's life.


def words(n, seed):
    return [((i + seed) * 2246822519 + 3266489917) & M for i in range(n)]


def reference(ws, rounds):
    out = []
    for i, w in enumerate(ws):
        x = w ^ ((i * 2654435761) & M)
        for _ in range(rounds):
            x = (x * 1664525 + 1013904223 + i) & M
        out.append(x)
    return struct.pack("<%dI" % len(out), *out)


def scramble_ptx():
    """The PTX of scramble() kept for the C tests in tests/gpu/kernels.h."""
    text = open(os.path.join(HERE, "..", "gpu", "kernels.h")).read()
    body = text.split("gpu_test_scramble_ptx[] =", 1)[1].split(";\n", 1)[0]
    lits = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
    return "".join(bytes(s, "ascii").decode("unicode_escape") for s in lits)


def stand_in_prefix():
    """Where no CUDA driver loads: the command prefix that gives harvesterd
    the stand-in driver and NVML built beside the tests, else ()."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return ()
    except OSError:
        pass
    lib = os.path.abspath(os.path.join(BUILD, "tests", "fake-cuda", "libcuda.so.1"))
    nvml = os.path.abspath(os.path.join(BUILD, "tests", "fake-nvml"))
    if not os.path.exists(lib) or os.environ.get("HARVESTER_REQUIRE_CUDA"):
        return ()
    return ("env", "HARVESTER_LIBCUDA=" + lib, "LD_LIBRARY_PATH=" + nvml)


def is_stand_in(dev):
    return "stand-in" in dev["name"]


class GpuDaemon(Daemon):
    def __init__(self, root, name, pool_url, pool_key, cg_root, cpu_devices):
        super().__init__(root, name, pool_url, pool_key, cg_root)
        self.dev_us = 0
        conf = open(self.conf).read()
        conf = conf.replace("CPU=50%\n", "CPU=50%\nGPU=100%\n")
        conf = conf.replace("[Daemon]\n", "[Daemon]\nOpenCLCPUDevices=%s\n" % ("yes" if cpu_devices else "no"))
        with open(self.conf, "w") as f:
            f.write(conf)

    def rss_kib(self):
        for line in open("/proc/%d/status" % self.proc.pid):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def drivers_loaded(self):
        libs = set()
        for line in open("/proc/%d/maps" % self.proc.pid):
            path = line.split()[-1]
            if "pocl" in path or "libLLVM" in path or "nvidia-opencl" in path:
                libs.add(os.path.basename(path))
        return sorted(libs)

    def gpu(self):
        return self.status()["gpu"]


def results_by_task(pool):
    return {r["task"]: r for r in pool.json("results", "--outputs")}


def output(r, name):
    for o in r["outputs"]:
        if o["name"] == name:
            return base64.b64decode(o["data_base64"])
    return None


def run(root, cg):
    pool = Pool(root)
    pool.serve()
    gd = GpuDaemon(root, "gpu", pool.url, pool.key, cg + "-g", True)
    cd = GpuDaemon(root, "cpu", pool.url, pool.key, cg + "-c", False)
    prefix = stand_in_prefix()
    gd.start(prefix=prefix)
    cd.start()
    g = gd.gpu()
    cl = [x for x in g["devices"] if x["backend"] == "opencl"]
    cuda_dev = any(x["backend"] == "cuda" or "cuda" in x["backends"] for x in g["devices"])
    if not cl and not cuda_dev:
        print("skip: no OpenCL device (%s: install pocl-opencl-icd) and no CUDA device (%s)" % (
            g["opencl_absent"], g["cuda_absent"]))
        return 77
    cpu_devs = cd.gpu()["devices"]
    real_gpu = any(not x["cpu_device"] and not is_stand_in(x) for x in g["devices"])
    if prefix:
        check(any(is_stand_in(x) and x["backend"] == "cuda" and x["busy_detection"] == "nvml" for x in g["devices"]),
              "the gpu worker lists the stand-in CUDA device, busy detection by NVML: %s" % g["devices"])
    print("gpu worker: %s; cpu worker: devices %s (%s)" % (
        ", ".join("%s %s" % (x["id"], x["name"]) for x in g["devices"]),
        [x["id"] for x in cpu_devs], cd.gpu()["opencl_absent"]))

    # --- hello and memory --------------------------------------------------------
    time.sleep(0.5)
    loaded = cd.drivers_loaded()
    print("RSS: gpu worker %d KiB (drivers %s), cpu worker %d KiB (drivers %s)" % (
        gd.rss_kib(), gd.drivers_loaded(), cd.rss_kib(), loaded))
    if not real_gpu:
        check(cpu_devs == [] and "OpenCLCPUDevices=no" in (cd.gpu()["opencl_absent"] or ""),
              "the cpu worker uses no device: %s" % cd.gpu()["opencl_absent"])
        check(loaded == [], "the cpu worker never loaded an OpenCL driver: %s" % loaded)
    check(wait_for(lambda: len(pool.json("workers")) == 2, 15), "both workers said hello")
    workers = {w["key"]: w for w in pool.json("workers")}
    print("pool workers:", json.dumps(list(workers.values())))
    gw, cw = workers.get(gd.worker_key(), {}), workers.get(cd.worker_key(), {})
    check(gw.get("gpu_devices", 0) >= 1, "the gpu worker's hello lists its device: %s" % gw.get("gpu_devices"))
    check(cw.get("gpu_devices", -1) >= len(cpu_devs) and (real_gpu or cw.get("gpu_devices") == 0),
          "the cpu worker's hello lists only devices it uses: %s" % cw.get("gpu_devices"))
    # Whose hello offers OpenCL: only these may run an OpenCL task.
    cl_keys = {d.worker_key() for d in (gd, cd) if any(x["backend"] == "opencl" for x in d.gpu()["devices"])}
    if cl:
        opencl_part(pool, root, gd, cd, cl_keys, real_gpu)
    else:
        print("skip: the OpenCL part: no OpenCL device here (%s): install pocl-opencl-icd" % g["opencl_absent"])
    cuda_part(pool, root, gd, cd, cuda_dev)

    if prefix:
        fault_part(pool, root, gd, prefix)
    rc = gd.stop()
    check(rc == 0, "gpu worker: clean exit (%s)" % rc)
    if prefix:
        no_cuda_part(pool, root, cd)
    rc = cd.stop()
    check(rc == 0, "cpu worker: clean exit (%s)" % rc)
    charged = [d for d in (gd, cd) if d.dev_us > 0]
    check(charged, "some worker's GPU bucket was charged")
    for d in charged:
        with open(os.path.join(d.state, "ledger")) as f:
            led = json.load(f)
        check(led.get("gpu_spent_total_usec", 0) >= d.dev_us,
              "%s worker: the ledger file keeps the GPU spending: %s us" % (
                  os.path.basename(d.tmp), led.get("gpu_spent_total_usec")))
    pool.stop()
    return 0


def gpu_ledger(gd):
    """A worker's pool GPU jobs charged its GPU bucket their device time."""
    pj = [j for j in gd.jobs().values() if j.get("pool_task") and j["kind"] in ("opencl", "cuda")]
    dev_us = sum(j["device_usec"] for j in pj)
    spent = gd.gpu()["budget"]["spent_total_usec"]
    print("%s worker: %d pool GPU jobs, %d us of device time; GPU bucket spent %d us; status.pool %s" % (
        os.path.basename(gd.tmp), len(pj), dev_us, spent,
        json.dumps({k: gd.pool()[k] for k in ("gpu_tasks", "device_contributed_usec")})))
    check(dev_us > 0 and abs(spent - dev_us) <= len(pj),
          "the GPU bucket was charged the pool GPU jobs' device time (%d vs %d us)" % (spent, dev_us))
    check(gd.pool()["device_contributed_usec"] == dev_us, "status shows the device time contributed")
    gd.dev_us = dev_us
    return pj


def opencl_part(pool, root, gd, cd, cl_keys, real_gpu):
    gk = gd.worker_key()
    src = os.path.join(root, "scramble.cl")
    with open(src, "w") as f:
        f.write(KERNEL)
    want, ocl = {}, []
    for k, (n, rounds) in enumerate([(4096, 16), (65536, 64), (1000, 3)]):
        ws = words(n, k)
        inp = os.path.join(root, "in%d.bin" % k)
        with open(inp, "wb") as f:
            f.write(struct.pack("<%dI" % n, *ws))
        tid = "cl%d" % k
        pool.submit("--id", tid, "--kind", "opencl", "--source", src, "--kernel", "scramble", "--global", str(n),
                    "--arg", "in:in=" + inp, "--arg", "out:out=%d" % (4 * n), "--arg", "u32:%d" % rounds)
        want[tid] = reference(ws, rounds)
        ocl.append(tid)
    execs = [pool.submit("--id", "cpu%d" % i, "--", "sh", "-c", "echo cpu task %d" % i)[0] for i in range(2)]
    bad = os.path.join(root, "bad.cl")
    with open(bad, "w") as f:
        f.write(BAD_KERNEL)
    pool.submit("--id", "broken", "--kind", "opencl", "--source", bad, "--kernel", "broken", "--global", "64",
                "--arg", "out:out=256")

    ids = ocl + execs + ["broken"]
    check(wait_for(lambda: all(t in pool.tasks() and pool.tasks()[t]["state"] == "done" for t in ids), 60),
          "every task has its result: %s" % {t: v["state"] for t, v in pool.tasks().items()})
    res = results_by_task(pool)
    for tid in ocl:
        r = res.get(tid, {})
        out = output(r, "out") if r else None
        check(r.get("worker") in cl_keys and (real_gpu or r.get("worker") == gk),
              "%s ran on the worker with the OpenCL device" % tid)
        check(r.get("status") == "ok" and out == want[tid],
              "%s: status %s, output %s bytes equal to the reference" % (tid, r.get("status"), len(out or b"")))
        check(r.get("device_usec", 0) > 0 and r.get("cpu_usec") == 0,
              "%s: device time %s us in the result's device_usec (cpu_usec %s)" % (
                  tid, r.get("device_usec"), r.get("cpu_usec")))
    for tid in execs:
        r = res.get(tid, {})
        check(r.get("status") == "ok" and output(r, "stdout") == b"cpu task %s\n" % tid[3:].encode(),
              "exec task %s done on %s" % (tid, "the gpu worker" if r.get("worker") == gk else "the cpu worker"))
    r = res.get("broken", {})
    why = (output(r, "reason") or b"").decode(errors="replace") if r else ""
    print("broken kernel's reason: %s" % why)
    check(r.get("status") == "failed" and "not_declared_anywhere" in why and "error" in why,
          "a kernel with a syntax error fails with the compiler's message in its reason")
    check("/.cache/pocl" not in why, "the runtime's temporary file names are not in the reason")

    # --- the GPU ledger -------------------------------------------------------------
    pj = gpu_ledger(gd)
    if not real_gpu:
        check(len(pj) == 4, "the gpu worker holds the 4 OpenCL tasks as GPU jobs")
        check(not [j for j in cd.jobs().values() if j.get("kind") == "opencl"], "the cpu worker has no OpenCL job")
    batch_part(pool, root, gd, cl_keys, real_gpu)
    listings(pool, gd)


def batch_part(pool, root, gd, cl_keys, real_gpu):
    """submit --batch with the GPU fields, as JSON lines."""
    n, rounds = 2048, 9
    ws = words(n, 11)
    entries = [
        {"id": "b-cl", "kind": "opencl", "source": KERNEL, "kernel": "scramble", "global_size": [n],
         "local_size": [64], "inputs_base64": {"in": base64.b64encode(struct.pack("<%dI" % n, *ws)).decode()},
         "args": [{"kind": "in", "name": "in"}, {"kind": "out", "name": "out", "bytes": 4 * n},
                  {"kind": "u32", "value": rounds}]},
        {"id": "b-exec", "argv": ["sh", "-c", "echo batch"]},
    ]
    path = os.path.join(root, "batch.jsonl")
    with open(path, "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries))
    ids = pool.submit("--batch", path)
    check(ids == ["b-cl", "b-exec"], "the batch with a GPU task was stored: %s" % ids)
    check(pool.tasks().get("b-cl", {}).get("kind") == "opencl", "the batch's GPU entry is an opencl task")
    check(wait_for(lambda: all(pool.tasks().get(t, {}).get("state") == "done" for t in ids), 60),
          "the batch's tasks have their results")
    res = results_by_task(pool)
    r = res.get("b-cl", {})
    check(r.get("status") == "ok" and output(r, "out") == reference(ws, rounds),
          "batch opencl task: status %s, output equal to the reference" % r.get("status"))
    check(r.get("worker") in cl_keys and (real_gpu or r.get("worker") == gd.worker_key()),
          "batch opencl task ran on the worker with the OpenCL device")
    check(r.get("device_usec", 0) > 0, "batch opencl task: device_usec %s" % r.get("device_usec"))
    check(output(res.get("b-exec", {}), "stdout") == b"batch\n", "batch exec task done")

    # One entry breaking a rule of the link: the whole batch is refused.
    bad = [{"id": "bad-exec", "argv": ["true"]},
           dict(entries[0], id="bad-cl", args=[{"kind": "in", "name": "nowhere"}])]
    path = os.path.join(root, "bad-batch.json")
    with open(path, "w") as f:
        json.dump(bad, f)
    out = subprocess.run([POOL, "--state-dir", pool.dir, "submit", "--batch", path], capture_output=True, text=True)
    print("bad batch: rc %d, %s" % (out.returncode, out.stderr.strip()))
    check(out.returncode != 0 and "task 1" in out.stderr, "a batch whose GPU entry breaks a link rule is refused")
    check(not {"bad-exec", "bad-cl"} & set(pool.tasks()), "nothing of the refused batch was stored")


def listings(pool, gd):
    """device_usec in the pool's listings and the pool line of harvestctl status."""
    res = pool.json("results")
    total = sum(r.get("device_usec", 0) for r in res)
    st = pool.json("status")
    print("pool status: cpu_usec %s, device_usec %s" % (st.get("cpu_usec"), st.get("device_usec")))
    check(total > 0 and st.get("device_usec") == total, "harvest-pool status totals device_usec: %s" % st.get("device_usec"))
    human = pool.cli("results").stdout.splitlines()
    check(human and "DEVICE_USEC" in human[0].split(), "harvest-pool results has a DEVICE_USEC column")
    row = [l for l in human if l.split()[:1] == ["b-cl"]]
    want = [r["device_usec"] for r in res if r["task"] == "b-cl"]
    check(row and want and row[0].split()[-1] == str(want[0]),
          "the human listing shows b-cl's device time: %s" % (row[0] if row else None))
    p = gd.pool()
    text = gd.ctl("status")
    print("\n".join(l for l in text.splitlines() if l.startswith("Pool")))
    check("Pool GPU:   %d OpenCL/CUDA task(s)" % p["gpu_tasks"] in text and p["gpu_tasks"] >= 1,
          "harvestctl status prints the pool's GPU tasks (%d)" % p["gpu_tasks"])


def cuda_task(pool, root, tid, any_worker):
    """Submit scramble() as PTX; wait for its result; the result and the
    reference output."""
    ptx = os.path.join(root, "scramble.ptx")
    with open(ptx, "w") as f:
        f.write(scramble_ptx())
    n = 8192
    ws = words(n, 7)
    inp = os.path.join(root, "cuda-in.bin")
    with open(inp, "wb") as f:
        f.write(struct.pack("<%dI" % n, *ws))
    # --gpu none: any worker may take it, to see a refusal come back.
    pool.submit("--id", tid, *(("--gpu", "none") if any_worker else ()), "--kind", "cuda", "--source", ptx,
                "--kernel", "scramble", "--global", str(n), "--local", "256", "--arg", "in:in=" + inp,
                "--arg", "out:out=%d" % (4 * n), "--arg", "u32:%d" % n, "--arg", "u32:5")
    check(wait_for(lambda: pool.tasks().get(tid, {}).get("state") == "done", 30), "the CUDA task %s has its result" % tid)
    return results_by_task(pool).get(tid, {}), reference(ws, 5), inp


def failing_cuda_task(pool, tid, ptx, inp, n, out_bytes, label):
    """Submit scramble() (PTX at ptx) for n threads over the input file inp
    into out_bytes, expecting it to fail: the reason its result gives."""
    pool.submit("--id", tid, "--kind", "cuda", "--source", ptx, "--kernel", "scramble", "--global", str(n),
                "--local", "256", "--arg", "in:in=" + inp, "--arg", "out:out=%d" % out_bytes, "--arg", "u32:%d" % n,
                "--arg", "u32:1")
    check(wait_for(lambda: pool.tasks().get(tid, {}).get("state") == "done", 30), "the %s task has its result" % label)
    r = results_by_task(pool).get(tid, {})
    why = (output(r, "reason") or b"").decode(errors="replace") if r else ""
    print("%s's reason: %s" % (label, why))
    return r, why


def fault_part(pool, root, gd, prefix):
    """A kernel that reads past its buffer faults the (stand-in) driver."""
    ptx = os.path.join(root, "scramble.ptx")
    small = os.path.join(root, "small.bin")
    with open(small, "wb") as f:
        f.write(struct.pack("<1024I", *words(1024, 3)))
    # A job runs through the fault: the daemon waits for it before its restart.
    job = int(gd.ctl("submit", "--", "sleep", "4").strip())
    check(wait_for(lambda: gd.jobs()[job]["state"] == "running", 10), "a local job runs on the gpu worker")
    r, why = failing_cuda_task(pool, "cuda-fault", ptx, small, 8192, 4096, "faulting PTX")
    check(r.get("status") == "failed" and "faulted" in why and "illegal memory access" in why,
          "a kernel that faults fails with the driver's words")
    dev = [x for x in gd.gpu()["devices"] if x["backend"] == "cuda"]
    text = gd.ctl("status")
    print("\n".join(l for l in text.splitlines() if "FAULTED" in l))
    check(dev and "illegal memory access" in (dev[0].get("fault") or "") and "FAULTED" in text,
          "status shows the device faulted: %s" % (dev[0].get("fault") if dev else None))
    check("a kernel faulted" in gd.log_text(), "the journal says why the device stopped")

    # With no job running, the daemon stops for a restart (systemd's
    # RestartForceExitStatus=75 starts it again; here the test does).
    check(gd.proc.poll() is None and gd.jobs()[job]["state"] == "running", "it waits while the job runs")
    check(wait_for(lambda: gd.proc.poll() is not None, 15), "the gpu worker stops for a restart")
    check(gd.proc.poll() == 75 and "Exiting for a restart" in gd.log_text(),
          "it exits with status 75, saying why (%s)" % gd.proc.poll())
    gd.start(prefix=prefix)
    r, want, _ = cuda_task(pool, root, "cuda-after", False)
    check(r.get("status") == "ok" and output(r, "out") == want,
          "after the restart CUDA works again: reference bytes (status %s)" % r.get("status"))
    check(not [x for x in gd.gpu()["devices"] if x.get("fault")], "after the restart no device is faulted")


def no_cuda_part(pool, root, cd):
    """A CUDA task that reaches a worker without CUDA fails, saying so."""
    r, _, _ = cuda_task(pool, root, "cuda-nodev", True)
    why = (output(r, "reason") or b"").decode(errors="replace") if r else ""
    check(r.get("worker") == cd.worker_key() and r.get("status") == "failed" and "no CUDA device" in why,
          "no CUDA device: the task fails saying so: " + why)


def cuda_part(pool, root, gd, cd, cuda_dev):
    gk = gd.worker_key()
    r, want, inp = cuda_task(pool, root, "cuda", not cuda_dev)
    if cuda_dev:
        check(r.get("status") == "ok" and output(r, "out") == want,
              "CUDA task: output equals the reference (status %s, worker %s)" % (
                  r.get("status"), "gpu" if r.get("worker") == gk else "cpu"))
        check(r.get("device_usec", 0) > 0, "CUDA task: device time %s us in the result" % r.get("device_usec"))
        bad = os.path.join(root, "bad.ptx")
        with open(bad, "w") as f:
            f.write(scramble_ptx().replace("ld.param.u64", "ld.param.nonsense", 1))
        r, why = failing_cuda_task(pool, "cuda-broken", bad, inp, 256, 1024, "broken PTX")
        check(r.get("status") == "failed" and "did not build" in why, "PTX that does not assemble fails saying so")
        for d in (gd, cd):
            if d.worker_key() == results_by_task(pool)["cuda"]["worker"] and d.dev_us == 0:
                gpu_ledger(d)
    else:
        why = (output(r, "reason") or b"").decode(errors="replace") if r else ""
        check(r.get("status") == "failed" and "no CUDA device" in why, "no CUDA device: the task fails saying so: " + why)
        print("skip: the CUDA run itself: no CUDA device here, and no stand-in (%s)" % gd.gpu()["cuda_absent"])


def main():
    if os.geteuid() != 0:
        print("needs root (cgroups, job user)")
        return 77
    mnt = cgroup2_mount()
    if not mnt:
        print("no cgroup2 mount")
        return 77
    for p in (HARVESTERD, HARVESTCTL, POOL):
        if not os.access(p, os.X_OK):
            print("%s is not built (make all)" % p)
            return 77
    try:
        probe = os.path.join(mnt, "harvester-dpoolgpu-probe-%d" % os.getpid())
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        print("cgroup2 at %s is not writable here: %s" % (mnt, e))
        return 77
    root = tempfile.mkdtemp(prefix="test-dpool-gpu-", dir="/var/tmp")
    os.chmod(root, 0o755)
    cg = "harvester-dpoolgpu-%d" % os.getpid()
    rc = 1
    try:
        rc = run(root, cg)
    except Exception as e:
        check(False, "raised %r" % e)
    finally:
        for p in spawned:
            if p.poll() is None:
                p.kill()
                p.wait()
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f in ("daemon.log", "serve.log"):
                    path = os.path.join(dirpath, f)
                    text = open(path).read()
                    if "Sanitizer" in text or "runtime error" in text:
                        check(False, "sanitizer report in %s" % path)
                    if failures or "Sanitizer" in text:
                        print("--- %s ---\n%s" % (path, text[-3000:]))
        for suffix in ("-g", "-c"):
            remove_cgroup_tree(os.path.join(mnt, cg + suffix))
        shutil.rmtree(root, ignore_errors=True)
    if rc == 77:
        return 77
    print("%d failure(s)" % len(failures))
    return 1 if failures or rc else 0


if __name__ == "__main__":
    sys.exit(main())
