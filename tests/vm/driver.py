#!/usr/bin/env python3
"""Boot the guest under QEMU (TCG), answer its key requests over QMP, and
collect its results from the serial log.

The guest test writes its results to the serial console, one per line:
  VMTEST PASS name | VMTEST FAIL name: why | VMTEST FIGURE name value
  VMTEST-KEY n     (please press a key now: we send one over QMP)
  VMTEST REBOOT    (it reboots: QEMU exits, and we boot the same disk again)
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
    overlay = os.path.join(a.workdir, "root.qcow2")
    for p in (serial, qmp_path, overlay):
        if os.path.exists(p):
            os.unlink(p)
    open(serial, "w").close()
    img = a.image
    # The guest writes to a qcow2 overlay over the cached image, which is
    # never changed. The overlay outlives one QEMU process, so a guest
    # reboot is a real shutdown (-no-reboot makes QEMU exit then) followed
    # by a fresh boot of the same disk: a TCG guest that resets in place
    # has been seen to crawl through its second boot.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", os.path.abspath(os.path.join(img, "root.ext4")), overlay], check=True)
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max",
        "-smp", str(a.smp), "-m", str(a.mem), "-no-reboot",
        "-display", "none", "-vga", "none", "-monitor", "none", "-nic", "none",
        "-serial", f"file:{serial}",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-kernel", os.path.join(img, "vmlinuz"),
        "-initrd", os.path.join(img, "initrd.img"),
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-drive", f"file={a.data},format=raw,if=virtio,readonly=on",
        "-append", "console=ttyS0 root=/dev/vda rw quiet loglevel=3 systemd.show_status=0",
    ]
    start = time.monotonic()
    deadline = start + a.timeout
    passes, fails, figures = [], [], []
    done = False
    boots = []
    keys = 0
    harness_error = None
    qemu = None
    qemu_log = open(os.path.join(a.workdir, "qemu.log"), "w")
    pos = 0
    pending = b""
    try:
        reboot = True
        while reboot and not done and harness_error is None:
            reboot = False
            if len(boots) >= 3:
                harness_error = "the guest asked for a third boot"
                break
            # The serial file is appended to: QEMU opens it afresh per boot.
            cmd[cmd.index("-serial") + 1] = f"file:{serial}.{len(boots)}"
            boot_start = time.monotonic()
            qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                    stderr=subprocess.STDOUT)
            qmp = QMP(qmp_path, boot_start + 30)
            booted = None
            spos = 0
            with open(f"{serial}.{len(boots)}", "rb") as f, open(serial, "ab") as allf:
                while True:
                    if time.monotonic() > deadline:
                        harness_error = f"hard timeout ({a.timeout} s)"
                        break
                    f.seek(spos)
                    data = f.read()
                    spos += len(data)
                    allf.write(data)
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
                        elif line.startswith("VMTEST BOOTED") and booted is None:
                            booted = time.monotonic() - boot_start
                            boots.append(booted)
                        elif line.startswith("VMTEST REBOOT"):
                            reboot = True
                        elif line.startswith("VMTEST DONE"):
                            done = True
                    if qemu.poll() is not None:
                        break
                    time.sleep(0.05)
            if harness_error:
                break
            if qemu.poll() is None:
                try:
                    qemu.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    harness_error = "the guest did not power off"
            if not done and not reboot and harness_error is None:
                harness_error = f"qemu exited ({qemu.returncode}) before the guest said DONE"
    except Exception as e:  # noqa: BLE001 - any harness error is a failure
        harness_error = f"{type(e).__name__}: {e}"
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.terminate()
            try:
                qemu.wait(timeout=10)
            except subprocess.TimeoutExpired:
                qemu.kill()
                qemu.wait()
        if os.path.exists(overlay):
            os.unlink(overlay)
    wall = time.monotonic() - start

    with open(os.path.join(a.workdir, "figures"), "w") as out:
        for fig in figures:
            out.write(fig + "\n")
        for n, b in enumerate(boots):
            out.write(f"host_boot{n + 1}_to_test_s {b:.1f}\n")
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
