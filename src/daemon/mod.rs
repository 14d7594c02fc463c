//! The mount daemon: lifecycle of one mount. It asks the project's source
//! for values (src/source/: the vault or an OpenBao server), renders them,
//! mounts, answers the control socket, watches grant roots, the vault file
//! and the source's refresh interval, and unmounts cleanly on
//! SIGTERM/SIGINT, `umount`, or (for a private `run` mount) when its owner
//! is gone. mod.rs: the daemon's state, reloads, the control requests and
//! `serve`; grants.rs: grant requests and the grant watcher; watch.rs: the
//! vault and source watchers; control.rs + protocol.rs: the socket.

pub mod control;
mod grants;
pub mod mountpoint;
pub mod protocol;
pub mod registry;
pub mod spawn;
mod watch;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use grants::watch_grants;
use watch::{watch_source, watch_vault};

use crate::audit::{AuditSink, Event};
use crate::authz::{Authorizer, CgroupAnchor, GrantKind, ProcFs, ProcSource, UidRules};
use crate::error::{Error, Result};
use crate::fs::SecretFs;
use crate::policy::Policy;
use crate::render::{self, Config, Rendered};
use crate::secret::Key32;
use crate::source::{Notice, ProjectSource, Source, SourceStatus};
use crate::sys::pidfd::PidFd;
use crate::vault::{Sealed, Secrets, keychain};
use protocol::{MountStatus, Request, Response};

/// Everything the daemon needs to serve one mount.
pub struct ServeOpts {
    pub mountpoint: PathBuf,
    pub vault: PathBuf,
    pub project: String,
    pub config: Config,
    pub key: Key32,
    pub threads: usize,
    /// A `hushfs run` mount: exit once its grants are gone (or its parent).
    pub private: bool,
    /// `--allow-other`: other uids may reach the mount and read through
    /// container (pid/cgroup) grants.
    pub allow_other: bool,
    /// `--allow-root`: root counts as the owner.
    pub allow_root: bool,
    /// Where readiness ("ok") or the startup error is reported.
    pub ready: Option<File>,
    pub log: Option<PathBuf>,
}

/// The matcher of every value the mount serves, which takes them out of
/// command lines and grant labels before they are recorded or logged.
fn redactor(values: &crate::source::Values) -> Arc<crate::scan::Compact> {
    Arc::new(crate::scan::Compact::new(
        values.iter().map(|(n, v)| (n.clone(), v.expose())),
    ))
}

fn enforcer(p: Option<Policy>) -> Option<Arc<crate::policy::Enforcer>> {
    p.map(|p| Arc::new(crate::policy::Enforcer::new(&p)))
}

fn open_vault(vault: &Path, key: &Key32) -> Result<Secrets> {
    Sealed::read(vault)?.open(key)
}

enum Stop {
    Signal(i32),
    Requested,
    Unmounted,
    OwnerGone,
}

struct Daemon {
    fs: Arc<SecretFs>,
    authz: Arc<Authorizer>,
    audit: Arc<dyn AuditSink>,
    key: Mutex<Option<Key32>>,
    /// Where the values come from. Used only while holding `key`, which
    /// serializes every change of what the mount serves.
    source: Mutex<ProjectSource>,
    /// The source's state for `status`, copied after each change so that
    /// status never waits for a fetch.
    source_status: Mutex<Option<SourceStatus>>,
    /// `lock` is waiting for `key`: a fetch in flight must not serve.
    locking: AtomicBool,
    problem: Mutex<Option<String>>,
    notifier: Mutex<Option<fuser::Notifier>>,
    vault: PathBuf,
    vault_id: String,
    project: String,
    config: Config,
    mountpoint: PathBuf,
    started: u64,
    private: bool,
    granted_once: AtomicBool,
    auto_unmount: bool,
    /// mlockall succeeded; otherwise file contents are locked one by one.
    memory_locked: bool,
    log: Option<PathBuf>,
    stop: mpsc::Sender<Stop>,
    /// Written to wake the grant watcher after a change.
    wake: OwnedFd,
}

impl Daemon {
    fn event(&self, event: &str) -> Event {
        Event {
            event: event.to_string(),
            project: Some(self.project.clone()),
            mount: Some(self.mountpoint.display().to_string()),
            ..Default::default()
        }
    }

    fn wake_watcher(&self) {
        let _ = nix::unistd::write(&self.wake, b"x");
    }

