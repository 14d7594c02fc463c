//! The control socket under a same-uid attacker: clients that send a byte
//! a second, hold hundreds of idle connections or never read their answer
//! delay no `lock`, `revoke`, `run --mount` or `umount`; `lock` and `revoke`
//! report success only when the mount confirmed, and name a mount that
//! did not. The owner, the daemon and the attacker all run as nobody.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::INIT_FAST;
use common::mount::is_mounted;

const NOBODY: u32 = 65534;
/// Not the PATH's: a per-user shim (pyenv) is not nobody's to run.
const PYTHON: &str = "/usr/bin/python3";
const VALUE: &[u8] = b"control-socket-secret";
/// The old accept loop stalled each of these commands for 30 s (the
/// client's timeout) or more; a healthy one answers in well under a second.
const BOUND: Duration = Duration::from_secs(10);

/// A same-uid attacker on one socket: `slow` connections that send a
/// space (valid JSON whitespace, so the request never ends) every second,
/// `idle` connections that send nothing, `noread` connections that send a
/// complete request and never read the answer. Each kind reconnects when
/// the daemon closes it, so the pressure lasts as long as the process.
const PEST: &str = r#"
import selectors, socket, sys, threading, time
path, idle, slow, noread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
def slow_one():
    while True:
        try:
            s = conn()
            while True:
                s.send(b" ")
                time.sleep(1)
        except OSError:
            time.sleep(0.05)
def noread_one():
    held = []
    while True:
        try:
            s = conn()
            s.send(b'{"v":1,"op":"status"}\n')
            held.append(s)
        except OSError:
            pass
        if len(held) > 10:
            held.pop(0).close()
        time.sleep(0.3)
for _ in range(slow):
    threading.Thread(target=slow_one, daemon=True).start()
for _ in range(noread):
    threading.Thread(target=noread_one, daemon=True).start()
sel = selectors.DefaultSelector()
held = 0
announced = False
while True:
    while held < idle:
        try:
            sel.register(conn(), selectors.EVENT_READ)
            held += 1
        except OSError:
            time.sleep(0.05)
            break
    if not announced and held >= idle:
        print("ready", flush=True)
        announced = True
    for key, _ in sel.select(timeout=0.2):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        held -= 1
"#;

/// Reads the file in a loop for `secs` seconds and reports, on
/// CLOCK_MONOTONIC, when the last successful read started and when the
/// first refused one did.
const READER: &str = r#"
import json, sys, time
path, secs = sys.argv[1], float(sys.argv[2])
def now():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
def read():
    try:
        with open(path, "rb") as f:
            f.read()
        return True
    except OSError:
        return False
assert read(), "the granted reader cannot read before lock"
print("ready", flush=True)
last_ok = first_err = None
reads = 0
end = now() + int(secs * 1e9)
while now() < end:
    t = now()
    reads += 1
    if read():
        last_ok = t
    elif first_err is None:
        first_err = t
    time.sleep(0.001)
print(json.dumps({"last_ok": last_ok, "first_err": first_err, "reads": reads}), flush=True)
"#;

fn monotonic_ns() -> i128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) },
        0
    );
    t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
}

