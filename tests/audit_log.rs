//! The log under load and over time: rotation followed by verify, `tail`
//! across rotations, CLI processes and library writers appending at once.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hushfs::audit::{Event, Record};
use serde_json::Value;

fn denial(pid: u32) -> Record {
    Record::now(Event {
        event: "read".into(),
        decision: Some("deny".into()),
        reason: Some("not in an authorized process tree".into()),
        project: Some("app".into()),
        file: Some("config/app.json".into()),
        secrets: vec!["DB_PASSWORD".into()],
        pid: Some(pid),
        tgid: Some(pid),
        exe: Some("/usr/bin/python3".into()),
        cmdline: Some("python3 agent.py --read-everything".into()),
        ..Event::default()
    })
}

#[test]
fn rotation_keeps_one_chain_that_verify_follows() {
    let e = Env::new();
    let mut w = e.audit_writer(8 * 1024);
    for b in 0..60 {
        let recs: Vec<Record> = (0..5).map(|i| denial(b * 10 + i)).collect();
        w.append(&recs).unwrap();
    }
    let rotated = w.files().rotated().unwrap();
    assert!(rotated.len() >= 5, "{rotated:?}");
    // A CLI write after the library's rotations continues the same chain.
    e.set("p/A", b"1");
    let out = e.ok(&["audit", "verify"]);
    assert!(out.contains("302 verified"), "{out}");
    assert!(
        out.contains(&format!("+{} rotated files", rotated.len())),
        "{out}"
    );
    assert_eq!(e.audit_seqs(&[]), (0..302).collect::<Vec<_>>());

    // The first entry of each file links to the last of the one before;
    // dropping a whole rotated file is found.
    std::fs::remove_file(&rotated[1]).unwrap();
    let o = e.run(&["audit", "verify"]);
    let msg = assert_clean_failure(&o, 1, &[]);
    assert!(msg.contains("deleted or reordered"), "{msg}");
}

#[test]
fn tail_follows_new_entries_across_rotation() {
    let e = Env::new();
    let mut child = e
        .cmd(&["audit", "tail", "--json", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let v: Value = serde_json::from_str(&line).unwrap();
            if tx.send(v["seq"].as_u64().unwrap()).is_err() {
                break;
            }
        }
    });
    // The init entry is the one line of history asked for.
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);

    let mut w = e.audit_writer(4 * 1024);
    let mut expect = Vec::new();
    for b in 0..24u32 {
        let recs: Vec<Record> = (0..4).map(|i| denial(b * 10 + i)).collect();
        let head = w.append(&recs).unwrap();
        expect.extend(head.seq - 3..=head.seq);
        // Some batches land while tail sleeps, some between its reads; the
        // last twelve in one burst, so several files rotate away between
        // two of its looks.
        let pause = match b {
            0..6 if b % 3 == 0 => 250,
            0..12 => 20,
            _ => 0,
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
    assert!(w.files().rotated().unwrap().len() >= 6);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.len() < expect.len() && Instant::now() < deadline {
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push(s);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, expect, "tail lost or repeated entries across rotation");
}

#[test]
fn cli_processes_and_library_writers_append_at_once() {
    let e = Env::new();
    let children: Vec<_> = (0..8)
        .map(|i| e.spawn_set(&format!("p/K{i}"), format!("value-{i}").as_bytes()))
        .collect();
    std::thread::scope(|s| {
        for k in 0..2u32 {
            let e = &e;
            s.spawn(move || {
                let mut w = e.audit_writer(u64::MAX);
                for b in 0..40 {
                    let recs: Vec<Record> =
                        (0..3).map(|i| denial(k * 10_000 + b * 10 + i)).collect();
                    w.append(&recs).unwrap();
                }
            });
        }
    });
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let n = 1 + 8 + 2 * 40 * 3;
    let out = e.ok(&["audit", "verify"]);
    assert!(out.contains(&format!("{n} verified")), "{out}");
    assert_eq!(e.audit_seqs(&[]), (0..n as u64).collect::<Vec<_>>());
    let sets = e
        .ok(&["audit", "show", "--json"])
        .matches("\"event\":\"set\"")
        .count();
    assert_eq!(sets, 8);
}
