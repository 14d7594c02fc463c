#!/usr/bin/env python3
"""Process shapes for the mount tests: readers at depth, in threads, as
orphans, with spoofed names, on recycled pids, through passed fds.

Every subcommand prints one JSON value on stdout: a read result is
{"ok": "<hex>"} or {"err": "EACCES"}; composite checks print a dict."""
import ctypes
import errno
import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time

def result(fn):
    try:
        return {"ok": fn().hex()}
    except OSError as e:
        return {"err": errno.errorcode.get(e.errno, str(e.errno))}

def read_file(path):
    def f():
        with open(path, "rb") as fh:
            return fh.read()
    return result(f)

def out(v):
    sys.stdout.write(json.dumps(v) + "\n")
    sys.stdout.flush()

def cmd_read(path):
    out(read_file(path))

def cmd_chain(depth, path):
    depth = int(depth)
    if depth == 0:
        out(read_file(path))
        return
    r = subprocess.run([sys.executable, __file__, "chain", str(depth - 1), path], capture_output=True, check=True)
    sys.stdout.write(r.stdout.decode())

def cmd_thread(path):
    box = {}
    def t():
        box["tid"] = threading.get_native_id()
        box["r"] = read_file(path)
    th = threading.Thread(target=t)
    th.start()
    th.join()
    assert box["tid"] != os.getpid()
    out({"tid": box["tid"], "pid": os.getpid(), **box["r"]})

def cmd_orphan(path, outfile):
    pid = os.fork()
    if pid == 0:
        mid = os.getpid()
        if os.fork() == 0:
            # Grandchild: wait until the middle process is gone and we were
            # reparented (to the subreaper, or to init without one).
            for _ in range(500):
                if os.getppid() != mid:
                    break
                time.sleep(0.01)
            r = read_file(path)
            r["ppid"] = os.getppid()
            with open(outfile + ".tmp", "w") as f:
                json.dump(r, f)
            os.rename(outfile + ".tmp", outfile)
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
    for _ in range(1000):
        if os.path.exists(outfile):
            break
        time.sleep(0.01)
    with open(outfile) as f:
        out(json.load(f))

