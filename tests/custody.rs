//! Key custody: with the vault unlocked and a mount live, a process of the
//! same uid gets no key and no value — from a keyring, from hushfs's
//! sockets, from /proc or pidfd_getfd, or from the commands `run` starts.
//!
//! hushfs and the attacker both run as an ordinary user this test creates:
//! root passes every ptrace, /proc and keyring check, so a root-only test
//! would prove nothing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

use base64::Engine;
use common::mount::is_mounted;
use common::{INIT_FAST, contains};

const USER: &str = "hushfs-custody";

/// The test user's uid and gid (created once).
fn user() -> (u32, u32) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let exists = Command::new("id").arg(USER).output().unwrap();
        if !exists.status.success() {
            let o = Command::new("useradd")
                .args([
                    "--no-create-home",
                    "--shell",
                    "/bin/sh",
                    "--user-group",
                    USER,
                ])
                .output()
                .expect("useradd (package passwd) is needed to create the test user");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    });
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").args([flag, USER]).output().unwrap();
        String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A home for the test user, with hushfs's usual places under it.
struct Home {
    _dir: tempfile::TempDir,
    home: PathBuf,
    uid: u32,
    gid: u32,
}

impl Home {
    fn new() -> Home {
        let (uid, gid) = user();
        let dir = tempfile::Builder::new()
            .prefix("hushfs-custody-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let h = Home {
            _dir: dir,
            home,
            uid,
            gid,
        };
        h.chown(&h.home);
        h
    }

    fn chown(&self, p: &Path) {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .unwrap();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }

    /// A command run as the test user, with its own environment only.
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .current_dir(&self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn hushfs(&self, args: &[&str]) -> Command {
        self.cmd(env!("CARGO_BIN_EXE_hushfs"), args)
    }

    fn ok(&self, mut c: Command) -> Output {
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn with_pass(&self, args: &[&str]) -> Output {
        let mut c = self.hushfs(args);
        c.env("HUSHFS_PASSPHRASE_FILE", self.path("pass"));
        self.ok(c)
    }

    fn set(&self, name: &str, value: &[u8]) {
        let mut c = self.hushfs(&["set", name]);
        c.env("HUSHFS_PASSPHRASE_FILE", self.path("pass"))
            .stdin(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        use std::io::Write;
        ch.stdin.take().unwrap().write_all(value).unwrap();
        let o = ch.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let m = self.path("mnt");
        if is_mounted(&m) {
            let _ = self.hushfs(&["umount", m.to_str().unwrap()]).output();
        }
        // Removing the runtime directory ends the agent.
    }
}

/// Every form of `v` the attacker could turn a leak into.
fn forms(v: &[u8]) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(v);
    let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
    vec![v.to_vec(), b64.into_bytes(), hex.into_bytes()]
}

/// The key-custody suite: one vault, one mount, one attacker run.
#[test]
fn a_same_uid_process_gets_no_key_and_no_value() {
    let h = Home::new();
    let value = b"custody-value-7f3a9c2e1b";
    std::fs::write(h.path("pass"), "custody passphrase 42\n").unwrap();
    h.chown(&h.path("pass"));
    h.with_pass(&INIT_FAST);
    h.set("app/TOKEN", value);

    // An earlier hushfs left a cached key in the user keyring, readable by
    // every process of the uid: the agent removes it when it starts.
    let planted = h.ok(h.cmd(
        "keyctl",
        &["add", "user", "hushfs:vault-0000", "legacy-key", "@u"],
    ));
    assert!(!planted.stdout.is_empty());

    h.with_pass(&["unlock", "--ttl", "1h"]);
    // The passphrase is gone from here on: the attacker has only what an
    // unlocked session leaves around.
    std::fs::remove_file(h.path("pass")).unwrap();
    let mnt = h.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    h.chown(&mnt);
    let m = mnt.to_str().unwrap();
    h.ok(h.hushfs(&["mount", m, "-p", "app"]));
    assert!(is_mounted(&mnt));

    // The unlock works without a prompt: an authorized read gets the value.
    let o = h.ok(h.hushfs(&[
        "run",
        "--mount",
        m,
        "--no-redact",
        "--",
        "cat",
        &format!("{m}/TOKEN"),
    ]));
    assert_eq!(o.stdout, value);

    let st: serde_json::Value =
        serde_json::from_slice(&h.ok(h.hushfs(&["status", "--json"])).stdout).unwrap();
    assert_eq!(st["unlocked"], true, "{st}");
    let daemon = st["mounts"][0]["pid"].as_u64().unwrap() as u32;
    let agent = agent_pid(&h);
    let control = h.path(&format!(
        "run/hushfs/mounts/{}.sock",
        hushfs::daemon::registry::id(&mnt)
    ));
    assert!(
        control.exists(),
        "no control socket at {}",
        control.display()
    );

    // The system's python: a pyenv shim under /root is not the user's.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let report = h.ok(h.cmd(
        python,
        &[
            common::mount::helper()
                .parent()
                .unwrap()
                .join("attacker.py")
                .to_str()
                .unwrap(),
            h.path("run/hushfs/agent.sock").to_str().unwrap(),
            control.to_str().unwrap(),
            m,
            &agent.to_string(),
            &daemon.to_string(),
        ],
    ));
    let r: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();

