#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""harvest-pool end to end, on loopback: a pool process and simulated
workers (tests/pool/worker.c, built only on net/) as separate processes.

Each case starts a fresh pool (init, serve on a free port) and asserts on
what `harvest-pool ... --json` reports afterwards:
  basic        3 workers at once, 12 tasks: every task done, exactly one
               accepted result each, outputs as computed, signatures
               checked by the worker (it refuses anything else)
  replicas     3 replicas / quorum 2 with a lying worker: accepted on the
               honest hash, the liar recorded as disagreeing; a 2/2 task
               with a liar asks for one more replica and then decides
  matching     arch, cores and GPU needs: a task only goes to a worker
               that fits
  lease        a worker vanishes holding a lease: nobody gets the task
               until the lease lapses, then another worker does it
  kill9        kill -9 of the pool mid-run, restart: no submitted task
               and no accepted result lost, every task accepted once
  raw peers    nanocat (libnanomsg) and nngcat: garbage gets a well-formed
               signed error reply, an oversized request ERR_TOO_LARGE, a
               replayed hello ERR_REPLAY; all counted; real workers still
               served
  wrong pool   a worker pinned to another pool's key runs nothing
  cancel       a cancelled task is never handed out
  relay        through `harvest-pool relay`: results carry the worker's
               own key (signatures are end to end)
  tls          tls+tcp:// with the pool's certificate pinned as the CA;
               a worker with another CA gets nothing
  netns        pool and two workers as separate hosts in network
               namespaces; one worker is cut off the network (link down)
               holding leases, the other, behind netem delay and loss,
               takes them over when they lapse; the first comes back and
               sends its late results: every task accepted exactly once
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from harness import BUILD, POOL, Pool, check, failures, free_port, run_cases, spawned  # noqa: E402,F401

WORKER = os.path.join(BUILD, "tests", "pool-worker")


