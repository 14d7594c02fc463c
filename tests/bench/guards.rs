//! Sections 7–8: the scanner and redactor over 100 MiB with 1,000 secrets,
//! the latency redaction adds to a line of `hushfs run` output, and the
//! audit log: cost per recorded decision, a denial storm through the
//! mount, and `verify`/`show` over a million entries.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hushfs::audit::{AuditLog, AuditSink, Event, Files, Options, Record, SinkOptions, Writer};
use hushfs::audit::{query, verify};
use hushfs::scan::Matcher;
use hushfs::scan::stream::Redactor;
use hushfs::secret::Key32;

use crate::Effort;
use crate::setup::Bench;
use crate::stats::{Samples, Table, sig3, time};

/// splitmix64: a reproducible stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn secrets(n: usize) -> Vec<(String, String)> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = Rng(42);
    (0..n)
        .map(|i| {
            let len = 20 + r.below(28);
            let v: String = (0..len)
                .map(|_| ALNUM[r.below(ALNUM.len())] as char)
                .collect();
            (format!("KEY_{i:04}"), v)
        })
        .collect()
}

/// About `bytes` of log-like text; every 5,000th line carries a secret,
/// raw, base64 or hex. Returns the text and how many were planted.
fn corpus(bytes: usize, secrets: &[(String, String)]) -> (Vec<u8>, usize) {
    const WORDS: &[&str] = &[
        "request",
        "handled",
        "in",
        "ms",
        "user",
        "id",
        "GET",
        "/api/v1/items",
        "200",
        "cache",
        "miss",
        "for",
        "key",
        "retrying",
        "connection",
        "to",
        "db",
        "ok",
        "warn",
        "error",
        "timeout",
        "after",
        "worker",
        "started",
        "job",
        "queued",
        "done",
        "the",
    ];
    let mut r = Rng(7);
    let mut out = Vec::with_capacity(bytes + 256);
    let mut planted = 0;
    let mut line = 0u64;
    while out.len() < bytes {
        line += 1;
        out.extend_from_slice(format!("2026-12-02T10:00:{:02}Z INFO ", line % 60).as_bytes());
        for _ in 0..(8 + r.below(8)) {
            out.extend_from_slice(WORDS[r.below(WORDS.len())].as_bytes());
            out.push(b' ');
        }
        if line.is_multiple_of(5000) {
            let v = secrets[r.below(secrets.len())].1.as_bytes();
            let enc = match planted % 3 {
                0 => v.to_vec(),
                1 => base64::engine::general_purpose::STANDARD
                    .encode(v)
                    .into_bytes(),
                _ => v
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into_bytes(),
            };
            out.extend_from_slice(b"token=");
            out.extend_from_slice(&enc);
            planted += 1;
        }
        out.push(b'\n');
    }
    (out, planted)
}

/// The fastest of three runs of `f`, and what it returned.
fn best_of_3<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = f();
        best = best.min(t0.elapsed());
        out = Some(r);
    }
    (best, out.expect("ran three times"))
}

fn mb_s(bytes: usize, d: Duration) -> String {
    format!("{} MB/s", sig3(bytes as f64 / 1e6 / d.as_secs_f64()))
}

