#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""harvesterd as a pool worker, on loopback: a real `harvest-pool serve` and a
real harvesterd (temp config with [Pool] URL= and Key=, CgroupRoot, User=nobody)
as separate processes. The pool side is checked with the pool's own CLI
(`harvest-pool tasks/results --json`), the daemon side with `harvestctl --json`.

  basic      6 tasks (one with an input file) through the daemon's job runner:
             every task done, exactly one accepted result each, outputs as
             computed and their sha256 right, signed by the daemon's own key
             (harvest-pool verify proves each)
             (STATE/link-identity.key, 0600); status shows the pool connected,
             6 done, nothing pending, CPU contributed; STATE/results empty
  kill9      kill -9 of harvesterd while a pool task runs, restart: the task
             runs again (attempt 2) and is accepted exactly once
  pooldown   the pool stops while a task runs: the finished result stays in
             STATE/results and in status (results_pending 1, not connected,
             last error), also across a SIGTERM/restart of the daemon; the pool
             comes back and gets it exactly once, the 3 in one request
             under one batch signature, kept with its proof; verify proves
             them and finds one whose body was changed in the database
  renew      a task that runs past its 2 s lease stays leased to the daemon
             (renewed), is never handed out twice, and is accepted once
  goodbye    SIGTERM while a task runs: goodbye, the pool takes the lease back
             at once, the job is dropped here (released); after a restart
             the task is fetched anew and accepted exactly once
  paused     `harvestctl pause`: nothing is fetched (spool empty, nothing
             leased); after `resume` the tasks are fetched, run and accepted
  wrongkey   a daemon pinned to another pool's key refuses every reply: no job
             in its spool, refused_replies counted, no task done
  forged     the pool's envelopes are signed by the pinned key but its tasks by
             another (a swapped pool.key): every task refused and counted
             before anything of it is written or run; the spool stays empty
  hellorate  a pool that takes 1 hello a second (--hello-rate; HelloBurst=1
             in pool.conf, where a bad value is refused first) and three daemons
             started at once: the ones refused are told "busy", say so in
             their log and status, wait as told and get in; every task done
             once; the pool's errors.busy counter counts the refusals

goodbye, paused, wrongkey, forged and hellorate run from test_daemon_pool_trust.py (each file
stays under a minute under ASan); name cases on the command line to run any.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import harness  # noqa: E402
from harness import (BUILD, HARVESTCTL, HARVESTERD, POOL, cgroup2_mount, check, failures,  # noqa: E402,F401
                     run_cases, spawned, wait_for)


class Pool(harness.Pool):
    """A pool whose leases lapse after 10 s unless a case says otherwise."""

    def __init__(self, root, name="pool", lease=10):
        super().__init__(root, name, lease)


class Daemon(harness.Daemon):
    """harvesterd as a worker of the pool at POOL_URL, under ROOT/NAME."""

    def __init__(self, root, name, pool_url, pool_key, cg_root):
        tmp = os.path.join(root, name)
        os.makedirs(tmp)
        os.chmod(tmp, 0o755)
        super().__init__(tmp, os.path.join(tmp, "harvester.conf"))
        with open(self.conf, "w") as f:
            f.write(f"""[Budget]
CPU=50%
Burst=100%
Window=1h

[Idle]
InputIdleSec=1s
MaxForegroundCPU=100%
MaxMemoryPressure=100%

[Jobs]
User=nobody
MaxJobs=2

[Daemon]
CgroupRoot=/{cg_root}

[Pool]
URL={pool_url}
Key={pool_key}
MaxTasks=3
""")

    def ctl(self, *args, **kw):
        """harvestctl's output, or RuntimeError."""
        return super().ctl(*args, **kw).stdout

    def status(self):
        return json.loads(self.ctl("--json", "status"))

    def jobs(self):
        return {j["id"]: j for j in json.loads(self.ctl("--json", "jobs"))}

    def pool(self):
        return self.status()["pool"]

    def pool_jobs(self):
        return [j for j in self.jobs().values() if j.get("pool_task")]

    def spool_jobs(self):
        d = os.path.join(self.state, "spool")
        return [f for f in os.listdir(d) if f.endswith(".json")] if os.path.isdir(d) else []

    def results_on_disk(self):
        d = os.path.join(self.state, "results")
        return sorted(f for f in os.listdir(d) if f.endswith(".result")) if os.path.isdir(d) else []

    def worker_key(self):
        with open(os.path.join(self.state, "link-identity.key"), "rb") as f:
            return base64.b64encode(f.read()[32:]).decode()