def worker(pool, name, root, *args, url=None, key=None, wait=True, timeout=40):
    cmd = [WORKER, "run", "--url", url or pool.url, "--state-dir", os.path.join(root, name),
           "--pool-key", key or pool.key, "--timeout-ms", "1000", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    spawned.append(p)
    if not wait:
        return p
    out, _ = p.communicate(timeout=timeout)
    sane(out, "worker " + name)
    return p.returncode, out


def sane(out, who):
    if "Sanitizer" in out or "runtime error" in out:
        check(False, "%s: sanitizer report:\n%s" % (who, out))


def worker_key(root, name):
    with open(os.path.join(root, name, "link-identity.key"), "rb") as f:
        return base64.b64encode(f.read()[32:]).decode()


def accepted_per_task(pool):
    counts = {}
    for r in pool.json("results"):
        if r["accepted"]:
            counts[r["task"]] = counts.get(r["task"], 0) + 1
    return counts


def case_basic(root):
    pool = Pool(root)
    st = os.stat(os.path.join(pool.dir, "pool.key"))
    check(st.st_mode & 0o777 == 0o600, "pool.key is mode 0600")
    check(pool.cli("key").stdout.strip() == pool.key and len(base64.b64decode(pool.key)) == 32,
          "init prints the 32-byte public key, base64")
    pool.serve()
    ids = [pool.submit("--id", "b%d" % i, "--", "sh", "-c", "echo square $((%d * %d))" % (i, i))[0] for i in range(12)]
    ws = [worker(pool, "w%d" % i, root, "--idle-exit", "1", "--max-fetch", "2", wait=False) for i in range(3)]
    outs = [w.communicate(timeout=40)[0] for w in ws]
    [sane(o, "worker") for o in outs]
    tasks = {t["id"]: t for t in pool.json("tasks")}
    check(all(tasks[i]["state"] == "done" for i in ids), "basic: all 12 tasks done")
    check(accepted_per_task(pool) == {i: 1 for i in ids}, "basic: exactly one accepted result per task")
    res = pool.json("results", "--outputs")
    good = all(base64.b64decode(r["outputs"][0]["data_base64"]).decode() == "square %d\n" % (int(r["task"][1:]) ** 2)
               for r in res)
    check(good and len(res) == 12, "basic: outputs are what the tasks compute")
    busy = sum(1 for o in outs if "result " in o)
    check(busy >= 2, "basic: work spread over %d of 3 concurrent workers" % busy)
    check(len(pool.json("workers")) == 3, "basic: 3 workers known by key")
    check(all(w.returncode == 0 for w in ws), "basic: workers exit cleanly")
    pool.stop()


def case_replicas(root):
    pool = Pool(root)
    pool.serve()
    pool.submit("--id", "rep", "--replicas", "3", "--quorum", "2", "--", "sh", "-c", "echo 42")
    pool.submit("--id", "duo", "--replicas", "2", "--quorum", "2", "--", "sh", "-c", "echo 7")
    # The liar first, so its wrong answer is in before the quorum forms.
    worker(pool, "liar", root, "--idle-exit", "0.5", "--lie")
    worker(pool, "h1", root, "--idle-exit", "0.5")
    rc, again = worker(pool, "h1", root, "--idle-exit", "0.5")
    check("task rep" not in again, "replicas: a worker never gets the same task twice")
    t = {x["id"]: x for x in pool.json("tasks")}
    check(t["duo"]["state"] == "pending" and t["duo"]["wanted"] == 3,
          "replicas: 2/2 with a liar has no quorum and asks for a third replica")
    worker(pool, "h2", root, "--idle-exit", "0.5")
    t = {x["id"]: x for x in pool.json("tasks")}
    check(t["rep"]["state"] == "done" and t["duo"]["state"] == "done", "replicas: both decided")
    res = pool.json("results", "--task", "rep")
    liar_key = worker_key(root, "liar")
    verdict = {r["worker"]: r for r in res}
    check(len(res) == 3 and verdict[liar_key]["verdict"] == "disagree" and not verdict[liar_key]["accepted"],
          "replicas: the liar's result is recorded as disagreeing")
    honest = [r for r in res if r["worker"] != liar_key]
    check(all(r["verdict"] == "agree" and r["accepted"] for r in honest) and
          t["rep"]["accepted_hash"] == honest[0]["hash"], "replicas: accepted on the honest hash")
    w = {x["key"]: x for x in pool.json("workers")}
    check(w[liar_key]["disagreed"] == 2 and w[liar_key]["agreed"] == 0, "replicas: workers list shows the liar disagreed twice")
    pool.stop()


def case_matching(root):
    pool = Pool(root)
    pool.serve()
    pool.submit("--id", "arm", "--arch", "aarch64", "--", "echo", "arm")
    pool.submit("--id", "big", "--cores", "4", "--", "echo", "big")
    pool.submit("--id", "gpu", "--gpu", "opencl", "--", "echo", "gpu")
    pool.submit("--id", "any", "--", "echo", "any")
    rc, out = worker(pool, "small", root, "--idle-exit", "0.5", "--cores", "2")
    got = sorted(l.split()[1] for l in out.splitlines() if l.startswith("task "))
    check(got == ["any"], "matching: a 2-core x86_64 worker without GPU gets only 'any' (got %s)" % got)
    rc, out = worker(pool, "gpuw", root, "--idle-exit", "0.5", "--cores", "8", "--opencl")
    got = sorted(l.split()[1] for l in out.splitlines() if l.startswith("task "))
    check(got == ["big", "gpu"], "matching: an 8-core OpenCL worker gets 'big' and 'gpu' (got %s)" % got)
    rc, out = worker(pool, "armw", root, "--idle-exit", "0.5", "--arch", "aarch64")
    check("task arm" in out, "matching: the aarch64 worker gets 'arm'")
    pool.stop()


def case_lease(root):
    pool = Pool(root, lease=2)
    pool.serve()
    pool.submit("--id", "held", "--", "echo", "held")
    rc, out = worker(pool, "vanish", root, "--hold")
    check("task held" in out, "lease: the first worker takes the task and vanishes")
    rc, out = worker(pool, "other", root, "--once")
    check("task held" not in out, "lease: while the lease runs nobody else gets it")
    t0 = time.time()
    time.sleep(2.3)
    rc, out = worker(pool, "other", root, "--idle-exit", "0.5")
    check("result held accepted" in out, "lease: after %.1fs the lapsed lease is handed to another worker" % (time.time() - t0))
    res = pool.json("results", "--task", "held")
    check(len(res) == 1 and res[0]["worker"] == worker_key(root, "other") and res[0]["accepted"],
          "lease: the task is done once, by the second worker")
    pool.stop()


def case_kill9(root):
    pool = Pool(root, lease=3)
    pool.serve()
    n = 30
    batch = os.path.join(root, "batch.jsonl")
    with open(batch, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": "k%d" % i, "argv": ["sh", "-c", "sleep 0.05; cat in"],
                                "inputs": {"in": "%d\n" % i}}) + "\n")
    check(pool.submit("--batch", batch) == ["k%d" % i for i in range(n)], "kill9: a batch of %d submitted" % n)
    ws = [worker(pool, "kw%d" % i, root, "--idle-exit", "3", "--max-fetch", "2", wait=False) for i in range(2)]
    deadline = time.time() + 20
    before = {}
    while time.time() < deadline:
        before = accepted_per_task(pool)
        if len(before) >= 5:
            break
        time.sleep(0.05)
    pool.stop(signal.SIGKILL)
    before = accepted_per_task(pool)     # read from the database of a dead pool
    tasks_before = len(pool.json("tasks"))
    time.sleep(0.5)
    pool.serve()
    outs = [w.communicate(timeout=60)[0] for w in ws]
    [sane(o, "worker") for o in outs]
    after = accepted_per_task(pool)
    tasks = pool.json("tasks")
    check(tasks_before == n and len(tasks) == n, "kill9: all %d submitted tasks survive" % n)
    check(0 < len(before) < n, "kill9: killed mid-run with %d of %d accepted" % (len(before), n))
    check(all(after.get(k) == 1 for k in before), "kill9: every result accepted before the kill is still there")
    check(all(t["state"] == "done" for t in tasks) and after == {"k%d" % i: 1 for i in range(n)},
          "kill9: after restart every task is done, accepted exactly once")
    outs_ok = all(base64.b64decode(r["outputs"][0]["data_base64"]) == b"%s\n" % r["task"][1:].encode()
                  for r in pool.json("results", "--outputs"))
    check(outs_ok, "kill9: each output is the task's own input file")
    check(any("error:" in o for o in outs), "kill9: the workers saw the pool go away and carried on")
    # Sessions live only in the pool's memory: the restarted pool knows
    # nobody, so each worker that spoke to it again said hello again.
    check(any(o.count("welcome") >= 2 for o in outs),
          "kill9: the workers said hello again to the restarted pool (%s welcomes)" % [o.count("welcome") for o in outs])
    pool.stop()


