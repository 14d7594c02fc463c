//! Authorization: is the caller of a file operation inside a granted
//! process tree? Knows processes and grants, nothing of secrets or FUSE.
//!
//! A caller arrives as (thread id, uid). The thread id is mapped to its
//! process (tgid); from there the walk goes up through parents, reading
//! /proc/PID/stat as bytes, at most 64 steps, checking that every parent
//! started no later than its child and that the child's ppid did not change
//! while the parent was read. The first ancestor that is a live grant's root
//! (same pid *and* starttime, pidfd still open on a live process) admits it.
//! Decisions are cached per thread for `CACHE_TTL`, pinned by a thread pidfd
//! so a recycled thread id can never inherit one, and the cache is flushed
//! whenever a grant is added or revoked.

pub mod grants;
pub mod proc;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

pub use grants::{Grant, GrantId, GrantInfo, GrantKind, Liveness};
pub use proc::CgroupAnchor;
pub use proc::{ProcFs, ProcSource, ProcStat};

/// Parents followed at most.
pub const MAX_DEPTH: usize = 64;
/// How long a decision is reused for the same live thread.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most; the cache is emptied when full.
const CACHE_MAX: usize = 4096;

/// Who is asking, as the kernel reported it.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    /// Thread id (0 when the kernel cannot name it in our pid namespace).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The process behind a decision, for the audit log.
#[derive(Debug, Default)]
pub struct Subject {
    pub tgid: u32,
    pub starttime: u64,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    /// `cmdline` as the audit log shows it (managed values taken out), with
    /// the generation of the values it was redacted against: worked out
    /// once per subject, not on every open and read it makes.
    pub audit_cmdline: Mutex<Option<(u64, Option<String>)>>,
}

#[derive(Clone, Debug)]
pub struct Decision {
    pub allowed: bool,
    pub reason: &'static str,
    pub grant: Option<GrantId>,
    /// The caller's process.
    pub subject: Option<Arc<Subject>>,
    /// For an allowed decision: the process directly below the grant root on
    /// the caller's ancestry path — for a `hushfs run` grant, the command run
    /// started. `None` when the caller is the root itself. Policies that
    /// limit which commands may read what are checked against it.
    pub command: Option<Arc<Subject>>,
}

impl Decision {
    pub fn deny(reason: &'static str) -> Decision {
        Decision {
            allowed: false,
            reason,
            grant: None,
            subject: None,
            command: None,
        }
    }
}

struct Cached<A> {
    anchor: A,
    /// A thread may change uid (setuid): a decision holds for one uid.
    uid: u32,
    epoch: u64,
    expires: Instant,
    decision: Decision,
}

/// Which uids may reach the mount at all.
#[derive(Clone, Copy, Debug)]
pub struct UidRules {
    pub owner: u32,
    /// `mount --allow-root`: root counts as the owner.
    pub allow_root: bool,
    /// `mount --allow-other`: other uids may list the mount (root, for bind
    /// mounts) and read through container (pid/cgroup) grants.
    pub allow_other: bool,
}

impl UidRules {
    pub fn owner_only(owner: u32) -> Self {
        UidRules {
            owner,
            allow_root: false,
            allow_other: false,
        }
    }

    fn owner_like(&self, uid: u32) -> bool {
        uid == self.owner || (uid == 0 && self.allow_root)
    }
}

pub struct Authorizer<P: ProcSource = ProcFs> {
    uids: UidRules,
    proc: P,
    grants: RwLock<Vec<Arc<Grant>>>,
    next_id: AtomicU64,
    /// Bumped on every grant change; cached decisions of older epochs are void.
    epoch: AtomicU64,
    cache: Mutex<HashMap<u32, Cached<P::Anchor>>>,
    /// Processes a walk found inside a grant, by tgid: a later walk from a
    /// new descendant stops at the first of them instead of reading /proc
    /// all the way up to the grant's root. Same life as a cached decision.
    members: Mutex<HashMap<u32, Member>>,
}

/// A process a walk found inside a grant.
struct Member {
    starttime: u64,
    epoch: u64,
    expires: Instant,
    grant: GrantId,
    /// Generations below the grant's root (a descendant further than
    /// `MAX_DEPTH` is denied as if walked).
    depth: usize,
    /// The process below the grant's root on its path, shared by all its
    /// descendants.
    command: Option<Arc<Subject>>,
}

impl<P: ProcSource> Authorizer<P> {
    pub fn new(owner_uid: u32, proc: P) -> Self {
        Self::with_uids(UidRules::owner_only(owner_uid), proc)
    }

    pub fn with_uids(uids: UidRules, proc: P) -> Self {
        Authorizer {
            uids,
            proc,
            grants: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            cache: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
        }
    }

    pub fn proc(&self) -> &P {
        &self.proc
    }

    pub fn uids(&self) -> UidRules {
        self.uids
    }