    // 1. Every key in every keyring the uid reaches: none of hushfs's.
    let listing = r["keyring_list"].as_str().unwrap();
    assert!(
        !listing.contains("hushfs:"),
        "a hushfs key is visible to the user:\n{listing}"
    );
    let payloads = decoded(&r["keys"]);
    assert!(
        !payloads.iter().any(|p| contains(p, b"legacy-key")),
        "the legacy user-keyring entry was not removed"
    );

    // 2. Decryption as docs/VAULT-FORMAT.md describes it, with every
    // 32-byte window of every payload the attacker could read.
    let sealed = hushfs::vault::Sealed::read(&h.path(".local/share/hushfs/vault")).unwrap();
    for p in &payloads {
        for w in p.windows(32) {
            let k = hushfs::secret::Key32::from_slice(w).unwrap();
            assert!(sealed.open(&k).is_err(), "a readable key opens the vault");
        }
    }

    // 3. No answer of any socket, to real, forged or malformed requests,
    // and no output of a command run through the agent, holds the value.
    let answers = decoded(&r["answers"]);
    for a in &answers {
        for f in forms(value) {
            assert!(
                !contains(a, &f),
                "an answer carries the value: {}",
                String::from_utf8_lossy(a)
            );
        }
    }
    // The forged requests got one-line errors, the real ones answers: the
    // agent served all of them (a hung agent answers nothing).
    let text: Vec<String> = answers
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(text[0].contains("\"r\":\"hello\""), "{}", text[0]);
    assert!(text[2].contains("does not open the vault"), "{}", text[2]);
    assert!(text[4].contains("version 2 not supported"), "{}", text[4]);
    // The mount's control socket answered too (status, and refusals).
    assert!(
        text.iter().any(|t| t.contains("\"mountpoint\"")),
        "the control socket gave no status: {text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("[hushfs:TOKEN]")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("app/TOKEN")), "{text:?}");
    // What `run` starts (told to find the agent elsewhere, too) sees none
    // of the agent's keys.
    assert!(
        !text
            .iter()
            .any(|t| t.contains("hushfs:vault") || t.contains("hushfs:audit")),
        "a command run through the agent possesses its keyring: {text:?}"
    );
    // The agent runs only the commands that use the cached key.
    for t in decoded(&r["refused"]) {
        assert!(
            contains(&t, b"runs only the commands that use the cached key"),
            "{}",
            String::from_utf8_lossy(&t)
        );
    }

    // 4. The agent's and the daemon's memory, environment and fds.
    for pid in [agent, daemon] {
        let p = &r["proc"][pid.to_string()];
        for f in ["mem", "environ", "maps"] {
            assert!(
                p[f].as_str().unwrap().starts_with("denied"),
                "/proc/{pid}/{f} readable: {p}"
            );
        }
        let g = &r["getfd"][pid.to_string()];
        assert!(
            g.as_array().is_none_or(|fds| fds.is_empty()),
            "pidfd_getfd took fds {g} from {pid}"
        );
    }

    // 5. A command `run` starts has no ancestor that is the caller.
    let mut c = h.hushfs(&[
        "run",
        "--mount",
        m,
        "--",
        "sh",
        "-c",
        "p=$$; while [ \"$p\" -gt 1 ]; do echo $p; p=$(cut -d' ' -f4 /proc/$p/stat); done",
    ]);
    let ch = c.spawn().unwrap();
    let caller = ch.id();
    let o = ch.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let chain: Vec<u32> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(chain.len() >= 2, "{chain:?}");
    assert!(
        !chain.contains(&caller),
        "the caller {caller} is an ancestor of the command: {chain:?}"
    );
    assert!(
        chain.contains(&agent),
        "{chain:?} does not descend from the agent {agent}"
    );

    // 6. `lock` makes the agent forget: the mount denies at once and
    // status says locked.
    h.ok(h.hushfs(&["lock"]));
    let o = h
        .hushfs(&[
            "run",
            "--mount",
            m,
            "--no-redact",
            "--",
            "cat",
            &format!("{m}/TOKEN"),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success() && !contains(&o.stdout, value));
    let st: serde_json::Value =
        serde_json::from_slice(&h.hushfs(&["status", "--json"]).output().unwrap().stdout).unwrap();
    assert_eq!(st["unlocked"], false, "{st}");
    assert_eq!(st["mounts"][0]["locked"], true, "{st}");
}

/// A vault (run as root: robustness, not isolation) with one secret,
/// unlocked, so that commands go through the agent.
fn unlocked_env(name: &str, value: &[u8]) -> common::Env {
    let mut e = common::Env::new();
    e.keychain = true;
    e.set(name, value);
    e.ok(&["unlock"]);
    e
}

/// The attacker's report keeps bytes as base64 strings.
fn decoded(list: &serde_json::Value) -> Vec<Vec<u8>> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            base64::engine::general_purpose::STANDARD
                .decode(a.as_str().unwrap())
                .unwrap()
        })
        .collect()
}