fn chown_nobody(p: &Path) {
    nix::unistd::chown(
        p,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
}

/// An ordinary user (nobody) with an unlocked vault holding app/TOKEN, and
/// the mounts it made, unmounted on drop (and the cached key removed).
struct Nobody {
    tmp: tempfile::TempDir,
    home: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Nobody {
    fn new() -> Nobody {
        let tmp = tempfile::Builder::new()
            .prefix("hushfs-control-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        chown_nobody(&home);
        std::fs::write(home.join("pass"), "nobody's passphrase\n").unwrap();
        chown_nobody(&home.join("pass"));
        let n = Nobody {
            tmp,
            home,
            mounts: Vec::new(),
        };
        n.ok(&INIT_FAST);
        // The key in nobody's kernel keyring, as after `hushfs unlock`:
        // `lock` then has a key to remove, as in the issue's probe.
        n.ok(&["unlock", "--ttl", "10m"]);
        let mut c = n.cmd(&["set", "app/TOKEN", "--raw"]);
        c.stdin(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        ch.stdin.take().unwrap().write_all(VALUE).unwrap();
        let o = ch.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        n
    }

    fn as_nobody(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.home.join("run"))
            .env("HUSHFS_PASSPHRASE_FILE", self.home.join("pass"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.as_nobody(env!("CARGO_BIN_EXE_hushfs"));
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs, asserting success and that it took less than BOUND.
    fn ok(&self, args: &[&str]) -> String {
        let (o, took) = timed(|| self.run(args));
        assert!(
            o.status.success(),
            "hushfs {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(took < BOUND, "hushfs {args:?} took {took:?}");
        String::from_utf8(o.stdout).unwrap()
    }

    /// Mounts project app at a new directory `name`.
    fn mount(&mut self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        chown_nobody(&dir);
        self.ok(&["mount", dir.to_str().unwrap(), "-p", "app"]);
        assert!(is_mounted(&dir));
        self.mounts.push(dir.clone());
        dir
    }

    fn socket(&self, mnt: &Path) -> PathBuf {
        self.home
            .join("run/hushfs/mounts")
            .join(format!("{}.sock", hushfs::daemon::registry::id(mnt)))
    }

    fn daemon_pid(&self, mnt: &Path) -> i32 {
        let j = self
            .home
            .join("run/hushfs/mounts")
            .join(format!("{}.json", hushfs::daemon::registry::id(mnt)));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
        v["pid"].as_i64().unwrap() as i32
    }

    /// Starts an attacker (as nobody) on `mnt`'s socket and waits until its
    /// idle connections are open.
    fn pest(&self, mnt: &Path, idle: u32, slow: u32, noread: u32) -> Pest {
        let mut c = self.as_nobody(PYTHON);
        c.args(["-c", PEST])
            .arg(self.socket(mnt))
            .args([idle.to_string(), slow.to_string(), noread.to_string()])
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the attacker could not connect");
        // Let the slow clients get their first bytes in.
        std::thread::sleep(Duration::from_millis(300));
        Pest(child)
    }
}

impl Drop for Nobody {
    fn drop(&mut self) {
        let _ = self.run(&["lock"]);
        for m in &self.mounts {
            let _ = self.run(&["umount", m.to_str().unwrap()]);
            if is_mounted(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

struct Pest(Child);

impl Drop for Pest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `hushfs run --mount M -- cat M/TOKEN`, as nobody: what it printed.
fn cat(nb: &Nobody, m: &Path) -> (Output, Duration) {
    let file = m.join("TOKEN");
    timed(|| {
        nb.run(&[
            "run",
            "--mount",
            m.to_str().unwrap(),
            "--no-redact",
            "--",
            "cat",
            file.to_str().unwrap(),
        ])
    })
}

/// A process for `allow --pid`, killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn new(nb: &Nobody) -> Sleeper {
        let mut c = nb.as_nobody("sleep");
        c.arg("60");
        Sleeper(c.spawn().unwrap())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn slow_idle_and_deaf_clients_delay_no_command() {
    let mut nb = Nobody::new();
    let m = nb.mount("mnt");
    let d = m.to_str().unwrap();
    // 200 idle connections, a client sending a byte a second (the issue's
    // probe) and twenty that never read their answers, all at once.
    let _pest = nb.pest(&m, 200, 1, 20);

    let (o, took) = cat(&nb, &m);
    assert!(o.status.success(), "run --mount: {}", stderr(&o));
    assert_eq!(o.stdout, VALUE);
    println!("run --mount under attack: {took:?}");
    assert!(took < BOUND, "run --mount took {took:?}");

    let sleeper = Sleeper::new(&nb);
    let pid = sleeper.0.id().to_string();
    nb.ok(&["allow", d, "--pid", &pid]);
    let (o, took) = timed(|| nb.run(&["revoke", d, "--pid", &pid]));
    println!("revoke under attack: {took:?}");
    assert!(o.status.success(), "revoke: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("revoked grant"));
    assert!(took < BOUND, "revoke took {took:?}");
    let st: serde_json::Value = serde_json::from_str(&nb.ok(&["status", "--json"])).unwrap();
    let grants = &st["mounts"][0]["grants"];
    assert!(
        grants
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["pid"].as_u64() != Some(sleeper.0.id().into())),
        "{grants}"
    );

    let (o, took) = timed(|| nb.run(&["lock"]));
    println!("lock under attack: {took:?}");
    assert!(o.status.success(), "lock: {}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("locked: the cached key was removed; 1 mount(s) dropped their values"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(took < BOUND, "lock took {took:?}");
    let (o, _) = cat(&nb, &m);
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "read after lock"
    );

    let (o, took) = timed(|| nb.run(&["umount", d]));
    println!("umount under attack: {took:?}");
    assert!(o.status.success(), "umount: {}", stderr(&o));
    assert!(took < BOUND, "umount took {took:?}");
    assert!(!is_mounted(&m));
}

#[test]
fn after_lock_returns_a_granted_reader_is_denied() {
    let mut nb = Nobody::new();
    let m = nb.mount("mnt");
    let _pest = nb.pest(&m, 20, 2, 0);
    let file = m.join("TOKEN");
    let mut reader = nb
        .cmd(&[
            "run",
            "--mount",
            m.to_str().unwrap(),
            "--no-redact",
            "--",
            PYTHON,
            "-c",
            READER,
            file.to_str().unwrap(),
            "3",
        ])
        .spawn()
        .unwrap();
    let mut out = BufReader::new(reader.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(Duration::from_millis(300));
    let (o, took) = timed(|| nb.run(&["lock"]));
    let returned = monotonic_ns();
    assert!(o.status.success(), "lock: {}", stderr(&o));
    assert!(took < BOUND, "lock took {took:?}");
    line.clear();
    out.read_to_string(&mut line).unwrap();
    assert!(reader.wait().unwrap().success());
    let r: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let last_ok = r["last_ok"].as_i64().expect("read before lock") as i128;
    let first_err = r["first_err"].as_i64().expect("no read was refused") as i128;
    let ms = |ns: i128| ns as f64 / 1e6;
    println!(
        "lock took {took:?}; the reader's first refusal came {:.1} ms after lock returned (negative: before), its last successful read started {:.1} ms before; {} reads",
        ms(first_err - returned),
        ms(returned - last_ok),
        r["reads"]
    );
    assert!(
        last_ok < returned,
        "a read that started {:.1} ms after lock returned succeeded",
        ms(last_ok - returned)
    );
    assert!(
        first_err - returned < 100_000_000,
        "first refusal {:.1} ms after lock returned",
        ms(first_err - returned)
    );
}

#[test]
fn lock_and_revoke_name_a_mount_that_does_not_answer() {
    let mut nb = Nobody::new();
    let good = nb.mount("good");
    let stuck = nb.mount("stuck");
    let sleeper = Sleeper::new(&nb);
    let pid = sleeper.0.id().to_string();
    nb.ok(&["allow", stuck.to_str().unwrap(), "--pid", &pid]);
    let daemon = nix::unistd::Pid::from_raw(nb.daemon_pid(&stuck));
    // A daemon that accepts but never answers. Nothing here touches its
    // mount while it is stopped.
    nix::sys::signal::kill(daemon, nix::sys::signal::SIGSTOP).unwrap();
    let cont = scopeguard(daemon);

    let (o, took) = timed(|| nb.run(&["lock"]));
    println!("lock with a stopped mount: {took:?}; {}", stderr(&o).trim());
    assert_eq!(o.status.code(), Some(1), "lock must fail: {}", stderr(&o));
    assert!(took < BOUND, "lock took {took:?}");
    let err = stderr(&o);
    let named: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(stuck.to_str().unwrap()))
        .collect();
    assert_eq!(named.len(), 1, "one line names the stuck mount: {err}");
    assert!(
        err.contains("lock incomplete: the cached key was removed; 1 of 2 mount(s) confirmed"),
        "{err}"
    );
    assert!(named[0].contains("did not confirm the lock"), "{err}");
    assert!(
        !err.contains(&format!("{} ", good.display())),
        "the good mount confirmed: {err}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("locked"),
        "no success line: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The mount that answered is locked.
    let (o, _) = cat(&nb, &good);
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "read after lock"
    );

    let (o, took) = timed(|| nb.run(&["revoke", stuck.to_str().unwrap(), "--all"]));
    println!("revoke on a stopped mount: {took:?}; {}", stderr(&o).trim());
    assert_eq!(o.status.code(), Some(1), "revoke must fail: {}", stderr(&o));
    assert!(took < BOUND, "revoke took {took:?}");
    assert!(
        stderr(&o).contains(stuck.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("revoked"));
    drop(cont);

    // Awake again, the same commands succeed.
    nb.ok(&["revoke", stuck.to_str().unwrap(), "--all"]);
    let out = nb.ok(&["lock"]);
    assert!(out.contains("2 mount(s)"), "{out}");
}

/// SIGCONTs the daemon on drop, so a failed assertion leaves no stopped
/// daemon (and no hung mount) behind.
struct Cont(nix::unistd::Pid);

fn scopeguard(p: nix::unistd::Pid) -> Cont {
    Cont(p)
}

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::SIGCONT);
    }
}

/// One raw exchange on the socket, as root (which the daemon accepts as
/// its owner's equal): what came back, as one line.
fn exchange(sock: &Path, send: &[u8]) -> (String, Duration) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let _ = s.write_all(send);
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    (got, t.elapsed())
}

fn one_error_line(got: &str) -> String {
    assert!(got.ends_with('\n'), "one whole line: {got:?}");
    assert_eq!(got.lines().count(), 1, "{got:?}");
    let v: serde_json::Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(v["ok"], false, "{got}");
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn bad_requests_and_a_flood_get_one_line_and_a_close() {
    let mut nb = Nobody::new();
    let m = nb.mount("mnt");
    let sock = nb.socket(&m);

    let (got, _) = exchange(&sock, b"not json\n");
    assert!(one_error_line(&got).starts_with("bad request"), "{got}");
    let (got, _) = exchange(&sock, b"{\"v\":99,\"op\":\"status\"}\n");
    assert!(
        one_error_line(&got).contains("protocol version 99"),
        "{got}"
    );
    let (got, _) = exchange(&sock, b"{\"v\":1,\"op\":\"no_such_op\"}\n");
    assert!(one_error_line(&got).starts_with("bad request"), "{got}");
    let (got, _) = exchange(&sock, &vec![b' '; 100 * 1024]);
    assert!(one_error_line(&got).contains("longer than 64 KiB"), "{got}");
    // Half a request, then silence: answered at the deadline, not never.
    let (got, took) = exchange(&sock, b"{\"v\":1,");
    assert!(
        one_error_line(&got).contains("not complete within"),
        "{got}"
    );
    assert!(
        took >= Duration::from_millis(1500) && took < BOUND,
        "{took:?}"
    );

    // More connections than the cap: the excess is told so at once.
    let held: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut busy = 0;
    for s in &held[256..] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = String::new();
        let _ = (&*s).read_to_string(&mut got);
        assert!(one_error_line(&got).starts_with("busy"), "{got}");
        busy += 1;
    }
    assert_eq!(busy, 44);
    drop(held);
    // And the daemon serves normally afterwards.
    let st = nb.ok(&["status", "--json"]);
    assert!(st.contains(m.to_str().unwrap()), "{st}");
    let (o, _) = cat(&nb, &m);
    assert_eq!(o.stdout, VALUE, "{}", stderr(&o));
}

#[test]
fn allow_cgroup_root_warns_that_every_process_of_the_owner_reads() {
    let mut nb = Nobody::new();
    let m = nb.mount("mnt");
    let d = m.to_str().unwrap();
    let o = nb.run(&["allow", d, "--cgroup", "/"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--cgroup / is the root of the cgroup tree")
            && err.contains("lets every process of yours read")
            && err.contains(&format!("hushfs revoke {d} ")),
        "{err}"
    );
    // And it is true: a process nobody started through hushfs reads.
    let file = m.join("TOKEN");
    let mut c = nb.as_nobody("cat");
    c.arg(&file);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, VALUE);
    nb.ok(&["revoke", d, "--cgroup", "/"]);
    let o = c.output().unwrap();
    assert!(
        !o.status.success() && o.stdout.is_empty(),
        "read after revoke"
    );
}
