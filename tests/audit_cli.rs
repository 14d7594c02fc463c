//! The audit log as the CLI writes and reads it: every vault change is
//! recorded, no value ever reaches it, tampering is reported with its seq,
//! a log that cannot be written refuses changes, the keychain keeps the log
//! keyed while the vault is locked.

mod common;
use common::*;

use std::path::PathBuf;

use hushfs::audit::{self, Event, Options, Record};
use serde_json::Value;

fn log_path(e: &Env) -> PathBuf {
    let id = e.open().unwrap().id_hex();
    e.audit_dir().join(format!("{id}.log"))
}

fn entries(e: &Env) -> Vec<Value> {
    e.ok(&["audit", "show", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events(e: &Env) -> Vec<String> {
    entries(e)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_string())
        .collect()
}

fn lines(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(p: &std::path::Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

#[test]
fn every_vault_change_is_recorded_and_verifies() {
    let mut e = Env::new();
    e.set("app/A", b"1");
    e.set("app/A", b"1");
    e.set("app/B", b"2");
    e.ok(&["rm", "app/B"]);
    let env_file = e.path("x.env");
    std::fs::write(&env_file, "K1=v1\nK2=v2\n").unwrap();
    e.ok(&["import", "app", env_file.to_str().unwrap()]);
    e.pass_file = e.passwd("another long passphrase");
    e.ok(&["rekey"]);
    // A failed command records nothing.
    assert_eq!(e.run(&["rm", "app/NOPE"]).status.code(), Some(1));
    assert_eq!(
        events(&e),
        [
            "init", "set", "set", "set", "rm", "import", "passwd", "rekey"
        ]
    );
    let all = entries(&e);
    assert_eq!(all[2]["reason"], "unchanged");
    assert_eq!(all[4]["project"], "app");
    assert_eq!(all[4]["secrets"], serde_json::json!(["B"]));
    assert_eq!(all[5]["secrets"], serde_json::json!(["K1", "K2"]));
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v["seq"], i as u64);
        assert!(v["pid"].as_u64().unwrap() > 0);
        assert!(v["uid"].is_u64() && v["start_time"].is_u64());
        assert!(v["exe"].as_str().unwrap().ends_with("hushfs"));
        assert!(
            v["cmdline"]
                .as_str()
                .unwrap()
                .contains(&v["event"].as_str().unwrap().replace('-', " "))
        );
    }
    // rekey starts a second key epoch; verify walks back through it.
    assert_eq!(all[7]["epoch"], 7);
    let out = e.ok(&["audit", "verify"]);
    assert!(
        out.contains("8 verified") && out.contains("2 key epochs"),
        "{out}"
    );
    assert!(out.contains("the vault header (seq 7): matches"), "{out}");
    assert!(out.contains("result:   OK"), "{out}");

    let st: Value = serde_json::from_str(&e.ok(&["status", "--json"])).unwrap();
    assert_eq!(st["audit"]["head_seq"], 7);
    assert_eq!(st["audit"]["vault_anchor_seq"], 7);
    assert_eq!(st["audit"]["health"], "ok");
    let text = e.ok(&["status"]);
    assert!(
        text.contains("8 entries, head seq 7") && text.contains("health:   ok"),
        "{text}"
    );
}

#[test]
fn policy_and_source_changes_are_recorded() {
    let e = Env::new();
    e.set("app/A", b"1");
    // Run policies and sources live in the vault too: who widened a policy
    // or pointed a project at another server is in the log.
    let o = e.run_stdin(
        &["policy", "set", "app"],
        br#"{"commands": [{"argv": ["cat"], "files": ["A"]}]}"#,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    e.ok(&["policy", "clear", "app"]);
    e.ok(&[
        "source",
        "set",
        "app",
        "--openbao",
        "https://127.0.0.1:1",
        "--path",
        "secret/app",
    ]);
    e.ok(&["source", "clear", "app"]);

    assert_eq!(
        events(&e),
        [
            "init",
            "set",
            "policy-set",
            "policy-clear",
            "source-set",
            "source-clear"
        ]
    );
    let all = entries(&e);
    for v in &all[2..] {
        assert_eq!(v["project"], "app");
        assert!(
            v["cmdline"]
                .as_str()
                .unwrap()
                .contains(&v["event"].as_str().unwrap().replace('-', " "))
        );
    }
    assert!(all[4]["reason"].as_str().unwrap().contains("127.0.0.1"));
    assert!(e.ok(&["audit", "verify"]).contains("result:   OK"));
}

fn encodings(v: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        v.to_vec(),
        hex.into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(v)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(v)
            .into_bytes(),
    ]
}

fn files_under(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        let p = ent.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn canary_values_never_reach_the_log() {
    let e = Env::new();
    let canaries: [&[u8]; 4] = [
        b"canary-stdin-8c1f0d",
        b"canary-file-77aa93",
        b"canary-import-5e21b4",
        b"canary-multi-line\ncontinued-4410",
    ];
    e.set("app/STDIN", canaries[0]);
    let f = e.path("val");
    std::fs::write(&f, canaries[1]).unwrap();
    e.ok(&["set", "app/FILE", "--from-file", f.to_str().unwrap()]);
    let env_file = e.path("import.env");
    std::fs::write(
        &env_file,
        "IMPORTED=canary-import-5e21b4\nMULTI=\"canary-multi-line\ncontinued-4410\"\n",
    )
    .unwrap();
    e.ok(&["import", "app", env_file.to_str().unwrap()]);
    e.ok(&["rm", "app/STDIN"]);
    e.ok(&["rekey"]);
    assert_eq!(e.value("app", "IMPORTED").unwrap(), canaries[2]);

    let mut files = Vec::new();
    files_under(&e.path("state"), &mut files);
    files_under(&e.path("run"), &mut files);
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "log"))
    );
    let mut outputs = vec![
        e.ok(&["audit", "show"]).into_bytes(),
        e.ok(&["audit", "show", "--json"]).into_bytes(),
        e.ok(&["audit", "verify"]).into_bytes(),
        e.ok(&["status", "--json"]).into_bytes(),
    ];
    for p in &files {
        outputs.push(std::fs::read(p).unwrap());
    }
    for c in canaries {
        for enc in encodings(c) {
            for o in &outputs {
                assert!(!contains(o, &enc), "a value reached the audit trail");
            }
        }
        // Each line of a multi-line value on its own, too.
        for part in c.split(|&b| b == b'\n') {
            assert!(outputs.iter().all(|o| !contains(o, part)));
        }
    }
}

