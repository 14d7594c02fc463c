//! The audit pieces together: writer → files → verify, and what each kind
//! of tampering looks like to verify. No CLI, no Argon2, no keychain.

use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;

use super::chain::{self, Entry, VaultId};
use super::verify::{self, Report, Verdict};
use super::*;
use crate::secret::Key32;

struct T {
    _dir: tempfile::TempDir,
    id: VaultId,
    key: Key32,
    opts: Options,
}

impl T {
    fn new() -> T {
        T::with_max(u64::MAX)
    }

    fn with_max(max_bytes: u64) -> T {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            dir: dir.path().join("state/audit"),
            max_bytes,
            keychain: false,
        };
        T {
            _dir: dir,
            id: crate::sys::random::array(),
            key: Key32::random(),
            opts,
        }
    }

    fn writer(&self) -> Writer {
        Writer::open(&self.id, Some(&self.key), &self.opts).unwrap()
    }

    fn files(&self) -> Files {
        Files::new(&self.opts.dir, &self.id)
    }

    fn active(&self) -> PathBuf {
        self.files().active()
    }

    /// Writes `n` events in batches of `batch`.
    fn write(&self, n: u32, batch: u32) -> Anchor {
        let mut w = self.writer();
        let mut head = None;
        let mut i = 0;
        while i < n {
            let recs: Vec<Record> = (i..(i + batch).min(n)).map(deny).collect();
            head = Some(w.append(&recs).unwrap());
            i += batch;
        }
        head.unwrap()
    }

    fn verify_with(&self, key: &Key32, anchors: &[(String, Anchor)]) -> Report {
        verify::verify(&self.id, key, &self.files(), anchors).unwrap()
    }

    fn verify(&self) -> Report {
        self.verify_with(&self.key, &[])
    }

    fn lines(&self) -> Vec<Vec<u8>> {
        let data = std::fs::read(self.active()).unwrap();
        query::lines(&data).map(|l| l.to_vec()).collect()
    }

    fn set_lines(&self, lines: &[Vec<u8>]) {
        let mut data = Vec::new();
        for l in lines {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        std::fs::write(self.active(), data).unwrap();
    }
}

fn deny(i: u32) -> Record {
    Record::now(Event {
        event: "open".into(),
        decision: Some("deny".into()),
        reason: Some("not in an authorized tree".into()),
        project: Some("app".into()),
        file: Some(".env".into()),
        secrets: vec!["DB_PASSWORD".into()],
        pid: Some(1000 + i),
        tgid: Some(1000 + i),
        uid: Some(1000),
        exe: Some("/usr/bin/cat".into()),
        ..Event::default()
    })
}

fn tampered_at(r: &Report) -> u64 {
    assert_eq!(r.verdict(), Verdict::Tampered, "{}", verify::describe(r));
    r.problem.as_ref().unwrap().seq
}

fn intact(r: &Report) {
    assert_eq!(r.verdict(), Verdict::Intact, "{}", verify::describe(r));
}

#[test]
fn an_untouched_log_verifies() {
    let t = T::new();
    let head = t.write(50, 7);
    let r = t.verify();
    intact(&r);
    assert_eq!(r.entries, 50);
    assert_eq!(r.head, Some(head));
    assert_eq!(head.seq, 49);
    // Every line is complete JSON with the promised fields.
    for (i, l) in t.lines().iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(l).unwrap();
        assert_eq!(v["seq"], i as u64);
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["mac"].as_str().unwrap().len(), 64);
    }
}

#[test]
fn editing_any_entry_is_found_at_its_seq() {
    let t = T::new();
    t.write(20, 5);
    let orig = t.lines();
    for seq in [0usize, 1, 9, 19] {
        let mut lines = orig.clone();
        let s = String::from_utf8(lines[seq].clone()).unwrap();
        // A plausible edit: the denial becomes an allow.
        lines[seq] = s.replace("\"deny\"", "\"allow\"").into_bytes();
        t.set_lines(&lines);
        assert_eq!(tampered_at(&t.verify()), seq as u64);
    }
    // Changing the stored mac, or the prev link, is found too.
    let mut lines = orig.clone();
    let n = lines[5].len();
    lines[5][n - 3] = if lines[5][n - 3] == b'0' { b'1' } else { b'0' };
    t.set_lines(&lines);
    assert_eq!(tampered_at(&t.verify()), 5);
    let mut lines = orig.clone();
    let s = String::from_utf8(lines[6].clone()).unwrap();
    let prev = serde_json::from_slice::<Entry>(&lines[6]).unwrap().prev;
    lines[6] = s.replace(&prev, &chain::hex(&[0; 32])).into_bytes();
    t.set_lines(&lines);
    assert_eq!(tampered_at(&t.verify()), 6);
    t.set_lines(&orig);
    intact(&t.verify());
}

