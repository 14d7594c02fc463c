//! Who may read a mount: real mounts, real processes (issue tests 1-7).
//! These run as root (CI does) and are never skipped.

mod common;
use common::mount::*;

use std::process::{Command, Stdio};
use std::time::Duration;

const VALUE: &[u8] = b"s3cr3t-value-\xff\x00-end";

fn mount() -> Mount {
    Mount::new(&[("TOKEN", VALUE), ("OTHER", b"other-value")])
}

#[test]
fn child_grandchild_at_depth_5_and_threads_read() {
    let m = mount();
    let p = m.path("TOKEN");
    assert_eq!(
        read_ok(&m.granted(&["read", &p])),
        Some(hex(VALUE)),
        "the child reads"
    );
    assert_eq!(
        read_ok(&m.granted(&["chain", "5", &p])),
        Some(hex(VALUE)),
        "depth 5 reads"
    );
    let t = m.granted(&["thread", &p]);
    assert_ne!(t["tid"], t["pid"], "read from a non-main thread");
    assert_eq!(read_ok(&t), Some(hex(VALUE)));
    // Through a shell and cat, as users do.
    let o = m.run(&["sh", "-c", &format!("cat '{p}'")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, VALUE);
}

#[test]
fn sibling_parent_shell_and_unrelated_are_denied() {
    let m = mount();
    let p = m.path("TOKEN");
    // Unrelated same-uid process.
    assert_eq!(
        read_err(&m.outsider(&["read", &p])).as_deref(),
        Some("EACCES")
    );
    let o = Command::new("cat").arg(&p).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    assert!(o.stdout.is_empty());

    // The shell that started `hushfs run`, and a sibling started by that
    // shell, while the granted child is alive.
    // The granted child itself reads once it is running, so the grant is
    // known to be live while parent and sibling are refused; errors are
    // compared by text (EACCES), not just by exit status.
    let script = format!(
        "'{bin}' run --no-redact --mount '{dir}' -- sh -c \"cat '{p}' >/dev/null && echo child=ok; sleep 3\" & \
         sleep 1; cat '{p}' 2>&1 >/dev/null | grep -q 'Permission denied' && echo parent=denied; \
         sh -c \"cat '{p}' 2>&1 >/dev/null | grep -q 'Permission denied' && echo sibling=denied\"; wait",
        bin = env!("CARGO_BIN_EXE_hushfs"),
        dir = m.dir.display()
    );
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("XDG_RUNTIME_DIR", m.env.dir.path().join("run"))
        .env("XDG_STATE_HOME", m.env.dir.path().join("state"))
        .env("HUSHFS_VAULT", &m.env.vault)
        .env("HUSHFS_KEYCHAIN", "off")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("child=ok"), "the granted child reads: {s}");
    assert!(
        s.contains("parent=denied"),
        "the parent shell must be denied: {s}"
    );
    assert!(
        s.contains("sibling=denied"),
        "a sibling must be denied: {s}"
    );
}

#[test]
fn double_forked_orphan_stays_inside_the_tree() {
    let m = mount();
    let outfile = m.env.path("orphan.json");
    let v = m.granted(&["orphan", &m.path("TOKEN"), outfile.to_str().unwrap()]);
    assert_eq!(read_ok(&v), Some(hex(VALUE)), "{v}");
    assert_ne!(
        v["ppid"], 1,
        "the orphan was adopted by run (subreaper), not init"
    );
}

#[test]
fn recycled_root_pid_is_denied() {
    let m = mount();
    let p = m.path("TOKEN");
    // The grant's root is the `hushfs run` process; learn its pid.
    let o = m.run(&["sh", "-c", "echo $PPID"]);
    let root: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    // It has exited. Give a new, unrelated process exactly that pid.
    let v = m.outsider(&["reuse", &root.to_string(), &p]);
    assert!(v.get("nopid").is_none(), "could not recycle pid {root}");
    let stat = v["stat"].as_str().unwrap();
    assert!(stat.starts_with(&format!("{root} ")), "{stat}");
    assert_eq!(read_err(&v).as_deref(), Some("EACCES"), "{v}");
}