fn agent_pid(h: &Home) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let run = format!("XDG_RUNTIME_DIR={}", h.path("run").display());
        if cmd.ends_with(b"__agent\0") && contains(&env, run.as_bytes()) {
            return pid;
        }
    }
    panic!("no agent running for {}", h.home.display());
}

/// Unlock then a command with `--passphrase-fd` or `HUSHFS_KEYCHAIN=off`
/// runs here, not in the agent; and outside the agent nothing is cached:
/// a forged keyring variable gets no cache.
#[test]
fn outside_the_agent_nothing_is_cached() {
    let h = Home::new();
    std::fs::write(h.path("pass"), "custody passphrase 42\n").unwrap();
    h.chown(&h.path("pass"));
    h.with_pass(&INIT_FAST);
    h.set("app/TOKEN", b"v-1234567890");
    h.with_pass(&["unlock"]);
    // Forged: claim to be a process of the agent's session.
    let mut c = h.hushfs(&["ls"]);
    c.env("HUSHFS_AGENT_KEYRING", "12345");
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("locked"));
    // Through the agent: no prompt, names only.
    let o = h.ok(h.hushfs(&["ls"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("app/TOKEN"));
    let mut c = h.hushfs(&["ls"]);
    c.env("HUSHFS_KEYCHAIN", "off");
    assert_eq!(c.output().unwrap().status.code(), Some(1));
    h.ok(h.hushfs(&["lock"]));
    assert_eq!(h.hushfs(&["ls"]).output().unwrap().status.code(), Some(1));
}

/// A thousand idle connections and a client that sends a byte a second do
/// not stop the agent from serving others: a command still runs through it
/// (no passphrase at hand), and each flood connection got an answer or was
/// closed, never left hanging.
#[test]
fn the_agent_survives_a_flood_and_a_slow_client() {
    use std::io::{Read, Write};
    let e = unlocked_env("app/K", b"flood-value-123456");
    let sock = e.path("run/hushfs/agent.sock");
    // The slow client first, so that it holds one of the agent's slots.
    let mut slow = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut flood: Vec<std::os::unix::net::UnixStream> = (0..1000)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&sock).ok())
        .collect();
    assert!(flood.len() > 900, "only {} connections", flood.len());
    let slow_writer = std::thread::spawn(move || {
        for b in br#"{"v":1,"op":"hel"#.iter() {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        answer
    });
    let t0 = std::time::Instant::now();
    let o = e
        .cmd(&["ls"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("app/K"));
    println!("ls through the agent during the flood: {took:?}");
    assert!(took < std::time::Duration::from_secs(8), "{took:?}");
    // The slow client is cut off at the request deadline with one line.
    let answer = slow_writer.join().unwrap();
    assert!(answer.contains("did not arrive in time"), "{answer}");
    // Every flood connection was answered ("busy") or closed by the
    // deadline: reading returns instead of blocking.
    for c in flood.iter_mut().take(300) {
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf)
            .expect("a flood connection was left hanging");
        assert!(!contains(&buf, b"flood-value"));
    }
}

