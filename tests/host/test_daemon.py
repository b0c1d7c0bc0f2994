#!/usr/bin/env python3
"""Host integration test of harvesterd + harvestctl on this machine's real
cgroup v2 hierarchy: config errors, job lifecycle, sandbox, pause/resume,
root-only verbs, terminal activity freezing jobs, duty-cycle cap, SIGTERM
requeue and restart, ledger persistence. Exits 0 on pass, 77 to skip."""

import json
import os
import pty
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from harness import HARVESTCTL, HARVESTERD, Daemon, cgroup2_mount, check, failures, remove_cgroup_tree  # noqa: E402,F401

def write_conf(path, extra=""):
    with open(path, "w") as f:
        f.write(extra)


def main():
    if os.geteuid() != 0:
        print("needs root (cgroups, job user)")
        return 77
    mnt = cgroup2_mount()
    if not mnt:
        print("no cgroup2 mount")
        return 77
    tmp = tempfile.mkdtemp(prefix="harvester-host-", dir="/var/tmp")
    os.chmod(tmp, 0o755)
    cg_root = f"harvester-test-{os.getpid()}"
    conf = os.path.join(tmp, "harvester.conf")
    base_conf = f"""[Budget]
CPU=10%
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
"""
    d = Daemon(tmp, conf)
    try:
        # --- config errors -----------------------------------------------------
        bad = os.path.join(tmp, "bad.conf")
        write_conf(bad, "[Budget]\nCPU=1%\nBurst=150%\n[Idle]\nFoo=1\n")
        r = subprocess.run([HARVESTERD, "--check-config", "--config", bad], capture_output=True, text=True)
        check(r.returncode != 0, "--check-config rejects a bad file")
        check(f"{bad}:3:" in r.stderr and "Burst=150%" in r.stderr, "error names file, line 3 and Burst=150%: " + r.stderr.strip())
        check(f"{bad}:5:" in r.stderr and "Foo" in r.stderr, "unknown key named with its line")
        r = subprocess.run([HARVESTERD, "--config", bad, "--state-dir", tmp + "/s", "--runtime-dir", tmp + "/r"],
                           capture_output=True, text=True, timeout=20)
        check(r.returncode != 0 and "Burst=150%" in r.stderr, "the daemon refuses to start on it")

        write_conf(conf, base_conf)
        r = subprocess.run([HARVESTERD, "--check-config", "--config", conf], capture_output=True, text=True)
        check(r.returncode == 0, "--check-config accepts the good file: " + r.stderr.strip())

        # --- start, status ----------------------------------------------------
        d.start()
        st = d.status()
        print("status:", json.dumps({k: st[k] for k in ("state", "reason", "input_source", "time_source",
                                                         "fallback_reason", "cap_mechanism", "cgroup")}))
        check(st["cgroup"] == f"{mnt}/{cg_root}/jobs", "jobs/ cgroup under the configured root")
        check(os.path.isdir(f"{mnt}/{cg_root}/supervisor"), "supervisor/ exists")
        with open(f"/proc/{d.proc.pid}/cgroup") as f:
            check(f"0::/{cg_root}/supervisor" in f.read(), "the daemon moved itself into supervisor/")
        has_cpu = os.path.exists(f"{mnt}/{cg_root}/jobs/cpu.max")
        check(st["cap_mechanism"] == ("cpu.max" if has_cpu else "freezer duty cycle"),
              "cap mechanism matches the controllers: " + st["cap_mechanism"])
        fentry_ok = st["input_source"] == "bpf"
        if not fentry_ok:
            check(st["input_source"] == "evdev", "fentry refused here: input falls back to evdev")
            check("fentry" in (st["fallback_reason"] or ""), "the fallback reason names fentry: %s" % st["fallback_reason"])
        g = st.get("gpu") or {}
        check(not any(dev.get("cpu_device") for dev in g.get("devices", [])),
              f"no OpenCL CPU device is taken for a GPU by default (OpenCLCPUDevices=no): {g.get('opencl_absent')}")
        human = d.ctl("status").stdout
        print(human)
        check("State:" in human and "Cap:" in human and "Input:" in human, "human status has State/Input/Cap lines")

        # --- jobs ----------------------------------------------------------------
        jid = d.submit("sh", "-c", "echo hello; id -u; id -G; pwd")
        j = d.wait_job(jid)
        check(j and j["state"] == "done", f"job {jid} done: {j}")
        out = open(j["stdout"]).read().split()
        nobody = pwd.getpwnam("nobody")
        check(out[:2] == ["hello", str(nobody.pw_uid)], f"job ran as nobody: {out}")
        check(out[2] == str(nobody.pw_gid), f"no supplementary groups: {out}")
        check(out[3].endswith(f"/jobs/{jid}/scratch"), f"cwd is the scratch folder: {out}")

        jid = d.submit("sh", "-c", "echo oops >&2; exit 3")
        j = d.wait_job(jid)
        check(j["state"] == "failed" and "exit status 3" in j["reason"] and "oops" in j["reason"],
              f"failed job recorded with reason: {j['reason']}")

        jid = d.submit("sh", "-c", "echo x > /etc/harvester-test-escape")
        j = d.wait_job(jid)
        check(j["state"] == "failed" and not os.path.exists("/etc/harvester-test-escape"),
              f"a write outside scratch fails: {j['reason']}")

        jid = d.submit("python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 9))")
        j = d.wait_job(jid)
        check(j["state"] == "failed" and ("Permission" in j["reason"] or "Operation not permitted" in j["reason"]),
              f"network attempt refused: {j['reason']}")

        jid = d.submit("/nonexistent/program")
        j = d.wait_job(jid)
        check(j["state"] == "failed" and "execve" in j["reason"], f"missing program: {j['reason']}")

        # --- root-only verbs --------------------------------------------------------
        r = d.ctl("pause", user="nobody", check_rc=False)
        check(r.returncode != 0 and "root" in r.stderr, "pause refused for a non-root user: " + r.stderr.strip())
        r = d.ctl("status", user="nobody", check_rc=False)
        check(r.returncode == 0, "status allowed for a non-root user")

        # --- pause / resume -----------------------------------------------------------
        d.ctl("pause")
        check(d.status()["state"] == "paused", "pause -> paused")
        d.ctl("resume")
        time.sleep(0.2)
        check(d.status()["state"] == "idle", "resume -> idle: " + d.status()["reason"])
        d.ctl("pause", "--for", "1s")
        check(d.status()["state"] == "paused", "pause --for 1s -> paused")
        time.sleep(1.5)
        check(d.status()["state"] == "idle", "pause ends by itself")

        # --- terminal activity freezes a running job -----------------------------------------
        busy = d.submit("sh", "-c", "while :; do :; done")
        time.sleep(1.5)
        check(d.jobs()[busy]["state"] == "running", "CPU-bound job running")
        master, slave = pty.openpty()
        os.symlink(os.ttyname(slave), os.path.join(d.pts, "0"))
        time.sleep(0.2)
        os.write(master, b"x\n")
        os.read(slave, 16)        # a read of terminal input: the owner typed
        time.sleep(0.3)
        st = d.status()
        check(st["state"] == "active", f"terminal input -> active: {st['reason']}")
        check(st["frozen"], "jobs frozen on terminal input")
        check(st["reaction"]["count"] >= 1, f"reaction measured: {st['reaction']}")
        print("reaction (pty):", st["reaction"]["last_to_last_run_usec"], "us to last run,",
              st["reaction"]["last_to_frozen_usec"], "us to frozen")
        os.close(master)
        os.close(slave)
        time.sleep(3)
        st = d.status()
        c0 = d.jobs()[busy]["cpu_usec"]
        time.sleep(1)
        c1 = d.jobs()[busy]["cpu_usec"]
        check(st["state"] == "idle" and c1 > c0, f"thawed after InputIdleSec: {st['state']}, job ran {c1 - c0} us in 1 s")

        # --- the cap: 10% of the machine over a measured interval ----------------------------
        ncpu = os.cpu_count()
        cg = f"{mnt}/{cg_root}/jobs/{busy}"

        def usage():
            with open(f"{cg}/cpu.stat") as f:
                for line in f:
                    k, v = line.split()
                    if k == "usage_usec":
                        return int(v)
        time.sleep(2)
        u0, t0 = usage(), time.monotonic()
        time.sleep(10)
        u1, t1 = usage(), time.monotonic()
        share = (u1 - u0) / 1e6 / ((t1 - t0) * ncpu)
        print(f"cap precision: used {share * 100:.2f}% of {ncpu} CPUs over {t1 - t0:.1f}s against a cap of 10% "
              f"(ratio {share / 0.10:.3f}), mechanism {st['cap_mechanism']}")
        check(0.85 <= share / 0.10 <= 1.05, f"usage within 0.85..1.05 of the cap: {share / 0.10:.3f}")

        # --- SIGTERM requeues, restart resumes, ledger persists ---------------------------------
        spent = d.status()["budget"]["spent_total_usec"]
        daemon_cpu = d.status()["daemon"]["cpu_usec"]
        d.ctl("pause")
        rc = d.stop()
        check(rc == 0, f"SIGTERM: clean exit ({rc})")
        check(not os.path.exists(cg) or open(f"{cg}/cgroup.procs").read() == "", "no job process left")
        with open(os.path.join(d.state, "spool", f"{busy}.json")) as f:
            check(json.load(f)["state"] == "queued", "the running job was requeued in the spool")
        d.start()
        st = d.status()
        check(st["state"] == "paused", f"the operator's pause survives a restart: {st['state']}")
        d.ctl("resume")
        check(not os.path.exists(os.path.join(d.state, "paused")), "resume forgets the pause")
        check(st["budget"]["spent_total_usec"] >= spent, f"ledger kept spending across restart: {spent} -> {st['budget']['spent_total_usec']}")
        time.sleep(1.5)
        j = d.jobs()[busy]
        check(j["state"] == "running" and j["attempts"] == 2, f"the requeued job runs again: {j['state']} attempt {j['attempts']}")
        d.ctl("cancel", str(busy))
        j = d.wait_job(busy)
        check(j["state"] == "cancelled", "cancel kills a running job")

        # --- SIGHUP reload with a bad file keeps the old config ---------------------------------------
        write_conf(conf, base_conf.replace("CPU=10%", "CPU=abc"))
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        check(d.proc.poll() is None and d.status()["budget"]["cpu_ppm"] == 100000, "bad reload keeps running with the old config")
        write_conf(conf, base_conf.replace("CPU=10%\nBurst=10%", "CPU=5%\nBurst=20%"))
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        check(d.status()["budget"]["cpu_ppm"] == 50000, "good reload applies CPU=5%")

        print(f"daemon CPU while mostly idle: {daemon_cpu} us")
        d.stop()
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        print("--- daemon log ---")
        try:
            print(open(d.log).read()[-4000:])
        except OSError:
            pass
        remove_cgroup_tree(f"{mnt}/{cg_root}")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