/// Section 7.
pub fn scanner(b: &Bench, e: Effort) {
    let size = if e.quick { 10 << 20 } else { 100 << 20 };
    let sec = secrets(1000);
    let (text, planted) = corpus(size, &sec);
    let mut t = Table::new(
        &format!(
            "7. scanner and redactor: 1,000 secrets, {} MiB of text",
            text.len() >> 20
        ),
        &["operation", "time", "throughput", "result"],
    );

    let t0 = Instant::now();
    let m = Arc::new(Matcher::new(
        sec.iter().map(|(k, v)| (k.clone(), v.as_bytes())),
    ));
    t.row(vec![
        "build the automaton (all encodings)".into(),
        time(t0.elapsed().as_nanos() as u64),
        "-".into(),
        format!("{} patterns, {} MiB", m.patterns(), m.memory_usage() >> 20),
    ]);

    let (best_scan, hits) = best_of_3(|| {
        let mut n = 0;
        m.find_each(&text, |_| {
            n += 1;
            true
        });
        n
    });
    t.row(vec![
        "scan (one pass, all hits; best of 3)".into(),
        time(best_scan.as_nanos() as u64),
        mb_s(text.len(), best_scan),
        format!("{hits} hits of {planted} planted"),
    ]);

    let (best_red, out_len) = best_of_3(|| {
        let mut r = Redactor::new(m.clone());
        let mut len = 0;
        for chunk in text.chunks(64 << 10) {
            len += r.push(chunk).len();
        }
        len + r.finish().len()
    });
    t.row(vec![
        "streaming redactor, 64 KiB chunks (best of 3)".into(),
        time(best_red.as_nanos() as u64),
        mb_s(text.len(), best_red),
        format!("{out_len} bytes out"),
    ]);

    // The CLI over a file, as a pre-commit hook would run it.
    let mut env = String::new();
    for (k, v) in &sec {
        env += &format!("{k}={v}\n");
    }
    b.import("scan1000", &env);
    let file = b.tmp.path().join("corpus.txt");
    std::fs::write(&file, &text).unwrap();
    let t0 = Instant::now();
    let o = b
        .hushfs(&["scan", "-p", "scan1000", file.to_str().unwrap()])
        .output()
        .unwrap();
    let dt = t0.elapsed();
    let reported = String::from_utf8_lossy(&o.stdout).lines().count();
    t.row(vec![
        "`hushfs scan -p scan1000 FILE` (whole command)".into(),
        time(dt.as_nanos() as u64),
        mb_s(text.len(), dt),
        format!(
            "exit {}, {reported} lines reported",
            o.status.code().unwrap_or(-1)
        ),
    ]);
    std::fs::remove_file(&file).unwrap();

    // Latency a line of output gains through run's redactor.
    let lines = e.n(1000);
    let lat = |redact: bool| {
        let exe = std::env::current_exe().unwrap();
        let n = lines.to_string();
        let mut args = vec!["run", "-p", "scan1000"];
        if !redact {
            args.push("--no-redact");
        }
        args.extend_from_slice(&["--", exe.to_str().unwrap(), "helper", "ticker", &n, "2000"]);
        let mut c = b.hushfs(&args).stdout(Stdio::piped()).spawn().unwrap();
        let mut s = Samples::default();
        for line in BufReader::new(c.stdout.take().unwrap()).lines() {
            let now = crate::mono_ns();
            let line = line.unwrap();
            if let Some(sent) = line
                .strip_prefix("tick ")
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
            {
                s.0.push(now.saturating_sub(sent));
            }
        }
        assert!(c.wait().unwrap().success());
        s
    };
    let (mut plain, mut red) = (Samples::default(), Samples::default());
    for _ in 0..2 {
        plain.extend(lat(false));
        red.extend(lat(true));
    }
    for (name, s) in [("`run --no-redact`", &plain), ("`run` (redacting)", &red)] {
        t.row(vec![
            format!("line latency through {name}"),
            format!("median {}", time(s.median())),
            format!("p99 {}", time(s.p99())),
            format!("{} lines", s.len()),
        ]);
    }
    let added = red.median().saturating_sub(plain.median());
    let added99 = red.p99().saturating_sub(plain.p99());
    let scan_ok = text.len() as f64 / best_scan.as_secs_f64() >= 200e6
        && text.len() as f64 / best_red.as_secs_f64() >= 200e6;
    t.note(format!(
        "Targets: ≥ 200 MB/s — {}; redaction adds ≤ 1 ms per line — {} (median +{}, p99 +{}). \
         Line latency = CLOCK_MONOTONIC from the child's write to the harness reading the line \
         from run's stdout (a pipe).",
        if scan_ok { "met" } else { "**missed**" },
        if added <= 1_000_000 {
            "met"
        } else {
            "**missed**"
        },
        time(added),
        time(added99)
    ));
    t.print();
}

