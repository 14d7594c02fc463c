//! Command lines that hold a value: the audit log, the grant and the
//! daemon's log keep them only redacted, also after the value changes.

mod common;
use common::mount::*;
use common::*;

use std::time::{Duration, Instant};

use base64::Engine;

const VALUE: &[u8] = b"argv-secret-Zq81xK";
const ROTATED: &[u8] = b"argv-rotated-Yw22pL";

/// Everything in the test environment's audit logs.
fn audit_bytes(m: &Mount) -> Vec<u8> {
    let mut logs = Vec::new();
    for e in std::fs::read_dir(m.env.audit_dir()).unwrap().flatten() {
        logs.extend(std::fs::read(e.path()).unwrap());
    }
    logs
}

/// `hushfs run --mount DIR -- sh -c SCRIPT`: sh itself opens and reads
/// TOKEN, and `value` (raw and base64) is in sh's own argv and in the
/// command line `run` sends as the grant's label.
fn read_with_value_in_argv(m: &Mount, value: &[u8]) -> std::process::Output {
    let v = std::str::from_utf8(value).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let script = format!(
        "while read -r l; do :; done < '{}'; : {v} {b64}",
        m.path("TOKEN")
    );
    m.run_redacted(&["sh", "-c", &script])
}

fn assert_redacted(m: &Mount, value: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let logs = audit_bytes(m);
    assert!(!contains(&logs, value), "a value reached the audit log");
    assert!(
        !contains(&logs, b64.as_bytes()),
        "base64 of a value reached the audit log"
    );
    let daemon_log = std::fs::read(m.mount_status()["log"].as_str().unwrap()).unwrap();
    assert!(
        !contains(&daemon_log, value),
        "a value reached the daemon's log"
    );
    assert!(
        contains(&daemon_log, b"[hushfs:TOKEN]"),
        "{}",
        String::from_utf8_lossy(&daemon_log)
    );
    let status = serde_json::to_vec(&m.status()).unwrap();
    assert!(!contains(&status, value), "a value is in status");
}

#[test]
fn command_lines_with_values_are_recorded_redacted() {
    let m = Mount::new(&[("TOKEN", VALUE)]);
    let o = read_with_value_in_argv(&m, VALUE);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let shown = m.env.ok(&["audit", "show", "--json"]);
    let events: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The reads by sh: its command line, the value taken out.
    let read = events
        .iter()
        .find(|e| e["event"] == "open" && e["decision"] == "allow" && e["file"] == "TOKEN")
        .unwrap_or_else(|| panic!("an allowed open: {shown}"));
    let cmdline = read["cmdline"].as_str().unwrap();
    assert!(
        cmdline.starts_with("sh -c ") && cmdline.matches("[hushfs:TOKEN]").count() == 2,
        "{read}"
    );
    // The grant: run's command line and the label it sent.
    let run = events
        .iter()
        .find(|e| e["event"] == "run")
        .unwrap_or_else(|| panic!("a run event: {shown}"));
    assert!(
        run["reason"].as_str().unwrap().contains("[hushfs:TOKEN]"),
        "{run}"
    );
    assert!(
        run["cmdline"].as_str().unwrap().contains("[hushfs:TOKEN]"),
        "{run}"
    );
    assert_redacted(&m, VALUE);
    let logs = audit_bytes(&m);
    assert!(
        contains(&logs, b"[hushfs:"),
        "the audit log is searched as stored"
    );

    // A new value: the daemon serves it and redacts it from then on.
    m.env.set(&format!("{PROJECT}/TOKEN"), ROTATED);
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.run(&["cat", &m.path("TOKEN")]).stdout != ROTATED {
        assert!(Instant::now() < deadline, "the daemon did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = read_with_value_in_argv(&m, ROTATED);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_redacted(&m, ROTATED);
    let o = m.env.run(&["audit", "verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