    /// May this caller see names and sizes? The owner (and root with
    /// --allow-root) always; on an --allow-other mount also root (a
    /// container runtime bind-mounting it) and processes a grant admits.
    pub fn may_list(&self, c: &Caller) -> bool {
        if self.uids.owner_like(c.uid) {
            return true;
        }
        self.uids.allow_other && (c.uid == 0 || self.decide(c).allowed)
    }

    /// Decides for one request.
    pub fn decide(&self, c: &Caller) -> Decision {
        if c.pid == 0 {
            return Decision::deny(
                "pid 0 (caller outside the daemon's pid namespace, or a release)",
            );
        }
        let owner_like = self.uids.owner_like(c.uid);
        if !owner_like && !self.uids.allow_other {
            return Decision::deny("uid is not the mount owner");
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let now = Instant::now();
        if let Some(e) = self.cache.lock().get(&c.pid)
            && e.epoch == epoch
            && e.uid == c.uid
            && e.expires > now
            && self.proc.alive(&e.anchor)
        {
            return e.decision.clone();
        }
        let Some(anchor) = self.proc.anchor(c.pid) else {
            return Decision::deny("process gone");
        };
        let mut d = self.walk(c.pid, &anchor);
        if d.allowed && !owner_like {
            let admits = d
                .grant
                .and_then(|id| {
                    self.grants
                        .read()
                        .iter()
                        .find(|g| g.id == id)
                        .map(|g| g.other_uids)
                })
                .unwrap_or(false);
            if !admits {
                d.allowed = false;
                d.reason = "another uid may read only through a pid or cgroup grant";
            }
        }
        // Cache only if the thread is still the one we examined and no grant
        // changed meanwhile.
        if self.proc.alive(&anchor) && self.epoch.load(Ordering::Acquire) == epoch {
            let mut cache = self.cache.lock();
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                c.pid,
                Cached {
                    anchor,
                    uid: c.uid,
                    epoch,
                    expires: now + CACHE_TTL,
                    decision: d.clone(),
                },
            );
        }
        d
    }

    fn walk(&self, tid: u32, anchor: &P::Anchor) -> Decision {
        let Some(tgid) = self.proc.tgid(tid, anchor) else {
            return Decision::deny("process gone");
        };
        let Some(first) = self.proc.stat(tgid) else {
            return Decision::deny("process gone");
        };
        // Read once: at depth 1 the caller is also the command below the
        // root, and audit and policy share it.
        let describe = |p: u32, starttime: u64| {
            let (exe, cmdline) = self.proc.describe(p);
            Arc::new(Subject {
                tgid: p,
                starttime,
                exe,
                cmdline,
                ..Subject::default()
            })
        };
        let caller_subject = std::cell::OnceCell::new();
        let subject = || {
            Some(
                caller_subject
                    .get_or_init(|| describe(tgid, first.starttime))
                    .clone(),
            )
        };
        let deny = |reason| Decision {
            subject: subject(),
            ..Decision::deny(reason)
        };
        // The epoch before the grants: a grant added meanwhile bumps it, and
        // `remember` then keeps nothing this walk found without it.
        let epoch = self.epoch.load(Ordering::Acquire);
        let grants = self.grants.read().clone();
        let now = grants::now_secs();
        // Container grants: the process's own cgroup (children inherit it).
        if grants.iter().any(|g| g.is_cgroup())
            && let Some(cg) = self.proc.cgroup(tgid)
            && let Some(g) = grants.iter().find(|g| g.matches_cgroup(&cg, now))
        {
            return Decision {
                allowed: true,
                reason: "inside a granted cgroup",
                grant: Some(g.id),
                subject: subject(),
                command: None,
            };
        }
        let (mut pid, mut st) = (tgid, first);
        // The process one step below `pid` on the way up.
        let mut below: Option<(u32, u64)> = None;
        // Every process passed on the way up: members if the walk admits.
        let mut path: Vec<(u32, u64)> = Vec::new();
        for _ in 0..=MAX_DEPTH {
            if let Some((grant, depth, expires, command)) =
                self.member(pid, st.starttime, epoch, &grants, now)
            {
                if path.len() + depth > MAX_DEPTH {
                    return deny("ancestry deeper than 64 processes");
                }
                // No longer than the member found: a chain of forks must
                // not keep renewing what one walk established.
                self.remember(&path, depth, epoch, grant, &command, expires);
                return Decision {
                    allowed: true,
                    reason: "inside a granted process tree",
                    grant: Some(grant),
                    subject: subject(),
                    command,
                };
            }
            if let Some(g) = grants.iter().find(|g| g.matches(pid, st.starttime, now)) {
                let command = match below {
                    Some((p, start)) if (p, start) == (tgid, first.starttime) => subject(),
                    Some((p, start)) => Some(describe(p, start)),
                    None => None,
                };
                let expires = Instant::now() + CACHE_TTL;
                self.remember(&path, 0, epoch, g.id, &command, expires);
                return Decision {
                    allowed: true,
                    reason: "inside a granted process tree",
                    grant: Some(g.id),
                    subject: subject(),
                    command,
                };
            }
            path.push((pid, st.starttime));
            if st.ppid == 0 || pid == 1 {
                return deny("no grant in the process's ancestry");
            }
            let Some(parent) = self.proc.stat(st.ppid) else {
                return deny("ancestry changed while checking");
            };
            if parent.starttime > st.starttime {
                // The parent pid now names a younger process: reused.
                return deny("ancestry changed while checking");
            }
            // The caller's own step asks its pinned pidfd (one ioctl; a live
            // anchor is the same process as the stat read before it); a
            // step further up reads /proc again.
            let unchanged = match (pid == tgid && below.is_none())
                .then(|| self.proc.ppid_now(anchor))
                .flatten()
            {
                Some(ppid) => ppid == st.ppid,
                None => self.proc.stat(pid) == Some(st),
            };
            if !unchanged {
                return deny("ancestry changed while checking");
            }
            below = Some((pid, st.starttime));
            pid = st.ppid;
            st = parent;
        }
        deny("ancestry deeper than 64 processes")
    }

