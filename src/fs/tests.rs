//! SecretFs without FUSE: the rules of docs/SEMANTICS.md.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;

use super::*;
use crate::authz::grants::Flag;
use crate::authz::{Authorizer, GrantKind, ProcFs};

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>, AtomicBool);

impl AuditSink for Recorder {
    fn record(&self, ev: Event) -> Result<(), String> {
        if self.1.load(Ordering::Acquire) {
            return Err("disk full".into());
        }
        self.0.lock().push(ev);
        Ok(())
    }
}

fn file(path: &[&str], v: &[u8]) -> Rendered {
    Rendered {
        path: path.iter().map(|s| s.to_string()).collect(),
        content: SecretBytes::copy_from(v),
        mode: 0o400,
        secrets: vec![path.last().unwrap().to_string()],
    }
}

fn me() -> Caller {
    Caller {
        pid: std::process::id(),
        // SAFETY: getuid/getgid have no preconditions.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
    }
}

/// A filesystem whose only grant is this test process itself.
fn fs(granted: bool) -> (SecretFs, Arc<Recorder>) {
    let c = me();
    let authz = Arc::new(Authorizer::new(c.uid, ProcFs));
    if granted {
        let st = ProcFs.stat(c.pid).unwrap();
        authz.add(
            GrantKind::Tree {
                pid: c.pid,
                starttime: st.starttime,
                root: Box::new(Flag(AtomicBool::new(true))),
            },
            "test".into(),
            None,
        );
    }
    let rec = Arc::new(Recorder::default());
    let f = SecretFs::new(
        (c.uid, c.gid),
        "p",
        "/mnt",
        authz,
        rec.clone(),
        vec![file(&["A"], b"alpha"), file(&["d", "B"], b"bravo!")],
        Arc::new(crate::scan::Compact::new(Vec::<(String, &[u8])>::new())),
    );
    (f, rec)
}

#[test]
fn open_read_with_offsets_and_audit() {
    let (f, rec) = fs(true);
    let c = me();
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    assert_eq!(a.size, 5);
    let fh = f.open(&c, a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(f.read(&c, a.ino, fh, 0, 100).unwrap().bytes(), b"alpha");
    assert_eq!(f.read(&c, a.ino, fh, 2, 2).unwrap().bytes(), b"ph");
    assert_eq!(f.read(&c, a.ino, fh, 99, 2).unwrap().bytes(), b"");
    f.release(fh);
    assert_eq!(f.read(&c, a.ino, fh, 0, 1).err(), Some(FsError::BadHandle));
    let evs = rec.0.lock();
    // open and two reads; the read past the end is no decision.
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0].event, "open");
    assert_eq!(evs[0].decision.as_deref(), Some("allow"));
    assert_eq!(evs[0].file.as_deref(), Some("A"));
    assert_eq!(evs[0].tgid, Some(c.pid));
    assert!(evs[0].grant.is_some());
}

#[test]
fn ungranted_caller_denied_and_audited() {
    let (f, rec) = fs(false);
    let c = me();
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    assert_eq!(f.open(&c, a.ino, libc::O_RDONLY), Err(FsError::Denied));
    assert_eq!(rec.0.lock()[0].decision.as_deref(), Some("deny"));
    // Names and sizes stay visible to the owner.
    assert_eq!(f.readdir(&c, ROOT, 0).unwrap().len(), 4);
}

#[test]
fn readdir_pages_cover_every_entry_once() {
    let (f, _) = fs(true);
    let c = me();
    let all: Vec<String> = f
        .readdir(&c, ROOT, 0)
        .unwrap()
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert_eq!(all, [".", "..", "A", "d"]);
    for max in 1..=5 {
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let page = f.readdir_page(&c, ROOT, offset, max).unwrap();
            if page.is_empty() {
                break;
            }
            offset += page.len() as u64;
            paged.extend(page.into_iter().map(|e| e.2));
        }
        assert_eq!(paged, all, "pages of {max}");
    }
    assert!(f.readdir_page(&c, ROOT, 99, 10).unwrap().is_empty());
}

#[test]
fn writes_are_read_only() {
    let (f, _) = fs(true);
    let c = me();
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_APPEND,
    ] {
        assert_eq!(f.open(&c, a.ino, flags), Err(FsError::ReadOnly));
    }
    assert_eq!(f.access(&c, a.ino, libc::W_OK), Err(FsError::ReadOnly));
}

#[test]
fn snapshot_survives_replace_and_lock_drops_it() {
    let (f, _) = fs(true);
    let c = me();
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    let fh = f.open(&c, a.ino, libc::O_RDONLY).unwrap();
    let (inos, _) = f.replace(
        vec![file(&["A"], b"ALPHA-2")],
        Arc::new(Compact::new(Vec::<(String, &[u8])>::new())),
    );
    assert!(inos.contains(&a.ino));
    assert_eq!(
        f.read(&c, a.ino, fh, 0, 100).unwrap().bytes(),
        b"alpha",
        "old reader keeps its snapshot"
    );
    assert_eq!(f.getattr(&c, a.ino).unwrap().size, 7);
    let fh2 = f.open(&c, a.ino, 0).unwrap();
    assert_eq!(f.read(&c, a.ino, fh2, 0, 100).unwrap().bytes(), b"ALPHA-2");
    assert!(
        f.lookup(&c, ROOT, OsStr::new("d")).is_err(),
        "removed dir is gone"
    );

    f.lock();
    assert_eq!(f.read(&c, a.ino, fh, 0, 100).err(), Some(FsError::Denied));
    assert_eq!(f.open(&c, a.ino, 0), Err(FsError::Denied));
    assert_eq!(
        f.getattr(&c, a.ino).unwrap().size,
        7,
        "sizes stay while locked"
    );
}