def set_name(name):
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NAME = 15
    buf = ctypes.create_string_buffer(name.encode()[:15])
    if libc.prctl(PR_SET_NAME, buf, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")

def cmd_spoof(rootpid, path):
    set_name("x) S %s 1 1" % rootpid)
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    r = read_file(path)
    r["stat"] = stat.decode(errors="replace")
    out(r)

def cmd_reuse(pid, path):
    pid = int(pid)
    for _ in range(200):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        child = os.fork()
        if child == 0:
            if os.getpid() != pid:
                os._exit(3)
            r = read_file(path)
            with open("/proc/self/stat") as f:
                r["stat"] = f.read()
            sys.stdout.write(json.dumps(r) + "\n")
            sys.stdout.flush()
            os._exit(0)
        _, status = os.waitpid(child, 0)
        if os.WEXITSTATUS(status) == 0:
            return
    out({"nopid": True})

def cmd_fdsend(path, sock):
    fd = os.open(path, os.O_RDONLY)
    first = os.read(fd, 1 << 20)
    os.lseek(fd, 0, os.SEEK_SET)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(500):
        try:
            s.connect(sock)
            break
        except OSError:
            time.sleep(0.01)
    socket.send_fds(s, [b"fd %d %d" % (os.getpid(), fd)], [fd])
    # Stay alive (and keep the fd open) until the receiver is done.
    s.recv(16)
    out({"sender_read": first.hex()})

def mmap_probe(fd, n, flags):
    """Map in a child (a SIGBUS must not kill the prober) and report."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            m = mmap.mmap(fd, n, flags=flags, prot=mmap.PROT_READ)
            data = m[:n]
            os.write(w, json.dumps({"ok": data.hex()}).encode())
        except OSError as e:
            os.write(w, json.dumps({"err": errno.errorcode.get(e.errno, str(e.errno))}).encode())
        os._exit(0)
    os.close(w)
    # Read to the end before waiting: a big mapping's report fills the pipe.
    chunks = []
    while True:
        c = os.read(r, 1 << 16)
        if not c:
            break
        chunks.append(c)
    data = b"".join(chunks)
    _, status = os.waitpid(child, 0)
    os.close(r)
    if os.WIFSIGNALED(status):
        return {"signal": signal.Signals(os.WTERMSIG(status)).name}
    return json.loads(data)

def cmd_fdrecv(sock, n):
    n = int(n)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(1)
    sys.stderr.write("listening\n")
    conn, _ = srv.accept()
    msg, fds, _, _ = socket.recv_fds(conn, 64, 1)
    _, sender, sender_fd = msg.split()
    fd = fds[0]
    res = {}
    res["read"] = result(lambda: os.read(fd, n))
    res["pread"] = result(lambda: os.pread(fd, n, 0))
    def sendfile():
        rp, wp = os.pipe()
        k = os.sendfile(wp, fd, 0, n)
        return os.read(rp, k) if k else b""
    res["sendfile"] = result(sendfile)
    def splice():
        rp, wp = os.pipe()
        k = os.splice(fd, wp, n, offset_src=0)
        return os.read(rp, k) if k else b""
    res["splice"] = result(splice)
    res["mmap_shared"] = mmap_probe(fd, n, mmap.MAP_SHARED)
    res["mmap_private"] = mmap_probe(fd, n, mmap.MAP_PRIVATE)
    res["reopen_proc_fd"] = read_file("/proc/%s/fd/%s" % (sender.decode(), sender_fd.decode()))
    conn.send(b"done")
    out(res)

def touch_probe(m, n):
    """Read an existing mapping in a child (a SIGBUS must not kill us)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        os.write(w, json.dumps({"ok": m[:n].hex()}).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        c = os.read(r, 1 << 16)
        if not c:
            break
        data += c
    _, status = os.waitpid(child, 0)
    os.close(r)
    if os.WIFSIGNALED(status):
        return {"signal": signal.Signals(os.WTERMSIG(status)).name}
    return json.loads(data)

def cmd_maplate(sock, n, go):
    """Outsider of issue 15: receive an fd, map it MAP_PRIVATE without
    touching it, say so, wait until an authorized process faulted the
    file (`go` exists), then touch the mapping, pread, sendfile, splice."""
    n = int(n)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock)
    srv.listen(1)
    conn, _ = srv.accept()
    _, fds, _, _ = socket.recv_fds(conn, 64, 1)
    fd = fds[0]
    m = mmap.mmap(fd, n, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    conn.send(b"mapped")
    for _ in range(3000):
        if os.path.exists(go):
            break
        time.sleep(0.01)
    res = {"touch": touch_probe(m, n), "pread": result(lambda: os.pread(fd, n, 0))}
    # sendfile and splice read through the page cache, even on a direct-io
    # file: pages an authorized splice left there would be served here.
    def sendfile():
        rp, wp = os.pipe()
        k = os.sendfile(wp, fd, 0, n)
        return os.read(rp, k) if k else b""
    def splice():
        rp, wp = os.pipe()
        k = os.splice(fd, wp, n, offset_src=0)
        return os.read(rp, k) if k else b""
    res["sendfile"] = result(sendfile)
    res["splice"] = result(splice)
    conn.send(b"done")
    out(res)

def cmd_faultsend(path, sock, go):
    """Authorized side of issue 15: pass an open fd, wait until the
    receiver mapped it, then map and fault the file itself (a fresh open)
    and read it by every path; `go` tells the receiver to touch its
    mapping."""
    fd = os.open(path, os.O_RDONLY)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(500):
        try:
            s.connect(sock)
            break
        except OSError:
            time.sleep(0.01)
    socket.send_fds(s, [b"fd"], [fd])
    assert s.recv(16) == b"mapped"
    n = os.fstat(fd).st_size
    own = os.open(path, os.O_RDONLY)
    res = {"fault": mmap_probe(own, n, mmap.MAP_PRIVATE), "pread": result(lambda: os.pread(own, n, 0))}
    # Every direct path still reads (each carries a lock owner).
    def sendfile():
        rp, wp = os.pipe()
        k = os.sendfile(wp, own, 0, n)
        return os.read(rp, k)
    def splice():
        rp, wp = os.pipe()
        k = os.splice(own, wp, n, offset_src=0)
        return os.read(rp, k)
    res["sendfile"] = result(sendfile)
    res["splice"] = result(splice)
    res["read"] = result(lambda: os.read(os.open(path, os.O_RDONLY), n))
    # readahead into the page cache, as `cat`-like tools and loaders ask.
    os.posix_fadvise(own, 0, n, os.POSIX_FADV_WILLNEED)
    with open(go, "w"):
        pass
    s.recv(16)
    out(res)

def cmd_holdfd(path, info, stop):
    """An authorized process that read a value and keeps its fd open."""
    fd = os.open(path, os.O_RDONLY)
    value = os.read(fd, 1 << 20)
    with open(info + ".tmp", "w") as f:
        f.write("%d %d" % (os.getpid(), fd))
    os.rename(info + ".tmp", info)
    for _ in range(3000):
        if os.path.exists(stop):
            break
        time.sleep(0.01)
    out({"held": len(value)})

def cmd_steal(pid, fd, needle_hex):
    """Same uid, no grant: take the fd with pidfd_getfd and read through
    it; look for the value in the process's memory."""
    pid, fd, needle = int(pid), int(fd), bytes.fromhex(needle_hex)
    libc = ctypes.CDLL(None, use_errno=True)
    SYS_pidfd_open, SYS_pidfd_getfd = 434, 438
    res = {}
    pidfd = libc.syscall(SYS_pidfd_open, pid, 0)
    stolen = libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0) if pidfd >= 0 else -1
    if stolen < 0:
        res["getfd"] = {"err": errno.errorcode.get(ctypes.get_errno(), "?")}
    else:
        res["getfd"] = {"ok": ""}
        res["pread"] = result(lambda: os.pread(stolen, len(needle), 0))
    found = False
    try:
        with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
            for line in maps:
                addr, perms = line.split()[:2]
                if not perms.startswith("rw"):
                    continue
                lo, hi = (int(x, 16) for x in addr.split("-"))
                try:
                    mem.seek(lo)
                    if needle in mem.read(hi - lo):
                        found = True
                        break
                except OSError:
                    pass
        res["mem"] = {"found": found}
    except OSError as e:
        res["mem"] = {"err": errno.errorcode.get(e.errno, str(e.errno))}
    out(res)

def cmd_concurrent(path, n):
    n = int(n)
    procs = [subprocess.Popen([sys.executable, __file__, "read", path], stdout=subprocess.PIPE) for _ in range(n)]
    outs = [json.loads(p.communicate()[0]) for p in procs]
    out(outs)

def cmd_io(path):
    """Size, two reads, preads at offsets."""
    st = os.stat(path)
    fd = os.open(path, os.O_RDONLY)
    a = os.read(fd, 1 << 21)
    os.lseek(fd, 0, os.SEEK_SET)
    b = os.read(fd, 1 << 21)
    end = os.lseek(fd, 0, os.SEEK_END)
    preads = {str(off): os.pread(fd, 5, off).hex() for off in (0, 1, 3, max(0, st.st_size - 2), st.st_size)}
    # A private mapping faults even for those allowed (a fault would fill
    # the page cache, which every holder of an fd reads from).
    mapped = mmap_probe(fd, st.st_size, mmap.MAP_PRIVATE) if st.st_size else {"ok": ""}
    os.close(fd)
    out({"size": st.st_size, "mode": oct(st.st_mode), "uid": st.st_uid, "a": a.hex(), "b": b.hex(),
         "end": end, "preads": preads, "regular": os.path.isfile(path), "mmap_private": mapped})

def cmd_writes(d, name):
    path = os.path.join(d, name)
    res = {}
    def attempt(key, fn):
        try:
            fn()
            res[key] = "OK"
        except OSError as e:
            res[key] = errno.errorcode.get(e.errno, str(e.errno))
    attempt("open_wronly", lambda: os.close(os.open(path, os.O_WRONLY)))
    attempt("open_rdwr", lambda: os.close(os.open(path, os.O_RDWR)))
    attempt("open_trunc", lambda: os.close(os.open(path, os.O_RDONLY | os.O_TRUNC)))
    attempt("open_append", lambda: os.close(os.open(path, os.O_WRONLY | os.O_APPEND)))
    attempt("create", lambda: os.close(os.open(os.path.join(d, "NEWFILE"), os.O_WRONLY | os.O_CREAT, 0o600)))
    attempt("mkdir", lambda: os.mkdir(os.path.join(d, "newdir")))
    attempt("unlink", lambda: os.unlink(path))
    attempt("rename", lambda: os.rename(path, os.path.join(d, "renamed")))
    attempt("chmod", lambda: os.chmod(path, 0o644))
    attempt("chown", lambda: os.chown(path, 1, 1))
    attempt("truncate", lambda: os.truncate(path, 0))
    attempt("utime", lambda: os.utime(path, (1, 1)))
    attempt("setxattr", lambda: os.setxattr(path, "user.x", b"1"))
    attempt("removexattr", lambda: os.removexattr(path, "user.x"))
    attempt("symlink", lambda: os.symlink("/etc/passwd", os.path.join(d, "link")))
    attempt("link", lambda: os.link(path, os.path.join(d, "hard")))
    attempt("mknod", lambda: os.mkfifo(os.path.join(d, "fifo")))
    attempt("rmdir", lambda: os.rmdir(d))
    out(res)

def cmd_snapshot(path, ready, go):
    """Open, signal `ready`, wait for `go`, then read: the value at open."""
    fd = os.open(path, os.O_RDONLY)
    with open(ready, "w"):
        pass
    for _ in range(3000):
        if os.path.exists(go):
            break
        time.sleep(0.01)
    data = os.read(fd, 1 << 20)
    out({"ok": data.hex()})

if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
