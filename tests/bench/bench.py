#!/usr/bin/env python3
"""make bench: harvester's claims measured beside the ways existing harvesters
do the same thing, in one run, as ratios (issue 7). Figures, not pass/fail.

  1. intrusion: foreground workloads alone, then beside the same CPU-bound
     harvest load run by harvesterd, by the real BOINC client, by a plain
     cgroup cpu.max cap (guest only) and by nice 19 + SCHED_IDLE, interleaved;
  2. budget precision: CPU used by the jobs over 10-s and 60-s windows / cap;
  3. cost of the daemon: CPU per hour idle and harvesting, RSS, probe ns/event;
  4. reaction: terminal input to jobs frozen, beside 1-s and 5-s polling.

Writes build/bench/results.md, results.json and bench.png; prints the table.
Environment: HARVESTER_BUILD (default build), BENCH_QUICK=1 (a short smoke
run), BENCH_ROUNDS (default 5)."""

import json
import os
import pty
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("HARVESTER_BUILD", "build")
OUT = os.path.join(BUILD, "bench")
HARVESTERD = os.path.join(BUILD, "harvesterd")
HARVESTCTL = os.path.join(BUILD, "harvestctl")
QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2" if QUICK else "5"))
CYC_S = 3 if QUICK else 8           # cyclictest run per arm
SYSB_S = 2 if QUICK else 4          # sysbench run per arm
HACK_LOOPS = 200 if QUICK else 500  # perf bench sched messaging -l
PREC_S = 20 if QUICK else 60        # budget precision: the long window
REACT_N = 10 if QUICK else 50       # keystrokes
CAP = 10                            # % of the machine, the intrusion arms' cap
NCPU = os.cpu_count()
T0 = time.monotonic()


def log(*a):
    print(f"[{time.monotonic() - T0:6.1f}s]", *a, file=sys.stderr, flush=True)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host"))
from harness import cgroup2_mount  # noqa: E402

MNT = cgroup2_mount()


def read_usage_usec(cg):
    with open(os.path.join(cg, "cpu.stat")) as f:
        for line in f:
            k, v = line.split()
            if k == "usage_usec":
                return int(v)
    raise RuntimeError(f"no usage_usec in {cg}/cpu.stat")


def schedstat_ns(pid):
    """CPU time of every thread of pid (ns), 0 once it is gone."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total


def rmtree_cgroup(base):
    """Kill and remove a cgroup subtree, deepest first."""
    if not os.path.isdir(base):
        return
    for root, _, _ in sorted(os.walk(base), key=lambda x: -x[0].count("/")):
        for fn, v in (("cgroup.freeze", "0"), ("cgroup.kill", "1")):
            try:
                with open(os.path.join(root, fn), "w") as f:
                    f.write(v)
            except OSError:
                pass
    for _ in range(50):
        left = False
        for root, _, _ in sorted(os.walk(base), key=lambda x: -x[0].count("/")):
            try:
                os.rmdir(root)
            except OSError:
                left = True
        if not left:
            return
        time.sleep(0.1)


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def bpf_prog_cost(pid):
    """run_time_ns and run_cnt summed over the BPF programs pid holds (by its
    fds and links), from bpftool with kernel.bpf_stats_enabled=1."""
    ids = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("prog_id:"):
                            ids.add(int(line.split()[1]))
            except OSError:
                pass
    except OSError:
        return 0, 0, 0
    ns = cnt = 0
    for i in ids:
        r = subprocess.run(["bpftool", "--json", "prog", "show", "id", str(i)], capture_output=True, text=True)
        if r.returncode == 0:
            p = json.loads(r.stdout)
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns, cnt, len(ids)


def busy_s():
    """CPU seconds the whole machine spent busy, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


# --- harvest loads ---------------------------------------------------------------