def case_raw_peers(root):
    pool = Pool(root)
    pool.serve()
    have_nanocat = shutil.which("nanocat") is not None
    have_nngcat = shutil.which("nngcat") is not None
    if have_nanocat:
        out = subprocess.run(["nanocat", "--req", "--connect", pool.url, "--data", "garbage", "--raw",
                              "--recv-timeout", "5"], capture_output=True, timeout=15)
        with open(os.path.join(root, "nanocat.reply"), "wb") as f:
            f.write(out.stdout)
        dec = subprocess.run([WORKER, "decode", os.path.join(root, "nanocat.reply"), "--pool-key", pool.key],
                             capture_output=True, text=True)
        check(dec.returncode == 0 and dec.stdout.startswith("error-reply malformed"),
              "raw: nanocat's garbage gets a well-formed, pool-signed ERR_MALFORMED reply (%s)" % dec.stdout.strip())
    else:
        print("note: nanocat missing (nanomsg-utils), its case not run")
    if have_nngcat:
        big = os.path.join(root, "big")
        with open(big, "wb") as f:
            f.write(b"\x0a" * (1024 * 1024 + 100))
        out = subprocess.run(["nngcat", "--req0", "--dial", pool.url, "--file", big, "--raw", "--recv-timeout", "5"],
                             capture_output=True, timeout=15)
        with open(big + ".reply", "wb") as f:
            f.write(out.stdout)
        dec = subprocess.run([WORKER, "decode", big + ".reply", "--pool-key", pool.key], capture_output=True, text=True)
        check(dec.stdout.startswith("error-reply too-large"), "raw: an oversized request gets ERR_TOO_LARGE (%s)" % dec.stdout.strip())
        hello = os.path.join(root, "hello")
        subprocess.run([WORKER, "encode-hello", hello, "--state-dir", os.path.join(root, "rawpeer"),
                        "--pool-key", pool.key], check=True)
        replies = []
        for i in range(2):
            out = subprocess.run(["nngcat", "--req0", "--dial", pool.url, "--file", hello, "--raw", "--recv-timeout", "5"],
                                 capture_output=True, timeout=15)
            with open(hello + ".reply", "wb") as f:
                f.write(out.stdout)
            replies.append(subprocess.run([WORKER, "decode", hello + ".reply", "--pool-key", pool.key],
                                          capture_output=True, text=True).stdout.strip())
        check(replies[0].startswith("reply type 2") and replies[1].startswith("error-reply replay"),
              "raw: a signed hello is welcomed once, its replay refused (%s)" % replies)
    # Garbage from raw peers while real workers are busy: every piece is
    # answered, and the workers' tasks all get done.
    for i in range(8):
        pool.submit("--id", "after%d" % i, "--", "echo", "still %d" % i)
    ws = [worker(pool, "real%d" % i, root, "--idle-exit", "1", wait=False) for i in range(2)]
    flood, answered = 30 if have_nngcat else 0, 0
    garbage = os.path.join(root, "garbage")
    with open(garbage, "wb") as f:
        f.write(os.urandom(300))
    for i in range(flood):
        out = subprocess.run(["nngcat", "--req0", "--dial", pool.url, "--file", garbage, "--raw",
                              "--recv-timeout", "5"], capture_output=True, timeout=15)
        with open(garbage + ".reply", "wb") as f:
            f.write(out.stdout)
        dec = subprocess.run([WORKER, "decode", garbage + ".reply", "--pool-key", pool.key],
                             capture_output=True, text=True)
        answered += dec.stdout.startswith("error-reply")
    outs = [w.communicate(timeout=40)[0] for w in ws]
    [sane(o, "worker") for o in outs]
    check(answered == flood, "raw: %d of %d random messages sent during the run got an error reply" % (answered, flood))
    check(accepted_per_task(pool) == {"after%d" % i: 1 for i in range(8)},
          "raw: the real workers' tasks were all done meanwhile")
    time.sleep(1.3)     # counters reach the database once a second
    c = pool.json("status")["counters"]
    refused = sum(v for k, v in c.items() if k.startswith("errors."))
    check(refused >= (1 if have_nanocat else 0) + flood + (2 if have_nngcat else 0) and
          c.get("errors.malformed", 0) >= (1 if have_nanocat else 0) and
          c.get("errors.too-large", 0) >= (1 if have_nngcat else 0) and
          c.get("errors.replay", 0) >= (1 if have_nngcat else 0), "raw: every refusal is counted (%s)" % c)
    check(pool.proc.poll() is None, "raw: the pool is still running")
    pool.stop()


