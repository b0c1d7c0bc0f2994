"""Shared pieces of the host integration tests (tests/host/test_*.py):
results, waiting, free ports, and the cgroup2 test subtrees."""

import os
import socket
import time

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