def all_done(pool, ids):
    t = pool.tasks()
    return all(t[i]["state"] == "done" for i in ids)


def case_basic(root, cg):
    pool = Pool(root)
    pool.serve()
    inp = os.path.join(root, "words")
    with open(inp, "w") as f:
        f.write("harvest\nthe\nidle\ncycles\n")
    ids = [pool.submit("--id", "sq%d" % i, "--", "sh", "-c", "echo square $((%d * %d))" % (i, i))[0] for i in range(5)]
    ids += pool.submit("--id", "wc", "--input", "words=" + inp, "--", "sh", "-c", "sort words; wc -l < words")
    d = Daemon(root, "d", pool.url, pool.key, cg)
    d.start()
    check(wait_for(lambda: all_done(pool, ids), 30), "basic: all 6 tasks done at the pool")
    acc = pool.accepted()
    check(acc == {i: 1 for i in ids}, "basic: exactly one accepted result per task: %s" % acc)
    res = {r["task"]: r for r in pool.json("results", "--outputs")}
    want = {"sq%d" % i: b"square %d\n" % (i * i) for i in range(5)}
    want["wc"] = b"cycles\nharvest\nidle\nthe\n4\n"
    got = {t: base64.b64decode(r["outputs"][0]["data_base64"]) for t, r in res.items()}
    check(got == want, "basic: outputs are what the tasks compute (inputs delivered): %s" % got)
    check(all(r["outputs"][0]["sha256"] == hashlib.sha256(got[t]).hexdigest() for t, r in res.items()),
          "basic: each output's sha256 is the hash of its data")
    check(all(r["worker"] == d.worker_key() for r in res.values()), "basic: results signed by the daemon's own key")
    v = pool.json("verify")
    check(v["results"] == 6 and v["proven"] == 6 and v["not_proven"] == [],
          "basic: harvest-pool verify proves all 6 (%d under a batch signature)" % v["batch_proofs"])
    st = os.stat(os.path.join(d.state, "link-identity.key"))
    check(st.st_mode & 0o777 == 0o600, "basic: worker identity is mode 0600")
    p = wait_for(lambda: (lambda x: x if x["results_pending"] == 0 and x["done"] == 6 else None)(d.pool()), 10)
    p = p or d.pool()
    print("status.pool:", json.dumps(p))
    check(p["connected"] and p["last_error"] is None and p["worker_id"], "basic: status shows the pool connected")
    check(p["done"] == 6 and p["failed"] == 0 and p["tasks_held"] == 0 and p["results_pending"] == 0
          and p["results_accepted"] == 6 and p["refused"] == 0,
          "basic: status counts 6 done, none held, none pending, 6 accepted")
    check(p["cpu_contributed_usec"] > 0, "basic: CPU contributed %d us" % p["cpu_contributed_usec"])
    check(d.results_on_disk() == [], "basic: nothing left in STATE/results once acknowledged")
    pj = d.pool_jobs()
    check(len(pj) == 6 and all(j["pool_task"]["state"] == "acked" and j["state"] == "done" for j in pj),
          "basic: the tasks ran as jobs of the spool, each marked acked")
    human = d.ctl("status")
    check("Pool:" in human and "connected" in human and "6 done" in human, "basic: harvestctl status has the Pool lines")
    print("\n".join(l for l in human.splitlines() if l.startswith("Pool")))
    w = pool.json("workers")
    check(len(w) == 1 and w[0]["key"] == d.worker_key() and w[0]["cores"] == os.cpu_count(),
          "basic: the pool knows the daemon by its key, with its core count")
    rc = d.stop()
    check(rc == 0, "basic: SIGTERM: clean exit (%s)" % rc)
    check("goodbye" in d.log_text(), "basic: goodbye said at stop")
    pool.stop()
    return d


def running_pool_job(d):
    for j in d.pool_jobs():
        if j["state"] == "running":
            return j
    return None


