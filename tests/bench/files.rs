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
    /// Invocations of `cmd` per round (one sample each for `once`).
    calls: usize,
    samples: Samples,
    errors: u64,
}

fn case<'a>(name: &str, base: Option<usize>, cmd: impl Fn() -> Command + 'a) -> Case<'a> {
    Case {
        name: name.into(),
        base,
        cmd: Box::new(cmd),
        calls: 1,
        samples: Samples::default(),
        errors: 0,
    }
}

/// Index of the rows the targets are read from.
const BARE: usize = 2;
const AUTHORIZED: usize = 3;
const DENIED: usize = 4;
const BARE_FIRST_EXEC: usize = 5;
const BARE_FIRST: usize = 6;

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
    // Depth 1 is a process `hushfs run` itself starts: one run per sample.
    let once = e.n(60);
    let mut cases = vec![
        case("tmpfs file", Some(BARE), || {
            b.helper(&["loop", &tmpfs, n, "len:64"])
        }),
        case("FIFO fed by a helper process", Some(BARE), || {
            b.helper(&["loop", &fifo.path, n, "len:64"])
        }),
        case("bare FUSE (no authorization)", None, || {
            b.helper(&["loop", &bare_file, n, "len:64"])
        }),
        case(
            "**hushfs, authorized** (same process again)",
            Some(BARE),
            || b.granted(&b.mnt, &["loop", &secret, n, "len:64"]),
        ),
        case("hushfs, denied (same process again)", Some(BARE), || {
            b.helper(&["loop", &secret, n, "deny"])
        }),
        Case {
            calls: once,
            ..case(
                "bare FUSE, first open of a new (exec'd) process",
                None,
                || b.helper(&["once", &bare_file]),
            )
        },
        case(
            "bare FUSE, first open of a new (forked) process",
            None,
            || b.helper(&["chain", "1", &bare_file, k]),
        ),
        Case {
            calls: once,
            ..case(
                "hushfs, authorized, new process at depth 1 (exec'd by run)",
                Some(BARE_FIRST_EXEC),
                || b.granted(&b.mnt, &["once", &secret]),
            )
        },
        case(
            "hushfs, authorized, new process at depth 3",
            Some(BARE_FIRST),
            || b.granted(&b.mnt, &["chain", "2", &secret, k]),
        ),
        case(
            "hushfs, authorized, new process at depth 10",
            Some(BARE_FIRST),
            || b.granted(&b.mnt, &["chain", "9", &secret, k]),
        ),
        case(
            "hushfs, authorized, new process at depth 30",
            Some(BARE_FIRST),
            || b.granted(&b.mnt, &["chain", "29", &secret, k]),
        ),
        case("hushfs, denied, new process", Some(BARE_FIRST), || {
            b.helper(&["chain", "1", &secret, k, "deny"])
        }),
    ];
    // Rounds interleave the cases, so drift on a noisy machine hits all.
    for _ in 0..if e.quick { 2 } else { 5 } {
        for c in cases.iter_mut() {
            for _ in 0..c.calls {
                let out: Out = b.collect((c.cmd)());
                c.errors += out.errors();
                c.samples.extend(out.samples);
            }
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
    let med = |i: usize| cases[i].samples.median().max(1) as f64;
    let r = med(AUTHORIZED) / med(BARE);
    let first = (BARE_FIRST_EXEC + 2..cases.len() - 1)
        .map(|i| med(i) / med(cases[i].base.unwrap()))
        .fold(0.0, f64::max);
    let denied = med(DENIED) <= med(AUTHORIZED);
    let met = |m: bool| if m { "**met**" } else { "**missed**" };
    let errors: u64 = cases.iter().skip(2).map(|c| c.errors).sum();
    t.note(format!(
        "Targets (issue 13): authorized hushfs ≤ 1.15× bare FUSE at the median — {} ({r:.2}×); \
         a new process's first open ≤ 1.5× bare FUSE's, depths 1–30 — {} (worst {first:.2}×); \
         a denied open no dearer than an allowed one — {}; errors outside the FIFO row: {errors}. \
         Bare FUSE is the floor: FOPEN_DIRECT_IO, no checks, no flush handler. Errors: reads \
         that failed or did not return the 64 bytes (\"denied\" rows: opens not refused with \
         EACCES). A FIFO hands a reader that reopens it quickly the next write too: its errors \
         are real, not a harness fault. Depth = generations between the reader and the \
         grant's root (`hushfs run`); depth 1 is compared with an exec'd process's first \
         open, deeper ones with a forked one's.",
        met(r <= 1.15),
        met(first <= 1.5),
        met(denied)
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
            "readers × opens",
            "filesystem",
            "wall (median of rounds)",
            "vs bare FUSE",
            "opens/s",
            "median",
            "p99",
            "errors",
            "identical bytes",
        ],
    );
    let mut at32 = (0.0, 0u64, true);
    for n in [1usize, 4, 32] {
        // The row: 32 readers × 2,000 opens each.
        let iters = if n == 32 {
            e.n(2000)
        } else {
            (e.n(24_000) / n).clamp(50, 5000)
        };
        let (ns, is) = (n.to_string(), iters.to_string());
        let rounds = if e.quick { 1 } else { 3 };
        // [bare, hushfs]: walls, samples, errors, identical.
        let mut acc: [(Samples, Samples, u64, bool); 2] = Default::default();
        for a in acc.iter_mut() {
            a.3 = true;
        }
        for _ in 0..rounds {
            let cmds = [
                b.helper(&["readers", &ns, &bare_file, &is]),
                b.granted(&b.mnt, &["readers", &ns, &secret, &is]),
            ];
            for (i, cmd) in cmds.into_iter().enumerate() {
                let out = b.collect(cmd);
                let wall: u64 = out.field("wall").parse().unwrap_or(u64::MAX);
                acc[i].0.0.push(wall);
                acc[i].2 += out.errors();
                acc[i].3 &= out.field("identical") == "true";
                acc[i].1.extend(out.samples);
            }
        }
        let bare_wall = acc[0].0.median();
        for (i, name) in ["bare FUSE", "hushfs"].into_iter().enumerate() {
            let (walls, lat, errors, identical) = &acc[i];
            let wall = walls.median();
            if n == 32 && i == 1 {
                at32 = (wall as f64 / bare_wall.max(1) as f64, *errors, *identical);
            }
            t.row(vec![
                format!("{n} × {iters}"),
                name.into(),
                time(wall),
                ratio(wall, bare_wall),
                format!("{:.0}", (n * iters) as f64 / (wall as f64 / 1e9)),
                time(lat.median()),
                time(lat.p99()),
                errors.to_string(),
                identical.to_string(),
            ]);
        }
    }
    let (r, errors, identical) = at32;
    t.note(format!(
        "Wall = from the common start to the last reader's exit; median of the rounds \
         (bare and hushfs interleaved). Target (issue 13): 32 readers ≤ 1.2× bare FUSE's \
         wall time, 0 errors, identical bytes — {} ({r:.2}×, {errors} errors, identical: {identical}).",
        if r <= 1.2 && errors == 0 && identical {
            "**met**"
        } else {
            "**missed**"
        }
    ));
    t.print();
}
