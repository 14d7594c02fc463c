//! Run policies: `run` refuses commands the project's policy does not
//! list, the daemon holds a process that skips the CLI to the same rules,
//! and changing a policy needs the passphrase even while the key is cached.

mod common;
use common::mount::*;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

const VALUE: &[u8] = b"policy-guarded-value-42";
const OTHER: &[u8] = b"another-guarded-value";

/// `cat` may read TOKEN; nothing else may run.
const POLICY: &str = r#"{"commands": [{"argv": ["cat"], "files": ["TOKEN"]}]}"#;

fn set_policy(e: &Env, json: &str) -> std::process::Output {
    e.run_stdin(&["policy", "set", "app"], json.as_bytes())
}

fn grant_helper(m: &Mount) -> serde_json::Value {
    guards_py(m, "grant")
}

fn guards_py(m: &Mount, mode: &str) -> serde_json::Value {
    let sock = std::fs::read_dir(m.env.path("run/hushfs/mounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("the mount's control socket");
    let h = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helpers/guards.py");
    json(
        &Command::new("python3")
            .arg(h)
            .arg(mode)
            .arg(sock)
            .arg(m.path("TOKEN"))
            .output()
            .unwrap(),
    )
}

#[test]
fn run_refuses_commands_the_policy_does_not_list() {
    let m = Mount::new(&[("TOKEN", VALUE), ("OTHER", OTHER)]);
    let o = set_policy(&m.env, POLICY);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown = m.env.ok(&["policy", "show", "app"]);
    assert!(shown.contains("\"files\""), "{shown}");

    // Allowed: cat reads TOKEN (the output is redacted, which shows the
    // value was read).
    let o = m.run_redacted(&["cat", &m.path("TOKEN")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"[hushfs:TOKEN]");

    // Another command: refused before it starts.
    let o = m.run_redacted(&["head", "-c", "100", &m.path("TOKEN")]);
    let msg = assert_clean_failure(&o, 1, &[VALUE]);
    assert!(
        msg.contains("run policy of project app does not allow `head"),
        "{msg}"
    );
    assert!(msg.contains("hushfs policy show app"), "{msg}");
    assert!(o.stdout.is_empty());

    // The allowed command, on a file its rule does not list: the daemon
    // refuses the read.
    let o = m.run_redacted(&["cat", &m.path("OTHER")]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
    assert!(!contains(&o.stdout, OTHER));

    // Without the key at hand nobody could redact, nor check the rule's
    // --no-redact consent: refused, even for the allowed command, rather
    // than printing the value.
    for extra in [&[][..], &["--no-redact"][..]] {
        let mut args = vec!["run", "--mount", m.dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let tok = m.path("TOKEN");
        args.extend_from_slice(&["--", "cat", &tok]);
        let o = m
            .env
            .cmd(&args)
            .env_remove("HUSHFS_PASSPHRASE_FILE")
            .output()
            .unwrap();
        let msg = assert_clean_failure(&o, 1, &[VALUE]);
        assert!(msg.contains("hushfs unlock"), "{msg}");
        assert!(o.stdout.is_empty());
    }

    // The private mount of `run -p` follows the same policy, --env too.
    let o = m.env.run(&["run", "-p", "app", "--", "head", "/dev/null"]);
    assert_clean_failure(&o, 1, &[VALUE]);
    let o = m
        .env
        .run(&["run", "-p", "app", "--env", "--", "cat", "/dev/null"]);
    let msg = assert_clean_failure(&o, 1, &[VALUE]);
    assert!(msg.contains("--env"), "{msg}");
    // Unredacted output needs the rule's consent too.
    let o = m.env.run(&[
        "run",
        "--mount",
        m.dir.to_str().unwrap(),
        "--no-redact",
        "--",
        "cat",
        &m.path("TOKEN"),
    ]);
    let msg = assert_clean_failure(&o, 1, &[VALUE]);
    assert!(msg.contains("--no-redact"), "{msg}");
}

#[test]
fn the_daemon_enforces_the_policy_without_the_cli() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    // Without a policy, a process that asks the daemon itself reads
    // through any child (and as the root of its grant).
    let before = grant_helper(&m);
    assert_eq!(before["grant"]["ok"], true, "{before}");
    assert_eq!(before["head"]["out"], hex(VALUE), "{before}");
    assert_eq!(before["root"]["ok"], hex(VALUE), "{before}");

    assert!(set_policy(&m.env, POLICY).status.success());
    // The daemon reloads the vault within a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let r = grant_helper(&m);
        if r["head"]["rc"] != 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(after["head"]["rc"], 0, "head is not in the policy: {after}");
    assert_eq!(after["head"]["out"], "", "{after}");
    assert_eq!(
        after["root"]["err"], "EACCES",
        "the grant's root itself: {after}"
    );
    assert_eq!(after["cat"]["rc"], 0, "cat is allowed: {after}");
    assert_eq!(after["cat"]["out"], hex(VALUE), "{after}");
}

#[test]
fn changing_the_policy_needs_the_passphrase_even_when_unlocked() {
    let mut e = Env::new();
    e.keychain = true;
    e.set("app/TOKEN", VALUE);
    assert!(set_policy(&e, POLICY).status.success());
    e.ok(&["unlock", "--ttl", "5m"]);
    let before = e.ok(&["policy", "show", "app"]);

    // A process with only the cached unlock: reading works...
    let cached = |args: &[&str], input: &[u8]| {
        let mut c = e.cmd(args);
        c.env_remove("HUSHFS_PASSPHRASE_FILE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut ch = c.spawn().unwrap();
        std::io::Write::write_all(&mut ch.stdin.take().unwrap(), input).unwrap();
        ch.wait_with_output().unwrap()
    };
    let o = cached(&["ls", "app"], b"");
    assert!(
        o.status.success(),
        "the key is cached: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ...but widening the policy, or removing it, is refused.
    let wide = r#"{"commands": [{"argv": ["head"], "files": ["**"]}]}"#;
    let o = cached(&["policy", "set", "app"], wide.as_bytes());
    let msg = assert_clean_failure(&o, 1, &[VALUE]);
    assert!(msg.contains("needs the passphrase"), "{msg}");
    let o = cached(&["policy", "clear", "app"], b"");
    let msg = assert_clean_failure(&o, 1, &[VALUE]);
    assert!(msg.contains("needs the passphrase"), "{msg}");
    assert_eq!(
        e.ok(&["policy", "show", "app"]),
        before,
        "the policy is unchanged"
    );

    // With the passphrase it changes.
    assert!(set_policy(&e, wide).status.success());
    assert!(e.ok(&["policy", "show", "app"]).contains("head"));
    e.ok(&["policy", "clear", "app"]);
    assert!(e.ok(&["policy", "show", "app"]).contains("no run policy"));
}

/// `hushfs ARGS` as on a terminal without the key at hand (no passphrase
/// file, no keychain): the passphrase is typed at the prompt. Returns the
/// exit code and everything the terminal showed.
fn with_prompt(e: &Env, args: &[&str]) -> (Option<i32>, String) {
    let mut c = e.cmd(args);
    c.env_remove("HUSHFS_PASSPHRASE_FILE");
    common::pty::converse(c, &[("assphrase", PASS)])
}

#[test]
fn run_mount_env_applies_the_policy_when_the_passphrase_is_asked_for() {
    let m = Mount::new(&[("TOKEN", VALUE), ("OTHER", OTHER)]);
    // sh may run, and --env passes it TOKEN only.
    let policy = r#"{"commands": [{"argv": ["sh"], "files": ["TOKEN"], "secrets": ["TOKEN"], "env": true}]}"#;
    assert!(set_policy(&m.env, policy).status.success());
    let d = m.dir.to_str().unwrap();

    // A command the policy does not list: refused after the prompt,
    // with the message the cached path gives.
    let (code, out) = with_prompt(&m.env, &["run", "--mount", d, "--env", "--", "env"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("run policy of project app does not allow `env"),
        "{out}"
    );
    assert!(!out.contains("TOKEN=") && !out.contains("OTHER="), "{out}");
    assert!(!out.contains(std::str::from_utf8(VALUE).unwrap()), "{out}");

    // The allowed command gets only the secrets its rule lets --env pass.
    let (code, out) = with_prompt(
        &m.env,
        &[
            "run",
            "--mount",
            d,
            "--env",
            "--",
            "sh",
            "-c",
            "echo \"T=${TOKEN:-unset} O=${OTHER:-unset}\"",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("T=[hushfs:TOKEN] O=unset"), "{out}");
}

#[test]
fn the_control_socket_grants_only_the_connecting_process_itself() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let r = guards_py(&m, "grant_other");
    let err = r["grant"]["error"].as_str().unwrap_or("");
    assert!(err.contains("does not belong"), "{r}");
    assert_eq!(r["root"]["err"], "EACCES", "read without a grant: {r}");
    assert!(m.mount_status()["grants"].as_array().unwrap().is_empty());
}