def case_kill9(root, cg):
    pool = Pool(root)
    pool.serve()
    inp = os.path.join(root, "in")
    with open(inp, "w") as f:
        f.write("payload 17\n")
    pool.submit("--id", "slow", "--input", "in=" + inp, "--", "sh", "-c", "sleep 3; cat in")
    d = Daemon(root, "d", pool.url, pool.key, cg)
    d.start()
    j = wait_for(lambda: running_pool_job(d), 15)
    check(j is not None, "kill9: the pool task runs as a job")
    time.sleep(0.5)
    d.stop(signal.SIGKILL)
    check(pool.accepted() == {}, "kill9: no result before the kill")
    d.start()
    check(wait_for(lambda: all_done(pool, ["slow"]), 30), "kill9: the task is done after the restart")
    time.sleep(1)
    check(pool.accepted() == {"slow": 1} and len(pool.json("results")) == 1,
          "kill9: exactly one result at the pool, accepted")
    res = pool.json("results", "--outputs")
    check(base64.b64decode(res[0]["outputs"][0]["data_base64"]) == b"payload 17\n", "kill9: its output is right")
    pj = d.pool_jobs()
    check(len(pj) == 1 and pj[0]["attempts"] == 2 and pj[0]["state"] == "done",
          "kill9: one job, run twice (attempts %s)" % [x["attempts"] for x in pj])
    d.stop()
    pool.stop()


def case_pooldown(root, cg):
    pool = Pool(root)
    pool.serve()
    late = ["late", "late2", "late3"]
    for i in late:
        pool.submit("--id", i, "--", "sh", "-c", "sleep 2; echo delivered %s" % i)
    d = Daemon(root, "d", pool.url, pool.key, cg)
    d.start()
    check(wait_for(lambda: running_pool_job(d) is not None and d.pool()["tasks_held"] == 3, 15),
          "pooldown: a pool task runs, the 3 are held")
    pool.stop(signal.SIGKILL)
    p = wait_for(lambda: (lambda x: x if x["results_pending"] == 3 and not x["connected"] else None)(d.pool()), 20)
    print("status.pool:", json.dumps(p))
    check(p is not None, "pooldown: the finished results wait (results_pending 3, not connected)")
    check(p is not None and p["last_error"], "pooldown: status says the last error: %s" % (p and p["last_error"]))
    check(len(d.results_on_disk()) == 3, "pooldown: the results are on disk in STATE/results")
    rc = d.stop()
    check(rc == 0, "pooldown: SIGTERM with the pool away: clean exit")
    check(len(d.results_on_disk()) == 3, "pooldown: still on disk after the daemon stopped")
    d.start()
    check(d.pool()["results_pending"] == 3, "pooldown: the restarted daemon still holds them")
    pool.serve()
    t0 = time.time()
    ok = wait_for(lambda: pool.accepted() == {i: 1 for i in late}, 40)
    check(ok, "pooldown: delivered %.1f s after the pool came back" % (time.time() - t0))
    p = wait_for(lambda: (lambda x: x if x["results_pending"] == 0 and d.results_on_disk() == [] else None)(d.pool()),
                 10)
    check(p is not None, "pooldown: acknowledged, then deleted from disk")
    # Finished together, reported together: one request for the three.
    check(p is not None and p["results_acked"] == 3 and p["result_requests"] == 1,
          "pooldown: 3 results in %s request(s)" % (p and p["result_requests"]))
    res = pool.json("results", "--outputs")
    got = sorted(base64.b64decode(r["outputs"][0]["data_base64"]) for r in res)
    check(got == sorted(b"delivered %s\n" % i.encode() for i in late),
          "pooldown: exactly one result each, with the right output")
    # The three came under one batch signature: each is kept with its proof
    # (the signature, the count and the three bodies' hashes).
    db = sqlite3.connect("file:%s/pool.db?mode=ro" % pool.dir, uri=True)
    kept = db.execute("SELECT body, signature FROM results").fetchall()
    db.close()
    check(len(kept) == 3 and all(len(sig) == 64 + 1 + 3 * 32 and sig[64] == 3 and
                                 hashlib.sha256(body).digest() in [sig[65 + 32 * k:97 + 32 * k] for k in range(3)]
                                 for body, sig in kept),
          "pooldown: the results are kept with the batch signature's proof")
    v = pool.json("verify")
    check(v["results"] == 3 and v["proven"] == 3 and v["batch_proofs"] == 3 and v["not_proven"] == [],
          "pooldown: harvest-pool verify proves all 3 from the batch proofs: %s" % v)
    # A body changed in the database after the fact: no longer proven.
    db = sqlite3.connect("%s/pool.db" % pool.dir)
    db.execute("UPDATE results SET body = CAST(body || x'00' AS BLOB) WHERE task_id = 'late2'")
    db.commit()
    db.close()
    out = pool.cli("verify", check_rc=False)
    check(out.returncode == 1 and "NOT PROVEN  late2" in out.stdout and "2 proven" in out.stdout,
          "pooldown: verify finds the changed result and exits 1: %r" % out.stdout)
    d.stop()
    pool.stop()


