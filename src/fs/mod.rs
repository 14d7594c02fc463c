//! The filesystem's logic, free of fuser types: inodes, attributes, per-open
//! snapshots, and the rules of docs/SEMANTICS.md. Every open and every read
//! asks the authorizer and reports the decision to the audit sink; a sink
//! that cannot record turns the access into a denial.

pub mod tree;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::audit::{AuditSink, Event};
use crate::authz::{Authorizer, Caller, Decision, ProcFs, ProcSource, Subject};
use crate::policy::Enforcer;
use crate::render::Rendered;
use crate::scan::Compact;
use crate::secret::SecretBytes;
use tree::{Inodes, Node, NodeKind, Tree};

pub use tree::ROOT;

/// Errors of file operations; the FUSE adapter maps each to one errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    NotDir,
    IsDir,
    /// Not authorized (or the mount is locked): EACCES.
    Denied,
    /// Any attempt to change something: EROFS.
    ReadOnly,
    BadHandle,
    /// No such extended attribute.
    NoAttr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Attributes as stat(2) shows them.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

/// Bytes for one read: a slice of the open file's snapshot.
pub struct ReadData {
    pub content: Arc<SecretBytes>,
    pub start: usize,
    pub end: usize,
}

impl ReadData {
    pub fn bytes(&self) -> &[u8] {
        &self.content.expose()[self.start..self.end]
    }
}

struct Handle {
    ino: u64,
    /// The file's bytes as they were at open: a reader sees one consistent
    /// version until it closes, whatever `set` does meanwhile.
    content: Option<Arc<SecretBytes>>,
    path: String,
    secrets: Vec<String>,
    /// The process whose allowed open created the handle.
    /// (tgid, start time): a recycled pid is not the opener.
    opener: Option<(u32, u64)>,
}

/// What a read needs of its handle: path, secret names, snapshot, opener.
type ForRead = (
    String,
    Vec<String>,
    Option<Arc<SecretBytes>>,
    Option<(u32, u64)>,
);

impl Handle {
    fn for_read(&self) -> ForRead {
        (
            self.path.clone(),
            self.secrets.clone(),
            self.content.clone(),
            self.opener,
        )
    }
}

/// Why a page-cache read is refused (the audit line's reason).
pub const CACHE_FILL: &str =
    "page-cache read (mmap, sendfile/splice or readahead): values never enter the page cache";

/// Open flags that ask to modify (write access, truncate, append, create).
const WRITE_FLAGS: i32 =
    libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT;

pub struct SecretFs<P: ProcSource = ProcFs> {
    owner_uid: u32,
    owner_gid: u32,
    project: String,
    mount: String,
    authz: Arc<Authorizer<P>>,
    audit: Arc<dyn AuditSink>,
    tree: RwLock<Arc<Tree>>,
    /// Every value the tree serves, for taking them out of command lines
    /// before they are recorded. Swapped with the tree (under its lock);
    /// `None` while locked, when the mount holds no values.
    redactor: RwLock<Option<Arc<Compact>>>,
    /// Bumped after every swap of `redactor`: memoized redactions of older
    /// generations are redone.
    redactor_gen: AtomicU64,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    locked: AtomicBool,
    /// The project's run policy, applied after the grant (src/policy.rs).
    policy: RwLock<Option<Arc<Enforcer>>>,
}

impl<P: ProcSource> SecretFs<P> {
    pub fn new(
        owner: (u32, u32),
        project: &str,
        mount: &str,
        authz: Arc<Authorizer<P>>,
        audit: Arc<dyn AuditSink>,
        files: Vec<Rendered>,
        redactor: Arc<Compact>,
    ) -> Self {
        let mut inodes = Inodes::default();
        let tree = Tree::build(files, &mut inodes, SystemTime::now());
        SecretFs {
            owner_uid: owner.0,
            owner_gid: owner.1,
            project: project.to_string(),
            mount: mount.to_string(),
            authz,
            audit,
            tree: RwLock::new(Arc::new(tree)),
            redactor: RwLock::new(Some(redactor)),
            redactor_gen: AtomicU64::new(0),
            inodes: Mutex::new(inodes),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            locked: AtomicBool::new(false),
            policy: RwLock::new(None),
        }
    }

    /// Installs (or removes) the run policy; the daemon calls it whenever
    /// it loads the vault.
    pub fn set_policy(&self, p: Option<Arc<Enforcer>>) {
        *self.policy.write() = p;
    }

    pub fn has_policy(&self) -> bool {
        self.policy.read().is_some()
    }

