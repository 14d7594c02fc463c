//! Output redaction in `hushfs run`: values and their encodings become
//! [hushfs:NAME] on stdout and stderr (also when split across writes),
//! every other byte passes unchanged, output is not held back, and on a
//! terminal the command still sees a terminal of the right size.

mod common;
use common::mount::*;
use common::*;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VALUE: &[u8] = b"s3cr3t-token-0123456789abcdef";

fn helper() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helpers/guards.py")
        .display()
        .to_string()
}

fn env() -> Env {
    let e = Env::new();
    e.set("app/TOKEN", VALUE);
    e
}

/// `hushfs run -p app [extra] -- sh -c SCRIPT` (the private mount is
/// $HUSHFS_DIR).
fn run_sh(e: &Env, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["run", "-p", "app"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    e.run(&args)
}

#[test]
fn values_and_encodings_are_redacted_on_stdout_and_stderr() {
    let e = env();
    let o = run_sh(
        &e,
        &[],
        &format!("exec python3 '{}' split \"$HUSHFS_DIR/TOKEN\"", helper()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Split across two writes 0.3 s apart, between arbitrary bytes.
    assert_eq!(
        o.stdout,
        b"bin:\x00\xff\x1b[31mred\x1b[0m value=[hushfs:TOKEN]\n"
    );
    assert!(contains(&o.stderr, b"err=[hushfs:TOKEN]\n"));
    assert!(!contains(&o.stderr, VALUE));

    let script = "python3 -c 'import base64, json, sys, os; \
        v = open(os.environ[\"HUSHFS_DIR\"] + \"/TOKEN\", \"rb\").read(); \
        print(base64.b64encode(b\"xy\" + v + b\"z\").decode()); \
        print(v.hex().upper()); \
        print(json.dumps({\"t\": v.decode()}))'";
    let o = run_sh(&e, &[], script);
    let s = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    assert!(
        lines[0].contains("[hushfs:TOKEN]"),
        "base64 inside a blob: {s}"
    );
    assert_eq!(lines[1], "[hushfs:TOKEN]");
    assert_eq!(lines[2], "{\"t\": \"[hushfs:TOKEN]\"}");

    // --no-redact passes the bytes through.
    let o = run_sh(&e, &["--no-redact"], "cat \"$HUSHFS_DIR/TOKEN\"");
    assert_eq!(o.stdout, VALUE);
}

#[test]
fn output_is_passed_on_at_once() {
    let e = env();
    let mut child = e
        .cmd(&[
            "run",
            "-p",
            "app",
            "--",
            "sh",
            "-c",
            &format!("exec python3 '{}' prompt \"$HUSHFS_DIR/TOKEN\"", helper()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // The command sleeps 3 s after this line: it must not wait for more.
    let took = started.elapsed();
    assert_eq!(line, "ready s3c\n");
    assert!(
        took < Duration::from_millis(2500),
        "first line after {took:?}"
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "late\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn on_a_terminal_the_command_gets_a_pty_that_follows_resizes() {
    let e = env();
    let pty = nix::pty::openpty(None, None).unwrap();
    common::pty::set_size(&pty.master, 33, 101);
    let mut child = e
        .cmd(&[
            "run",
            "-p",
            "app",
            "--",
            "sh",
            "-c",
            &format!("exec python3 '{}' tty \"$HUSHFS_DIR/TOKEN\"", helper()),
        ])
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    drop(pty.slave);
    let (seen, reader) = common::pty::collect(&pty.master);
    let wait_for = |what: &str| common::pty::wait_for(&seen, what, Duration::from_secs(10));
    wait_for("ready");
    common::pty::set_size(&pty.master, 44, 120);
    // SAFETY: kill sends a signal to our child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) };
    wait_for("done");
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
    let all = seen.lock().unwrap().clone();
    let s = String::from_utf8_lossy(&all).replace("\r\n", "\n");
    assert!(s.contains("stdout-tty\nstderr-tty\n"), "{s}");
    assert!(
        s.contains("size 33 101\n"),
        "the pty has the terminal's size: {s}"
    );
    assert!(
        s.contains("winch 44 120\n"),
        "resizes reach the command: {s}"
    );
    assert!(s.contains("value=[hushfs:TOKEN]\n"), "{s}");
    assert!(!contains(&all, VALUE));
}

/// `hushfs run -p app -- sh -c SCRIPT` with stdin, stdout and stderr on a
/// fresh pty, as in a terminal; returns the child, the master and what it
/// reads from the master.
fn on_terminal(e: &Env, script: &str) -> (std::process::Child, OwnedFd, Arc<Mutex<Vec<u8>>>) {
    let pty = nix::pty::openpty(None, None).unwrap();
    common::pty::set_size(&pty.master, 24, 80);
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let child = e
        .cmd(&["run", "-p", "app", "--", "sh", "-c", script])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let (seen, _reader) = common::pty::collect(&pty.master);
    (child, pty.master, seen)
}

fn wait_for(seen: &Mutex<Vec<u8>>, what: &str) {
    common::pty::wait_for(seen, what, Duration::from_secs(10));
}

#[test]
fn interactive_commands_read_keys_and_get_ctrl_c() {
    let e = env();
    // A program that reads a line from its terminal.
    let (mut child, master, seen) = on_terminal(
        &e,
        r#"test -t 0 && echo stdin-tty; printf 'name? '; read name; echo "hi $name $(cat "$HUSHFS_DIR/TOKEN")""#,
    );
    wait_for(&seen, "name? ");
    let mut m = std::fs::File::from(master.try_clone().unwrap());
    std::io::Write::write_all(&mut m, b"alice\r").unwrap();
    wait_for(&seen, "hi alice [hushfs:TOKEN]");
    assert!(child.wait().unwrap().success());
    let s = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(s.contains("stdin-tty"), "{s}");
    assert!(
        s.contains("alice"),
        "the terminal echoes what was typed: {s}"
    );
    assert!(!contains(&seen.lock().unwrap(), VALUE));

    // ^C typed on the terminal interrupts the command.
    let (mut child, master, seen) = on_terminal(&e, "echo ready; exec sleep 30");
    wait_for(&seen, "ready");
    let mut m = std::fs::File::from(master);
    std::io::Write::write_all(&mut m, b"\x03").unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "killed by SIGINT");
}

#[test]
fn live_mount_without_the_key_warns_once() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let p = m.path("TOKEN");
    let dir = m.dir.to_str().unwrap().to_string();
    let o = m
        .env
        .cmd(&["run", "--mount", &dir, "--", "cat", &p])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("output is not redacted").count(), 1, "{err}");
    assert_eq!(o.stdout, VALUE);
    // With the key at hand, the same command is redacted.
    let o = m.run_redacted(&["cat", &p]);
    assert_eq!(o.stdout, b"[hushfs:TOKEN]");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