def case_renew(root, cg):
    pool = Pool(root, lease=2)
    pool.serve()
    pool.submit("--id", "long", "--", "sh", "-c", "sleep 5; echo renewed")
    d = Daemon(root, "d", pool.url, pool.key, cg)
    d.start()
    check(wait_for(lambda: running_pool_job(d), 15) is not None, "renew: the pool task runs")
    time.sleep(3.5)
    t = pool.tasks()["long"]
    check(t["state"] == "pending" and t["leased"] == 1 and len(d.pool_jobs()) == 1,
          "renew: past its 2 s lease the task is still leased to us, once (renewed): %s" % t)
    check(wait_for(lambda: pool.accepted() == {"long": 1}, 20), "renew: accepted exactly once")
    check(len(d.pool_jobs()) == 1 and len(pool.json("results")) == 1, "renew: one job, one result")
    d.stop()
    pool.stop()


def case_paused(root, cg):
    pool = Pool(root)
    pool.serve()
    d = Daemon(root, "d", pool.url, pool.key, cg)
    d.start()
    d.ctl("pause")
    check(wait_for(lambda: d.pool()["connected"], 10), "paused: connected to the pool")
    ids = [pool.submit("--id", "p%d" % i, "--", "echo", "p%d" % i)[0] for i in range(3)]
    time.sleep(3)
    check(d.spool_jobs() == [] and all(t["leased"] == 0 for t in pool.tasks().values()),
          "paused: no work fetched while the policy forbids harvesting")
    d.ctl("resume")
    check(wait_for(lambda: all_done(pool, ids), 20), "paused: after resume the tasks are fetched and done")
    check(pool.accepted() == {i: 1 for i in ids}, "paused: each accepted once")
    d.stop()
    pool.stop()


def case_goodbye(root, cg):
    pool = Pool(root, lease=60)
    pool.serve()
    pool.submit("--id", "bye", "--", "sh", "-c", "sleep 1.5; echo once")
    d = Daemon(root, "d", pool.url, pool.key, cg)
    d.start()
    check(wait_for(lambda: running_pool_job(d), 15) is not None, "goodbye: the pool task runs")
    rc = d.stop()
    check(rc == 0, "goodbye: SIGTERM: clean exit")
    t = pool.tasks()["bye"]
    check(t["leased"] == 0 and t["state"] == "pending", "goodbye: the pool took the lease back at once (of 60 s): %s" % t)
    with open(os.path.join(d.state, "spool", "1.json")) as f:
        j = json.load(f)
    check(j["state"] == "cancelled" and j["pool_task"]["state"] == "released",
          "goodbye: the held task is dropped here, not run again after a restart")
    d.start()
    check(wait_for(lambda: pool.accepted() == {"bye": 1}, 20), "goodbye: fetched again as a new job, accepted once")
    time.sleep(0.5)
    pj = d.pool_jobs()
    check(len(pj) == 2 and [x["state"] for x in pj] == ["cancelled", "done"] and len(pool.json("results")) == 1,
          "goodbye: two jobs (released, done), one result")
    d.stop()
    pool.stop()


def case_wrongkey(root, cg):
    pool = Pool(root)
    other = Pool(root, name="other")
    pool.serve()
    ids = [pool.submit("--id", "w%d" % i, "--", "sh", "-c", "echo should not run")[0] for i in range(3)]
    d = Daemon(root, "d", pool.url, other.key, cg)
    d.start()
    p = wait_for(lambda: (lambda x: x if x["refused_replies"] >= 2 else None)(d.pool()), 15) or d.pool()
    print("status.pool:", json.dumps(p))
    check(p["refused_replies"] >= 2 and not p["connected"] and "pinned" in (p["last_error"] or ""),
          "wrongkey: replies from a pool with another key are refused and counted (%d)" % p["refused_replies"])
    check(d.spool_jobs() == [] and d.pool_jobs() == [], "wrongkey: the job spool stays empty")
    check(all(t["state"] == "pending" and t["results"] == 0 for t in pool.tasks().values()) and pool.accepted() == {},
          "wrongkey: nothing done at the pool")
    d.stop()
    pool.stop()