    /// The grant (and command) a recent walk found `pid` inside, if that
    /// is still the same process (start time), no grant changed since, and
    /// the grant is still live (root alive, not expired). Like a cached
    /// decision, it may outlive a reparenting by up to `CACHE_TTL`.
    fn member(
        &self,
        pid: u32,
        starttime: u64,
        epoch: u64,
        grants: &[Arc<Grant>],
        now: u64,
    ) -> Option<(GrantId, usize, Instant, Option<Arc<Subject>>)> {
        let members = self.members.lock();
        let m = members.get(&pid)?;
        let valid = m.starttime == starttime
            && m.epoch == epoch
            && m.expires > Instant::now()
            && grants.iter().any(|g| g.id == m.grant && g.live(now));
        valid.then(|| (m.grant, m.depth, m.expires, m.command.clone()))
    }

    /// Records the processes of an admitting walk as members, unless a
    /// grant changed while walking. `path` runs from the caller up to just
    /// below the process found inside, which is `base` generations below
    /// the root.
    fn remember(
        &self,
        path: &[(u32, u64)],
        base: usize,
        epoch: u64,
        grant: GrantId,
        command: &Option<Arc<Subject>>,
        expires: Instant,
    ) {
        let mut members = self.members.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if members.len() + path.len() > CACHE_MAX {
            members.clear();
        }
        for (i, &(pid, starttime)) in path.iter().enumerate() {
            members.insert(
                pid,
                Member {
                    starttime,
                    epoch,
                    expires,
                    grant,
                    depth: base + path.len() - i,
                    command: command.clone(),
                },
            );
        }
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.lock().clear();
        self.members.lock().clear();
    }

    /// Adds a grant for the owner's processes; returns its id.
    pub fn add(&self, kind: GrantKind, label: String, ttl: Option<Duration>) -> GrantId {
        self.add_grant(kind, label, ttl, false)
    }

    /// Adds a grant; `other_uids` lets processes of other uids read through
    /// it (container grants on an --allow-other mount).
    pub fn add_grant(
        &self,
        kind: GrantKind,
        label: String,
        ttl: Option<Duration>,
        other_uids: bool,
    ) -> GrantId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let created = grants::now_secs();
        let g = Grant {
            id,
            other_uids,
            kind,
            label,
            created,
            expires: ttl.map(|t| created.saturating_add(t.as_secs().max(1))),
        };
        self.grants.write().push(Arc::new(g));
        self.changed();
        id
    }

    /// Removes a grant. Returns whether it existed.
    pub fn revoke(&self, id: GrantId) -> bool {
        let mut g = self.grants.write();
        let before = g.len();
        g.retain(|x| x.id != id);
        let removed = g.len() != before;
        drop(g);
        if removed {
            self.changed();
        }
        removed
    }

    /// Removes grants whose root exited or whose time ran out; returns them.
    pub fn reap(&self) -> Vec<GrantInfo> {
        let now = grants::now_secs();
        let mut g = self.grants.write();
        let (dead, live): (Vec<_>, Vec<_>) = g.drain(..).partition(|x| !x.live(now));
        *g = live;
        drop(g);
        if !dead.is_empty() {
            self.changed();
        }
        dead.iter().map(|x| x.describe()).collect()
    }

    pub fn list(&self) -> Vec<GrantInfo> {
        self.grants.read().iter().map(|g| g.describe()).collect()
    }

    pub fn len(&self) -> usize {
        self.grants.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// fds that become readable when a grant's root exits, and the soonest
    /// expiry, for the watcher thread.
    pub fn watch_set(&self) -> (Vec<std::os::fd::RawFd>, Option<u64>) {
        let g = self.grants.read();
        (
            g.iter().filter_map(|x| x.watch_fd()).collect(),
            g.iter().filter_map(|x| x.expires).min(),
        )
    }
}

#[cfg(test)]
mod tests;
