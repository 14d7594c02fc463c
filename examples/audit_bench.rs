//! Audit log benchmark: writes N realistic entries, then times `show`'s
//! filters and `verify` over them and prints a table. Not a test: run it in
//! a release build (docs/AUDIT.md, "Performance", has the method).
//!
//!   cargo run --release --example audit_bench -- [N] [--vault PATH]
//!
//! With `--vault` (and HUSHFS_PASSPHRASE_FILE), the entries go into that
//! vault's real log under $XDG_STATE_HOME, so `hushfs audit show` can be
//! timed on them too; otherwise into a temporary directory.

use std::time::Instant;

use hushfs::audit::{Event, Files, Options, Record, VaultId, Writer, query, verify};
use hushfs::secret::Key32;

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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u32 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let vault = args
        .iter()
        .position(|a| a == "--vault")
        .map(|i| std::path::PathBuf::from(&args[i + 1]));
    let tmp = tempfile::tempdir().unwrap();
    let (id, key, opts): (VaultId, Key32, Options) = match &vault {
        Some(p) => {
            let v = hushfs::vault::unlock::open(p, &Default::default()).unwrap();
            (v.header.vault_id, v.key().clone(), Options::default())
        }
        None => (
            [7; 16],
            Key32::random(),
            Options {
                dir: tmp.path().to_path_buf(),
                ..Options::default()
            },
        ),
    };
    let opts = Options {
        keychain: false,
        ..opts
    };
    let mut w = Writer::open(&id, Some(&key), &opts).unwrap();
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let recs: Vec<Record> = (i..(i + 10_000).min(n))
            .map(|j| Record::now(event(j)))
            .collect();
        w.append(&recs).unwrap();
        i += 10_000;
    }
    let write = t0.elapsed();
    let files = Files::new(&opts.dir, &id);
    let bytes: u64 = files
        .all()
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();

    println!(
        "entries: {n}, {} MiB in {} files",
        bytes >> 20,
        files.all().unwrap().len()
    );
    println!("{:<44} {:>10} {:>10}", "operation", "seconds", "matches");
    println!(
        "{:<44} {:>10.3} {:>10}",
        "write (batches of 10,000, fsync each)",
        write.as_secs_f64(),
        n
    );
    let filters: Vec<(&str, query::Filter)> = vec![
        ("show (no filter, rows built)", query::Filter::default()),
        (
            "show --denied",
            query::Filter {
                denied: true,
                ..Default::default()
            },
        ),
        (
            "show --secret app/SECRET_7",
            query::Filter {
                secret: Some(query::Filter::parse_secret("app/SECRET_7")),
                ..Default::default()
            },
        ),
        (
            "show --pid 10042",
            query::Filter {
                pid: Some(10_042),
                ..Default::default()
            },
        ),
        (
            "show --since 1h --denied --secret SECRET_3",
            query::Filter {
                since: Some(query::Filter::parse_since("1h").unwrap()),
                denied: true,
                secret: Some(query::Filter::parse_secret("SECRET_3")),
                ..Default::default()
            },
        ),
        (
            "show --since 1s (nothing that recent)",
            query::Filter {
                since: Some(query::Filter::parse_since("2099-01-01T00:00:00Z").unwrap()),
                ..Default::default()
            },
        ),
    ];
    for (name, f) in filters {
        let t = Instant::now();
        let mut count = 0u64;
        let mut out = 0usize;
        query::scan(&files, &f, |_, row| {
            count += 1;
            out += query::render(row).len();
            Ok(())
        })
        .unwrap();
        println!("{name:<44} {:>10.3} {count:>10}", t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    let t = Instant::now();
    let r = verify::verify(&id, &key, &files, &[]).unwrap();
    println!(
        "{:<44} {:>10.3} {:>10}",
        "verify",
        t.elapsed().as_secs_f64(),
        r.entries
    );
    let t = Instant::now();
    drop(Writer::open(&id, Some(&key), &opts).unwrap());
    println!(
        "{:<44} {:>10.3} {:>10}",
        "open a writer from the data key (catch up)",
        t.elapsed().as_secs_f64(),
        "-"
    );
}
