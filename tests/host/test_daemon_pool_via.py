#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""harvesterd with no network at all reaches the pool through harvester-link,
as the packaged units run them: a real `harvest-pool serve` on tcp loopback,
a real harvester-link (the unprivileged relay) listening on an ipc:// socket,
and harvesterd started under `unshare -n` (a network namespace of its own
with no interface up) with --pool-via that socket.

  via        6 tasks done through the link, exactly one accepted result each,
             outputs right, signed by the daemon's own key (the link holds no
             key); status shows the pool connected via the socket. The
             daemon provably has no network: its net namespace is not ours,
             has no interface but a down lo, and a connect to the pool's
             port from inside it fails; a daemon in the same kind of
             namespace without --pool-via never reaches the pool
  linkdown   kill -9 of harvester-link while a task runs, restart: the
             result gets through, every task accepted exactly once
  tls        the pool on tls+tcp:// with its certificate as [Pool] CAFile=:
             the link speaks TLS, the daemon the local socket; tasks done
  forged     the pool's tasks signed by a key other than the pinned one: the
             link passes them on unchanged, and the daemon still refuses and
             counts every one; nothing reaches its spool
  cli        harvester-link alone: --help; no [Pool] URL= exits 0 saying so;
             a bad value exits 1 naming file, line and key; tls+tcp://
             without CAFile= and a bad --listen are refused
"""
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from harness import cgroup2_mount, check, failures, remove_cgroup_tree, run_cases, wait_for  # noqa: E402,F401
import test_daemon_pool as tdp  # noqa: E402
from test_daemon_pool import Daemon, Pool, all_done, spawned  # noqa: E402

BUILD = tdp.BUILD
LINK = os.path.join(BUILD, "harvester-link")


class NetlessDaemon(Daemon):
    """harvesterd in a fresh network namespace (unshare -n: only lo, down),
    dialling the link's socket (via) or, with via=None, the pool itself."""

    def __init__(self, root, name, pool_url, pool_key, cg_root, via, extra_conf=""):
        super().__init__(root, name, pool_url, pool_key, cg_root)
        self.via = via
        if extra_conf:
            with open(self.conf, "a") as f:   # [Pool] is the file's last section
                f.write(extra_conf)

    def start(self):
        # unshare execs the daemon: self.proc.pid is harvesterd's own.
        super().start(extra=["--pool-via", self.via] if self.via else [], prefix=["unshare", "--net", "--"])


