#!/usr/bin/env python3
"""A same-uid attacker, run as the user hushfs runs as, after `unlock`.

It tries every door the key-custody tests name and prints one JSON report:
the payload of every key it can read in any keyring it reaches, every
answer it gets from hushfs's sockets (forged and malformed requests
included), and what /proc and pidfd_getfd give it of hushfs's processes.
The test decides what must not be in there.

usage: attacker.py AGENT_SOCKET CONTROL_SOCKET MOUNTDIR PID...
"""
import base64
import ctypes
import json
import os
import re
import socket
import subprocess
import sys
import time

agent_sock, control_sock, mountdir = sys.argv[1:4]
pids = [int(p) for p in sys.argv[4:]]
report = {"keys": [], "answers": [], "proc": {}, "getfd": {}, "keyring_list": ""}


def keyctl(*args):
    r = subprocess.run(["keyctl", *args], capture_output=True)
    return r.returncode, r.stdout


# 1. Every keyring the uid reaches, and every key any of them links to.
seen = set()
todo = []
listing = []
for ring in ["@u", "@s", "@us"]:
    todo.append(ring)
rc, out = keyctl("get_persistent", "@s")
if rc == 0:
    todo.append(out.decode().strip())
# /proc/keys lists every key this process may view, linked anywhere.
with open("/proc/keys") as f:
    proc_keys = f.read()
listing.append(proc_keys)
for line in proc_keys.splitlines():
    todo.append(str(int(line.split()[0], 16)))
while todo:
    k = todo.pop()
    rc, out = keyctl("rdescribe", k)
    if rc == 0:
        listing.append(out.decode(errors="replace"))
    rc, out = keyctl("rlist", k)
    if rc == 0:
        for child in out.decode().split():
            if child not in seen:
                seen.add(child)
                todo.append(child)
    rc, payload = keyctl("pipe", k)
    if rc == 0 and payload:
        report["keys"].append(base64.b64encode(payload).decode())
report["keyring_list"] = "\n".join(listing)


# 2. The sockets: real requests, forged ones, malformed ones.
def exchange(path, data, fds=None, read_for=2.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(read_for)
    try:
        s.connect(path)
        if fds:
            socket.send_fds(s, [data], fds)
        else:
            s.sendall(data)
        got = b""
        deadline = time.time() + read_for
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
        return got
    except OSError as e:
        return ("error: %s" % e).encode()
    finally:
        s.close()


vault = os.path.join(os.environ["HOME"], ".local/share/hushfs/vault")
requests = [
    {"v": 1, "op": "hello"},
    {"v": 1, "op": "unlocked", "vault": vault},
    # A key of the attacker's own (in a pipe, as clients send keys).
    {"v": 1, "op": "store", "vault": vault, "ttl_secs": 60},
    {"v": 1, "op": "signal", "signal": 9},
    {"v": 2, "op": "hello"},
    {"v": 1, "op": "key", "vault": vault},
    {"v": 1, "op": "get", "name": "app/TOKEN"},
    {"v": 1, "op": "exec", "args": [], "cwd": [], "env": [], "umask": 18},
]
raw = [json.dumps(r).encode() + b"\n" for r in requests]
raw += [b"not json\n", b"\n", b"{\"v\":1}\n", b"x" * (2 * 1024 * 1024) + b"\n", b"\xff\xfe\n"]
def key_pipe(key):
    r, w = os.pipe()
    os.write(w, key)
    os.close(w)
    return r


for i, data in enumerate(raw):
    fds = [key_pipe(b"\0" * 32)] if i == 2 else None
    report["answers"].append(
        base64.b64encode(exchange(agent_sock, data, fds)).decode())
    for fd in fds or []:
        os.close(fd)
# The control socket of the mount: whatever it answers.
for op in ["status", "reload", "grant_self", "nonsense"]:
    data = json.dumps({"v": 1, "op": op, "label": "x"}).encode() + b"\n"
    report["answers"].append(
        base64.b64encode(exchange(control_sock, data)).decode())


# Commands hushfs runs for us through the agent: they answer with names, or
# with what the mount's redaction lets through; never the value.
def via_agent(args, extra_env=None):
    r, w = os.pipe()
    devnull = os.open("/dev/null", os.O_RDONLY)
    environ = dict(os.environ, **(extra_env or {}))
    env = [[list(k.encode()), list(v.encode())] for k, v in environ.items()]
    msg = {"v": 1, "op": "exec", "args": [list(a.encode()) for a in args],
           "cwd": list(os.getcwd().encode()), "env": env, "umask": 0o22}
    ans = exchange(agent_sock, json.dumps(msg).encode() + b"\n",
                   fds=[devnull, w, w], read_for=15.0)
    os.close(w)
    os.close(devnull)
    out = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out += chunk
    os.close(r)
    return ans + out


for args in (["ls"], ["status", "--json"], ["audit", "show"],
             ["run", "--mount", mountdir, "--", "cat", mountdir + "/TOKEN"],
             ["run", "--mount", mountdir, "--", "sh", "-c",
              "keyctl show @s; for k in $(keyctl rlist @s); do keyctl pipe $k; done"],
             ["scan", "-"]):
    report["answers"].append(base64.b64encode(via_agent(args)).decode())
# Commands the agent must not run for anyone (they start programs, or are
# internal), and a run told to look for the agent elsewhere: its command
# must still hold none of the agent's keys.
for args in (["demo"], ["__serve", "--mountpoint", mountdir], ["__agent"], ["unlock"]):
    report["refused"] = report.get("refused", []) + [
        base64.b64encode(via_agent(args)).decode()]
os.makedirs("/tmp/hushfs-attacker-%d/hushfs" % os.getuid(), exist_ok=True)
report["answers"].append(base64.b64encode(via_agent(
    ["run", "--mount", mountdir, "--", "sh", "-c", "keyctl show @s"],
    {"XDG_RUNTIME_DIR": "/tmp/hushfs-attacker-%d" % os.getuid(),
     "FUSERMOUNT_PATH": "/tmp/hushfs-attacker-fusermount",
     "LD_PRELOAD": "/tmp/hushfs-attacker.so"})).decode())

# 3. /proc and pidfd_getfd on hushfs's own processes.
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438
for pid in pids:
    got = {}
    for f in ["mem", "environ", "maps"]:
        try:
            with open("/proc/%d/%s" % (pid, f), "rb") as fh:
                got[f] = base64.b64encode(fh.read(4096)).decode()
        except OSError as e:
            got[f] = "denied: %s" % e.strerror
    report["proc"][str(pid)] = got
    try:
        pfd = os.pidfd_open(pid)
        stolen = []
        for fd in range(0, 64):
            r = libc.syscall(SYS_pidfd_getfd, pfd, fd, 0)
            if r >= 0:
                stolen.append(fd)
                os.close(r)
        report["getfd"][str(pid)] = stolen
    except OSError as e:
        report["getfd"][str(pid)] = "pidfd_open: %s" % e.strerror

print(json.dumps(report))