def case_wrong_pool(root):
    pool = Pool(root)
    other = Pool(root, "other")
    pool.serve()
    pool.submit("--id", "x", "--", "echo", "x")
    rc, out = worker(pool, "pinned", root, "--idle-exit", "0.5", key=other.key)
    check(rc == 3 and "task " not in out, "wrong pool: a worker pinned to another key refuses every reply, runs nothing")
    check(pool.json("results") == [], "wrong pool: no result")
    pool.stop()


def case_cancel(root):
    pool = Pool(root)
    pool.serve()
    pool.submit("--id", "c1", "--", "echo", "c1")
    pool.submit("--id", "c2", "--", "echo", "c2")
    pool.cli("cancel", "c1")
    again = pool.cli("cancel", "c1", check_rc=False)
    check(again.returncode == 1, "cancel: cancelling twice fails")
    rc, out = worker(pool, "w", root, "--idle-exit", "0.5")
    check("task c1" not in out and "result c2 accepted" in out, "cancel: the cancelled task is never handed out")
    t = {x["id"]: x["state"] for x in pool.json("tasks")}
    check(t == {"c1": "cancelled", "c2": "done"}, "cancel: states %s" % t)
    pool.stop()


def case_relay(root):
    pool = Pool(root)
    pool.serve()
    port = free_port()
    relay = subprocess.Popen([POOL, "relay", "--upstream", pool.url, "--listen", "tcp://127.0.0.1:%d" % port],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    spawned.append(relay)
    try:
        time.sleep(0.3)
        for i in range(4):
            pool.submit("--id", "r%d" % i, "--", "echo", "via relay %d" % i)
        ws = [worker(pool, "rw%d" % i, root, "--idle-exit", "1", url="tcp://127.0.0.1:%d" % port, wait=False)
              for i in range(2)]
        [sane(w.communicate(timeout=40)[0], "worker") for w in ws]
        check(accepted_per_task(pool) == {"r%d" % i: 1 for i in range(4)}, "relay: all tasks done through the relay")
        keys = {r["worker"] for r in pool.json("results")}
        check(keys <= {worker_key(root, "rw0"), worker_key(root, "rw1")},
              "relay: results are signed by the workers themselves, end to end")
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    pool.stop()


def case_tls(root):
    if not shutil.which("openssl"):
        print("note: openssl missing, TLS case not run")
        return
    pem = os.path.join(root, "pool.pem")
    crt = os.path.join(root, "pool.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", pem, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    with open(pem, "a") as f:
        f.write(open(crt).read())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", os.path.join(root, "other.key"), "-out", os.path.join(root, "other.crt"), "-days", "2",
                    "-subj", "/CN=localhost"], check=True, capture_output=True)
    pool = Pool(root)
    pool.url = "tls+tcp://127.0.0.1:%d" % pool.port
    pool.serve(["--tls-cert", pem])
    pool.submit("--id", "tls1", "--", "echo", "secret")
    rc, out = worker(pool, "mitm", root, "--idle-exit", "0.5", "--tls-ca", os.path.join(root, "other.crt"))
    check("task tls1" not in out, "tls: a worker that does not trust the certificate gets nothing")
    rc, out = worker(pool, "tw", root, "--idle-exit", "0.5", "--tls-ca", crt)
    check("result tls1 accepted" in out, "tls: with the certificate pinned as CA the task runs over tls+tcp")
    pool.stop()