#[test]
fn deletion_reordering_and_insertion_are_found() {
    let t = T::new();
    t.write(12, 4);
    let orig = t.lines();

    let mut del = orig.clone();
    del.remove(4);
    t.set_lines(&del);
    let r = t.verify();
    assert_eq!(tampered_at(&r), 4);
    assert!(r.problem.unwrap().what.contains("deleted"));

    let mut swap = orig.clone();
    swap.swap(3, 7);
    t.set_lines(&swap);
    assert_eq!(tampered_at(&t.verify()), 3);

    let mut dup = orig.clone();
    dup.insert(6, orig[5].clone());
    t.set_lines(&dup);
    assert_eq!(tampered_at(&t.verify()), 6);

    // A forged entry with a well-formed mac under a key the forger made up.
    let mut forged = orig.clone();
    let mut e: Entry = serde_json::from_slice(&orig[8]).unwrap();
    e.ev.decision = Some("allow".into());
    let c = e.canonical();
    let line = chain::seal_line(&c, &chain::entry_mac(&Key32::random(), &c));
    forged[8] = line[..line.len() - 1].to_vec();
    t.set_lines(&forged);
    assert_eq!(tampered_at(&t.verify()), 8);

    // Deleting the first entries is found even though the rest links up.
    t.set_lines(&orig[3..]);
    assert_eq!(tampered_at(&t.verify()), 0);

    // A line that is not JSON at all.
    let mut junk = orig.clone();
    junk.insert(2, b"hello".to_vec());
    t.set_lines(&junk);
    assert_eq!(tampered_at(&t.verify()), 2);
}

#[test]
fn truncation_needs_the_anchor() {
    let t = T::new();
    let head = t.write(10, 3);
    let orig = t.lines();
    let anchors = [("test".to_string(), head)];
    intact(&t.verify_with(&t.key, &anchors));

    // Without an anchor, cutting the newest entries off leaves a valid
    // chain: that is why the anchor exists.
    t.set_lines(&orig[..7]);
    intact(&t.verify());
    let r = t.verify_with(&t.key, &anchors);
    assert_eq!(tampered_at(&r), 7);
    assert!(r.problem.unwrap().what.contains("cut off"));

    // An anchor whose mac differs from the entry at its seq.
    t.set_lines(&orig);
    let wrong = [(
        "test".to_string(),
        Anchor {
            seq: 4,
            mac: [9; 32],
        },
    )];
    assert_eq!(tampered_at(&t.verify_with(&t.key, &wrong)), 4);

    // The whole log deleted.
    std::fs::remove_file(t.active()).unwrap();
    assert_eq!(tampered_at(&t.verify_with(&t.key, &anchors)), 0);
    // ...while a vault that never logged anything is simply empty.
    let fresh = T::new();
    intact(&fresh.verify());
}

#[test]
fn genesis_binds_the_vault() {
    let a = T::new();
    a.write(3, 3);
    // The same data key under another vault id: a different chain.
    let b = T {
        id: [0x42; 16],
        key: a.key.clone(),
        ..T::new()
    };
    std::fs::create_dir_all(&b.opts.dir).unwrap();
    std::fs::copy(a.active(), b.active()).unwrap();
    assert_eq!(tampered_at(&b.verify()), 0);
    // And another vault's key cannot verify it.
    assert_eq!(tampered_at(&a.verify_with(&Key32::random(), &[])), 0);
}