#[test]
fn spoofed_process_name_is_denied() {
    let m = mount();
    let p = m.path("TOKEN");
    // A granted run stays alive; its pid is what the spoofer claims as ppid.
    let mut run = m
        .env
        .cmd(&[
            "run",
            "--mount",
            m.dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo $PPID; sleep 5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(run.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let root = line.trim().to_string();
    let v = m.outsider(&["spoof", &root, &p]);
    let stat = v["stat"].as_str().unwrap();
    assert!(
        stat.contains(&format!("(x) S {root} 1 1)")),
        "name not set: {stat}"
    );
    assert_eq!(read_err(&v).as_deref(), Some("EACCES"), "{v}");
    let _ = run.kill();
    let _ = run.wait();
}

#[test]
fn passed_fd_reads_nothing_outside_the_tree() {
    let m = mount();
    let p = m.path("TOKEN");
    let sock = m.env.path("pass.sock");
    let h = helper();
    // The unauthorized receiver listens first.
    let recv = Command::new("python3")
        .arg(&h)
        .args(["fdrecv", sock.to_str().unwrap(), &VALUE.len().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The authorized sender opens, reads, and passes its fd.
    let sent = m.granted(&["fdsend", &p, sock.to_str().unwrap()]);
    assert_eq!(
        sent["sender_read"],
        hex(VALUE),
        "the sender itself may read"
    );
    let r = json(&recv.wait_with_output().unwrap());
    for op in ["read", "pread", "sendfile", "splice", "reopen_proc_fd"] {
        assert_eq!(r[op]["err"], "EACCES", "{op}: {r}");
    }
    // mmap: a shared mapping is refused outright; a private one faults.
    assert_eq!(r["mmap_shared"]["err"], "ENODEV", "{r}");
    assert!(
        r["mmap_private"]["ok"].is_null(),
        "private mmap read the secret: {r}"
    );
    let secret = hex(VALUE);
    assert!(
        !r.to_string().contains(&secret[..16]),
        "some path leaked bytes: {r}"
    );
}

#[test]
fn another_uid_is_denied() {
    let m = mount();
    // A file next to the mount is readable by nobody: the path is open.
    let beside = m.env.path("beside");
    std::fs::write(&beside, "public").unwrap();
    std::fs::set_permissions(&beside, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let o = as_nobody(&["cat", beside.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_nobody(&["cat", &m.path("TOKEN")]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Nor can it list names.
    let o = as_nobody(&["ls", m.dir.to_str().unwrap()]);
    assert!(!o.status.success());
}

#[test]
fn namespaced_descendant_reads_through_a_bind_mount() {
    let m = mount();
    let inside = m.env.path("inside");
    std::fs::create_dir(&inside).unwrap();
    // A container-like child: new pid + mount namespace, the mount bound
    // into it, read from within. Its pid arrives translated to ours.
    let script = format!(
        "mount --bind '{dir}' '{inside}' && cat '{inside}/TOKEN'",
        dir = m.dir.display(),
        inside = inside.display()
    );
    let o = m.run(&[
        "unshare",
        "--pid",
        "--mount",
        "--fork",
        "--mount-proc",
        "sh",
        "-c",
        &script,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, VALUE);

    // The same shape outside any grant is denied.
    let o = Command::new("unshare")
        .args([
            "--pid",
            "--mount",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
}

#[test]
fn every_decision_is_in_the_audit_log_and_it_verifies() {
    let m = mount();
    let p = m.path("TOKEN");
    let _ = Command::new("cat").arg(&p).output().unwrap();
    let o = m.run(&["cat", &p]);
    assert_eq!(o.stdout, VALUE);
    let show = |args: &[&str]| {
        let mut a = vec!["audit", "show", "--json"];
        a.extend_from_slice(args);
        let o = m.env.run(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let denied = show(&["--denied"]);
    let d = denied
        .iter()
        .find(|e| e["event"] == "open" && e["file"] == "TOKEN")
        .expect("the denied open is logged");
    assert_eq!(d["decision"], "deny");
    assert!(d["exe"].as_str().unwrap().ends_with("/cat"), "{d}");
    assert!(
        d["tgid"].as_u64().is_some() && d["start_time"].as_u64().is_some(),
        "{d}"
    );
    let all = show(&["--secret", "TOKEN"]);
    for ev in ["open", "read"] {
        assert!(
            all.iter()
                .any(|e| e["event"] == ev && e["decision"] == "allow" && e["grant"].is_string()),
            "an allowed {ev} with its grant: {all:?}"
        );
    }
    let every = show(&[]);
    for ev in ["mount", "run", "revoke"] {
        assert!(
            every.iter().any(|e| e["event"] == ev),
            "no {ev} event: {every:?}"
        );
    }
    // The chain verifies, and no value is anywhere in the log.
    let o = m.env.run(&["audit", "verify"]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut logs = Vec::new();
    for e in std::fs::read_dir(m.env.dir.path().join("state/hushfs/audit"))
        .unwrap()
        .flatten()
    {
        logs.extend(std::fs::read(e.path()).unwrap());
    }
    assert!(!logs.is_empty());
    assert!(
        !common::contains(&logs, b"s3cr3t-value"),
        "a value reached the audit log"
    );
    // Every entry names the mount, pid and uid of the caller.
    let dir = std::fs::canonicalize(&m.dir).unwrap();
    for e in all.iter().filter(|e| e["event"] == "open") {
        assert_eq!(e["mount"], dir.to_str().unwrap(), "{e}");
        assert!(
            e["pid"].as_u64().is_some() && e["uid"].as_u64().is_some(),
            "{e}"
        );
        assert!(
            e["cmdline"].as_str().is_some_and(|c| c.contains("cat")),
            "{e}"
        );
    }

    // Denials (queued up to 100 ms) are all written by the time the mount
    // has stopped, and `umount` is the last entry.
    let denied_before = show(&["--denied"]).len();
    for _ in 0..5 {
        let _ = Command::new("cat").arg(&p).output().unwrap();
    }
    m.env.ok(&["umount", m.dir.to_str().unwrap()]);
    let after = show(&[]);
    assert_eq!(
        after.last().unwrap()["event"],
        "umount",
        "{:?}",
        after.last()
    );
    assert!(
        show(&["--denied"]).len() >= denied_before + 5,
        "queued denials lost at umount"
    );
}

#[test]
fn an_access_that_cannot_be_recorded_is_denied() {
    // The audit log lives on a tiny filesystem that we fill up.
    let e = common::Env::new();
    let state = e.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success());
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Umount(state.clone());
    let m = Mount::with(e, &[("TOKEN", VALUE)], &[]);
    let p = m.path("TOKEN");
    assert_eq!(m.run(&["cat", &p]).stdout, VALUE);

    // A run granted while the log still works waits for its cue.
    let mut held = m
        .env
        .cmd(&[
            "run",
            "--mount",
            m.dir.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "read x; cat \"$HUSHFS_DIR/TOKEN\"",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let granted = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !m.mount_status()["grants"].as_array().unwrap().is_empty()
    });
    assert!(granted);

    // Fill the filesystem.
    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    use std::io::Write;
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    drop(f);

    // New grants are refused once nothing more fits (the log file's last
    // page may take a few lines after the filesystem is full).
    let refused = (0..40).find_map(|_| {
        let o = m.run(&["true"]);
        (o.status.code() == Some(1)).then(|| String::from_utf8_lossy(&o.stderr).into_owned())
    });
    let err = refused.expect("grants kept being accepted on a full disk");
    assert!(err.contains("audit log cannot record"), "{err}");
    // The earlier grant's read cannot be recorded either: denied.
    held.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = held.wait_with_output().unwrap();
    assert!(
        o.stdout.is_empty(),
        "read although it could not be recorded"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    // And `hushfs status` says why, in JSON and in words.
    let problem = m.mount_status()["problem"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(problem.contains("audit log"), "status problem: {problem:?}");
    let text = m.env.ok(&["status"]);
    assert!(
        text.contains("audit log") && text.contains("No space left"),
        "{text}"
    );

    // Free the space: recording, and reading, work again.
    std::fs::remove_file(&filler).unwrap();
    let ok = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        m.run(&["cat", &p]).stdout == VALUE
    });
    assert!(ok, "reads did not recover once the log was writable");
}