/// Through the agent, a terminal works as before: the command gets a pty of
/// the terminal's size that follows resizes, reads typed keys, and ^C
/// interrupts it; the exit status comes back.
#[test]
fn through_the_agent_a_terminal_works_as_before() {
    use std::time::Duration;
    let e = unlocked_env("app/TOKEN", b"terminal-value-0123456789");
    let on_terminal = |script: &str| {
        let pty = nix::pty::openpty(None, None).unwrap();
        common::pty::set_size(&pty.master, 33, 101);
        let slave = || Stdio::from(pty.slave.try_clone().unwrap());
        let child = e
            .cmd(&["run", "-p", "app", "--", "sh", "-c", script])
            // Only the agent can open the vault.
            .env_remove("HUSHFS_PASSPHRASE_FILE")
            .stdin(slave())
            .stdout(slave())
            .stderr(slave())
            .spawn()
            .unwrap();
        drop(pty.slave);
        let (seen, reader) = common::pty::collect(&pty.master);
        (child, pty.master, seen, reader)
    };
    let wait_for = |seen: &std::sync::Mutex<Vec<u8>>, what: &str| {
        common::pty::wait_for(seen, what, Duration::from_secs(10))
    };
    let guards = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/guards.py");
    let (mut child, master, seen, reader) = on_terminal(&format!(
        "test -t 0 && echo stdin-tty; printf 'name? '; read name; echo \"hi $name $(cat \"$HUSHFS_DIR/TOKEN\")\"; exec python3 '{}' tty \"$HUSHFS_DIR/TOKEN\"",
        guards.display()
    ));
    wait_for(&seen, "name? ");
    let mut m = std::fs::File::from(master.try_clone().unwrap());
    std::io::Write::write_all(&mut m, b"alice\r").unwrap();
    wait_for(&seen, "hi alice [hushfs:TOKEN]");
    wait_for(&seen, "ready");
    common::pty::set_size(&master, 44, 120);
    // What a terminal does on a resize: SIGWINCH to its foreground group,
    // which is the client; the agent's command gets it from there.
    // SAFETY: kill sends a signal to our child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) };
    wait_for(&seen, "done");
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let s = String::from_utf8_lossy(&seen.lock().unwrap()).replace("\r\n", "\n");
    assert!(s.contains("stdin-tty"), "{s}");
    assert!(s.contains("size 33 101\n"), "{s}");
    assert!(s.contains("winch 44 120\n"), "{s}");
    assert!(!s.contains("terminal-value"), "{s}");

    // ^C on the terminal interrupts the command; its status comes back.
    let (mut child, master, seen, _reader) = on_terminal("echo ready; exec sleep 30");
    wait_for(&seen, "ready");
    let mut m = std::fs::File::from(master);
    std::io::Write::write_all(&mut m, b"\x03").unwrap();
    let t0 = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "killed by SIGINT");
}

/// Signals sent to the client reach the command the agent runs, and a
/// client killed outright hangs up on it: nothing keeps running unseen.
#[test]
fn through_the_agent_signals_reach_the_command() {
    use std::time::{Duration, Instant};
    let e = unlocked_env("app/TOKEN", b"signal-value-0123456789");
    let marker = e.path("pid");
    let start = |e: &common::Env| {
        let _ = std::fs::remove_file(&marker);
        let ch = e
            .cmd(&[
                "run",
                "-p",
                "app",
                "--",
                "sh",
                "-c",
                &format!("echo $$ > '{}'; exec sleep 30", marker.display()),
            ])
            .env_remove("HUSHFS_PASSPHRASE_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::fs::read_to_string(&marker).map_or(true, |s| !s.ends_with('\n')) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the command did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (ch, pid)
    };
    let gone = |pid: i32| {
        let t0 = Instant::now();
        // SAFETY: kill with signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            if t0.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    let (mut ch, pid) = start(&e);
    // SAFETY: kill sends a signal to our child process.
    unsafe { libc::kill(ch.id() as i32, libc::SIGTERM) };
    assert_eq!(ch.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    assert!(gone(pid), "the command outlived SIGTERM");

    let (mut ch, pid) = start(&e);
    ch.kill().unwrap();
    ch.wait().unwrap();
    assert!(gone(pid), "the command outlived its killed client");
}