class Harvesterd:
    """harvesterd run from the build tree with a fresh state folder (so every
    arm starts from the same empty bucket), jobs = NCPU burn loops."""
    n = 0

    def __init__(self, tmp, cap, max_fg="100%", idle="1s", jobs=NCPU):
        Harvesterd.n += 1
        self.dir = os.path.join(tmp, f"hv{Harvesterd.n}")
        self.root = f"harvester-bench-{os.getpid()}-{Harvesterd.n}"
        self.cap, self.max_fg, self.idle, self.njobs = cap, max_fg, idle, jobs
        self.pts = os.path.join(self.dir, "pts")
        self.sock = os.path.join(self.dir, "run", "control.sock")
        self.burn = os.path.join(tmp, "burn")
        self.proc = None

    @property
    def jobs_cg(self):
        return f"{MNT}/{self.root}/jobs"

    def start(self):
        os.makedirs(self.pts)
        os.makedirs(os.path.join(self.dir, "input"))
        conf = os.path.join(self.dir, "harvester.conf")
        with open(conf, "w") as f:
            f.write(f"[Budget]\nCPU={self.cap}%\nBurst={self.cap}%\nWindow=1h\n\n"
                    f"[Idle]\nInputIdleSec={self.idle}\nMaxForegroundCPU={self.max_fg}\nMaxMemoryPressure=100%\n\n"
                    f"[Jobs]\nUser=nobody\nMaxJobs={max(self.njobs, 1)}\n\n[Daemon]\nCgroupRoot=/{self.root}\n")
        self.log = open(os.path.join(self.dir, "daemon.log"), "w")
        self.proc = subprocess.Popen(
            [HARVESTERD, "--config", conf, "--state-dir", os.path.join(self.dir, "state"),
             "--runtime-dir", os.path.join(self.dir, "run"), "--tty-dir", self.pts,
             "--input-dir", os.path.join(self.dir, "input")],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if os.path.exists(self.sock):
                try:
                    self.status()
                    break
                except Exception:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError("harvesterd exited: " + open(self.log.name).read())
            time.sleep(0.05)
        for _ in range(self.njobs):
            self.ctl("submit", "--", self.burn)
        end = time.monotonic() + 10
        while self.njobs and time.monotonic() < end:
            if self.status()["jobs"]["running"] == self.njobs:
                break
            time.sleep(0.05)
        return self

    def ctl(self, *args):
        r = subprocess.run([HARVESTCTL, "--socket", self.sock, *args], capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise RuntimeError(f"harvestctl {args}: {r.stderr}")
        return r.stdout

    def status(self):
        return json.loads(self.ctl("--json", "status"))

    def usage_usec(self):
        return read_usage_usec(self.jobs_cg)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rmtree_cgroup(f"{MNT}/{self.root}")
        self.log.close()


class Boinc:
    """The real BOINC client (Debian's boinc-client) on a hand-written offline
    data folder: one project, one app whose main program is burn built against
    the BOINC API, NCPU results ready to run, network off. The client and its
    tasks run in a cgroup of their own so their CPU can be read exactly."""
    n = 0

    def __init__(self, tmp, limit, ntasks=NCPU):
        Boinc.n += 1
        self.dir = os.path.join(tmp, f"boinc{Boinc.n}")
        self.cg = f"{MNT}/harvester-bench-boinc-{os.getpid()}-{Boinc.n}"
        self.limit, self.ntasks = limit, ntasks
        self.burn = os.path.join(tmp, "burn-boinc")
        self.proc = None

    def write_dir(self):
        url = "http://bench.invalid/"
        proj = os.path.join(self.dir, "projects", "bench.invalid")
        os.makedirs(proj)
        shutil.copy(self.burn, os.path.join(proj, "burn"))

        def w(name, text):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        # Without the account file the client discards the project.
        w("account_bench.invalid.xml", f"<account>\n<master_url>{url}</master_url>\n"
          "<authenticator>bench</authenticator>\n<project_name>bench</project_name>\n</account>\n")
        w("cc_config.xml", "<cc_config>\n<options>\n<unsigned_apps_ok>1</unsigned_apps_ok>\n"
          "<skip_cpu_benchmarks>1</skip_cpu_benchmarks>\n</options>\n</cc_config>\n")
        # suspend_cpu_usage 0: otherwise the client suspends the tasks outright
        # whenever the foreground is busy, a different policy from a cap.
        w("global_prefs_override.xml", f"<global_preferences>\n<cpu_usage_limit>{self.limit}</cpu_usage_limit>\n"
          "<max_ncpus_pct>100</max_ncpus_pct>\n<suspend_cpu_usage>0</suspend_cpu_usage>\n"
          "<run_if_user_active>1</run_if_user_active>\n<idle_time_to_run>0</idle_time_to_run>\n"
          "</global_preferences>\n")
        results = ""
        for i in range(self.ntasks):
            results += (f"<workunit>\n <name>wu{i}</name>\n <app_name>burn</app_name>\n <version_num>1</version_num>\n"
                        " <rsc_fpops_est>1e15</rsc_fpops_est>\n <rsc_fpops_bound>1e18</rsc_fpops_bound>\n"
                        " <rsc_memory_bound>1e8</rsc_memory_bound>\n <rsc_disk_bound>1e9</rsc_disk_bound>\n</workunit>\n"
                        f"<result>\n <name>r{i}</name>\n <wu_name>wu{i}</wu_name>\n <final_cpu_time>0</final_cpu_time>\n"
                        " <state>2</state>\n <platform>x86_64-pc-linux-gnu</platform>\n <version_num>1</version_num>\n"
                        " <report_deadline>4000000000</report_deadline>\n</result>\n")
        w("client_state.xml", f"""<client_state>
<project>
 <master_url>{url}</master_url>
 <project_name>bench</project_name>
 <dont_request_more_work/>
</project>
<app>
 <name>burn</name>
 <user_friendly_name>burn</user_friendly_name>
</app>
<file_info>
 <name>burn</name>
 <nbytes>{os.path.getsize(self.burn)}</nbytes>
 <status>1</status>
 <executable/>
</file_info>
<app_version>
 <app_name>burn</app_name>
 <version_num>1</version_num>
 <platform>x86_64-pc-linux-gnu</platform>
 <avg_ncpus>1</avg_ncpus>
 <flops>1e9</flops>
 <file_ref>
  <file_name>burn</file_name>
  <main_program/>
 </file_ref>
</app_version>
{results}<user_network_request>3</user_network_request>
</client_state>
""")

    def tasks(self):
        pids = []
        try:
            with open(os.path.join(self.cg, "cgroup.procs")) as f:
                for p in f.read().split():
                    try:
                        with open(f"/proc/{p}/comm") as c:
                            if c.read().strip() == "burn":
                                pids.append(int(p))
                    except OSError:
                        pass
        except OSError:
            pass
        return pids

    def start(self):
        self.write_dir()
        os.mkdir(self.cg)
        self.log = open(os.path.join(self.dir, "client.log"), "w")
        # The shell moves itself into the cgroup before it becomes the client,
        # so the tasks it forks are born there.
        self.proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {self.cg}/cgroup.procs && exec boinc --dir "$0" '
             "--no_gui_rpc --allow_multiple_clients", self.dir],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 20
        while time.monotonic() < end and len(self.tasks()) < self.ntasks:
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if len(self.tasks()) < self.ntasks:
            raise RuntimeError("BOINC did not start its tasks: " + open(self.log.name).read()[-2000:])
        # Started is not running yet: give the tasks' API library its start
        # (a few seconds at most; the throttle may hold them anyway).
        u0, end = self.usage_usec(), time.monotonic() + 4
        while time.monotonic() < end and self.usage_usec() - u0 < 20000:
            time.sleep(0.1)
        return self

    def usage_usec(self):
        """CPU of the tasks: the cgroup less the client itself."""
        return read_usage_usec(self.cg) - schedstat_ns(self.proc.pid) // 1000

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rmtree_cgroup(self.cg)
        self.log.close()


class NiceIdle:
    """No cap at all: NCPU burn loops at nice 19 + SCHED_IDLE, what a job gets
    from harvesterd where neither cpu.max nor the freezer is used."""

    def __init__(self, tmp):
        self.burn = os.path.join(tmp, "burn")
        self.procs = []

    def start(self):
        def demote():
            os.nice(19)
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        self.procs = [subprocess.Popen([self.burn], preexec_fn=demote) for _ in range(NCPU)]
        return self

    def usage_usec(self):
        return sum(schedstat_ns(p.pid) for p in self.procs) // 1000

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


# --- foreground workloads ---------------------------------------------------------

def run_cyclictest():
    """Wakeup latency of one normal-priority (SCHED_OTHER) thread per CPU, 1-ms
    interval, pooled over the threads: p50/p99/p99.9 in us."""
    hmax = 50000
    r = subprocess.run(["cyclictest", "-q", "-m", "-t", str(NCPU), "-a", "-i", "1000", "-D", str(CYC_S),
                        "-h", str(hmax), "--policy=other"], capture_output=True, text=True)
    buckets, total, over, mx = [], 0, 0, 0
    for line in r.stdout.splitlines():
        if line.startswith("# Histogram Overflows:"):
            over = sum(int(x) for x in line.split(":")[1].split())
        elif line.startswith("# Max Latencies:"):
            mx = max(int(x) for x in line.split(":")[1].split())
        elif line and not line.startswith("#"):
            parts = line.split()
            n = sum(int(x) for x in parts[1:])
            if n:
                buckets.append((int(parts[0]), n))
                total += n
    total += over
    if total == 0:
        raise RuntimeError("cyclictest gave no samples: " + r.stderr)

    def q(p):
        want, seen = p / 100 * total, 0
        for us, n in buckets:
            seen += n
            if seen >= want:
                return us
        return hmax  # in the overflow: at least hmax
    return {"p50": q(50), "p99": q(99), "p99.9": q(99.9), "max": mx}


def run_hackbench():
    r = subprocess.run(["perf", "bench", "sched", "messaging", "-g", "2", "-l", str(HACK_LOOPS)],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "Total time:" in line:
            return float(line.split(":")[1].split()[0])
    raise RuntimeError("perf bench: " + r.stdout + r.stderr)


def run_sysbench():
    r = subprocess.run(["sysbench", "cpu", f"--threads={NCPU}", f"--time={SYSB_S}", "run"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "events per second:" in line:
            return float(line.split(":")[1])
    raise RuntimeError("sysbench: " + r.stdout + r.stderr)


# metric name, unit, "lower" is better or "higher", how to get it from one arm run
METRICS = [("cyclictest p50", "us", "lower", lambda r: r["cyc"]["p50"]),
           ("cyclictest p99", "us", "lower", lambda r: r["cyc"]["p99"]),
           ("cyclictest p99.9", "us", "lower", lambda r: r["cyc"]["p99.9"]),
           ("hackbench time", "s", "lower", lambda r: r["hack"]),
           ("sysbench cpu", "events/s", "higher", lambda r: r["sysb"])]


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def intrusion(tmp, results):
    arms = [("alone", None),
            ("a: harvesterd", lambda: Harvesterd(tmp, CAP, max_fg="100%")),
            ("a': harvesterd, default MaxForegroundCPU=20%", lambda: Harvesterd(tmp, CAP, max_fg="20%")),
            ("b: BOINC client", lambda: Boinc(tmp, CAP)),
            ("d: nice 19 + SCHED_IDLE, no cap", lambda: NiceIdle(tmp))]
    # a' (the default policy, which pauses harvesting under the benchmark's
    # own foreground load) costs two minutes; on request only.
    if os.environ.get("BENCH_DEFAULT_POLICY_ARM") != "1":
        arms = [a for a in arms if not a[0].startswith("a'")]
    runs = {name: [] for name, _ in arms}
    for rnd in range(ROUNDS):
        for name, make in arms:
            load = make().start() if make else None
            try:
                time.sleep(1)  # let the load settle (the duty cycle, BOINC's first throttle cycle)
                u0, t0 = (load.usage_usec() if load else 0), time.monotonic()
                la = loadavg()
                r = {"cyc": run_cyclictest(), "hack": run_hackbench(), "sysb": run_sysbench()}
                if load:
                    r["harvest_share"] = (load.usage_usec() - u0) / 1e6 / ((time.monotonic() - t0) * NCPU)
                r["loadavg"] = la
            finally:
                if load:
                    load.stop()
            runs[name].append(r)
            log(f"round {rnd + 1}/{ROUNDS} {name}: p99 {r['cyc']['p99']} us, hackbench {r['hack']:.3f} s, "
                f"sysbench {r['sysb']:.0f}/s" + (f", harvest got {r['harvest_share'] * 100:.2f}%" if load else ""))
    results["intrusion"] = {"runs": runs, "rounds": ROUNDS, "cap_pct": CAP}
    results["intrusion"]["not_run"] = {
        "c: plain cgroup cpu.max (systemd CPUQuota=)":
            "not run on the host: its cgroup v2 has no cpu controller (cpu.max absent); run in the "
            "Debian guest instead (section 5)"}


def summarize_intrusion(intr, metrics=None):
    runs = intr["runs"]
    alone = runs["alone"]
    table = []
    for mname, unit, better, get in metrics or METRICS:
        a_vals = [get(r) for r in alone]
        a_med = statistics.median(a_vals)
        band = (min(a_vals) / a_med, max(a_vals) / a_med) if a_med else (1, 1)
        for arm, rs in runs.items():
            vals = [get(r) for r in rs]
            ratios = [v / a if a else float("nan") for v, a in zip(vals, a_vals)]
            row = {"metric": mname, "unit": unit, "better": better, "arm": arm,
                   "median": statistics.median(vals), "min": min(vals), "max": max(vals),
                   "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                   "noise": band}
            row["inside_noise"] = arm != "alone" and band[0] <= row["ratio"] <= band[1]
            if arm != "alone" and "harvest_share" in rs[0]:
                row["harvest_share"] = statistics.median(r["harvest_share"] for r in rs)
            table.append(row)
    return table


# --- budget precision and the daemon's cost --------------------------------------------------

def settle(d, quiet_s=3, limit_s=20):
    """Wait until harvesterd has been harvesting (state idle) for quiet_s: a
    fresh bucket starts empty (exhausted for its 1-s resume time), and the
    CPU the jobs burn while the next one is being spawned, before the duty
    cycle's first freeze, can empty it once more. That start-up is not the
    cap's precision; it is over within a few seconds."""
    end, since = time.monotonic() + limit_s, None
    while time.monotonic() < end:
        if d.status()["state"] == "idle":
            since = since or time.monotonic()
            if time.monotonic() - since >= quiet_s:
                return
        else:
            since = None
        time.sleep(0.25)


def precision(tmp, results):
    caps = [1, 5, 50]
    out = {"harvesterd": {}, "boinc": {}, "window_s": PREC_S}
    cost = {}

    def windows(load, cap):
        if isinstance(load, Harvesterd):
            settle(load)
        else:
            time.sleep(2)
        b0 = busy_s()
        samples = [(time.monotonic(), load.usage_usec())]
        for _ in range(PREC_S // 10):
            time.sleep(10 - (time.monotonic() - samples[-1][0]) % 10)
            samples.append((time.monotonic(), load.usage_usec()))
        share = cap / 100 * NCPU

        def ratio(a, b):
            return (b[1] - a[1]) / 1e6 / ((b[0] - a[0]) * share)
        w10 = [ratio(a, b) for a, b in zip(samples, samples[1:])]
        # The rest of the machine's load in the same window: the jobs only get
        # what it leaves (they run SCHED_IDLE), so a busy host starves them.
        dt = samples[-1][0] - samples[0][0]
        other = (busy_s() - b0 - (samples[-1][1] - samples[0][1]) / 1e6) / (dt * NCPU)
        return {"w10": w10, "w60": ratio(samples[0], samples[-1]), "other_load": max(other, 0.0)}

    # harvesterd at each cap; its own CPU and the probe's cost while harvesting
    h_cpu = h_wall = 0
    h_ns = h_cnt = 0
    for cap in caps:
        d = Harvesterd(tmp, cap).start()
        try:
            st0, t0 = d.status(), time.monotonic()
            p0 = bpf_prog_cost(d.proc.pid)
            out["harvesterd"][cap] = windows(d, cap)
            st1, t1 = d.status(), time.monotonic()
            p1 = bpf_prog_cost(d.proc.pid)
            h_cpu += st1["daemon"]["cpu_usec"] - st0["daemon"]["cpu_usec"]
            h_wall += t1 - t0
            h_ns += p1[0] - p0[0]
            h_cnt += p1[1] - p0[1]
            cost["rss_harvesting_bytes"] = max(cost.get("rss_harvesting_bytes", 0), st1["daemon"]["rss_bytes"])
            cost["cap_mechanism"] = st1["cap_mechanism"]
            cost["probe_programs"] = p1[2]
        finally:
            d.stop()
        log(f"harvesterd cap {cap}%: 60-s used/cap {out['harvesterd'][cap]['w60']:.3f}, "
            f"10-s {min(out['harvesterd'][cap]['w10']):.3f}..{max(out['harvesterd'][cap]['w10']):.3f}")

    # BOINC at the same settings, with an idle harvesterd (no jobs) beside it for its idle cost
    idle = Harvesterd(tmp, 1, jobs=0).start()
    try:
        st0, t0 = idle.status(), time.monotonic()
        p0 = bpf_prog_cost(idle.proc.pid)
        for cap in caps:
            b = Boinc(tmp, cap).start()
            try:
                out["boinc"][cap] = windows(b, cap)
            finally:
                b.stop()
            log(f"BOINC cpu_usage_limit {cap}%: 60-s used/cap {out['boinc'][cap]['w60']:.3f}, "
                f"10-s {min(out['boinc'][cap]['w10']):.3f}..{max(out['boinc'][cap]['w10']):.3f}")
        st1, t1 = idle.status(), time.monotonic()
        p1 = bpf_prog_cost(idle.proc.pid)
        cost["idle_cpu_s_per_h"] = (st1["daemon"]["cpu_usec"] - st0["daemon"]["cpu_usec"]) / 1e6 / (t1 - t0) * 3600
        cost["idle_wall_s"] = t1 - t0
        cost["rss_idle_bytes"] = st1["daemon"]["rss_bytes"]
        i_ns, i_cnt = p1[0] - p0[0], p1[1] - p0[1]
    finally:
        idle.stop()
    cost["harvesting_cpu_s_per_h"] = h_cpu / 1e6 / h_wall * 3600 if h_wall else None
    cost["harvesting_wall_s"] = h_wall
    cost["probe_ns_per_event"] = (h_ns + i_ns) / (h_cnt + i_cnt) if h_cnt + i_cnt else None
    cost["probe_events"] = h_cnt + i_cnt
    cost["probe_events_per_s"] = (h_cnt + i_cnt) / (h_wall + cost["idle_wall_s"])
    results["precision"] = out
    results["cost"] = cost


# --- reaction ------------------------------------------------------------------------------------

def reaction(tmp, results):
    """Terminal input (a read on a pty the daemon watches) to jobs frozen, over
    REACT_N keystrokes at random moments while NCPU jobs run uncapped."""
    d = Harvesterd(tmp, 100, idle="1s").start()
    master, slave = pty.openpty()
    ev = []
    try:
        os.symlink(os.ttyname(slave), os.path.join(d.pts, "0"))
        time.sleep(0.3)
        for i in range(REACT_N):
            end = time.monotonic() + 10
            while time.monotonic() < end:
                st = d.status()
                if st["state"] == "idle" and not st["frozen"]:
                    break
                time.sleep(0.05)
            n0 = st["reaction"]["count"]
            time.sleep(random.uniform(0.2, 0.7))   # a random phase against any period of the daemon's
            t = time.monotonic()
            os.write(master, b"x\n")
            os.read(slave, 16)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                st = d.status()
                if st["reaction"]["count"] > n0:
                    break
                time.sleep(0.02)
            else:
                log(f"keystroke {i}: no reaction recorded")
                continue
            last_run, frozen = st["reaction"]["samples"][-1]
            ev.append({"t": t, "to_last_run_us": last_run, "to_frozen_us": frozen})
    finally:
        os.close(master)
        os.close(slave)
        d.stop()
    results["reaction"] = reaction_stats(ev)
    log(f"reaction over {len(ev)} keystrokes: to frozen p50 {results['reaction']['to_frozen_us']['p50']} us, "
        f"p99 {results['reaction']['to_frozen_us']['p99']} us")


def reaction_stats(ev):
    res = {"events": ev, "n": len(ev)}
    for key in ("to_last_run_us", "to_frozen_us"):
        v = sorted(e[key] for e in ev if e[key] is not None)
        res[key] = {"p50": pct(v, 50), "p99": pct(v, 99), "max": v[-1] if v else None, "n": len(v)}
    # What a poller would give on the same events: the wait from the event to
    # the poller's next look, over many random phases (uniform over the period).
    rng = random.Random(7)
    for name, period in (("poll 1 s (BOINC)", 1.0), ("poll 5 s (HTCondor)", 5.0)):
        lat = []
        for _ in range(200):
            phase = rng.uniform(0, period)
            lat += [((phase - e["t"]) % period) * 1e6 for e in ev]
        lat.sort()
        res[name] = {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1] if lat else None, "n": len(ev)}
    return res


# --- the guest: cpu.max, systemd CPUQuota=, keystrokes ---------------------------------------

GUEST_ARMS = {"alone": "alone", "a": "a: harvesterd (cpu.max)", "b": "b: BOINC client",
              "c": "c: systemd CPUQuota= (cpu.max)", "d": "d: nice 19 + SCHED_IDLE, no cap"}


def guest(results):
    """Boot the VM suite's guest and run guest-bench.sh there (tests/bench/guest.sh)."""
    if os.environ.get("BENCH_GUEST", "1") == "0":
        results["guest"] = {"not_run": "BENCH_GUEST=0"}
        return
    logf = os.path.join(OUT, "guest.log")
    with open(logf, "w") as f:
        r = subprocess.run(["sh", "tests/bench/guest.sh", BUILD], stdout=f, stderr=subprocess.STDOUT)
    tail = open(logf).read().strip().splitlines()
    figs = os.path.join(OUT, "vm", "figures")
    if r.returncode == 77 or not os.path.exists(figs):
        results["guest"] = {"not_run": (tail[-1] if tail else "guest.sh gave no output") + f" (see {logf})"}
        return
    results["guest"] = parse_guest(figs, r.returncode)
    g = results["guest"]
    log(f"guest: {len(g['runs'].get('alone', []))} rounds, {g['reaction']['n']} keystrokes, rc {r.returncode}; "
        + "; ".join(f"{arm} {cap}%: 60-s used/cap {x['w60']:.3f}" for arm, by in g["precision"].items()
                    for cap, x in by.items()))


def prec_windows(samples, cap):
    """used/cap over back-to-back 10-s windows and over the whole span, from
    (time s, usage usec) samples 10 s apart; cap in % of the guest's CPUs."""
    share = cap / 100 * GUEST_NCPU

    def ratio(a, b):
        return (b[1] - a[1]) / 1e6 / ((b[0] - a[0]) * share)
    return {"w10": [ratio(a, b) for a, b in zip(samples, samples[1:])], "w60": ratio(samples[0], samples[-1]),
            "window_s": samples[-1][0] - samples[0][0]}


GUEST_NCPU = 2  # tests/vm/driver.py boots it with -smp 2


def parse_guest(figs, rc):
    g = {"runs": {v: [] for v in GUEST_ARMS.values()}, "react": [], "rc": rc,
         "precision": {"harvesterd": {}, "boinc": {}}}
    with open(figs) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "g_intr" and len(w) in (8, 9):
                _, rnd, arm, p50, p99, p999, sysb, got = w[:8]
                run = {"cyc": {"p50": int(p50), "p99": int(p99), "p99.9": int(p999)}, "sysb": float(sysb)}
                if len(w) == 9 and w[8] not in ("-", ""):
                    run["hack"] = float(w[8])
                if got != "-":
                    run["harvest_share"] = float(got)
                g["runs"][GUEST_ARMS[arm]].append(run)
            elif w[0] == "g_react" and len(w) == 5:
                g["react"].append({"t": float(w[2]),
                                   "to_last_run_us": None if w[3] in ("null", "none") else int(w[3]),
                                   "to_frozen_us": None if w[4] in ("null", "none") else int(w[4])})
            elif w[0] in ("g_cap_mechanism", "g_input_source"):
                g[w[0][2:]] = " ".join(w[1:])
            elif w[0] == "g_arms":
                g["arms"] = dict(x.split("=", 1) for x in w[1:] if "=" in x)
            elif w[0] == "g_prec" and len(w) >= 7 and len(w) % 2 == 1:
                arm, cap = w[1], int(w[2])
                v = [float(x) for x in w[3:]]
                samples = list(zip(v[0::2], v[1::2]))
                g["precision"].setdefault(arm, {})[cap] = prec_windows(samples, cap)
            elif w[0] == "g_daemon_idle" and len(w) == 6:
                c0, c1, t0, t1, rss = (float(x) for x in w[1:])
                g["idle_cpu_s_per_h"] = (c1 - c0) / 1e6 / (t1 - t0) * 3600
                g["idle_wall_s"] = t1 - t0
                g["rss_idle_bytes"] = rss
            elif w[0] == "g_daemon_cpu_usec" and len(w) == 3:
                g["daemon_cpu_s_per_h"] = int(w[1]) / 1e6 / float(w[2]) * 3600
            elif w[0] == "host_guest_wall_s":
                g["wall_s"] = float(w[1])
    g["runs"] = {k: v for k, v in g["runs"].items() if v}
    if g["runs"].get("alone"):
        g["rounds"] = len(g["runs"]["alone"])
        with_hack = all("hack" in r for rs in g["runs"].values() for r in rs)
        metrics = METRICS if with_hack else [m for m in METRICS if not m[0].startswith("hackbench")]
        g["table"] = summarize_intrusion(g, metrics)
    g["reaction"] = reaction_stats([e for e in g["react"] if e["to_frozen_us"] is not None])
    g["reaction"]["missed"] = sum(1 for e in g["react"] if e["to_frozen_us"] is None)
    return g


# --- output ---------------------------------------------------------------------------------------

HIST_MAX_US = 50000  # cyclictest -h, host and guest: a percentile there is in the overflow


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "us":
        return f"≥{v:.0f}" if v >= HIST_MAX_US else f"{v:.0f}"
    if unit == "s":
        return f"{v:.3f}"
    return f"{v:.0f}"


def ms(us):
    return "-" if us is None else f"{us / 1000:.2f}"


def write_outputs(results, elapsed):
    md = []
    host = os.uname()
    md.append(f"# harvester bench: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    md.append("")
    md.append(f"Machine: {host.nodename}, kernel {host.release}, {NCPU} CPUs ({cpu_model()}); "
              f"cap mechanism here: {results['cost'].get('cap_mechanism', '?')}; run took {elapsed / 60:.1f} min"
              + (" (BENCH_QUICK smoke run: short durations, not figures to quote)" if QUICK else "") + ".")
    md.append("")
    intr = results["intrusion"]
    md.append(f"## 1. Intrusion: foreground beside {NCPU} CPU-bound harvest loops at a {CAP} % cap")
    md.append("")
    md.append(f"{intr['rounds']} interleaved rounds ({', '.join(a.split(':')[0] for a in intr['runs'])}, alone, ...); "
              "median (min-max) over rounds; "
              "ratio = arm / alone of the same round, median (min-max). `~` marks a median ratio inside the alone "
              "runs' own spread (noise). Arm a runs harvesterd with MaxForegroundCPU=100%, a deviation from the "
              "default policy so that the benchmark's own foreground load does not pause it"
              + ("; a' keeps the default (20%)" if any(a.startswith("a'") for a in intr["runs"]) else
                 " (BENCH_DEFAULT_POLICY_ARM=1 adds an arm a' with the default 20%, which pauses it)")
              + ". Harvest got = share of the machine the harvest load actually used during the arm.")
    md.append("")
    intrusion_md(md, results["intrusion_table"], intr["not_run"])
    for arm, why in intr["not_run"].items():
        md.append(f"- {arm}: {why}.")
    la = [r["loadavg"] for rs in intr["runs"].values() for r in rs]
    md.append(f"- 1-min load average at the arms' start: {min(la):.2f} to {max(la):.2f} "
              "(other work on the machine adds to the noise).")
    md.append("")

    pr = results["precision"]
    md.append(f"## 2. Budget precision: CPU used by the jobs / cap, {NCPU} CPU-bound jobs")
    md.append("")
    md.append("harvesterd with CPU=Burst=cap (so the bucket never bursts above the cap) and a fresh, empty bucket; "
              "BOINC with cpu_usage_limit=cap, max_ncpus_pct=100, one task per CPU. "
              f"Cap = cap % of {NCPU} CPUs. 10-s windows: median (min-max) of {pr['window_s'] // 10}; "
              f"{pr['window_s']}-s window: one.")
    md.append("")
    md.append(f"| cap | harvesterd 10 s | harvesterd {pr['window_s']} s | other load | BOINC 10 s | "
              f"BOINC {pr['window_s']} s | other load |")
    md.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cap in pr["harvesterd"]:
        h, b = pr["harvesterd"][cap], pr["boinc"].get(cap)

        def w10(x):
            return f"{statistics.median(x['w10']):.3f} ({min(x['w10']):.3f}-{max(x['w10']):.3f})"
        md.append(f"| {cap} % | {w10(h)} | {h['w60']:.3f} | {h['other_load'] * 100:.0f} % | "
                  + (f"{w10(b)} | {b['w60']:.3f} | {b['other_load'] * 100:.0f} % |" if b else "- | - | - |"))
    md.append("")
    md.append("Other load = the rest of the machine's CPU use in the same window (share of all CPUs). The jobs "
              "run SCHED_IDLE and get only what it leaves: where it is high (other sessions' work on this "
              "machine), a used/cap below 1 says the host was not idle, not that the cap is wrong.")
    md.append("")

    c = results["cost"]
    md.append("## 3. Cost of the daemon")
    md.append("")
    md.append("| figure | value |")
    md.append("| --- | ---: |")
    md.append(f"| harvesterd CPU, no jobs (over {c['idle_wall_s']:.0f} s) | {c['idle_cpu_s_per_h']:.2f} s/h "
              f"({c['idle_cpu_s_per_h'] / 36:.4f} % of one core) |")
    md.append(f"| harvesterd CPU, harvesting (over {c['harvesting_wall_s']:.0f} s) | {c['harvesting_cpu_s_per_h']:.2f} "
              f"s/h ({c['harvesting_cpu_s_per_h'] / 36:.4f} % of one core) |")
    md.append(f"| resident memory, idle / harvesting | {c['rss_idle_bytes'] / 2**20:.1f} / "
              f"{c['rss_harvesting_bytes'] / 2**20:.1f} MiB |")
    pn = c["probe_ns_per_event"]
    md.append(f"| probe cost per event (kernel.bpf_stats_enabled, {c['probe_programs']} programs) | "
              f"{'-' if pn is None else f'{pn:.0f} ns'} over {c['probe_events']} events "
              f"({c['probe_events_per_s']:.0f}/s) |")
    md.append("")

    rc = results["reaction"]
    md.append(f"## 4. Reaction: terminal input to jobs frozen, {rc['n']} keystrokes on a pty (host)")
    md.append("")
    md.append("Input = a read of terminal input on a pty the daemon watches; the host has no input devices. "
              "Polling rows: the wait from the same events to a poller's next look, over 200 random phases "
              "(a lower bound: the suspend itself comes after).")
    md.append("")
    md.append("| measure | p50 (ms) | p99 (ms) | max (ms) |")
    md.append("| --- | ---: | ---: | ---: |")
    for key, label in (("to_last_run_us", "harvesterd: input to last harvest run on a CPU (probe)"),
                       ("to_frozen_us", "harvesterd: input to cgroup frozen"),
                       ("poll 1 s (BOINC)", "polling every 1 s (BOINC)"),
                       ("poll 5 s (HTCondor)", "polling every 5 s (HTCondor)")):
        x = rc[key]
        md.append(f"| {label} | {ms(x['p50'])} | {ms(x['p99'])} | {ms(x['max'])} |")
    g = results.get("guest", {})
    if "not_run" in g:
        md.append(f"| keystrokes in the guest (QMP) | not run: {g['not_run']} | | |")
    md.append("")
    md.append("## 5. In the Debian guest (QEMU TCG, systemd 252, cgroup v2 cpu controller, fentry)")
    md.append("")
    if "not_run" in g:
        md.append(f"Not run: {g['not_run']}. Arms c (systemd CPUQuota=) and harvesterd with cpu.max, and "
                  "keystroke reaction, need the guest.")
    else:
        md.append(f"harvesterd from the .deb under systemd, cap mechanism `{g.get('cap_mechanism', '?')}`, input "
                  f"`{g.get('input_source', '?')}`; CPU=Burst=10 %, MaxForegroundCPU=100 % (not the default). "
                  f"c = `systemd-run -p CPUQuota={10 * NCPU}%` (10 % of the machine), normal priority. "
                  f"b = the BOINC client with cpu_usage_limit=10 (task built against the BOINC API). "
                  f"The guest CPU is emulated: absolute latencies are not comparable with the host's, only "
                  f"ratios within this run. Optional arms in this run: "
                  + ", ".join(f"{k} {'yes' if v == '1' else 'no'}" for k, v in g.get("arms", {}).items())
                  + f". Guest ran {g.get('wall_s', 0):.0f} s"
                  + ("" if g.get("rc") == 0 else f" (driver exit {g.get('rc')})") + ".")
        md.append("")
        if "table" in g:
            md.append(f"{g['rounds']} interleaved rounds ({', '.join(a.split(':')[0] for a in g['runs'])}, alone, ...).")
            md.append("")
            intrusion_md(md, g["table"], {})
        rc = g["reaction"]
        md.append(f"Reaction over {rc['n']} keystrokes sent with QMP input-send-event "
                  f"({rc.get('missed', 0)} more got no reaction within 10 s; a late one then counts from its own "
                  "input, so it shows in the max):")
        md.append("")
        md.append("| measure | p50 (ms) | p99 (ms) | max (ms) |")
        md.append("| --- | ---: | ---: | ---: |")
        for key, label in (("to_last_run_us", "input_event() to last harvest run on a CPU (probe)"),
                           ("to_frozen_us", "input_event() to cgroup frozen"),
                           ("poll 1 s (BOINC)", "polling every 1 s (BOINC)"),
                           ("poll 5 s (HTCondor)", "polling every 5 s (HTCondor)")):
            x = rc.get(key)
            if x:
                md.append(f"| {label} | {ms(x['p50'])} | {ms(x['p99'])} | {ms(x['max'])} |")
        gp = g.get("precision", {})
        if gp.get("harvesterd"):
            md.append("")
            md.append(f"Budget precision in the guest (cpu.max): {GUEST_NCPU} CPU-bound jobs, CPU=Burst=cap and a "
                      "fresh bucket for harvesterd, measured from 3 s of steady harvesting; BOINC with "
                      "cpu_usage_limit=cap, each alone (harvesterd's slice is idle-class: beside BOINC it would "
                      "yield to BOINC's tasks). used/cap from the jobs' cgroup "
                      "cpu.stat (BOINC: its cgroup less the client), 10-s windows back to back: median (min-max).")
            md.append("")
            md.append("| cap | harvesterd 10 s | harvesterd whole | BOINC 10 s | BOINC whole |")
            md.append("| ---: | ---: | ---: | ---: | ---: |")

            def cell(x):
                if not x:
                    return "- | -"
                return (f"{statistics.median(x['w10']):.3f} ({min(x['w10']):.3f}-{max(x['w10']):.3f}) | "
                        f"{x['w60']:.3f} ({x['window_s']:.0f} s)")
            for cap in sorted(set(gp.get("harvesterd", {})) | set(gp.get("boinc", {}))):
                md.append(f"| {cap} % | {cell(gp['harvesterd'].get(cap))} | {cell(gp.get('boinc', {}).get(cap))} |")
        if "idle_cpu_s_per_h" in g:
            md.append("")
            md.append(f"The idle daemon in the guest (no jobs, no status calls but the two that measure it, over "
                      f"{g['idle_wall_s']:.0f} s{' of the BOINC runs' if gp.get('boinc') else ''}): "
                      f"{g['idle_cpu_s_per_h']:.2f} s of CPU per hour ({g['idle_cpu_s_per_h'] / 36:.4f} % of one "
                      f"emulated core), resident memory {g['rss_idle_bytes'] / 2**20:.1f} MiB.")
        if "daemon_cpu_s_per_h" in g:
            md.append("")
            md.append(f"harvesterd CPU in the guest since boot: {g['daemon_cpu_s_per_h']:.1f} s/h (emulated CPU; "
                      "harvesting most of the time and answering the benchmark's own status polls, several a "
                      "second during the reaction phase: not an idle figure).")
    md.append("")
    text = "\n".join(md) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    plot(results)
    return text


def intrusion_md(md, table, not_run):
    md.append("| workload | arm | median | min-max | ratio to alone | ratio min-max | harvest got |")
    md.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in table:
        u = row["unit"]
        r = "1" if row["arm"] == "alone" else f"{row['ratio']:.3f}{' ~' if row['inside_noise'] else ''}"
        rr = "-" if row["arm"] == "alone" else f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
        hg = f"{row['harvest_share'] * 100:.2f} %" if "harvest_share" in row else "-"
        md.append(f"| {row['metric']} ({u}) | {row['arm']} | {fmt(row['median'], u)} | "
                  f"{fmt(row['min'], u)}-{fmt(row['max'], u)} | {r} | {rr} | {hg} |")
    for arm in not_run:
        md.append(f"| all | {arm} | not run | | | | |")
    md.append("")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def plot(results):
    """bench.png: intrusion ratios per workload and arm (median, min-max),
    and budget used/cap per cap for harvesterd and BOINC."""
    if not shutil.which("gnuplot"):
        return
    arms = [a for a in results["intrusion"]["runs"] if a != "alone"]
    rows = {}
    for r in results["intrusion_table"]:
        if r["arm"] != "alone":
            rows.setdefault(r["metric"], {})[r["arm"]] = r
    d1 = os.path.join(OUT, "intrusion.dat")
    with open(d1, "w") as f:
        for m, by in rows.items():
            f.write(f'"{m}"')
            for a in arms:
                x = by[a]
                f.write(f" {x['ratio']:.4f} {x['ratio_min']:.4f} {x['ratio_max']:.4f}")
            f.write("\n")
    pr = results["precision"]
    d2 = os.path.join(OUT, "precision.dat")
    with open(d2, "w") as f:
        for cap in pr["harvesterd"]:
            h, b = pr["harvesterd"][cap], pr["boinc"][cap]
            f.write(f'"{cap} %" {h["w60"]:.4f} {min(h["w10"]):.4f} {max(h["w10"]):.4f} '
                    f'{b["w60"]:.4f} {min(b["w10"]):.4f} {max(b["w10"]):.4f}\n')
    p1 = ", ".join(f"'{d1}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}" + (":xtic(1)" if i == 0 else "")
                   + f' title "{a.split(":")[0]}"' for i, a in enumerate(arms))
    script = f"""set terminal pngcairo size 1400,600 noenhanced
set output '{os.path.join(OUT, "bench.png")}'
set multiplot layout 1,2
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.6 border -1
set key top left
set grid y
set logscale y
set title 'Intrusion: foreground metric / alone (median, min-max over rounds; log scale)'
set ylabel 'ratio to alone'
set xtics rotate by -20
plot {p1}, 1 notitle lc rgb 'black' dt 2
unset logscale y
set title 'Budget precision: jobs CPU used / cap (60-s window, bars: 10-s min-max)'
set ylabel 'used / cap'
set yrange [0:*]
plot '{d2}' using 2:3:4:xtic(1) title 'harvesterd', '' using 5:6:7 title 'BOINC', 1 notitle lc rgb 'black' dt 2
unset multiplot
"""
    sp = os.path.join(OUT, "bench.gp")
    with open(sp, "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", sp], capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr)


def main():
    if os.geteuid() != 0:
        print("make bench needs root (cgroups, the job user, BPF stats)")
        return 77
    if not MNT:
        print("no cgroup2 mount")
        return 77
    for tool in ("cyclictest", "perf", "sysbench", "boinc", "bpftool"):
        if not shutil.which(tool):
            print(f"missing {tool}: run `make bench`, which installs it")
            return 1
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="harvester-bench-", dir="/var/tmp")
    os.chmod(tmp, 0o755)  # the job user reads burn from here
    for b in ("burn", "burn-boinc"):
        shutil.copy(os.path.join(OUT, b), os.path.join(tmp, b))
        os.chmod(os.path.join(tmp, b), 0o755)
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_was = f.read().strip()
    results = {}
    start = time.monotonic()
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        log("intrusion arms")
        intrusion(tmp, results)
        results["intrusion_table"] = summarize_intrusion(results["intrusion"])
        log("budget precision and the daemon's cost")
        precision(tmp, results)
        log("reaction")
        reaction(tmp, results)
        log("guest arms (VM suite's Debian guest under QEMU)")
        guest(results)
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(stats_was)
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_outputs(results, time.monotonic() - start))
    print(f"written: {OUT}/results.md, results.json, bench.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
