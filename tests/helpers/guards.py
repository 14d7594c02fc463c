#!/usr/bin/env python3
"""Child processes for the leak-guard tests (redaction, pty, policies)."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time


def out(b):
    os.write(1, b)


def cmd_split(path):
    """Writes the value in two writes with a pause between them, plus bytes
    of every kind around it, then again on stderr."""
    with open(path, "rb") as f:
        v = f.read()
    half = len(v) // 2
    out(b"bin:\x00\xff\x1b[31mred\x1b[0m value=")
    out(v[:half])
    time.sleep(0.3)
    out(v[half:] + b"\n")
    os.write(2, b"err=" + v + b"\n")


def cmd_prompt(path):
    """A line, then a long pause: the line must show up at once."""
    with open(path, "rb") as f:
        v = f.read()
    out(b"ready " + v[:3] + b"\n")
    time.sleep(3)
    out(b"late\n")


def cmd_tty(path):
    """Reports what a terminal program sees, then follows resizes."""
    lines = []
    if os.isatty(1):
        lines.append("stdout-tty")
    if os.isatty(2):
        lines.append("stderr-tty")
    sz = os.get_terminal_size(1)
    lines.append("size %d %d" % (sz.lines, sz.columns))
    got = []

    def winch(*_):
        s = os.get_terminal_size(1)
        got.append("winch %d %d" % (s.lines, s.columns))

    signal.signal(signal.SIGWINCH, winch)
    with open(path, "rb") as f:
        v = f.read()
    out(("\n".join(lines) + "\n").encode() + b"value=" + v + b"\nready\n")
    deadline = time.time() + 5
    while not got and time.time() < deadline:
        time.sleep(0.05)
    out(("\n".join(got) + "\ndone\n").encode())


def read(path):
    try:
        with open(path, "rb") as f:
            return {"ok": f.read().hex()}
    except OSError as e:
        return {"err": errno.errorcode.get(e.errno, str(e.errno))}


def ask_grant(sock_path, pidfd, label):
    """Sends grant_self with `pidfd` over the daemon's socket; its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    line = json.dumps({"v": 1, "op": "grant_self", "label": label}) + "\n"
    socket.send_fds(s, [line.encode()], [pidfd])
    resp = b""
    while not resp.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
    return json.loads(resp)


def cmd_grant(sock_path, file):
    """Skips the CLI: asks the daemon for a grant of its own tree, then
    reads as the root itself and through child commands."""
    r = {"grant": ask_grant(sock_path, os.pidfd_open(os.getpid()), "direct")}
    r["root"] = read(file)
    for prog in (["cat"], ["head", "-c", "1000"]):
        p = subprocess.run(prog + [file], capture_output=True)
        r[prog[0]] = {"rc": p.returncode, "out": p.stdout.hex()}
    print(json.dumps(r))


def cmd_grant_other(sock_path, file):
    """Asks for a grant with another process's pidfd (a child's): the daemon
    must refuse, and this process must stay unable to read."""
    child = subprocess.Popen(["sleep", "30"])
    r = {"grant": ask_grant(sock_path, os.pidfd_open(child.pid), "other"), "root": read(file)}
    child.kill()
    print(json.dumps(r))


if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