fn event(i: u32) -> Event {
    let deny = i.is_multiple_of(4);
    Event {
        event: if i.is_multiple_of(2) { "open" } else { "read" }.into(),
        decision: Some(if deny { "deny" } else { "allow" }.into()),
        reason: deny.then(|| "not in an authorized process tree".into()),
        project: Some("app".into()),
        file: Some(format!("config/file{}.json", i % 20)),
        secrets: vec![
            format!("SECRET_{}", i % 50),
            format!("SECRET_{}", (i + 7) % 50),
        ],
        pid: Some(10_000 + i % 5000),
        tgid: Some(10_000 + i % 5000),
        start_time: Some(123_456 + u64::from(i % 5000)),
        uid: Some(1000),
        exe: Some("/usr/lib/node_modules/some-agent/bin/agent".into()),
        cmdline: Some(
            "node /usr/lib/node_modules/some-agent/bin/agent --workspace /home/me/project".into(),
        ),
        grant: (!deny).then(|| "run 4242 (npm test)".into()),
        mount: Some("/home/me/project/.secrets".into()),
    }
}

fn allowed(i: u32) -> Event {
    event(i * 4 + 1)
}

fn denied(i: u32) -> Event {
    event(i * 4)
}

/// Counts the denials in the bench vault's audit log.
fn denials_logged(b: &Bench) -> usize {
    let dir = b.tmp.path().join("state/hushfs/audit");
    let mut n = 0;
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if f.file_name().to_string_lossy().ends_with(".lock") {
            continue;
        }
        let s = std::fs::read(f.path()).unwrap_or_default();
        n += s
            .split(|&c| c == b'\n')
            .filter(|l| memchr::memmem::find(l, b"\"decision\":\"deny\"").is_some())
            .count();
    }
    n
}

