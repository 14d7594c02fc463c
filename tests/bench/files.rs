//! Sections 1–3: reading a 64-byte secret through hushfs, against a tmpfs
//! file, a bare FUSE filesystem (the mechanism's own cost) and a FIFO (how
//! .env-over-FIFO tools deliver), for allowed and denied callers, repeated
//! and first opens, and many readers at once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::Effort;
use crate::setup::{Bench, Out, SECRET64};
use crate::stats::{Samples, Table, ratio, time};

/// The bare filesystem, served by a helper process until dropped.
pub struct BareMount {
    pub dir: PathBuf,
    child: Child,
}

impl BareMount {
    pub fn new(b: &Bench) -> BareMount {
        let dir = b.tmp.path().join("bare");
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = b
            .helper(&["bare-fs", dir.to_str().unwrap(), "64"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bare fs helper");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "bare fs did not mount");
        BareMount { dir, child }
    }

    pub fn file(&self) -> String {
        self.dir.join("SECRET").display().to_string()
    }
}

impl Drop for BareMount {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A 64-byte file on tmpfs (/dev/shm), mode 0400.
fn tmpfs_file(b: &Bench) -> (tempfile::TempDir, String) {
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        b.tmp.path()
    };
    let d = tempfile::Builder::new()
        .prefix("hushfs-bench-")
        .tempdir_in(base)
        .unwrap();
    let f = d.path().join("SECRET");
    std::fs::write(&f, SECRET64).unwrap();
    let f = f.display().to_string();
    (d, f)
}

/// A FIFO fed by a helper process.
struct Fifo {
    path: String,
    writer: Child,
}

impl Fifo {
    fn new(b: &Bench) -> Fifo {
        let path = b.tmp.path().join("fifo");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let path = path.display().to_string();
        let writer = b
            .helper(&["fifo-writer", &path, std::str::from_utf8(SECRET64).unwrap()])
            .spawn()
            .unwrap();
        Fifo { path, writer }
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = self.writer.kill();
        let _ = self.writer.wait();
    }
}

struct Case<'a> {
    name: String,
    /// Index of the case this one is compared with.
    base: Option<usize>,
    cmd: Box<dyn Fn() -> Command + 'a>,
    samples: Samples,
    errors: u64,
}

fn case<'a>(name: &str, base: Option<usize>, cmd: impl Fn() -> Command + 'a) -> Case<'a> {
    Case {
        name: name.into(),
        base,
        cmd: Box::new(cmd),
        samples: Samples::default(),
        errors: 0,
    }
}

/// Sections 1 and 2.
pub fn latency(b: &Bench, e: Effort) {
    let bare = BareMount::new(b);
    let (_tmpfs, tmpfs) = tmpfs_file(b);
    let fifo = Fifo::new(b);
    let secret = b.mnt.join("SECRET").display().to_string();
    let bare_file = bare.file();
    let n = e.n(4000).to_string();
    let k = e.n(300).to_string();
    let (n, k) = (n.as_str(), k.as_str());
    let mut cases = vec![
        case("tmpfs file", Some(2), || {
            b.helper(&["loop", &tmpfs, n, "len:64"])
        }),
        case("FIFO fed by a helper process", Some(2), || {
            b.helper(&["loop", &fifo.path, n, "len:64"])
        }),
        case("bare FUSE (no authorization)", None, || {
            b.helper(&["loop", &bare_file, n, "len:64"])
        }),
        case(
            "**hushfs, authorized** (same process again)",
            Some(2),
            || b.granted(&b.mnt, &["loop", &secret, n, "len:64"]),
        ),
        case("hushfs, denied (same process again)", Some(2), || {
            b.helper(&["loop", &secret, n, "deny"])
        }),
        case("bare FUSE, first open of a new process", None, || {
            b.helper(&["chain", "1", &bare_file, k])
        }),
        case(
            "hushfs, authorized, new process at depth 2",
            Some(5),
            || b.granted(&b.mnt, &["chain", "1", &secret, k]),
        ),
        case(
            "hushfs, authorized, new process at depth 5",
            Some(5),
            || b.granted(&b.mnt, &["chain", "4", &secret, k]),
        ),
        case(
            "hushfs, authorized, new process at depth 30",
            Some(5),
            || b.granted(&b.mnt, &["chain", "29", &secret, k]),
        ),
        case("hushfs, denied, new process", Some(5), || {
            b.helper(&["chain", "1", &secret, k, "deny"])
        }),
    ];
    // Rounds interleave the cases, so drift on a noisy machine hits all.
    for _ in 0..if e.quick { 2 } else { 5 } {
        for c in cases.iter_mut() {
            let out: Out = b.collect((c.cmd)());
            c.errors += out.errors();
            c.samples.extend(out.samples);
        }
    }
    let mut t = Table::new(
        "1–2. open + read + close of a 64-byte secret",
        &[
            "reader",
            "median",
            "p99",
            "vs bare FUSE",
            "samples",
            "errors",
        ],
    );
    for c in &cases {
        let vs = c.base.map_or("1.00×".into(), |i| {
            ratio(c.samples.median(), cases[i].samples.median())
        });
        t.row(vec![
            c.name.clone(),
            time(c.samples.median()),
            time(c.samples.p99()),
            vs,
            c.samples.len().to_string(),
            c.errors.to_string(),
        ]);
    }
    let r = cases[3].samples.median() as f64 / cases[2].samples.median().max(1) as f64;
    t.note(format!(
        "Target: authorized hushfs ≤ 1.3× bare FUSE at the median — {} ({r:.2}×). \
         Errors: reads that failed or did not return the 64 bytes (\"denied\" rows: \
         opens not refused with EACCES). A FIFO hands a reader that reopens it quickly \
         the next write too: its errors are real, not a harness fault. Depth = generations between the reader and the \
         grant's root (`hushfs run`).",
        if r <= 1.3 { "**met**" } else { "**missed**" }
    ));
    t.print();
}

/// Section 3.
pub fn concurrency(b: &Bench, e: Effort) {
    let bare = BareMount::new(b);
    let secret = b.mnt.join("SECRET").display().to_string();
    let bare_file = bare.file();
    let mut t = Table::new(
        "3. concurrent reader processes (each: open + read + close, repeated)",
        &[
            "readers",
            "filesystem",
            "opens/s",
            "median",
            "p99",
            "errors",
            "identical bytes",
        ],
    );
    for n in [1usize, 4, 32] {
        let iters = (e.n(24_000) / n).clamp(50, 5000).to_string();
        let ns = n.to_string();
        let runs: [(&str, Command); 2] = [
            ("bare FUSE", b.helper(&["readers", &ns, &bare_file, &iters])),
            (
                "hushfs",
                b.granted(&b.mnt, &["readers", &ns, &secret, &iters]),
            ),
        ];
        for (name, cmd) in runs {
            let out = b.collect(cmd);
            let wall: f64 = out.field("wall").parse::<f64>().unwrap_or(f64::NAN) / 1e9;
            t.row(vec![
                n.to_string(),
                name.into(),
                format!("{:.0}", out.samples.len() as f64 / wall),
                time(out.samples.median()),
                time(out.samples.p99()),
                out.errors().to_string(),
                out.field("identical").into(),
            ]);
        }
    }
    t.note("Opens/s = all readers' opens ÷ wall time from the common start to the last exit.");
    t.print();
}