    /// Re-reads the vault and serves what the source says now,
    /// invalidating what the kernel cached about changed names and sizes.
    fn reload(&self) {
        let mut key = self.key.lock();
        let result = (|| {
            if key.is_none() {
                *key = keychain::load(&self.vault_id);
            }
            let k = key
                .as_ref()
                .ok_or_else(|| "locked: run `hushfs unlock`".to_string())?;
            match open_vault(&self.vault, k) {
                Ok(s) => Ok(s),
                Err(Error::Damaged { .. }) => {
                    // After `rekey` the old key no longer opens the body:
                    // take the new one from the keychain if it is there.
                    let fresh = keychain::load(&self.vault_id)
                        .ok_or("the vault's key changed: run `hushfs unlock`")?;
                    let s = open_vault(&self.vault, &fresh).map_err(|e| e.to_string())?;
                    *key = Some(fresh);
                    Ok(s)
                }
                Err(e) => Err(e.to_string()),
            }
        })();
        match result {
            Ok(secrets) => self.apply(&secrets),
            Err(why) => {
                // Fail closed: without the vault, serve nothing.
                *key = None;
                self.source.lock().forget();
                *self.source_status.lock() = None;
                self.stop_serving(why);
            }
        }
    }

    /// The source's refresh interval (or token renewal, or end of
    /// staleness) has come: ask it again, unless the mount is locked.
    fn poll_source(&self) {
        let key = self.key.lock();
        let Some(k) = key.as_ref() else { return };
        match open_vault(&self.vault, k) {
            Ok(secrets) => self.apply(&secrets),
            Err(_) => {
                drop(key);
                self.reload();
            }
        }
    }

    /// Asks the source for the values and serves them, or stops serving
    /// and says why. The caller holds `key`.
    fn apply(&self, secrets: &Secrets) {
        let (outcome, notices, status) = {
            let mut src = self.source.lock();
            let outcome = src.current(secrets);
            (outcome, src.take_notices(), src.status())
        };
        self.record_notices(notices);
        *self.source_status.lock() = status;
        if self.locking.load(Ordering::Acquire) {
            return;
        }
        let served = match outcome {
            Ok(s) => s,
            Err(e) => return self.stop_serving(e.to_string()),
        };
        // The new policy before the new files: never new files under an old
        // policy. A policy this version cannot read stops serving.
        match crate::project::policy_of(secrets, &self.project) {
            Ok(p) => self.fs.set_policy(enforcer(p)),
            Err(e) => return self.stop_serving(e.to_string()),
        }
        if served.changed || self.fs.is_locked() {
            let files = match render::render_project(&served.values, &self.config) {
                Ok(f) => f,
                Err(e) => return self.stop_serving(e.to_string()),
            };
            if !self.memory_locked {
                lock_contents(&files);
            }
            let (inodes, entries) = self.fs.replace(files, redactor(&served.values));
            self.invalidate(&inodes, &entries);
            log::info!(
                "reloaded {} ({} changed, {} names)",
                self.project,
                inodes.len(),
                entries.len()
            );
        }
        *self.problem.lock() = served.warning;
    }

    /// Fail closed: drop every value, deny every open and read, and say why.
    fn stop_serving(&self, why: String) {
        self.fs.lock();
        let mut problem = self.problem.lock();
        // A source polled while it refuses says the same thing each time.
        if problem.as_deref() != Some(why.as_str()) {
            log::warn!("not serving: {why}");
        }
        *problem = Some(why);
    }

    fn record_notices(&self, notices: Vec<Notice>) {
        for n in notices {
            let _ = self.audit.record(Event {
                reason: Some(n.reason),
                secrets: n.secrets,
                ..self.event(n.event)
            });
        }
    }