# Split in two programs so each stays well under a minute under ASan:
# this one runs the pool's own behaviour, test_pool_link.py the link's.
POOL_CASES = ["basic", "replicas", "matching", "kill9"]
LINK_CASES = ["lease", "raw_peers", "wrong_pool", "cancel", "relay", "tls", "netns"]


def case_netns(root):
    tag = "hp%d" % os.getpid()
    ns = {"pool": tag + "p", "w1": tag + "a", "w2": tag + "b"}

    def ip(*args, check_rc=True):
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=check_rc)

    try:
        ip("netns", "add", ns["pool"])
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print("note: no network namespaces here (%s), netns case not run" % e)
        return
    try:
        ip("netns", "add", ns["w1"])
        ip("netns", "add", ns["w2"])
        for i, w in ((1, "w1"), (2, "w2")):
            ip("link", "add", "%sv%d" % (tag, i), "netns", ns["pool"], "type", "veth", "peer", "name", "%sw%d" % (tag, i),
               "netns", ns[w])
            ip("-n", ns["pool"], "addr", "add", "10.77.%d.1/24" % i, "dev", "%sv%d" % (tag, i))
            ip("-n", ns[w], "addr", "add", "10.77.%d.2/24" % i, "dev", "%sw%d" % (tag, i))
            ip("-n", ns["pool"], "link", "set", "%sv%d" % (tag, i), "up")
            ip("-n", ns[w], "link", "set", "%sw%d" % (tag, i), "up")
        for n in ns.values():
            ip("-n", n, "link", "set", "lo", "up")
        netem = subprocess.run(["tc", "-n", ns["w2"], "qdisc", "add", "dev", "%sw2" % tag, "root", "netem",
                                "delay", "40ms", "10ms", "loss", "5%"], capture_output=True, text=True)
        behind = "behind netem delay and loss"
        if netem.returncode != 0:
            print("note: netem unavailable (%s), w2's link is clean" % netem.stderr.strip())
            behind = "on a clean link (no netem here)"

        pool = Pool(root, lease=2)
        log = open(pool.dir + "/serve.log", "a")
        pool.proc = subprocess.Popen(["ip", "netns", "exec", ns["pool"], POOL, "serve", "--state-dir", pool.dir,
                                      "--listen", "tcp://0.0.0.0:7450", "--lease-sec", "2"],
                                     stdout=log, stderr=subprocess.STDOUT)
        spawned.append(pool.proc)
        time.sleep(0.5)
        for i in range(6):
            pool.submit("--id", "n%d" % i, "--", "sh", "-c", "sleep 0.3; echo %d" % i)

        def remote(w, name, *args):
            p = subprocess.Popen(["ip", "netns", "exec", ns[w], WORKER, "run", "--url",
                                  "tcp://10.77.%s.1:7450" % w[1], "--state-dir", os.path.join(root, name),
                                  "--pool-key", pool.key, "--timeout-ms", "1000", *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            spawned.append(p)
            return p

        w1 = remote("w1", "w1", "--max-fetch", "3", "--idle-exit", "8")
        held = []
        deadline = time.time() + 15
        while time.time() < deadline and len(held) < 3:
            line = w1.stdout.readline()
            if line.startswith("task "):
                held.append(line.split()[1])
        ip("-n", ns["w1"], "link", "set", "%sw1" % tag, "down")      # cut off, holding leases
        check(len(held) == 3, "netns: w1 holds %s when its link goes down" % held)
        time.sleep(2.5)                                             # its leases lapse
        out2, _ = remote("w2", "w2", "--idle-exit", "2").communicate(timeout=60)
        sane(out2, "worker w2")
        took = [l.split()[1] for l in out2.splitlines() if l.startswith("result ") and l.endswith("accepted")]
        check(set(held) <= set(took), "netns: w2, %s, took over w1's lapsed tasks (%d results)" % (behind, len(took)))
        ip("-n", ns["w1"], "link", "set", "%sw1" % tag, "up")        # w1 comes back with late results
        out1, _ = w1.communicate(timeout=60)
        sane(out1, "worker w1")
        check("result " in out1, "netns: w1 delivered its late results once back")
        check(accepted_per_task(pool) == {"n%d" % i: 1 for i in range(6)},
              "netns: every task accepted exactly once (late results kept, not counted)")
        late = [r for r in pool.json("results") if not r["accepted"]]
        check(all(r["worker"] == worker_key(root, "w1") for r in late), "netns: only w1's results are late")
        pool.stop()
    finally:
        for n in ns.values():
            ip("netns", "del", n, check_rc=False)


def main(default=POOL_CASES):
    for p in (POOL, WORKER):
        if not os.access(p, os.X_OK):
            print("skip: %s is not built (make BUILD=%s pool %s)" % (p, BUILD, WORKER))
            return 77
    cases = [case_basic, case_replicas, case_matching, case_lease, case_kill9, case_raw_peers, case_wrong_pool,
             case_cancel, case_relay, case_tls, case_netns]
    return run_cases(cases, sys.argv[1:] or default, "pool", cgroups=False)


if __name__ == "__main__":
    sys.exit(main())