#[test]
fn show_filters_and_json() {
    let e = Env::new();
    let mut w = e.audit_writer(u64::MAX);
    let ev = |event: &str, decision: &str, pid: u32, project: &str, secrets: &[&str]| Event {
        event: event.into(),
        decision: Some(decision.into()),
        project: Some(project.into()),
        file: Some(".env".into()),
        secrets: secrets.iter().map(|s| s.to_string()).collect(),
        pid: Some(pid),
        tgid: Some(pid),
        uid: Some(1000),
        exe: Some(format!("/usr/bin/tool{pid}")),
        ..Event::default()
    };
    let old = Record {
        time: "2020-01-01T00:00:00.000000Z".into(),
        ev: ev("open", "deny", 11, "app", &["DB_PASSWORD"]),
    };
    w.append(&[
        old,
        Record::now(ev("open", "allow", 22, "app", &["DB_PASSWORD", "API_KEY"])),
        Record::now(ev("read", "allow", 22, "app", &["DB_PASSWORD", "API_KEY"])),
        Record::now(ev("open", "deny", 33, "other", &["API_KEY"])),
    ])
    .unwrap();

    let seqs = |args: &[&str]| e.audit_seqs(args);
    assert_eq!(seqs(&[]), [0, 1, 2, 3, 4]);
    assert_eq!(seqs(&["--denied"]), [1, 4]);
    assert_eq!(seqs(&["--pid", "22"]), [2, 3]);
    assert_eq!(seqs(&["--secret", "API_KEY"]), [2, 3, 4]);
    assert_eq!(seqs(&["--secret", "other/API_KEY"]), [4]);
    assert_eq!(seqs(&["--secret", "app/DB_PASSWORD", "--denied"]), [1]);
    assert_eq!(seqs(&["--since", "1h"]), [0, 2, 3, 4]);
    assert_eq!(seqs(&["--since", "1h", "--denied"]), [4]);
    assert_eq!(seqs(&["--pid", "99"]), Vec::<u64>::new());

    // --json prints the log's own lines, mac included.
    let raw = lines(&log_path(&e));
    let shown: Vec<String> = e
        .ok(&["audit", "show", "--json"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(shown, raw);

    let table = e.ok(&["audit", "show", "--denied"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("PROCESS"),
        "{table}"
    );
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[1].starts_with("2020-01-01T00:00:00Z  deny") && rows[1].contains("tool11[11]"));
    assert!(
        rows[2].contains("tool33[33]") && rows[2].contains(".env"),
        "{table}"
    );

    // A clap usage error (several lines, like every argument error).
    let o = e.run(&["audit", "show", "--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither a duration"));
}

#[test]
fn an_unwritable_log_refuses_changes_and_status_says_why() {
    let e = Env::new();
    e.set("p/A", b"1");
    let log = log_path(&e);
    let aside = log.with_extension("aside");
    std::fs::rename(&log, &aside).unwrap();
    // A directory where the log should be: no writer can open it (root
    // included), the state a full or read-only disk also produces.
    std::fs::create_dir(&log).unwrap();

    let o = e.run_stdin(&["set", "p/B", "--raw"], b"2");
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(
        msg.contains("refused") && msg.contains("audit log"),
        "{msg}"
    );
    assert!(e.value("p", "B").is_none(), "the change was made anyway");
    let o = e.run(&["rm", "p/A"]);
    assert_clean_failure(&o, 1, &[]);
    assert!(e.value("p", "A").is_some());

    let st: Value = serde_json::from_str(&e.ok(&["status", "--json"])).unwrap();
    let health = st["audit"]["health"].as_str().unwrap();
    assert!(
        health.starts_with("FAILING") && health.contains("Is a directory"),
        "{health}"
    );
    let text = e.ok(&["status"]);
    assert!(
        text.contains("FAILING") && text.contains("denied"),
        "{text}"
    );

    std::fs::remove_dir(&log).unwrap();
    std::fs::rename(&aside, &log).unwrap();
    e.set("p/B", b"2");
    assert_eq!(events(&e), ["init", "set", "set"]);
    e.ok(&["audit", "verify"]);
}

#[test]
fn tampering_is_reported_with_the_first_bad_seq() {
    let e = Env::new();
    for i in 0..5 {
        e.set(&format!("p/K{i}"), b"v");
    }
    let log = log_path(&e);
    let orig = lines(&log);
    assert_eq!(orig.len(), 6);

    let check = |expect_seq: u64| {
        let o = e.run(&["audit", "verify"]);
        let msg = assert_clean_failure(&o, 1, &[]);
        assert!(
            msg.contains(&format!("first bad seq {expect_seq}")),
            "{msg}"
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("TAMPERED"));
    };

    let mut edited = orig.clone();
    edited[2] = edited[2].replace("\"K1\"", "\"K9\"");
    write_lines(&log, &edited);
    check(2);

    let mut deleted = orig.clone();
    deleted.remove(3);
    write_lines(&log, &deleted);
    check(3);

    let mut reordered = orig.clone();
    reordered.swap(1, 2);
    write_lines(&log, &reordered);
    check(1);

    let mut inserted = orig.clone();
    inserted.insert(4, orig[4].clone());
    write_lines(&log, &inserted);
    check(5);

    // Cutting off the last entry: the header anchor (saved before that
    // entry was written) cannot see it, an anchor kept elsewhere can.
    write_lines(&log, &orig);
    let anchor = e.ok(&["audit", "anchor"]).trim().to_string();
    assert!(anchor.ends_with(&format!(
        ":5:{}",
        serde_json::from_str::<Value>(&orig[5]).unwrap()["mac"].as_str().unwrap()
    )));
    write_lines(&log, &orig[..5]);
    e.ok(&["audit", "verify"]);
    let o = e.run(&["audit", "verify", "--anchor", &anchor]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(
        msg.contains("first bad seq 5") && msg.contains("cut off"),
        "{msg}"
    );
    // Cutting off more than that, the vault header notices on its own.
    write_lines(&log, &orig[..3]);
    check(3);
    // Deleting the log altogether, too.
    std::fs::remove_file(&log).unwrap();
    check(0);
    // An anchor from another vault is a usage error.
    write_lines(&log, &orig);
    let other = format!("00000000000000000000000000000000:{}", &anchor[33..]);
    assert_clean_failure(&e.run(&["audit", "verify", "--anchor", &other]), 2, &[]);
    e.ok(&["audit", "verify", "--anchor", &anchor]);
}

#[test]
fn a_torn_last_line_is_incomplete_until_the_next_write() {
    let e = Env::new();
    e.set("p/A", b"1");
    let log = log_path(&e);
    let mut data = std::fs::read(&log).unwrap();
    data.extend_from_slice(b"{\"seq\":2,\"time\":\"2026-");
    std::fs::write(&log, &data).unwrap();
    let o = e.run(&["audit", "verify"]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("incomplete"), "{msg}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("INCOMPLETE") && !out.contains("TAMPERED"),
        "{out}"
    );
    // show skips the torn line.
    assert_eq!(events(&e), ["init", "set"]);

    e.set("p/B", b"2");
    let out = e.ok(&["audit", "verify"]);
    assert!(
        out.contains("torn by an interrupted write") && out.contains("OK"),
        "{out}"
    );
    assert_eq!(events(&e), ["init", "set", "recover", "set"]);
}

#[test]
fn a_failed_append_leaves_no_partial_line() {
    use std::os::unix::process::CommandExt;
    let e = Env::new();
    for i in 0..3 {
        e.set(&format!("p/K{i}"), b"v");
    }
    let log = log_path(&e);
    let before = std::fs::read(&log).unwrap();
    // A file size limit that lets the vault (a few hundred bytes) be saved
    // but stops the audit line halfway: write(2) comes back short, then
    // fails with EFBIG, as on a disk that fills up mid-write.
    let limit = before.len() as u64 + 100;
    let mut cmd = e.cmd(&["set", "p/LATE", "--raw"]);
    // SAFETY: between fork and exec the closure calls only async-signal-safe
    // functions (signal, setrlimit) on plain values.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("could not record"), "{msg}");
    // The short write was taken back: the log is exactly as before.
    assert_eq!(std::fs::read(&log).unwrap(), before);
    e.ok(&["audit", "verify"]);
    e.set("p/AFTER", b"x");
    e.ok(&["audit", "verify"]);
}

#[test]
fn the_keychain_keeps_the_log_keyed_while_locked() {
    let mut e = Env::new();
    e.keychain = true;
    let id = e.open().unwrap().header.vault_id;
    e.ok(&["unlock", "--ttl", "10m"]);
    e.set("p/A", b"1");
    e.ok(&["lock"]);
    // No data key anywhere now: the keychain's audit state keys the log.
    let no_pass = |args: &[&str]| {
        e.cmd(args)
            .env_remove("HUSHFS_PASSPHRASE_FILE")
            .output()
            .unwrap()
    };
    let o = no_pass(&["lock"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A process the agent did not start has no copy of the state: it
    // cannot continue the chain without the data key.
    {
        let log = audit::AuditLog::open(
            &id,
            None,
            audit::SinkOptions {
                log: Options {
                    dir: e.audit_dir(),
                    ..Options::default()
                },
                runtime_dir: e.path("run/hushfs"),
                ..audit::SinkOptions::default()
            },
        );
        assert!(log.is_err(), "a process outside the agent keyed the log");
        assert!(audit::keychain_anchor(&id).is_none());
    }
    assert_eq!(events(&e), ["init", "unlock", "set", "lock", "lock"]);
    // The anchor comes from the agent's copy, without a passphrase.
    let o = no_pass(&["audit", "anchor"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(":4:"));
    // `unlock` itself (seq 5) is written by the caller, before the agent
    // has the key: the agent's copy still says 4, and matches.
    e.ok(&["unlock"]);
    let out = e.ok(&["audit", "verify"]);
    assert!(out.contains("the keychain (seq 4): matches"), "{out}");
}

/// Every scan is recorded with how many values it found, never which or
/// the input: repeated guessing through `scan` shows up in the log.
#[test]
fn scans_are_recorded_without_what_they_found() {
    let e = Env::new();
    e.set("p/TOKEN", b"scan-audit-value-123");
    let o = e.run_stdin(&["scan", "-"], b"x scan-audit-value-123 y\n");
    assert_eq!(o.status.code(), Some(1));
    let o = e.run_stdin(&["scan", "-"], b"nothing here\n");
    assert_eq!(o.status.code(), Some(0));
    let scans: Vec<serde_json::Value> = entries(&e)
        .into_iter()
        .filter(|v| v["event"] == "scan")
        .collect();
    assert_eq!(scans.len(), 2, "{scans:?}");
    assert!(
        scans[0]["reason"]
            .as_str()
            .unwrap()
            .contains("1 managed value(s)")
    );
    assert!(
        scans[1]["reason"]
            .as_str()
            .unwrap()
            .contains("0 managed value(s)")
    );
    let log = std::fs::read_to_string(e.audit_dir().join(format!(
        "{}.log",
        hushfs::audit::chain::hex(&e.open().unwrap().header.vault_id)
    )))
    .unwrap();
    assert!(!log.contains("scan-audit-value"), "{log}");
}
