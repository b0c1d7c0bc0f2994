"""Shared pieces of the host integration tests (tests/host/test_*.py):
results, waiting, free ports, the cgroup2 test subtrees, a harvesterd and a
harvest-pool started for a test, and the loop that runs a file's cases."""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BUILD = os.environ.get("HARVESTER_BUILD", "build")
HARVESTERD = os.path.join(BUILD, "harvesterd")
HARVESTCTL = os.path.join(BUILD, "harvestctl")
POOL = os.path.join(BUILD, "harvest-pool")

# Leaks of libraries that keep memory for life, and one NNG race: see the file.
os.environ.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0" % os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lsan.supp"))

# Every process a case started, ended by pid if the case fails.
spawned = []

# Each test is its own process: this list is that test's failures.
failures = []


def check(cond, what):
    """Print ok/FAIL for one assertion and remember failures; returns cond."""
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def wait_for(fn, timeout, step=0.1):
    """Call fn until it returns something true or timeout seconds pass;
    returns its last value."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(step)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cgroup2_mount():
    """Where cgroup2 is mounted (/sys/fs/cgroup, or .../unified on a hybrid)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] == "cgroup2":
                return parts[4]
    return None


def remove_cgroup_tree(base):
    """Thaw and kill everything under base, then remove it, deepest first."""
    def deepest_first():
        return sorted(os.walk(base), key=lambda x: -x[0].count("/"))
    for r, _, _ in deepest_first():
        for name, val in (("cgroup.freeze", "0"), ("cgroup.kill", "1")):
            try:
                with open(os.path.join(r, name), "w") as f:
                    f.write(val)
            except OSError:
                pass
    time.sleep(0.2)
    for r, _, _ in deepest_first():
        try:
            os.rmdir(r)
        except OSError:
            pass


def sanitizer_free(path):
    """Check that a log holds no ASan/UBSan report; returns its text."""
    try:
        text = open(path).read()
    except OSError:
        return ""
    check("Sanitizer" not in text and "runtime error" not in text, "no sanitizer report in %s" % path)
    return text


