//! Issue 15, part 3: values encoded by the real tools — coreutils `base64`
//! (wrapped at 76 columns, and at 64 as PEM writes it) and Python's
//! urllib.parse.quote / quote_plus — are taken out of `hushfs run`'s
//! output and found by `hushfs scan`.

mod common;
use common::*;

/// 70 bytes (coreutils wraps from 58 on), with '/' and ' ' that quote
/// and quote_plus treat differently.
const VALUE: &[u8] = b"wrap-me/please 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ/KLMNOP";

fn env() -> Env {
    let e = Env::new();
    e.set("app/LONG", VALUE);
    e
}

/// What the encoders would print, to check the output holds none of it.
fn encodings_by_tools() -> Vec<(&'static str, Vec<u8>)> {
    let run = |prog: &str, args: &[&str]| {
        let mut c = std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(VALUE).unwrap();
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success());
        o.stdout
    };
    let py = "import sys, urllib.parse as u; v = sys.stdin.buffer.read(); \
              print(u.quote(v)); print(u.quote_plus(v))";
    vec![
        ("base64", run("base64", &[])),
        ("base64 -w 64", run("base64", &["-w", "64"])),
        ("quote, quote_plus", run("python3", &["-c", py])),
    ]
}

#[test]
fn base64_and_quote_output_of_real_tools_is_redacted_in_run() {
    let e = env();
    for (name, encoded) in encodings_by_tools() {
        // The tool's output really is wrapped / keeps '/' (the cases of
        // the issue), or this test would prove nothing.
        match name {
            "base64" => assert!(encoded.iter().filter(|&&b| b == b'\n').count() >= 2),
            "quote, quote_plus" => assert!(contains(&encoded, b"/please%20")),
            _ => {}
        }
    }
    let script = "base64 \"$HUSHFS_DIR/LONG\"; echo; base64 -w 64 \"$HUSHFS_DIR/LONG\"; echo; \
        python3 -c 'import os, urllib.parse as u; \
        v = open(os.environ[\"HUSHFS_DIR\"] + \"/LONG\", \"rb\").read(); \
        print(u.quote(v)); print(u.quote_plus(v))'";
    let o = e.run(&["run", "-p", "app", "--", "sh", "-c", script]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.matches("[hushfs:LONG]").count(),
        4,
        "one marker per encoding: {out}"
    );
    for (name, encoded) in encodings_by_tools() {
        for line in encoded.split(|&b| b == b'\n').filter(|l| l.len() >= 16) {
            // Whole wrapped lines would be the value's bytes (a few edge
            // characters of a base64 blob depend on its neighbours only).
            assert!(
                !contains(&o.stdout, &line[2..line.len() - 2]),
                "{name}: a line of the encoding got through: {out}"
            );
        }
    }
}

#[test]
fn scan_finds_values_the_real_tools_encoded() {
    let e = env();
    let d = e.path("tree");
    std::fs::create_dir_all(&d).unwrap();
    for (i, (_, encoded)) in encodings_by_tools().into_iter().enumerate() {
        let mut text = b"config:\n".to_vec();
        text.extend_from_slice(&encoded);
        std::fs::write(d.join(format!("f{i}.txt")), text).unwrap();
    }
    let o = e.run(&["scan", d.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    for (i, want) in [(0, "(base64"), (1, "(base64"), (2, "(url-encoded)")] {
        let f = d.join(format!("f{i}.txt")).display().to_string();
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{f}:2: app/LONG")) && l.contains(want)),
            "f{i}: {want} missing in {out}"
        );
    }
    // quote and quote_plus differ for this value: both lines are found.
    let f2 = d.join("f2.txt").display().to_string();
    assert!(out.contains(&format!("{f2}:3: app/LONG")), "{out}");
    assert!(!contains(&o.stdout, VALUE));
}