#[test]
fn audit_failure_denies() {
    let (f, rec) = fs(true);
    let c = me();
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    rec.1.store(true, Ordering::Release);
    assert_eq!(f.open(&c, a.ino, 0), Err(FsError::Denied));
}

#[test]
fn other_uid_sees_nothing() {
    let (f, _) = fs(true);
    let c = Caller {
        uid: me().uid + 1,
        ..me()
    };
    assert_eq!(f.getattr(&c, ROOT).err(), Some(FsError::Denied));
    assert_eq!(f.readdir(&c, ROOT, 0).err(), Some(FsError::Denied));
    // Handed an fd the owner opened, it cannot learn the size by probing
    // where reads stop failing: a read past the end is decided for it.
    let a = f.lookup(&me(), ROOT, OsStr::new("A")).unwrap();
    let fh = f.open(&me(), a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(f.read(&c, a.ino, fh, 99, 10).err(), Some(FsError::Denied));
    assert_eq!(f.read(&me(), a.ino, fh, 99, 10).unwrap().bytes(), b"");
}

/// The caller's command line goes to the audit log with every served value
/// taken out; while locked (no values held) it is left out.
#[test]
fn command_lines_are_recorded_redacted() {
    let (f, rec) = fs(true);
    let c = me();
    // This test process's own argv[0] plays the value in its command line.
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
    let arg0 = cmdline.split(|&b| b == 0).next().unwrap().to_vec();
    assert!(arg0.len() >= crate::scan::MIN_LEN);
    f.replace(
        vec![file(&["A"], &arg0)],
        Arc::new(Compact::new([("A".to_string(), arg0.as_slice())])),
    );
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    let fh = f.open(&c, a.ino, libc::O_RDONLY).unwrap();
    f.release(fh);
    f.lock();
    assert_eq!(f.open(&c, a.ino, libc::O_RDONLY), Err(FsError::Denied));
    let evs = rec.0.lock();
    let line = evs[0].cmdline.as_deref().unwrap();
    assert!(line.starts_with("[hushfs:A]"), "{line}");
    assert!(!line.contains(&*String::from_utf8_lossy(&arg0)), "{line}");
    assert_eq!(evs[1].cmdline, None, "locked: no values to redact with");
    drop(evs);

    // A value cut off by the command line's length limit: its start is
    // cut off too.
    let f2 = SecretFs::new(
        (c.uid, c.gid),
        "p",
        "/mnt",
        f.authz().clone(),
        rec.clone(),
        vec![],
        Arc::new(Compact::new([("K".to_string(), &b"abcdefghij"[..])])),
    );
    assert_eq!(
        f2.redact_text("x abcdefghij y", 100).unwrap(),
        "x [hushfs:K] y"
    );
    // (A tail shorter than 6 bytes always goes: any could start a value.)
    assert_eq!(f2.redact_text("x abcd", 6).unwrap(), "x…");
    assert_eq!(
        f2.redact_text("x zzzzzzzzzz abcdefg", 20).unwrap(),
        "x zzzzzzzzzz …"
    );
    assert_eq!(f2.redact_text("x abcd", 100).unwrap(), "x abcd");
}

/// A page-cache fill is refused even for an authorized caller (the page
/// would be served to anyone who maps the file) and recorded as a denial
/// with its reason; direct reads of the same handle still work.
#[test]
fn page_cache_fills_are_refused_and_recorded() {
    let (f, rec) = fs(true);
    let c = me();
    let a = f.lookup(&c, ROOT, OsStr::new("A")).unwrap();
    let fh = f.open(&c, a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(f.refuse_cache_fill(&c, a.ino, fh), FsError::Denied);
    assert_eq!(f.read(&c, a.ino, fh, 0, 100).unwrap().bytes(), b"alpha");
    assert_eq!(f.refuse_cache_fill(&c, a.ino, fh + 1), FsError::BadHandle);
    let evs = rec.0.lock();
    assert_eq!(evs.len(), 3, "open, refused fill, read");
    assert_eq!(evs[1].event, "read");
    assert_eq!(evs[1].decision.as_deref(), Some("deny"));
    assert_eq!(evs[1].reason.as_deref(), Some(CACHE_FILL));
    assert_eq!(evs[1].file.as_deref(), Some("A"));
    assert_eq!(evs[1].tgid, Some(c.pid));
    assert_eq!(evs[2].decision.as_deref(), Some("allow"));
}