    fn invalidate(&self, inodes: &[u64], entries: &[(u64, String)]) {
        let n = self.notifier.lock();
        let Some(n) = n.as_ref() else { return };
        for ino in inodes {
            let _ = n.inval_inode(fuser::INodeNo(*ino), 0, 0);
        }
        for (parent, name) in entries {
            let _ = n.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::new(name));
        }
    }

    fn lock(&self) {
        // Deny at once; a fetch in flight (holding `key`) sees `locking`
        // and does not serve what it got.
        self.locking.store(true, Ordering::Release);
        self.fs.lock();
        {
            let mut key = self.key.lock();
            *key = None;
            self.source.lock().forget();
            *self.source_status.lock() = None;
            self.fs.lock();
        }
        self.locking.store(false, Ordering::Release);
        let _ = self.audit.record(self.event("lock"));
        log::info!("locked: values dropped");
    }

    fn status(&self) -> MountStatus {
        MountStatus {
            mountpoint: self.mountpoint.display().to_string(),
            project: self.project.clone(),
            vault: self.vault.display().to_string(),
            pid: std::process::id(),
            started: self.started,
            locked: self.fs.is_locked(),
            problem: self
                .problem
                .lock()
                .clone()
                .or_else(|| self.audit.health().err().map(|e| format!("audit log: {e}"))),
            files: self.fs.file_count(),
            open_handles: self.fs.open_handles(),
            grants: self.authz.list(),
            auto_unmount: self.auto_unmount,
            allow_other: self.authz.uids().allow_other,
            allow_root: self.authz.uids().allow_root,
            private: self.private,
            policy: self.fs.has_policy(),
            log: self.log.as_ref().map(|p| p.display().to_string()),
            source: self.source_status.lock().clone(),
        }
    }

    fn handle(&self, peer: control::Peer, req: Request, fds: Vec<OwnedFd>) -> Response {
        match req {
            Request::Status => Response {
                status: Some(self.status()),
                ..Response::ok()
            },
            Request::GrantSelf { label } => self.grant_self(peer, label, fds),
            Request::GrantPid { pid, ttl_secs } => self.grant_pid(peer, pid, ttl_secs),
            Request::GrantCgroup {
                path,
                ttl_secs,
                allow_writable,
            } => self.grant_cgroup(peer, &path, ttl_secs, allow_writable),
            Request::Revoke { grant } => {
                if self.authz.revoke(grant) {
                    self.wake_watcher();
                    let _ = self.audit.record(Event {
                        grant: Some(grant.to_string()),
                        pid: Some(peer.pid),
                        ..self.event("revoke")
                    });
                    self.check_private_done();
                    Response::ok()
                } else {
                    Response::err(format!("no grant {grant}"))
                }
            }
            Request::Lock => {
                self.lock();
                Response::ok()
            }
            Request::Reload => {
                self.reload();
                match self.problem.lock().clone() {
                    None => Response::ok(),
                    Some(p) => Response::err(p),
                }
            }
            Request::Shutdown => {
                let _ = self.stop.send(Stop::Requested);
                Response::ok()
            }
        }
    }

    fn check_private_done(&self) {
        if self.private && self.granted_once.load(Ordering::Acquire) && self.authz.is_empty() {
            let _ = self.stop.send(Stop::OwnerGone);
        }
    }

    /// Revokes grants whose root exited or whose time ran out.
    fn reap(&self) {
        for g in self.authz.reap() {
            log::info!("grant {} ended: {}", g.id, g.label);
            let _ = self.audit.record(Event {
                grant: Some(g.id.to_string()),
                reason: Some("root process exited or grant expired".into()),
                ..self.event("revoke")
            });
        }
        self.check_private_done();
    }
}

/// Pins each rendered file's bytes in RAM as far as RLIMIT_MEMLOCK allows.
fn lock_contents(files: &[Rendered]) {
    let pinned = files
        .iter()
        .filter(|f| crate::sys::harden::mlock_slice(f.content.expose()))
        .count();
    if pinned < files.len() {
        log::warn!(
            "RLIMIT_MEMLOCK allowed locking {pinned} of {} files in memory; the rest may be swapped",
            files.len()
        );
    }
}

fn report(ready: &mut Option<File>, msg: &str) {
    if let Some(f) = ready.as_mut() {
        let _ = f.write_all(msg.as_bytes());
        let _ = f.write_all(b"\n");
    }
    *ready = None;
}

/// Serves one mount until it is told to stop. Errors before the mount is
/// ready are reported through `opts.ready` as well as returned.
pub fn serve(mut opts: ServeOpts) -> Result<()> {
    let mut ready = opts.ready.take();
    match serve_inner(opts, &mut ready) {
        Ok(()) => Ok(()),
        Err(e) => {
            report(&mut ready, &format!("error: {e}"));
            Err(e)
        }
    }
}