def case_forged(root, cg):
    pool = Pool(root)
    impostor = Pool(root, name="impostor")
    ids = [pool.submit("--id", "f%d" % i, "--", "sh", "-c", "touch /tmp/forged-ran; echo forged")[0] for i in range(3)]
    # The tasks are signed with pool's key at submission; now the server
    # signs its envelopes with the impostor's key, which the daemon pins.
    shutil.copy(os.path.join(impostor.dir, "pool.key"), os.path.join(pool.dir, "pool.key"))
    pool.serve()
    d = Daemon(root, "d", pool.url, impostor.key, cg)
    d.start()
    p = wait_for(lambda: (lambda x: x if x["refused"] >= 3 else None)(d.pool()), 15) or d.pool()
    print("status.pool:", json.dumps(p))
    check(p["refused"] >= 3 and p["connected"], "forged: %d tasks with a bad signature refused and counted" % p["refused"])
    check(d.spool_jobs() == [] and d.pool_jobs() == [], "forged: nothing of them reached the job spool")
    check(not os.listdir(os.path.join(d.state, "jobs")), "forged: no job folder was made")
    check(pool.accepted() == {}, "forged: no result sent for them")
    check("does not verify" in d.log_text(), "forged: the refusal is logged")
    d.stop()
    pool.stop()


def case_hellorate(root, cg):
    pool = Pool(root)
    conf = os.path.join(pool.dir, "pool.conf")
    with open(conf, "a") as f:
        f.write("HelloBurst=many\n")
    bad = subprocess.run([POOL, "serve", "--state-dir", pool.dir, "--listen", pool.url], capture_output=True, text=True,
                         timeout=10)
    check(bad.returncode == 2 and "pool.conf:" in bad.stderr and "HelloBurst=many" in bad.stderr,
          "hellorate: a bad HelloBurst= in pool.conf is refused, naming the file and line: %r" % bad.stderr.strip())
    with open(conf) as f:
        text = f.read().replace("HelloBurst=many", "HelloBurst=1")
    with open(conf, "w") as f:
        f.write(text)
    pool.serve(["--hello-rate", "1"])     # and HelloBurst=1 from pool.conf
    ids = [pool.submit("--id", "hr%d" % i, "--", "sh", "-c", "echo %d" % i)[0] for i in range(3)]
    ds = [Daemon(root, "d%d" % i, pool.url, pool.key, cg + "-%d" % i) for i in range(3)]
    for d in ds:
        d.start()
    check(wait_for(lambda: all(d.pool()["connected"] and d.pool().get("worker_id") for d in ds), 20),
          "hellorate: all three daemons welcomed in the end")
    told = [d for d in ds if "answered busy" in d.log_text()]
    check(len(told) >= 1, "hellorate: %d daemon(s) were told busy and logged it" % len(told))
    check(wait_for(lambda: all_done(pool, ids), 30), "hellorate: every task done")
    acc = pool.accepted()
    check(all(acc.get(i) == 1 for i in ids), "hellorate: each accepted exactly once: %s" % acc)
    time.sleep(1.5)     # the pool writes its counters once a second
    busy = pool.json("status")["counters"].get("errors.busy", 0)
    check(busy >= len(told), "hellorate: the pool counted %d busy refusals" % busy)
    for d in ds:
        d.stop()
    pool.stop()


POOL_CASES = ["basic", "kill9", "pooldown", "renew"]
TRUST_CASES = ["goodbye", "paused", "wrongkey", "forged", "hellorate"]


def main(default=POOL_CASES):
    if os.geteuid() != 0:
        print("needs root (cgroups, job user)")
        return 77
    if not cgroup2_mount():
        print("no cgroup2 mount")
        return 77
    for p in (HARVESTERD, HARVESTCTL, POOL):
        if not os.access(p, os.X_OK):
            print("%s is not built (make BUILD=%s all)" % (p, BUILD))
            return 77
    cases = [case_basic, case_kill9, case_pooldown, case_renew, case_goodbye, case_paused, case_wrongkey, case_forged,
             case_hellorate]
    return run_cases(cases, sys.argv[1:] or default, "dpool")


if __name__ == "__main__":
    sys.exit(main())