/// Section 8.
pub fn audit(b: &Bench, e: Effort) {
    let mut t = Table::new(
        "8. audit log",
        &["operation", "median", "p99 / total", "notes"],
    );
    let tmp = tempfile::tempdir_in(b.tmp.path()).unwrap();
    let id = [7u8; 16];
    let key = Key32::random();
    let opts = Options {
        dir: tmp.path().join("log"),
        keychain: false,
        ..Options::default()
    };
    let sink = Arc::new(
        AuditLog::open(
            &id,
            Some(&key),
            SinkOptions {
                log: opts.clone(),
                runtime_dir: tmp.path().join("run"),
                ..SinkOptions::default()
            },
        )
        .unwrap(),
    );

    // One allowed decision recorded, as the daemon does for every allowed
    // open and read: returns once the line is written (group commit).
    let n = e.n(20_000) as u32;
    let mut s = Samples::default();
    for i in 0..n {
        let t0 = Instant::now();
        sink.record(allowed(i)).unwrap();
        s.push(t0.elapsed());
    }
    t.row(vec![
        "record an allowed decision (1 thread)".into(),
        time(s.median()),
        time(s.p99()),
        format!("{} events", s.len()),
    ]);

    let threads = 4;
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for th in 0..threads {
            let sink = sink.clone();
            sc.spawn(move || {
                for i in 0..n / threads {
                    sink.record(allowed(th * n + i)).unwrap();
                }
            });
        }
    });
    let dt = t0.elapsed();
    t.row(vec![
        format!("record allowed decisions ({threads} threads at once)"),
        time((dt / n).as_nanos() as u64),
        format!("{:.0} events/s", f64::from(n) / dt.as_secs_f64()),
        "per event, wall ÷ events".into(),
    ]);

    let burst = 10_000u32;
    let mut s = Samples::default();
    let t0 = Instant::now();
    for i in 0..burst {
        let t1 = Instant::now();
        sink.record(denied(i)).unwrap();
        s.push(t1.elapsed());
    }
    let queued = t0.elapsed();
    sink.flush().unwrap();
    let flushed = t0.elapsed();
    t.row(vec![
        "burst of 10,000 denials (library)".into(),
        time(s.median()),
        format!(
            "{} total, {} to disk",
            time(queued.as_nanos() as u64),
            time(flushed.as_nanos() as u64)
        ),
        "denials do not wait for the write".into(),
    ]);
    drop(sink);

    // The same storm through the mount: an unauthorized process opening
    // the secret 10,000 times.
    let before = denials_logged(b);
    let secret = b.mnt.join("SECRET").display().to_string();
    let t0 = Instant::now();
    let out = b.collect(b.helper(&["loop", &secret, &burst.to_string(), "deny"]));
    let storm = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let logged = denials_logged(b) - before;
    t.row(vec![
        "10,000 denied opens through the mount".into(),
        time(out.samples.median()),
        format!("{} total", time(storm.as_nanos() as u64)),
        format!("{logged} denials logged, {} errors", out.errors()),
    ]);
    let out = b.collect(b.granted(&b.mnt, &["loop", &secret, &e.n(4000).to_string()]));
    t.row(vec![
        "allowed opens right after the storm".into(),
        time(out.samples.median()),
        time(out.samples.p99()),
        format!("{} errors", out.errors()),
    ]);

    // A million entries: write, verify, filter.
    let big = e.n(1_000_000) as u32;
    let dir = tmp.path().join("big");
    let opts = Options {
        dir: dir.clone(),
        keychain: false,
        ..Options::default()
    };
    let mut w = Writer::open(&id, Some(&key), &opts).unwrap();
    let t0 = Instant::now();
    let mut i = 0;
    while i < big {
        let recs: Vec<Record> = (i..(i + 10_000).min(big))
            .map(|j| Record::now(event(j)))
            .collect();
        w.append(&recs).unwrap();
        i += 10_000;
    }
    let write = t0.elapsed();
    drop(w);
    let files = Files::new(&dir, &id);
    let bytes: u64 = files
        .all()
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    t.row(vec![
        format!("write {big} entries (batches of 10,000, fsync each)"),
        "-".into(),
        time(write.as_nanos() as u64),
        format!(
            "{} MiB in {} files",
            bytes >> 20,
            files.all().unwrap().len()
        ),
    ]);
    let t0 = Instant::now();
    let r = verify::verify(&id, &key, &files, &[]).unwrap();
    t.row(vec![
        format!("`verify` of {big} entries"),
        "-".into(),
        time(t0.elapsed().as_nanos() as u64),
        format!("{} entries verified", r.entries),
    ]);
    let filter = query::Filter {
        denied: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut count = 0u64;
    query::scan(&files, &filter, |_, row| {
        count += 1;
        std::hint::black_box(query::render(row));
        Ok(())
    })
    .unwrap();
    t.row(vec![
        format!("`show --denied` over {big} entries (rows rendered)"),
        "-".into(),
        time(t0.elapsed().as_nanos() as u64),
        format!("{count} matches"),
    ]);
    let t0 = Instant::now();
    let mut count = 0u64;
    let filter = query::Filter {
        pid: Some(10_042),
        ..Default::default()
    };
    query::scan(&files, &filter, |_, _| {
        count += 1;
        Ok(())
    })
    .unwrap();
    t.row(vec![
        format!("`show --pid 10042` over {big} entries"),
        "-".into(),
        time(t0.elapsed().as_nanos() as u64),
        format!("{count} matches"),
    ]);
    t.note(
        "Entries are realistic (about 550 bytes: an agent's opens and reads, 50 secret \
         names, 5,000 pids). Allowed decisions wait until their line is written (write(2), \
         not fsync: docs/AUDIT.md); denials are queued and written in batches.",
    );
    t.print();
}