fn serve_inner(opts: ServeOpts, ready: &mut Option<File>) -> Result<()> {
    crate::sys::harden::one_malloc_arena();
    let all_locked = crate::sys::harden::lock_memory_if_allowed();
    if opts.private {
        // The `run` that started us may die by SIGKILL: take that as a stop.
        // SAFETY: PR_SET_PDEATHSIG takes a signal number only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
    }
    let mp = opts.mountpoint.clone();
    let sealed = Sealed::read(&opts.vault)?;
    let vault_id = sealed.header().id_hex();
    // Every decision goes to the vault's tamper-evident log. No log, no
    // mount: an access that cannot be recorded is refused anyway.
    let audit_log = Arc::new(
        crate::audit::AuditLog::open(
            &sealed.header().vault_id,
            Some(&opts.key),
            Default::default(),
        )
        .map_err(|e| Error::Other(format!("cannot open the audit log: {e}")))?,
    );
    let audit: Arc<dyn AuditSink> = audit_log.clone();
    let secrets = sealed.open(&opts.key)?;
    let policy = crate::project::policy_of(&secrets, &opts.project)?;
    let mut source = ProjectSource::new(&opts.project, &opts.config);
    let served = source.current(&secrets)?;
    drop(secrets);
    let files = render::render_project(&served.values, &opts.config)
        .map_err(|e| Error::usage(e.to_string()))?;
    let redact = redactor(&served.values);
    drop(served.values);
    if !all_locked {
        lock_contents(&files);
    }

    // Clear what a killed daemon left; refuse a live mount or a foreign one.
    let live = registry::find(&mp).is_some();
    match mountpoint::inspect(&mp, live)? {
        mountpoint::State::Free => {}
        mountpoint::State::Stale => {
            log::warn!(
                "{} holds a stale mount from a dead daemon: detaching it",
                mp.display()
            );
            mountpoint::unmount(&mp, true)?;
        }
        mountpoint::State::Hushfs => {
            return Err(Error::usage(format!(
                "{} is already mounted by hushfs: `hushfs umount {}` first",
                mp.display(),
                mp.display()
            )));
        }
        mountpoint::State::Other(t) => {
            return Err(Error::usage(format!(
                "{} already has a {t} filesystem mounted: pick an empty directory",
                mp.display()
            )));
        }
    }

    // SAFETY: getuid/getgid have no preconditions.
    let owner = unsafe { (libc::getuid(), libc::getgid()) };
    let uids = UidRules {
        owner: owner.0,
        allow_root: opts.allow_root,
        allow_other: opts.allow_other,
    };
    let authz = Arc::new(Authorizer::with_uids(uids, ProcFs));
    let fs = Arc::new(SecretFs::new(
        owner,
        &opts.project,
        &mp.display().to_string(),
        authz.clone(),
        audit.clone(),
        files,
        redact,
    ));
    fs.set_policy(enforcer(policy));

    // Auto-unmount (fusermount3 unmounts when we die, even by SIGKILL) needs
    // allow_other at the kernel level; fs then checks every caller's uid.
    let auto_unmount = mountpoint::fusermount().is_some()
        && (mountpoint::is_root() || mountpoint::user_allow_other());
    let mut mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoAtime,
        fuser::MountOption::FSName(format!("hushfs:{}", opts.project)),
        fuser::MountOption::Subtype("hushfs".into()),
    ];
    let mut cfg = fuser::Config::default();
    if auto_unmount {
        mount_options.push(fuser::MountOption::AutoUnmount);
        cfg.acl = fuser::SessionACL::RootAndOwner;
    }
    if opts.allow_other {
        // fuser would filter other uids itself; fs decides instead.
        cfg.acl = fuser::SessionACL::All;
    } else if opts.allow_root {
        cfg.acl = fuser::SessionACL::RootAndOwner;
    }
    cfg.mount_options = mount_options;
    cfg.n_threads = Some(opts.threads.max(2));
    cfg.clone_fd = true;

    let socket = registry::socket_path(&mp);
    crate::sys::paths::ensure_private_dir(&registry::dir())?;
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| Error::io("cannot create control socket", &socket, e))?;

    let session =
        fuser::Session::new(crate::fuse::Adapter(fs.clone()), &mp, &cfg).map_err(|e| {
            let _ = std::fs::remove_file(&socket);
            let hint = if mountpoint::is_root() {
                ""
            } else {
                " (ordinary users need the fuse3 package: fusermount3)"
            };
            Error::Other(format!("cannot mount {}: {e}{hint}", mp.display()))
        })?;
    let bg = session
        .spawn()
        .map_err(|e| Error::Other(format!("cannot start the FUSE session: {e}")))?;

    let (stop_tx, stop_rx) = mpsc::channel();
    let (wake_r, wake_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Error::Other(format!("pipe: {e}")))?;
    let started = crate::authz::grants::now_secs();
    let d = Arc::new(Daemon {
        fs: fs.clone(),
        authz,
        audit: audit.clone(),
        key: Mutex::new(Some(opts.key)),
        source_status: Mutex::new(source.status()),
        source: Mutex::new(source),
        locking: AtomicBool::new(false),
        problem: Mutex::new(served.warning),
        notifier: Mutex::new(Some(bg.notifier())),
        vault: opts.vault.clone(),
        vault_id,
        project: opts.project.clone(),
        config: opts.config.clone(),
        mountpoint: mp.clone(),
        started,
        private: opts.private,
        granted_once: AtomicBool::new(false),
        auto_unmount,
        memory_locked: all_locked,
        log: opts.log.clone(),
        stop: stop_tx.clone(),
        wake: wake_w,
    });

    registry::write(&registry::Entry {
        mountpoint: mp.clone(),
        project: opts.project.clone(),
        vault: opts.vault.clone(),
        pid: std::process::id(),
        started,
        private: opts.private,
        socket: socket.clone(),
        log: opts.log.clone(),
    })?;

    {
        let d = d.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control::serve(listener, |p, r, f| d.handle(p, r, f)))
            .map_err(|e| Error::Other(format!("thread: {e}")))?;
    }
    {
        let d = d.clone();
        std::thread::Builder::new()
            .name("grants".into())
            .spawn(move || watch_grants(d, wake_r))
            .map_err(|e| Error::Other(format!("thread: {e}")))?;
    }
    {
        let d = d.clone();
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || watch_source(d))
            .map_err(|e| Error::Other(format!("thread: {e}")))?;
    }
    {
        let d = d.clone();
        std::thread::Builder::new()
            .name("vault".into())
            .spawn(move || watch_vault(d))
            .map_err(|e| Error::Other(format!("thread: {e}")))?;
    }
    let mut signals =
        signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
            .map_err(|e| Error::Other(format!("signals: {e}")))?;
    {
        let tx = stop_tx.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(s) = signals.forever().next() {
                    let _ = tx.send(Stop::Signal(s));
                }
            })
            .map_err(|e| Error::Other(format!("thread: {e}")))?;
    }

    let _ = audit.record(d.event("mount"));
    let notices = d.source.lock().take_notices();
    d.record_notices(notices);
    log::info!(
        "mounted {} at {} (pid {}, auto-unmount {})",
        opts.project,
        mp.display(),
        std::process::id(),
        if auto_unmount { "on" } else { "off" }
    );
    report(ready, "ok");

    let why = loop {
        match stop_rx.recv_timeout(Duration::from_millis(500)) {
            Ok(s) => break s,
            Err(mpsc::RecvTimeoutError::Timeout) if bg.guard.is_finished() => {
                break Stop::Unmounted;
            }
            Err(_) => {}
        }
    };
    match why {
        Stop::Signal(s) => log::info!("signal {s}: unmounting"),
        Stop::Requested => log::info!("umount requested"),
        Stop::Unmounted => log::info!("unmounted from outside"),
        Stop::OwnerGone => log::info!("private mount no longer used: unmounting"),
    }
    // Drop every value first, then detach the mount. A busy mount is
    // detached lazily; the kernel connection dies with this process, so
    // files still open elsewhere read nothing more.
    fs.lock();
    *d.notifier.lock() = None;
    if !matches!(why, Stop::Unmounted)
        && let Err(e) = mountpoint::unmount_or_detach(&mp)
    {
        log::warn!("{e}");
    }
    registry::remove(&mp);
    if d.private {
        // The directory was made for this run alone; remove it even if the
        // run that made it was killed.
        let _ = std::fs::remove_dir(&mp);
    }
    let _ = audit.record(d.event("umount"));
    // The session (and with it the fs and its Arc of the sink) is leaked
    // below, so write what is queued now.
    if let Err(e) = audit_log.flush() {
        log::error!("audit log: {e}");
    }
    // The mount is gone (or detached) already; fuser's drop would try to
    // unmount a second time and log EINVAL, or join threads that still
    // serve files open elsewhere until this process exits.
    std::mem::forget(bg);
    Ok(())
}