#[test]
fn a_torn_last_line_is_incomplete_then_recovered() {
    let t = T::new();
    t.write(5, 5);
    let full = std::fs::read(t.active()).unwrap();
    // A crash in the middle of writing entry 5.
    let mut w = t.writer();
    w.append(&[deny(5)]).unwrap();
    let longer = std::fs::read(t.active()).unwrap();
    let cut = full.len() + (longer.len() - full.len()) / 2;
    std::fs::write(t.active(), &longer[..cut]).unwrap();
    let r = t.verify();
    assert_eq!(r.verdict(), Verdict::Incomplete, "{}", verify::describe(&r));
    assert_eq!(r.entries, 5);
    assert!(verify::describe(&r).contains("INCOMPLETE"));

    // The next writer keeps the torn bytes and accounts for them.
    let mut w2 = t.writer();
    w2.append(&[deny(6)]).unwrap();
    let r = t.verify();
    intact(&r);
    assert_eq!(r.recovered, vec![5]);
    let lines = t.lines();
    assert_eq!(
        lines[5],
        longer[full.len()..cut].to_vec(),
        "torn bytes kept"
    );

    // Altering the kept torn bytes is tampering.
    let mut bad = lines.clone();
    bad[5][3] ^= 1;
    t.set_lines(&bad);
    tampered_at(&t.verify());
    // So is removing them.
    let mut gone = lines.clone();
    gone.remove(5);
    t.set_lines(&gone);
    assert_eq!(tampered_at(&t.verify()), 5);
}

#[test]
fn a_torn_line_missing_only_its_newline_is_recovered() {
    let t = T::new();
    t.write(3, 3);
    let data = std::fs::read(t.active()).unwrap();
    std::fs::write(t.active(), &data[..data.len() - 1]).unwrap();
    assert_eq!(t.verify().verdict(), Verdict::Incomplete);
    t.writer().append(&[deny(9)]).unwrap();
    let r = t.verify();
    intact(&r);
    // The complete-looking entry 2 was never acknowledged: it stays as the
    // torn line and the recover entry takes seq 2.
    assert_eq!(r.recovered, vec![2]);
}

#[test]
fn writers_take_turns_on_one_chain() {
    let t = T::new();
    let mut a = t.writer();
    let mut b = t.writer();
    for i in 0..20 {
        let w = if i % 3 == 0 { &mut b } else { &mut a };
        w.append(&[deny(i), deny(i + 100)]).unwrap();
    }
    let r = t.verify();
    intact(&r);
    assert_eq!(r.entries, 40);
}

