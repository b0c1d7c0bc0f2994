#!/usr/bin/env python3
"""Boot the guest under QEMU (TCG), answer its key requests over QMP, and
collect its results from the serial log.

The guest test writes its results to the serial console, one per line:
  VMTEST PASS name | VMTEST FAIL name: why | VMTEST FIGURE name value
  VMTEST-KEY n     (please press a key now: we send one over QMP)
  VMTEST DONE      (then it powers off)
This driver echoes the VMTEST lines, presses keys when asked, and kills
QEMU at the hard timeout. Exit 0 only if the guest said DONE, reported at
least one PASS and no FAIL.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time


class QMP:
    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self.recv()  # greeting
        self.cmd("qmp_capabilities")

    def recv(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self.recv()
            if "return" in r or "error" in r:  # skip asynchronous events
                if "error" in r:
                    raise RuntimeError(f"QMP {name}: {r['error']}")
                return r["return"]

    def key(self, qcode):
        # One press and one release; the guest's kernel sees both as
        # input_event() calls (several per key, so nobody counts exactly one).
        for down in (True, False):
            self.cmd("input-send-event", events=[
                {"type": "key", "data": {"down": down, "key": {"type": "qcode", "data": qcode}}}])
            time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True, help="cache folder: vmlinuz, initrd.img, root.ext4")
    ap.add_argument("--data", required=True, help="the second disk (deb and guest test)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--mem", type=int, default=2048)
    a = ap.parse_args()

    serial = os.path.join(a.workdir, "serial.log")
    qmp_path = os.path.join(a.workdir, "qmp.sock")
    for p in (serial, qmp_path):
        if os.path.exists(p):
            os.unlink(p)
    open(serial, "w").close()
    img = a.image
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max",
        "-smp", str(a.smp), "-m", str(a.mem),
        "-display", "none", "-vga", "none", "-monitor", "none", "-nic", "none",
        "-serial", f"file:{serial}",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-kernel", os.path.join(img, "vmlinuz"),
        "-initrd", os.path.join(img, "initrd.img"),
        # snapshot=on: the cached image is never written; the guest's own
        # writes live in a temporary overlay that survives its reboot.
        "-drive", f"file={os.path.join(img, 'root.ext4')},format=raw,if=virtio,snapshot=on",
        "-drive", f"file={a.data},format=raw,if=virtio,readonly=on",
        "-append", "console=ttyS0 root=/dev/vda rw quiet loglevel=3 systemd.show_status=0",
    ]
    start = time.monotonic()
    deadline = start + a.timeout
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                            stdout=open(os.path.join(a.workdir, "qemu.log"), "w"),
                            stderr=subprocess.STDOUT)
    passes, fails, figures = [], [], []
    done = False
    booted_at = None
    keys = 0
    harness_error = None
    try:
        qmp = QMP(qmp_path, start + 30)
        pos = 0
        pending = b""
        with open(serial, "rb") as f:
            while True:
                if time.monotonic() > deadline:
                    harness_error = f"hard timeout ({a.timeout} s)"
                    break
                f.seek(pos)
                data = f.read()
                pos += len(data)
                pending += data
                lines = pending.split(b"\n")
                pending = lines.pop()
                for raw in lines:
                    line = raw.decode("utf-8", "replace").replace("\r", "").strip()
                    i = line.find("VMTEST")
                    if i < 0:
                        continue
                    line = line[i:]
                    t = time.monotonic() - start
                    if line.startswith("VMTEST-KEY"):
                        qmp.key("shift")
                        keys += 1
                        continue
                    print(f"[{t:6.1f}s] {line}", flush=True)
                    if line.startswith("VMTEST PASS "):
                        passes.append(line[12:])
                    elif line.startswith("VMTEST FAIL "):
                        fails.append(line[12:])
                    elif line.startswith("VMTEST FIGURE "):
                        figures.append(line[14:])
                    elif line.startswith("VMTEST BOOTED") and booted_at is None:
                        booted_at = t
                    elif line.startswith("VMTEST DONE"):
                        done = True
                if done or qemu.poll() is not None:
                    break
                time.sleep(0.05)
        if done:
            try:
                qemu.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        elif qemu.poll() is not None:
            harness_error = f"qemu exited ({qemu.returncode}) before the guest said DONE"
    except Exception as e:  # noqa: BLE001 - any harness error is a failure
        harness_error = f"{type(e).__name__}: {e}"
    finally:
        if qemu.poll() is None:
            qemu.terminate()
            try:
                qemu.wait(timeout=10)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.wait()
    wall = time.monotonic() - start

    with open(os.path.join(a.workdir, "figures"), "w") as out:
        for fig in figures:
            out.write(fig + "\n")
        if booted_at is not None:
            out.write(f"host_boot_to_test_s {booted_at:.1f}\n")
        out.write(f"host_guest_wall_s {wall:.1f}\n")
        out.write(f"host_keys_sent {keys}\n")
    if harness_error:
        print(f"VMTEST FAIL harness: {harness_error}; serial log tail:")
        with open(serial, "rb") as f:
            tail = f.read().decode("utf-8", "replace").splitlines()[-40:]
        for line in tail:
            print("    " + line)
        fails.append("harness")
    print(f"vm: {len(passes)} passed, {len(fails)} failed, guest ran {wall:.0f} s, {keys} keys sent")
    ok = done and passes and not fails and not harness_error
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
