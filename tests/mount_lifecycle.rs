//! Mounts come and go cleanly (issue tests 10, 11) and work for ordinary
//! users through fusermount3.

mod common;
use common::mount::*;
use common::*;

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Starts `hushfs run -p app -- sh -c SCRIPT`, which first prints
/// `$HUSHFS_DIR $$`. Returns the child, the private dir and the shell's pid.
fn start_private_run(e: &Env, script: &str) -> (std::process::Child, std::path::PathBuf, i32) {
    let mut child = e
        .cmd(&[
            "run",
            "-p",
            "app",
            "--",
            "sh",
            "-c",
            &format!("echo $HUSHFS_DIR $$; {script}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (dir, sh) = line.trim().split_once(' ').unwrap();
    let dir = std::path::PathBuf::from(dir);
    assert!(is_mounted(&dir), "private mount at {}", dir.display());
    (child, dir, sh.parse().unwrap())
}

#[test]
fn private_mount_is_gone_after_the_child_exits() {
    let e = Env::new();
    e.set("app/TOKEN", b"v");
    let o = e.run(&[
        "run",
        "-p",
        "app",
        "--",
        "sh",
        "-c",
        "cat \"$HUSHFS_DIR/TOKEN\"; echo; echo $HUSHFS_DIR; exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "run exits with the command's status"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("v"));
    let dir = std::path::PathBuf::from(lines.next().unwrap());
    assert!(!is_mounted(&dir), "still mounted after the child exited");
    assert!(!dir.exists(), "the private directory remains");
}

#[test]
fn private_mount_is_gone_after_run_gets_sigterm() {
    let e = Env::new();
    e.set("app/TOKEN", b"v");
    let (mut child, dir, _) = start_private_run(&e, "sleep 30");
    // SIGTERM to run: forwarded to the command, which dies of it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    // Wait for run itself: the orphaned `sleep` may keep stdout open.
    assert_eq!(child.wait().unwrap().code(), Some(128 + 15));
    assert!(!is_mounted(&dir));
    assert!(!dir.exists());
}

#[test]
fn private_mount_is_gone_after_run_gets_sigint() {
    let e = Env::new();
    e.set("app/TOKEN", b"v");
    // `exec`: a shell that is waiting for a foreground command defers
    // SIGINT until that command ends (run forwards to its child only, like
    // tini; a terminal's ^C reaches the whole group by itself).
    let (mut child, dir, _) = start_private_run(&e, "exec sleep 30");
    let t = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(128 + 2));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the command did not die of the forwarded SIGINT"
    );
    assert!(!is_mounted(&dir));
    assert!(!dir.exists());
}

#[test]
fn private_mount_is_gone_after_the_child_is_killed() {
    let e = Env::new();
    e.set("app/TOKEN", b"v");
    let (_child, dir, sh) = start_private_run(&e, "sleep 30");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sh), nix::sys::signal::SIGKILL).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !is_mounted(&dir)),
        "still mounted"
    );
    assert!(wait_until(Duration::from_secs(5), || !dir.exists()));
}

#[test]
fn private_mount_is_gone_after_run_is_killed() {
    let e = Env::new();
    e.set("app/TOKEN", b"v");
    let (mut child, dir, _) = start_private_run(&e, "sleep 30");
    child.kill().unwrap();
    child.wait().unwrap();
    // The daemon sees its parent die (PR_SET_DEATHSIG) and unmounts.
    assert!(
        wait_until(Duration::from_secs(10), || !is_mounted(&dir)),
        "still mounted"
    );
    assert!(wait_until(Duration::from_secs(5), || !dir.exists()));
}