    /// A grant admits the caller; does the project's run policy, too?
    fn apply_policy(&self, d: &mut Decision, path: &str, secrets: &[String]) {
        if !d.allowed {
            return;
        }
        if let Some(p) = self.policy.read().as_ref()
            && let Err(why) = p.check(d.command.as_deref(), path, secrets)
        {
            d.allowed = false;
            d.reason = why;
        }
    }

    /// `text` with every value the mount serves (in any encoding the
    /// scanner knows) replaced by `[hushfs:NAME]`, for the audit log and the
    /// daemon's log. `text` was cut to `max_chars` by whoever made it; when
    /// it is that long, a tail that could be the start of a value is cut
    /// too. `None` while the mount is locked: it holds no values then and
    /// cannot tell what to take out, so nothing is recorded.
    pub fn redact_text(&self, text: &str, max_chars: usize) -> Option<String> {
        let m = self.redactor.read().clone()?;
        if m.is_empty() {
            return Some(text.to_string());
        }
        let mut out = m.redact(text.as_bytes());
        if text.chars().count() >= max_chars {
            let live = m.live_suffix_start(&out);
            if live < out.len() {
                out.truncate(live);
                out.extend_from_slice("…".as_bytes());
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// The caller's command line for the audit log: redacted once per
    /// subject and generation of values (a cached decision's subject makes
    /// many opens and reads).
    fn audit_cmdline(&self, s: &Subject) -> Option<String> {
        let raw = s.cmdline.as_deref()?;
        // Read before the redactor: a swap in between only makes the memo
        // look older than it is.
        let generation = self.redactor_gen.load(Ordering::Acquire);
        let mut memo = s.audit_cmdline.lock();
        if let Some((g, text)) = memo.as_ref()
            && *g == generation
        {
            return text.clone();
        }
        let text = self.redact_text(raw, crate::authz::proc::CMDLINE_MAX);
        *memo = Some((generation, text.clone()));
        text
    }

    pub fn authz(&self) -> &Arc<Authorizer<P>> {
        &self.authz
    }

    fn tree(&self) -> Arc<Tree> {
        self.tree.read().clone()
    }

    /// Who may see names, sizes and listings.
    fn may_see(&self, c: &Caller) -> Result<(), FsError> {
        // The owner; with --allow-root also root; with --allow-other also
        // root and processes a container grant admits. The kernel enforces
        // owner-only without allow_other, but auto-unmount turns it on, so
        // this runs on every operation.
        if c.uid == self.owner_uid || self.authz.may_list(c) {
            Ok(())
        } else {
            Err(FsError::Denied)
        }
    }

    fn attr(&self, n: &Node) -> Attr {
        Attr {
            ino: n.ino,
            kind: if n.is_dir() { Kind::Dir } else { Kind::File },
            size: n.size(),
            mode: n.mode,
            nlink: if n.is_dir() { 2 } else { 1 },
            uid: self.owner_uid,
            gid: self.owner_gid,
            mtime: n.mtime,
        }
    }

    pub fn lookup(&self, c: &Caller, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        self.may_see(c)?;
        let t = self.tree();
        let p = t.get(parent).ok_or(FsError::NotFound)?;
        if !p.is_dir() {
            return Err(FsError::NotDir);
        }
        let name = name.to_str().ok_or(FsError::NotFound)?;
        t.child(parent, name)
            .map(|n| self.attr(n))
            .ok_or(FsError::NotFound)
    }

    pub fn getattr(&self, c: &Caller, ino: u64) -> Result<Attr, FsError> {
        self.may_see(c)?;
        self.tree()
            .get(ino)
            .map(|n| self.attr(n))
            .ok_or(FsError::NotFound)
    }

    /// Decides, audits, and fails closed when the audit sink cannot record.
    /// `opener`: for a read, the process whose open of the handle was
    /// recorded; its own allowed reads are recorded without waiting for the
    /// write (they continue that access; see docs/AUDIT.md).
    fn check(
        &self,
        c: &Caller,
        event: &str,
        path: &str,
        secrets: &[String],
        opener: Option<(u32, u64)>,
    ) -> Decision {
        self.check_or_refuse(c, event, path, secrets, opener, None)
    }

    /// `check`, or with `refuse`, a denial for that reason whoever asks
    /// (still recorded with the caller's identity).
    fn check_or_refuse(
        &self,
        c: &Caller,
        event: &str,
        path: &str,
        secrets: &[String],
        opener: Option<(u32, u64)>,
        refuse: Option<&'static str>,
    ) -> Decision {
        let mut d = if self.locked.load(Ordering::Acquire) {
            Decision::deny("mount is locked (run `hushfs unlock`)")
        } else {
            self.authz.decide(c)
        };
        self.apply_policy(&mut d, path, secrets);
        if let Some(why) = refuse {
            d.allowed = false;
            d.reason = why;
        }
        let ev = Event {
            event: event.to_string(),
            decision: Some(if d.allowed { "allow" } else { "deny" }.to_string()),
            reason: Some(d.reason.to_string()),
            project: Some(self.project.clone()),
            file: Some(path.to_string()),
            secrets: Event::names_of(secrets),
            pid: Some(c.pid),
            tgid: d.subject.as_ref().map(|s| s.tgid),
            start_time: d.subject.as_ref().map(|s| s.starttime),
            uid: Some(c.uid),
            exe: d.subject.as_ref().and_then(|s| s.exe.clone()),
            cmdline: d.subject.as_ref().and_then(|s| self.audit_cmdline(s)),
            grant: d.grant.map(|g| g.to_string()),
            mount: Some(self.mount.clone()),
        };
        let follow_up = d.allowed
            && opener.is_some()
            && opener == d.subject.as_ref().map(|s| (s.tgid, s.starttime));
        let recorded = if follow_up {
            self.audit.record_follow_up(ev)
        } else {
            self.audit.record(ev)
        };
        if let Err(why) = recorded {
            log::error!("audit log cannot record ({why}): denying");
            d.allowed = false;
            d.reason = "audit log cannot record";
        }
        d
    }

    pub fn open(&self, c: &Caller, ino: u64, flags: i32) -> Result<u64, FsError> {
        let t = self.tree();
        let n = t.get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::File {
            content, secrets, ..
        } = &n.kind
        else {
            return Err(FsError::IsDir);
        };
        if flags & WRITE_FLAGS != 0 {
            return Err(FsError::ReadOnly);
        }
        let d = self.check(c, "open", &n.path, secrets, None);
        if !d.allowed {
            return Err(FsError::Denied);
        }
        let content = content.clone().ok_or(FsError::Denied)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(
            fh,
            Handle {
                ino,
                content: Some(content),
                path: n.path.clone(),
                secrets: secrets.clone(),
                opener: d.subject.as_ref().map(|s| (s.tgid, s.starttime)),
            },
        );
        Ok(fh)
    }

    /// Every read is decided again: an authorized process may have passed
    /// its descriptor to one that is not.
    pub fn read(
        &self,
        c: &Caller,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<ReadData, FsError> {
        // A read at or past the end returns no bytes to anyone who may see
        // the file's size anyway: nothing to decide or record (every reader
        // of a whole file ends with one; an audit write each would cost).
        // `may_see` runs outside the handle lock: for other uids it may
        // walk /proc.
        let got = self.handle(fh, ino, |h| match &h.content {
            Some(b) if offset >= b.len() as u64 => Err(b.clone()),
            _ => Ok(h.for_read()),
        })?;
        let (path, secrets, content, opener) = match got {
            Ok(v) => v,
            Err(bytes) if self.may_see(c).is_ok() => {
                let len = bytes.len();
                return Ok(ReadData {
                    content: bytes,
                    start: len,
                    end: len,
                });
            }
            // One who may not see sizes is decided (and recorded) as ever.
            Err(_) => self.handle(fh, ino, Handle::for_read)?,
        };
        if !self.check(c, "read", &path, &secrets, opener).allowed {
            return Err(FsError::Denied);
        }
        let content = content.ok_or(FsError::Denied)?;
        let len = content.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(size as usize).min(len);
        Ok(ReadData {
            content,
            start,
            end,
        })
    }

    /// A read that would fill the page cache: the kernel sends one for a
    /// `MAP_PRIVATE` fault, `sendfile`/`splice` (which read through the
    /// page cache even on a direct-io file), `readahead(2)` or
    /// `fadvise`/`madvise(WILLNEED)`, and it is the only kind of read that
    /// comes without a lock owner (direct-io reads — `read`, `pread` —
    /// always carry one). A page it filled would be served to every process
    /// that maps or splices the file, with no read reaching us, so it is
    /// refused for everyone, authorized or not, and recorded.
    pub fn refuse_cache_fill(&self, c: &Caller, ino: u64, fh: u64) -> FsError {
        let (path, secrets, _, opener) = match self.handle(fh, ino, Handle::for_read) {
            Ok(v) => v,
            Err(e) => return e,
        };
        self.check_or_refuse(c, "read", &path, &secrets, opener, Some(CACHE_FILL));
        FsError::Denied
    }

    /// `f` of open handle `fh` (of inode `ino`), under the handle lock.
    fn handle<T>(&self, fh: u64, ino: u64, f: impl FnOnce(&Handle) -> T) -> Result<T, FsError> {
        let h = self.handles.lock();
        h.get(&fh)
            .filter(|h| h.ino == ino)
            .map(f)
            .ok_or(FsError::BadHandle)
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }

    pub fn opendir(&self, c: &Caller, ino: u64) -> Result<(), FsError> {
        self.may_see(c)?;
        match self.tree().get(ino) {
            Some(n) if n.is_dir() => Ok(()),
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Directory entries from `offset` on: (inode, kind, name, next offset).
    pub fn readdir(
        &self,
        c: &Caller,
        ino: u64,
        offset: u64,
    ) -> Result<Vec<(u64, Kind, String)>, FsError> {
        self.readdir_page(c, ino, offset, usize::MAX)
    }

    /// At most `max` entries from `offset` on: the kernel asks page by page,
    /// and copying every remaining name each time made listing 10,000
    /// files quadratic.
    pub fn readdir_page(
        &self,
        c: &Caller,
        ino: u64,
        offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, Kind, String)>, FsError> {
        self.may_see(c)?;
        let t = self.tree();
        let n = t.get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::Dir(entries) = &n.kind else {
            return Err(FsError::NotDir);
        };
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let dots = [(ino, "."), (n.parent, "..")]
            .into_iter()
            .skip(offset)
            .map(|(i, name)| (i, Kind::Dir, name.to_string()));
        // Skipped before the names are cloned.
        let children = entries
            .iter()
            .skip(offset.saturating_sub(2))
            .map(|(name, child)| {
                let kind = if t.get(*child).is_some_and(|c| c.is_dir()) {
                    Kind::Dir
                } else {
                    Kind::File
                };
                (*child, kind, name.clone())
            });
        Ok(dots.chain(children).take(max).collect())
    }

    /// access(2): writing is never possible, executing never, reading a file
    /// only for an authorized caller (checked, but not audited as a read).
    pub fn access(&self, c: &Caller, ino: u64, mask: i32) -> Result<(), FsError> {
        self.may_see(c)?;
        let t = self.tree();
        let n = t.get(ino).ok_or(FsError::NotFound)?;
        if mask & libc::W_OK != 0 {
            return Err(FsError::ReadOnly);
        }
        if n.is_dir() {
            return Ok(());
        }
        if mask & libc::X_OK != 0 {
            return Err(FsError::Denied);
        }
        if mask & libc::R_OK != 0 {
            let ok = !self.locked.load(Ordering::Acquire) && {
                let mut d = self.authz.decide(c);
                if let NodeKind::File { secrets, .. } = &n.kind {
                    self.apply_policy(&mut d, &n.path, secrets);
                }
                d.allowed
            };
            if !ok {
                return Err(FsError::Denied);
            }
        }
        Ok(())
    }

    /// Swaps in newly rendered files (after `set`, `rm`, `import`) and the
    /// matcher of the values they hold. Open handles keep their snapshots.
    /// Returns what the kernel must forget.
    pub fn replace(
        &self,
        files: Vec<Rendered>,
        redactor: Arc<Compact>,
    ) -> (Vec<u64>, Vec<(u64, String)>) {
        let new = Tree::build(files, &mut self.inodes.lock(), SystemTime::now());
        let mut cur = self.tree.write();
        let diff = cur.diff(&new);
        *cur = Arc::new(new);
        *self.redactor.write() = Some(redactor);
        self.redactor_gen.fetch_add(1, Ordering::AcqRel);
        self.locked.store(false, Ordering::Release);
        diff
    }

    /// Drops every decrypted byte (tree and open snapshots); opens and reads
    /// are denied until `replace` brings contents back.
    pub fn lock(&self) {
        self.locked.store(true, Ordering::Release);
        let mut cur = self.tree.write();
        *cur = Arc::new(cur.without_contents());
        *self.redactor.write() = None;
        self.redactor_gen.fetch_add(1, Ordering::AcqRel);
        drop(cur);
        for h in self.handles.lock().values_mut() {
            h.content = None;
        }
    }

    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Acquire)
    }

    pub fn open_handles(&self) -> usize {
        self.handles.lock().len()
    }

    pub fn file_count(&self) -> usize {
        self.tree().nodes.values().filter(|n| !n.is_dir()).count()
    }
}

#[cfg(test)]
mod tests;