class Daemon:
    """harvesterd with its own state, runtime, pty and input folders under
    TMP (other sessions on the machine type into their own ptys), reading
    the config file CONF."""

    def __init__(self, tmp, conf):
        self.tmp = tmp
        self.conf = conf
        self.state = os.path.join(tmp, "state")
        self.run = os.path.join(tmp, "run")
        self.sock = os.path.join(self.run, "control.sock")
        self.log = os.path.join(tmp, "daemon.log")
        self.pts = os.path.join(tmp, "pts")
        self.input = os.path.join(tmp, "input")
        os.makedirs(self.pts, exist_ok=True)
        os.makedirs(self.input, exist_ok=True)
        self.proc = None

    def start(self, extra=(), prefix=()):
        """Start it (PREFIX: a command that execs it, e.g. unshare) and wait
        until its control socket answers."""
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(
            [*prefix, HARVESTERD, "--config", self.conf, "--state-dir", self.state, "--runtime-dir", self.run,
             "--tty-dir", self.pts, "--input-dir", self.input, *extra],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        spawned.append(self.proc)
        for _ in range(200):
            if os.path.exists(self.sock):
                try:
                    self.status()
                    return
                except Exception:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("harvesterd did not start:\n" + self.log_text())

    def stop(self, sig=signal.SIGTERM):
        """Signal it and return its exit status (None if it was not running)."""
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            rc = self.proc.wait(timeout=20)
        self.proc = None
        return rc

    def ctl(self, *args, user=None, check_rc=True):
        """harvestctl against this daemon, as USER if given."""
        cmd = [HARVESTCTL, "--socket", self.sock, *args]
        kw = {}
        if user:
            pw = pwd.getpwnam(user)
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, **kw)
        if check_rc and r.returncode != 0:
            raise RuntimeError(f"{cmd} failed ({r.returncode}): {r.stderr}")
        return r

    def status(self):
        return json.loads(self.ctl("--json", "status").stdout)

    def jobs(self):
        """Jobs by id."""
        return {j["id"]: j for j in json.loads(self.ctl("--json", "jobs").stdout)}

    def wait_job(self, jid, states=("done", "failed", "cancelled"), timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            j = self.jobs().get(jid)
            if j and j["state"] in states:
                return j
            time.sleep(0.1)
        return self.jobs().get(jid)

    def submit(self, *argv):
        return int(self.ctl("submit", "--", *argv).stdout.strip())

    def log_text(self):
        try:
            return open(self.log).read()
        except OSError:
            return ""


class Pool:
    """harvest-pool with its state under ROOT/NAME, serving on a free
    loopback port."""

    def __init__(self, root, name="pool", lease=30):
        self.dir = os.path.join(root, name)
        self.lease = lease
        out = subprocess.run([POOL, "init", "--state-dir", self.dir], capture_output=True, text=True, check=True)
        self.key = out.stdout.strip()
        self.port = free_port()
        self.url = "tcp://127.0.0.1:%d" % self.port
        self.proc = None

    def serve(self, extra=()):
        """Start serving; returns once the port answers."""
        log = open(self.dir + "/serve.log", "a")
        self.proc = subprocess.Popen([POOL, "serve", "--state-dir", self.dir, "--listen", self.url,
                                      "--lease-sec", str(self.lease), *extra], stdout=log, stderr=subprocess.STDOUT)
        spawned.append(self.proc)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("harvest-pool serve exited: " + open(self.dir + "/serve.log").read())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("harvest-pool serve did not listen")

    def stop(self, sig=signal.SIGTERM):
        """Stop serving; on SIGTERM it must exit 0, and no sanitizer may
        have spoken in its log."""
        name = os.path.basename(self.dir)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            rc = self.proc.wait(timeout=10)
            if sig == signal.SIGTERM:
                check(rc == 0, "%s: serve stops cleanly on SIGTERM (exit %d)" % (name, rc))
        self.proc = None
        sanitizer_free(self.dir + "/serve.log")

    def cli(self, *args, check_rc=True):
        out = subprocess.run([POOL, "--state-dir", self.dir, *args], capture_output=True, text=True)
        if check_rc and out.returncode != 0:
            raise RuntimeError("harvest-pool %s: %s" % (args, out.stderr))
        return out

    def json(self, *args):
        return json.loads(self.cli(*args, "--json").stdout)

    def submit(self, *args):
        return self.cli("submit", *args).stdout.split()

    def accepted(self):
        """Accepted results per task id."""
        counts = {}
        for r in self.json("results"):
            if r["accepted"]:
                counts[r["task"]] = counts.get(r["task"], 0) + 1
        return counts

    def tasks(self):
        return {t["id"]: t for t in self.json("tasks")}


LOGS = ("daemon.log", "serve.log", "link.log")


def run_cases(cases, only, prefix, cgroups=True):
    """Run each case (a function named case_NAME) whose NAME is in ONLY (all
    if empty) in a fresh folder under /var/tmp, as case(root, cgroup name)
    with CGROUPS, else case(root); then end what it left running, check its
    logs for sanitizer reports (printing them if the case failed), and
    remove its folder and cgroup tree. Returns the exit status."""
    mnt = cgroup2_mount() if cgroups else None
    for case in cases:
        name = case.__name__[5:]
        if only and name not in only:
            continue
        root = tempfile.mkdtemp(prefix="test-%s-" % prefix, dir="/var/tmp")
        os.chmod(root, 0o755)
        cg = "harvester-%s-%d-%s" % (prefix, os.getpid(), name)
        t0 = time.time()
        print("== %s" % name, flush=True)
        ok_before = len(failures)
        try:
            case(root, cg) if cgroups else case(root)
        except Exception as e:      # a case that blew up is a failure, not a crash of the suite
            check(False, "%s raised %r" % (case.__name__, e))
        finally:
            for p in spawned:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            spawned.clear()
            for dirpath, _, files in os.walk(root):
                for f in files:
                    if f in LOGS:
                        path = os.path.join(dirpath, f)
                        text = sanitizer_free(path)
                        if len(failures) > ok_before:
                            print("--- %s ---\n%s" % (path, text[-3000:]))
            if mnt:
                remove_cgroup_tree(os.path.join(mnt, cg))
            shutil.rmtree(root, ignore_errors=True)
        print("   (%.1fs)" % (time.time() - t0), flush=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0