fn sigkill_daemon_then_remount(extra_env: &[(&str, &str)], auto_unmount: bool) {
    let mut env = Env::new();
    env.set("app/TOKEN", b"before-kill");
    let dir = env.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let mount = |e: &Env| {
        let mut c = e.cmd(&["mount", d, "-p", "app"]);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    mount(&env);
    let st: serde_json::Value =
        serde_json::from_slice(&env.run(&["status", "--json"]).stdout).unwrap();
    let pid = st["mounts"][0]["pid"].as_i64().unwrap() as i32;
    // An authorized reader holds the file open across the kill.
    let h = helper();
    let reader = env
        .cmd(&["run", "--mount", d, "--no-redact", "--", "python3", "-c",
            "import os,sys,time\nfd=os.open(sys.argv[1],os.O_RDONLY)\nprint(os.read(fd,100).decode(),flush=True)\ntime.sleep(1.5)\ntry:\n print('after',os.pread(fd,100,0).decode())\nexcept OSError as e:\n print('after-error',e.errno)",
            &format!("{d}/TOKEN")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = h;
    std::thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let o = reader.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("before-kill"), "{out}");
    assert!(
        out.contains("after-error"),
        "an open fd still read after the daemon died: {out}"
    );
    assert!(!out.contains("after before-kill"), "{out}");
    if auto_unmount {
        // fusermount3 saw the daemon go and took the mount away by itself.
        assert!(
            // fusermount3 may be slow to run on a loaded machine.
            wait_until(Duration::from_secs(15), || !is_mounted(&dir)),
            "auto-unmount left the dead mount in place"
        );
    } else {
        assert!(is_mounted(&dir), "without fusermount3 the dead mount stays");
    }
    // Nothing readable by path either.
    let o = Command::new("cat")
        .arg(format!("{d}/TOKEN"))
        .output()
        .unwrap();
    assert!(o.stdout.is_empty() && !o.status.success());
    // Mounting again recovers the directory, whatever the daemon left.
    env.set("app/TOKEN", b"after-remount");
    mount(&env);
    let o = env.run(&[
        "run",
        "--mount",
        d,
        "--no-redact",
        "--",
        "cat",
        &format!("{d}/TOKEN"),
    ]);
    assert_eq!(
        o.stdout,
        b"after-remount",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    env.ok(&["umount", d]);
    assert!(!is_mounted(&dir));
    env.keychain = false;
}

#[test]
fn daemon_sigkill_with_auto_unmount() {
    // fusermount3 is installed by .ci/install-deps: the mount vanishes with
    // its daemon.
    assert!(
        Command::new("fusermount3")
            .arg("--version")
            .output()
            .is_ok(),
        "fuse3 must be installed"
    );
    sigkill_daemon_then_remount(&[], true);
}

#[test]
fn daemon_sigkill_without_fusermount_leaves_a_stale_mount_that_remount_clears() {
    // As root without fuse3: mount(2) directly, no auto-unmount. The dead
    // mount answers ENOTCONN until the next `hushfs mount` detaches it.
    sigkill_daemon_then_remount(&[("FUSERMOUNT_PATH", "/nonexistent/fusermount3")], false);
}

#[test]
fn umount_reports_what_it_did() {
    let m = Mount::new(&[("A", b"1")]);
    let o = m.env.run(&["umount", m.dir.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(!m.is_mounted());
    let o = m.env.run(&["umount", m.dir.to_str().unwrap()]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(msg.contains("not a hushfs mount"), "{msg}");
    let o = m.env.run(&["umount", "/proc"]);
    assert_clean_failure(&o, 2, &[]);
}

#[test]
fn mount_refuses_busy_and_missing_dirs() {
    let m = Mount::new(&[("A", b"1")]);
    let o = m.env.run(&["mount", m.dir.to_str().unwrap(), "-p", "app"]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("already mounted"), "{msg}");
    let o = m
        .env
        .run(&["mount", m.env.path("nope").to_str().unwrap(), "-p", "app"]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("does not exist"), "{msg}");
    let other = m.env.path("other");
    std::fs::create_dir(&other).unwrap();
    let o = m
        .env
        .run(&["mount", other.to_str().unwrap(), "-p", "nosuch"]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(msg.contains("no project nosuch"), "{msg}");
    let o = m.env.run(&["mount", other.to_str().unwrap()]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("--project"), "{msg}");
}

#[test]
fn an_ordinary_user_mounts_with_fusermount3() {
    // nobody owns a home with a vault and a mount dir.
    let e = Env::empty();
    let home = e.path("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = |p: &std::path::Path| {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap()
    };
    chown(&home);
    let mnt = home.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    chown(&mnt);
    let pass = home.join("pass");
    std::fs::write(&pass, "nobody's passphrase\n").unwrap();
    chown(&pass);
    let as_nobody = |args: &[&str], input: Option<&[u8]>| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_hushfs"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env("HUSHFS_PASSPHRASE_FILE", &pass)
            .env("HUSHFS_KEYCHAIN", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut ch = c.spawn().unwrap();
        if let Some(i) = input {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(i).unwrap();
        }
        drop(ch.stdin.take());
        ch.wait_with_output().unwrap()
    };
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    ok(as_nobody(&INIT_FAST, None));
    ok(as_nobody(&["set", "app/TOKEN"], Some(b"nobody-secret")));
    let m = mnt.to_str().unwrap();
    ok(as_nobody(&["mount", m, "-p", "app"], None));
    assert!(is_mounted(&mnt));
    let o = ok(as_nobody(
        &[
            "run",
            "--mount",
            m,
            "--no-redact",
            "--",
            "cat",
            &format!("{m}/TOKEN"),
        ],
        None,
    ));
    assert_eq!(o.stdout, b"nobody-secret");
    // The daemon is not dumpable: another process of the same uid cannot
    // read its memory or environment, and it writes no core files.
    let st: serde_json::Value =
        serde_json::from_slice(&ok(as_nobody(&["status", "--json"], None)).stdout).unwrap();
    let pid = st["mounts"][0]["pid"].as_u64().unwrap();
    for f in ["environ", "mem"] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["head", "-c", "64", &format!("/proc/{pid}/{f}")])
            .output()
            .unwrap();
        assert!(
            !o.status.success() && o.stdout.is_empty(),
            "same-uid process read /proc/{pid}/{f}"
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    // Root, another uid, is stopped by the kernel (no allow_other).
    let o = Command::new("cat")
        .arg(format!("{m}/TOKEN"))
        .output()
        .unwrap();
    assert!(!o.status.success() && o.stdout.is_empty());
    ok(as_nobody(&["umount", m], None));
    assert!(!is_mounted(&mnt));
}

#[test]
fn sigterm_to_the_daemon_unmounts_cleanly() {
    for sig in [
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGHUP,
    ] {
        let m = Mount::new(&[("A", b"1")]);
        let pid = m.daemon_pid();
        let pidfd = hushfs::sys::pidfd::PidFd::open(pid).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || !pidfd.is_alive()),
            "{sig}: daemon still running"
        );
        assert!(!m.is_mounted(), "{sig}: still mounted");
        assert_eq!(
            m.status()["mounts"].as_array().unwrap().len(),
            0,
            "{sig}: still listed"
        );
    }
}