#[test]
fn concurrent_writers_never_interleave() {
    let t = T::new();
    std::thread::scope(|s| {
        for k in 0..4u32 {
            let t = &t;
            s.spawn(move || {
                let mut w = t.writer();
                for i in 0..25 {
                    let recs: Vec<Record> = (0..4).map(|j| deny(k * 1000 + i * 10 + j)).collect();
                    w.append(&recs).unwrap();
                }
            });
        }
    });
    let r = t.verify();
    intact(&r);
    assert_eq!(r.entries, 400);
    let mut pids: Vec<u64> = t
        .lines()
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["pid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 400, "every event exactly once");
}

#[test]
fn rotation_keeps_the_chain() {
    let t = T::with_max(4096);
    let head = t.write(200, 9);
    let files = t.files().all().unwrap();
    assert!(files.len() > 5, "{files:?}");
    let r = t.verify_with(&t.key, &[("test".into(), head)]);
    intact(&r);
    assert_eq!(r.entries, 200);
    assert_eq!(r.files.len(), files.len());
    // Each rotated file is named after its first seq and holds whole lines.
    for f in &files[..files.len() - 1] {
        let first = f
            .extension()
            .unwrap()
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap();
        let data = std::fs::read(f).unwrap();
        assert_eq!(*data.last().unwrap(), b'\n');
        let e: Entry = serde_json::from_slice(query::lines(&data).next().unwrap()).unwrap();
        assert_eq!(e.seq, first);
    }
    // A rotated file removed from the middle is found.
    std::fs::remove_file(&files[2]).unwrap();
    tampered_at(&t.verify());
}

#[test]
fn rekey_starts_an_epoch_that_verify_can_walk_back() {
    let t = T::new();
    t.write(5, 5);
    let k1 = t.key.clone();
    let k2 = Key32::random();
    let k3 = Key32::random();
    let mut w = t.writer();
    w.start_epoch(&deny(50), &k1, &k2).unwrap();
    w.append(&[deny(51), deny(52)]).unwrap();
    // A writer that only holds the new data key picks the chain up.
    let mut w2 = Writer::open(&t.id, Some(&k2), &t.opts).unwrap();
    w2.append(&[deny(53)]).unwrap();
    w2.start_epoch(&deny(60), &k2, &k3).unwrap();
    // ...and one with the old key no longer can.
    assert!(Writer::open(&t.id, Some(&k1), &t.opts).is_err());
    // A rekey with the wrong "current" key is refused.
    assert!(w2.start_epoch(&deny(61), &k1, &k2).is_err());
    w2.append(&[deny(62)]).unwrap();

    let r = t.verify_with(&k3, &[]);
    intact(&r);
    assert_eq!(r.entries, 11);
    assert_eq!(r.epochs, 3);
    // The old keys cannot vouch for the newest epochs.
    assert_eq!(tampered_at(&t.verify_with(&k2, &[])), 9);
    assert_eq!(tampered_at(&t.verify_with(&k1, &[])), 5);

    // A failed save moves the chain back to the old key: still one chain.
    w2.start_epoch(&deny(70), &k3, &k2).unwrap();
    w2.append(&[deny(71)]).unwrap();
    intact(&t.verify_with(&k2, &[]));
}

#[test]
fn without_a_key_nothing_is_written() {
    let t = T::new();
    let err = Writer::open(&t.id, None, &t.opts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no key"), "{err}");
    t.write(3, 3);
    assert!(Writer::open(&t.id, None, &t.opts).is_err());
    // A head that does not authenticate stops a writer that only has the
    // data key (it cannot tell where the real chain ends).
    let mut lines = t.lines();
    lines.push(b"{\"seq\":3}".to_vec());
    t.set_lines(&lines);
    let err = Writer::open(&t.id, Some(&t.key), &t.opts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not an entry"), "{err}");
}

#[test]
fn a_writer_that_finds_entries_missing_says_so_in_the_chain() {
    let t = T::new();
    let mut w = t.writer();
    w.append(&(0..10).map(deny).collect::<Vec<_>>()).unwrap();
    let lines = t.lines();
    t.set_lines(&lines[..6]);
    // The writer still holds K_10: it continues at seq 10 and notes the gap.
    w.append(&[deny(10)]).unwrap();
    let after = t.lines();
    let note: Entry = serde_json::from_slice(&after[6]).unwrap();
    assert_eq!(note.seq, 10);
    assert_eq!(note.ev.event, "audit-gap");
    let r = t.verify();
    assert_eq!(tampered_at(&r), 6);
}

/// Rewrites entry `j` and everything after it with the best keys an
/// attacker holding `k_n` (the key for seq n) can derive: K_n, K_{n+1}, …
/// Returns whether verify accepted the forgery.
fn forge_below(t: &T, lines: &[Vec<u8>], j: usize, n: u64, k_n: &Key32) -> bool {
    let mut forged = lines.to_vec();
    let mut prev = chain::parse_line(&lines[j]).unwrap().entry.prev;
    let mut candidates = vec![k_n.clone()];
    for _ in 0..8 {
        let next = chain::evolve(candidates.last().unwrap());
        candidates.push(next);
    }
    for (i, l) in lines.iter().enumerate().skip(j) {
        let mut e = chain::parse_line(l).unwrap().entry;
        if i == j {
            e.ev.decision = Some("allow".into());
            e.ev.exe = Some("/usr/bin/innocent".into());
        }
        e.prev = prev.clone();
        let c = e.canonical();
        // Keys at or after n are the only ones the attacker has; before n
        // they can only guess one of those.
        let k = if (i as u64) >= n {
            chain::evolve_n(k_n, i as u64 - n)
        } else {
            candidates[i % candidates.len()].clone()
        };
        let mac = chain::entry_mac(&k, &c);
        let line = chain::seal_line(&c, &mac);
        forged[i] = line[..line.len() - 1].to_vec();
        prev = chain::hex(&mac);
    }
    t.set_lines(&forged);
    let ok = t.verify().verdict() == Verdict::Intact;
    t.set_lines(lines);
    ok
}

#[test]
fn forward_integrity_a_stolen_key_forges_nothing_before_it() {
    let t = T::new();
    let mut w = t.writer();
    w.append(&(0..12).map(deny).collect::<Vec<_>>()).unwrap();
    // What a thief of the writer's memory or keychain state gets: K_12.
    let k12 = w.state_for_tests().key.clone();
    assert_eq!(w.state_for_tests().next, 12);
    w.append(&(12..16).map(deny).collect::<Vec<_>>()).unwrap();
    let lines = t.lines();
    for j in 0..12 {
        assert!(
            !forge_below(&t, &lines, j, 12, &k12),
            "forged entry {j} with K_12"
        );
    }
    // The same procedure does work from seq 12 on (forward, not future,
    // integrity): the test can tell a forgery that passes.
    assert!(forge_below(&t, &lines, 12, 12, &k12));
    // And with K_0 (derivable from the data key) everything is forgeable:
    // K_0 never leaves the holder of the data key.
    let k0 = chain::epoch_root(&t.key, &t.id, 0);
    assert!(forge_below(&t, &lines, 3, 0, &k0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn no_key_after_n_equals_one_before(n in 1u64..40, j in 0u64..40, ahead in 0u64..40) {
        let j = j % n;
        let root = chain::epoch_root(&Key32::from_bytes([3; 32]), &[1; 16], 0);
        let k_j = chain::evolve_n(&root, j);
        let from_n = chain::evolve_n(&root, n + ahead);
        prop_assert_ne!(k_j.expose(), from_n.expose());
    }
}

#[test]
fn every_field_is_capped() {
    let t = T::new();
    let mut w = t.writer();
    let huge = Event {
        event: "open".into(),
        cmdline: Some("A".repeat(1 << 20)),
        exe: Some("/x".repeat(1 << 16)),
        secrets: (0..10_000).map(|i| format!("S{i}")).collect(),
        ..Event::default()
    };
    w.append(&[Record::now(huge)]).unwrap();
    let line = &t.lines()[0];
    assert!(line.len() < 64 * 1024, "{}", line.len());
    intact(&t.verify());
}

fn sink(t: &T, interval_ms: u64) -> AuditLog {
    AuditLog::open(
        &t.id,
        Some(&t.key),
        SinkOptions {
            log: t.opts.clone(),
            flush_interval: Duration::from_millis(interval_ms),
            runtime_dir: t.opts.dir.with_file_name("run"),
            ..SinkOptions::default()
        },
    )
    .unwrap()
}

fn allow(i: u32) -> Event {
    let mut e = deny(i).ev;
    e.decision = Some("allow".into());
    e.reason = None;
    e.grant = Some("run 4242".into());
    e
}

#[test]
fn sink_allows_wait_for_the_log_denials_do_not() {
    let t = T::new();
    let log = sink(&t, 60_000);
    // A denial is queued, not written (the interval is a minute)...
    log.record(deny(1).ev).unwrap();
    assert!(t.lines().is_empty());
    // ...an allow returns only once it is in the log, with what was queued.
    log.record(allow(2)).unwrap();
    assert_eq!(t.lines().len(), 2);
    log.record(deny(3).ev).unwrap();
    // Dropping the sink writes the rest.
    drop(log);
    assert_eq!(t.lines().len(), 3);
    intact(&t.verify());
}

#[test]
fn a_burst_of_10000_denials_from_4_threads_is_recorded_intact() {
    let t = T::new();
    let log = sink(&t, 100);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for k in 0..4 {
            let log = &log;
            s.spawn(move || {
                for i in 0..2500 {
                    log.record(deny(k * 10_000 + i).ev).unwrap();
                }
            });
        }
    });
    let queued = t0.elapsed();
    log.flush().unwrap();
    eprintln!(
        "10,000 denials queued in {queued:?}, written by {:?}",
        t0.elapsed()
    );
    assert!(log.health().is_ok());
    drop(log);
    let r = t.verify();
    intact(&r);
    assert_eq!(r.entries, 10_000);
}

#[test]
fn unsynced_appends_are_visible_at_once_and_synced_later() {
    let t = T::new();
    let mut w = t.writer();
    w.append_unsynced(&[deny(1)]).unwrap();
    assert!(w.needs_sync());
    assert_eq!(t.lines().len(), 1, "readers see the line before the fsync");
    w.sync().unwrap();
    assert!(!w.needs_sync());
    w.append_unsynced(&[deny(2)]).unwrap();
    // Another writer (a CLI command) continues the chain meanwhile.
    t.writer().append(&[deny(3)]).unwrap();
    w.append_unsynced(&[deny(4)]).unwrap();
    drop(w);
    let r = t.verify();
    intact(&r);
    assert_eq!(r.entries, 4);
}

#[test]
fn two_hundred_sequential_allows_are_all_recorded() {
    let t = T::new();
    let log = sink(&t, 100);
    let t0 = std::time::Instant::now();
    for i in 0..200 {
        log.record(allow(i)).unwrap();
    }
    // Printed, not asserted: about the cost of a write(2) each, where an
    // fsync each would take milliseconds.
    eprintln!("200 sequential allows recorded in {:?}", t0.elapsed());
    drop(log);
    assert_eq!(t.verify().entries, 200);
}

/// Makes the log unwritable (its path becomes a directory); the returned
/// closure puts it back.
fn break_log(t: &T) -> impl FnOnce() {
    let active = t.active();
    let aside = active.with_extension("aside");
    std::fs::rename(&active, &aside).unwrap();
    std::fs::create_dir(&active).unwrap();
    move || {
        std::fs::remove_dir(&active).unwrap();
        std::fs::rename(&aside, &active).unwrap();
    }
}

#[test]
fn sink_fails_closed_and_recovers() {
    let t = T::new();
    let log = sink(&t, 20);
    log.record(allow(1)).unwrap();
    let repair = break_log(&t);
    let err = log.record(allow(2)).unwrap_err();
    assert!(err.contains("cannot"), "{err}");
    assert!(log.health().is_err());
    // Denials are still refused quietly; the sink says it is unhealthy.
    assert!(log.record(deny(3).ev).is_err());
    assert!(log.flush().is_err());
    // Fixed: the queued events are written, the refused allow as a denial.
    repair();
    log.record(allow(4)).unwrap();
    assert!(log.health().is_ok());
    drop(log);
    let lines = t.lines();
    let evs: Vec<Entry> = lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let pids: Vec<u32> = evs.iter().map(|e| e.ev.pid.unwrap()).collect();
    assert_eq!(pids, [1001, 1002, 1003, 1004]);
    assert_eq!(
        evs[1].ev.decision.as_deref(),
        Some("deny"),
        "the refused allow"
    );
    assert!(
        evs[1]
            .ev
            .reason
            .as_deref()
            .unwrap()
            .contains("could not record")
    );
    intact(&t.verify());
}

#[test]
fn sink_needs_a_key() {
    let t = T::new();
    let opts = SinkOptions {
        log: t.opts.clone(),
        runtime_dir: t.opts.dir.with_file_name("run"),
        ..SinkOptions::default()
    };
    assert!(AuditLog::open(&t.id, None, opts).is_err());
}

mod event {
    use super::*;

    #[test]
    fn bound_caps_every_field_on_char_boundaries() {
        let mut e = Event {
            event: "open".into(),
            cmdline: Some("é".repeat(5000)),
            exe: Some("x".repeat(10_000)),
            secrets: (0..1000).map(|i| format!("{i:0>100}")).collect(),
            ..Event::default()
        };
        e.bound();
        let c = e.cmdline.as_ref().unwrap();
        assert!(c.len() <= MAX_CMDLINE && c.ends_with('…'));
        assert!(e.exe.as_ref().unwrap().len() <= MAX_PATH);
        let names: usize = e.secrets.iter().map(|s| s.len()).sum();
        assert!(names <= MAX_NAMES + 64, "{names}");
        assert!(e.secrets.last().unwrap().contains("more"));
        let line = serde_json::to_vec(&e).unwrap();
        assert!(line.len() < 32 * 1024, "{}", line.len());
    }

    #[test]
    fn anchor_text_round_trip() {
        let id = [0xab; 16];
        let a = Anchor {
            seq: 42,
            mac: [7; 32],
        };
        assert_eq!(Anchor::parse(&a.to_text(&id), &id).unwrap(), a);
        assert_eq!(Anchor::from_bytes(&a.to_bytes()).unwrap(), a);
        assert!(Anchor::parse(&a.to_text(&id), &[0xac; 16]).is_err());
        assert!(Anchor::parse("1:2", &id).is_err());
    }

    #[test]
    fn this_process_facts() {
        let e = Event::for_this_process("set");
        assert_eq!(e.pid, Some(std::process::id()));
        assert!(e.start_time.unwrap() > 0);
        assert!(e.exe.is_some() && e.cmdline.is_some());
    }
}

#[test]
fn a_follow_up_refused_while_the_log_fails_is_logged_as_denied() {
    let t = T::new();
    let log = sink(&t, 20);
    log.record(allow(1)).unwrap();
    let repair = break_log(&t);
    assert!(log.record(allow(2)).is_err(), "the failure becomes known");
    // A read by the opener while the log is known to fail: refused, and
    // the line that is eventually written says so.
    assert!(log.record_follow_up(allow(3)).is_err());
    repair();
    log.record(allow(4)).unwrap();
    drop(log);
    let evs: Vec<Entry> = t
        .lines()
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let third = evs.iter().find(|e| e.ev.pid == Some(1003)).unwrap();
    assert_eq!(third.ev.decision.as_deref(), Some("deny"));
    intact(&t.verify());
}

/// The sink keeps the log lock across a burst of allows; another writer
/// (a CLI command) still gets in within a few ms, during the burst and
/// after it, and both chains of lines verify as one.
#[test]
fn another_writer_gets_in_while_the_sink_holds_the_lock() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let t = T::new();
    let log = Arc::new(sink(&t, 100));
    log.record(allow(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicU32::new(1));
    let busy = {
        let (log, stop, n) = (log.clone(), stop.clone(), n.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                log.record(allow(n.fetch_add(1, Ordering::Relaxed)))
                    .unwrap();
            }
        })
    };
    // The other writer runs on its own thread, so a lock never let go
    // fails the test (timeout) instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let (id, key, opts) = (t.id, t.key.clone(), t.opts.clone());
    let during = std::thread::spawn(move || {
        // Opening reads the head under the lock, too.
        let mut cli = Writer::open(&id, Some(&key), &opts).unwrap();
        for i in 0..5 {
            cli.append(&[deny(10_000 + i)]).unwrap();
        }
        tx.send(()).unwrap();
        cli
    });
    let got_in = rx.recv_timeout(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    assert!(got_in.is_ok(), "another writer waited > 5 s during a burst");
    let mut cli = during.join().unwrap();
    // Idle: the lock is let go within HOLD_IDLE.
    std::thread::sleep(Duration::from_millis(20));
    let t0 = std::time::Instant::now();
    cli.append(&[deny(20_000)]).unwrap();
    let idle = t0.elapsed();
    // Generous for a loaded CI machine; the hold is 1–10 ms.
    assert!(
        idle < Duration::from_millis(500),
        "waited {idle:?} after it"
    );
    drop(cli);
    let allows = u64::from(n.load(Ordering::Relaxed));
    drop(Arc::into_inner(log).expect("the only handle"));
    let r = t.verify();
    intact(&r);
    assert_eq!(r.entries, allows + 6);
}

/// `names_of` cuts a long list of names once, as `bound` would, and says
/// how many were left out; `bound` then keeps it as it is.
#[test]
fn names_of_a_huge_file_are_cut_once_and_counted() {
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("SERVICE_{i:05}_API_KEY"))
        .collect();
    let kept = Event::names_of(&names);
    let marker = kept.last().unwrap().clone();
    let listed = kept.len() - 1;
    assert_eq!(marker, format!("…(+{} more)", names.len() - listed));
    assert_eq!(kept[..listed], names[..listed]);
    let mut e = Event {
        secrets: kept.clone(),
        ..Event::default()
    };
    e.bound();
    assert_eq!(e.secrets, kept, "bound leaves names_of's cut alone");
    // A short list is copied whole, with no marker.
    assert_eq!(Event::names_of(&names[..3]), names[..3].to_vec());
}