class Link:
    def __init__(self, root, conf):
        self.dir = os.path.join(root, "link")
        os.makedirs(self.dir, exist_ok=True)
        self.url = "ipc://" + os.path.join(self.dir, "link.ipc")
        self.conf = conf
        self.log = os.path.join(self.dir, "link.log")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([LINK, "--config", self.conf, "--listen", self.url],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        spawned.append(self.proc)
        path = self.url[len("ipc://"):]
        if not wait_for(lambda: os.path.exists(path) or self.proc.poll() is not None, 10) or self.proc.poll() is not None:
            raise RuntimeError("harvester-link did not listen:\n" + open(self.log).read())

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None


def netns_of(pid):
    return os.readlink("/proc/%d/ns/net" % pid)


def connect_from(pid, port):
    """Try a TCP connect to 127.0.0.1:port from inside pid's net namespace;
    returns the error text, or "" when it connected."""
    code = ("import socket,sys\n"
            "try:\n socket.create_connection(('127.0.0.1', %d), timeout=2).close(); print('')\n"
            "except OSError as e:\n print(e)\n") % port
    r = subprocess.run(["nsenter", "--net=/proc/%d/ns/net" % pid, sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip() or ("" if r.returncode == 0 else "nsenter failed: " + r.stderr.strip())


def case_via(root, cg):
    pool = Pool(root)
    pool.serve()
    ids = [pool.submit("--id", "v%d" % i, "--", "sh", "-c", "echo via $((%d + 40))" % i)[0] for i in range(6)]
    # The link reads the daemon's own harvester.conf: one file, one [Pool].
    d = NetlessDaemon(root, "d", pool.url, pool.key, cg, via=None)
    link = Link(root, d.conf)
    d.via = link.url
    link.start()
    d.start()
    pid = d.proc.pid
    check(netns_of(pid) != netns_of(os.getpid()), "via: the daemon runs in a network namespace of its own")
    with open("/proc/%d/net/dev" % pid) as f:
        ifaces = [l.split(":")[0].strip() for l in f.readlines()[2:]]
    err = connect_from(pid, pool.port)
    print("daemon's interfaces: %s; connect to the pool from its namespace: %s" % (ifaces, err or "connected"))
    check(ifaces == ["lo"], "via: the daemon's namespace has no interface but lo: %s" % ifaces)
    check(err != "", "via: the pool's port cannot be reached from the daemon's namespace (%s)" % err)
    check(wait_for(lambda: all_done(pool, ids), 30), "via: all 6 tasks done at the pool, through the link")
    acc = pool.accepted()
    check(acc == {i: 1 for i in ids}, "via: exactly one accepted result per task: %s" % acc)
    res = {r["task"]: r for r in pool.json("results", "--outputs")}

    got = {t: base64.b64decode(r["outputs"][0]["data_base64"]) for t, r in res.items()}
    check(got == {"v%d" % i: b"via %d\n" % (i + 40) for i in range(6)}, "via: outputs are what the tasks compute")
    check(all(r["worker"] == d.worker_key() for r in res.values()),
          "via: results signed by the daemon's own key, end to end through the link")
    p = wait_for(lambda: (lambda x: x if x["results_pending"] == 0 and x["done"] == 6 else None)(d.pool()), 10) or d.pool()
    check(p["connected"] and p.get("via") == link.url and p["url"] == pool.url and p["results_accepted"] == 6,
          "via: status shows the pool %s connected via %s, 6 accepted" % (p["url"], p.get("via")))
    check("via " + link.url in d.log_text(), "via: the daemon logs that it dials the link")
    check(d.stop() == 0, "via: SIGTERM: clean exit, goodbye through the link")
    check("goodbye" in d.log_text(), "via: goodbye said through the link")
    # The control: the same daemon, same namespace kind, dialling the pool
    # itself gets nowhere, so the link is what carried the work.
    pool.submit("--id", "direct", "--", "echo", "never")
    link.stop()
    d2 = NetlessDaemon(root, "direct", pool.url, pool.key, cg + "-direct", via=None)
    d2.start()
    time.sleep(3)
    p2 = d2.pool()
    print("direct dial from the empty namespace:", p2["connected"], p2["last_error"])
    check(not p2["connected"] and p2["last_error"] and p2.get("via") is None
          and pool.tasks()["direct"]["leased"] == 0,
          "via: without --pool-via the netless daemon never reaches the pool (%s)" % p2["last_error"])
    d2.stop()
    remove_cgroup_tree(os.path.join(cgroup2_mount(), cg + "-direct"))
    pool.stop()


def running_pool_job(d):
    return next((j for j in d.pool_jobs() if j["state"] == "running"), None)


def case_linkdown(root, cg):
    pool = Pool(root)
    pool.serve()
    pool.submit("--id", "slow", "--", "sh", "-c", "sleep 3; echo survived")
    ids = ["slow"] + [pool.submit("--id", "q%d" % i, "--", "echo", "q%d" % i)[0] for i in range(3)]
    d = NetlessDaemon(root, "d", pool.url, pool.key, cg, via=None)
    link = Link(root, d.conf)
    d.via = link.url
    link.start()
    d.start()
    check(wait_for(lambda: running_pool_job(d), 15) is not None, "linkdown: a pool task runs")
    link.stop(signal.SIGKILL)
    # The slow task ends while the link is down: its result waits on disk.
    p = wait_for(lambda: (lambda x: x if not x["connected"] and x["results_pending"] >= 1 else None)(d.pool()), 20)
    print("status.pool with the link down:", p and (p["connected"], p["results_pending"], p["last_error"]))
    check(p is not None, "linkdown: the daemon sees the link gone and keeps the finished result")
    link.start()
    check(wait_for(lambda: all_done(pool, ids), 40), "linkdown: after the link restarts every task is done")
    time.sleep(0.5)
    check(pool.accepted() == {i: 1 for i in ids}, "linkdown: each accepted exactly once: %s" % pool.accepted())
    check(len(pool.json("results")) == len(ids), "linkdown: one result per task, none duplicated")
    d.stop()
    link.stop()
    pool.stop()


def case_tls(root, cg):
    if not shutil.which("openssl"):
        print("note: openssl missing, TLS case not run")
        return
    pem = os.path.join(root, "pool.pem")
    crt = os.path.join(root, "pool.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", pem, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    with open(pem, "a") as f:
        f.write(open(crt).read())
    pool = Pool(root)
    pool.url = "tls+tcp://127.0.0.1:%d" % pool.port
    log = open(pool.dir + "/serve.log", "a")
    pool.proc = subprocess.Popen([tdp.POOL, "serve", "--state-dir", pool.dir, "--listen", pool.url,
                                  "--tls-cert", pem], stdout=log, stderr=subprocess.STDOUT)
    spawned.append(pool.proc)
    check(wait_for(lambda: _port_open(pool.port), 10), "tls: the pool listens on tls+tcp://")
    ids = [pool.submit("--id", "t%d" % i, "--", "echo", "tls %d" % i)[0] for i in range(3)]
    d = NetlessDaemon(root, "d", pool.url, pool.key, cg, via=None, extra_conf="CAFile=%s\n" % crt)
    link = Link(root, d.conf)
    d.via = link.url
    link.start()
    d.start()
    check(wait_for(lambda: all_done(pool, ids), 30), "tls: tasks done over tls+tcp:// (link) and ipc:// (daemon)")
    check(pool.accepted() == {i: 1 for i in ids}, "tls: each accepted exactly once")
    check("checked against " + crt in open(link.log).read(), "tls: the link logs the CA it checks the pool against")
    d.stop()
    link.stop()
    pool.stop()


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def case_forged(root, cg):
    pool = Pool(root)
    impostor = Pool(root, name="impostor")
    ids = [pool.submit("--id", "f%d" % i, "--", "sh", "-c", "touch /tmp/forged-ran; echo forged")[0] for i in range(3)]
    # Tasks signed with pool's key at submission; the server now signs its
    # envelopes with the impostor's key, which the daemon pins.
    shutil.copy(os.path.join(impostor.dir, "pool.key"), os.path.join(pool.dir, "pool.key"))
    pool.serve()
    d = NetlessDaemon(root, "d", pool.url, impostor.key, cg, via=None)
    link = Link(root, d.conf)
    d.via = link.url
    link.start()
    d.start()
    p = wait_for(lambda: (lambda x: x if x["refused"] >= 3 else None)(d.pool()), 15) or d.pool()
    check(p["refused"] >= 3 and p["connected"],
          "forged: %d tasks with a bad signature refused through the link" % p["refused"])
    check(d.spool_jobs() == [] and d.pool_jobs() == [], "forged: nothing of them reached the job spool")
    check(pool.accepted() == {} and len(ids) == 3, "forged: no result sent for them")
    check("does not verify" in d.log_text(), "forged: the refusal is logged by the daemon")
    d.stop()
    link.stop()
    pool.stop()


def run_link(*args):
    return subprocess.run([LINK, *args], capture_output=True, text=True, timeout=10)


def case_cli(root, cg):
    r = run_link("--help")
    check(r.returncode == 0 and "--listen" in r.stdout and "--config" in r.stdout, "cli: --help")
    conf = os.path.join(root, "h.conf")
    with open(conf, "w") as f:
        f.write("[Budget]\nCPU=1%\n")
    r = run_link("--config", conf, "--listen", "ipc://" + os.path.join(root, "x.ipc"))
    check(r.returncode == 0 and "No [Pool] URL=" in r.stderr and not os.path.exists(os.path.join(root, "x.ipc")),
          "cli: no pool configured: exits 0 and says so (%r)" % r.stderr.strip())
    with open(conf, "w") as f:
        f.write("[Budget]\nCPU=1%\n\n[Pool]\nURL=http://pool.example.org\n")
    r = run_link("--config", conf)
    check(r.returncode == 1 and "%s:5: URL=http://pool.example.org" % conf in r.stderr,
          "cli: a bad value exits 1 naming file, line and key (%r)" % r.stderr.strip().splitlines()[:1])
    with open(conf, "w") as f:
        f.write("[Pool]\nURL=tls+tcp://pool.example.org:7450\n")
    r = run_link("--config", conf)
    check(r.returncode == 1 and "CAFile=" in r.stderr, "cli: tls+tcp:// without CAFile= refused (%r)" % r.stderr.strip())
    r = run_link("--config", conf, "--listen", "http://x")
    check(r.returncode == 2 and "--listen" in r.stderr, "cli: a bad --listen refused (%r)" % r.stderr.strip())
    with open(conf, "w") as f:
        f.write("[Pool]\nURL=tcp://127.0.0.1:1\n")
    r = run_link("--config", conf, "--check-config")
    check(r.returncode == 0 and "tcp://127.0.0.1:1" in r.stdout, "cli: --check-config says what it would relay")
    r = run_link("--config", conf, "--listen", "ipc://" + os.path.join(root, "no", "such", "dir", "l.ipc"))
    check(r.returncode == 1 and "Cannot relay" in r.stderr, "cli: an unusable listen socket is an error (%r)"
          % r.stderr.strip())


CASES = [case_via, case_linkdown, case_tls, case_forged, case_cli]


def main():
    if os.geteuid() != 0:
        print("needs root (cgroups, job user, network namespaces)")
        return 77
    if not cgroup2_mount():
        print("no cgroup2 mount")
        return 77
    for p in (tdp.HARVESTERD, tdp.HARVESTCTL, tdp.POOL, LINK):
        if not os.access(p, os.X_OK):
            print("%s is not built (make BUILD=%s all)" % (p, BUILD))
            return 77
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        print("cannot make a network namespace (unshare --net)")
        return 77
    return run_cases(CASES, sys.argv[1:], "via")


if __name__ == "__main__":
    sys.exit(main())
