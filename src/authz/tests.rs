//! The decision logic against a fake process table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::*;
use crate::authz::grants::Flag;

/// pid → (ppid, starttime, tgid); threads map to their tgid.
#[derive(Default)]
struct FakeProcs {
    procs: Mutex<HashMap<u32, (u32, u64)>>,
    threads: Mutex<HashMap<u32, u32>>,
    /// Per-tid identity generation: bumping it kills old anchors.
    gens: Mutex<HashMap<u32, Arc<AtomicU64>>>,
    cgroups: Mutex<HashMap<u32, String>>,
    stat_reads: AtomicU64,
    /// When `.0` is read, `.1` is reparented to `.2`: a process orphaned
    /// in the middle of a walk.
    race: Mutex<Option<(u32, u32, u32)>>,
}

struct FakeAnchor(Arc<AtomicU64>, u64, u32);

impl FakeProcs {
    fn spawn(&self, pid: u32, ppid: u32, start: u64) {
        self.procs.lock().insert(pid, (ppid, start));
        self.threads.lock().insert(pid, pid);
        self.gens
            .lock()
            .entry(pid)
            .or_default()
            .fetch_add(1, Ordering::SeqCst);
    }
    fn thread(&self, tid: u32, tgid: u32) {
        self.threads.lock().insert(tid, tgid);
        self.gens
            .lock()
            .entry(tid)
            .or_default()
            .fetch_add(1, Ordering::SeqCst);
    }
    fn exit(&self, pid: u32) {
        self.procs.lock().remove(&pid);
        self.threads.lock().remove(&pid);
        if let Some(g) = self.gens.lock().get(&pid) {
            g.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn reparent(&self, pid: u32, new_ppid: u32) {
        self.procs.lock().get_mut(&pid).unwrap().0 = new_ppid;
    }
}

impl ProcSource for Arc<FakeProcs> {
    type Anchor = FakeAnchor;
    fn anchor(&self, tid: u32) -> Option<FakeAnchor> {
        self.threads.lock().get(&tid)?;
        let g = self.gens.lock().get(&tid)?.clone();
        let v = g.load(Ordering::SeqCst);
        Some(FakeAnchor(g, v, tid))
    }
    fn alive(&self, a: &FakeAnchor) -> bool {
        a.0.load(Ordering::SeqCst) == a.1
    }
    fn tgid(&self, tid: u32, _a: &FakeAnchor) -> Option<u32> {
        self.threads.lock().get(&tid).copied()
    }
    fn ppid_now(&self, a: &FakeAnchor) -> Option<u32> {
        if !self.alive(a) {
            return None;
        }
        let tgid = *self.threads.lock().get(&a.2)?;
        self.procs.lock().get(&tgid).map(|&(ppid, _)| ppid)
    }
    fn stat(&self, pid: u32) -> Option<ProcStat> {
        self.stat_reads.fetch_add(1, Ordering::Relaxed);
        let st = self
            .procs
            .lock()
            .get(&pid)
            .map(|&(ppid, starttime)| ProcStat { ppid, starttime });
        let race = *self.race.lock();
        if let Some((trigger, child, new_ppid)) = race
            && trigger == pid
        {
            *self.race.lock() = None;
            self.reparent(child, new_ppid);
        }
        st
    }
    fn describe(&self, _pid: u32) -> (Option<String>, Option<String>) {
        (Some("/bin/fake".into()), Some("fake --arg".into()))
    }
    fn cgroup(&self, pid: u32) -> Option<String> {
        Some(
            self.cgroups
                .lock()
                .get(&pid)
                .cloned()
                .unwrap_or_else(|| "/user.slice".into()),
        )
    }
}

const OWNER: u32 = 1000;

fn caller(pid: u32) -> Caller {
    Caller {
        pid,
        uid: OWNER,
        gid: OWNER,
    }
}

/// init(1) → shell(10) → run(20) → child(30) → grandchild(40); sibling(21) of run.
fn setup() -> (Arc<FakeProcs>, Authorizer<Arc<FakeProcs>>, Arc<Flag>) {
    let p = Arc::new(FakeProcs::default());
    p.spawn(1, 0, 1);
    p.spawn(10, 1, 100);
    p.spawn(20, 10, 200);
    p.spawn(21, 10, 210);
    p.spawn(30, 20, 300);
    p.spawn(40, 30, 400);
    let a = Authorizer::new(OWNER, p.clone());
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    a.add(
        GrantKind::Tree {
            pid: 20,
            starttime: 200,
            root: Box::new(flag.clone()),
        },
        "run".into(),
        None,
    );
    (p, a, flag)
}

#[test]
fn root_descendants_and_threads_allowed() {
    let (p, a, _) = setup();
    for pid in [20, 30, 40] {
        assert!(a.decide(&caller(pid)).allowed, "pid {pid}");
    }
    p.thread(41, 40);
    let d = a.decide(&caller(41));
    assert!(d.allowed);
    assert_eq!(d.subject.unwrap().tgid, 40);
    // The command is the process just below the root (30), whoever reads.
    assert_eq!(d.command.unwrap().tgid, 30);
    assert_eq!(a.decide(&caller(30)).command.unwrap().tgid, 30);
    assert!(
        a.decide(&caller(20)).command.is_none(),
        "the root itself has no command"
    );
}

#[test]
fn outsiders_denied() {
    let (_, a, _) = setup();
    for pid in [1, 10, 21, 999] {
        assert!(!a.decide(&caller(pid)).allowed, "pid {pid}");
    }
    assert!(
        !a.decide(&Caller {
            pid: 0,
            ..caller(0)
        })
        .allowed
    );
    assert!(
        !a.decide(&Caller {
            uid: OWNER + 1,
            ..caller(30)
        })
        .allowed
    );
}

#[test]
fn deep_trees() {
    let (p, a, _) = setup();
    let mut parent = 40;
    for i in 0..70u32 {
        let pid = 1000 + i;
        p.spawn(pid, parent, 1000 + u64::from(i));
        parent = pid;
    }
    // Depth 5 below the root is fine.
    assert!(a.decide(&caller(1003)).allowed);
    // 60 ancestors to the root: still within 64 steps.
    assert!(a.decide(&caller(1057)).allowed);
    // Beyond 64 steps: denied.
    let d = a.decide(&caller(1069));
    assert!(!d.allowed);
    assert!(d.reason.contains("deeper than 64"));
}

#[test]
fn root_exit_revokes_and_pid_reuse_is_denied() {
    let (p, a, flag) = setup();
    assert!(a.decide(&caller(30)).allowed);
    // The root exits; its pidfd says so.
    flag.0.store(false, Ordering::Release);
    p.exit(20);
    p.reparent(30, 1);
    // A new process takes pid 20, younger, as a child of the shell.
    p.spawn(20, 10, 500);
    assert!(
        !a.decide(&caller(20)).allowed,
        "a recycled root pid must not match"
    );
    p.spawn(50, 20, 600);
    assert!(!a.decide(&caller(50)).allowed);
    assert_eq!(a.reap().len(), 1);
    assert!(a.is_empty());
}

#[test]
fn reused_pid_with_same_starttime_still_needs_a_live_root() {
    let (p, a, flag) = setup();
    flag.0.store(false, Ordering::Release);
    p.exit(20);
    // Worst case: same pid, same start tick.
    p.spawn(20, 10, 200);
    assert!(!a.decide(&caller(20)).allowed);
}

#[test]
fn younger_parent_means_reuse() {
    let (p, a, _) = setup();
    // 40's parent 30 exits and pid 30 is reused by a process younger than 40.
    p.exit(30);
    p.spawn(30, 20, 450);
    // The fake does not reparent 40: its recorded ppid still says 30.
    assert!(!a.decide(&caller(40)).allowed);
}

#[test]
fn cache_is_pinned_and_flushed() {
    let (p, a, _) = setup();
    assert!(a.decide(&caller(30)).allowed);
    let reads = p.stat_reads.load(Ordering::Relaxed);
    assert!(a.decide(&caller(30)).allowed);
    assert_eq!(
        p.stat_reads.load(Ordering::Relaxed),
        reads,
        "second decision came from the cache"
    );
    // Thread 30 exits and the id is recycled by an unrelated process: the
    // cached "allow" must not carry over.
    p.exit(30);
    p.spawn(30, 10, 900);
    assert!(!a.decide(&caller(30)).allowed);
    // Adding a grant flushes cached denials.
    assert!(!a.decide(&caller(21)).allowed);
    let g = a.add(
        GrantKind::Tree {
            pid: 21,
            starttime: 210,
            root: Box::new(Arc::new(Flag(AtomicBool::new(true)))),
        },
        "x".into(),
        None,
    );
    assert!(a.decide(&caller(21)).allowed);
    assert!(a.revoke(g));
    assert!(
        !a.decide(&caller(21)).allowed,
        "revocation takes effect at once"
    );
}

#[test]
fn expiry() {
    let (_, a, _) = setup();
    let g = a.add(
        GrantKind::Tree {
            pid: 21,
            starttime: 210,
            root: Box::new(Arc::new(Flag(AtomicBool::new(true)))),
        },
        "ttl".into(),
        Some(Duration::from_secs(1)),
    );
    assert!(a.decide(&caller(21)).allowed);
    std::thread::sleep(Duration::from_millis(2100));
    // Expired grants no longer match even before the watcher reaps them.
    a.changed();
    assert!(!a.decide(&caller(21)).allowed);
    let reaped = a.reap();
    assert_eq!(reaped[0].id, g);
}

fn cgroup_grant(
    a: &Authorizer<Arc<FakeProcs>>,
    path: &str,
    other_uids: bool,
) -> (GrantId, Arc<Flag>) {
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let id = a.add_grant(
        GrantKind::Cgroup {
            path: path.into(),
            anchor: Box::new(flag.clone()),
        },
        "container".into(),
        None,
        other_uids,
    );
    (id, flag)
}

#[test]
fn cgroup_grants_admit_the_group_and_below_only() {
    let (p, a, _) = setup();
    p.spawn(60, 1, 600);
    p.spawn(61, 1, 610);
    p.spawn(62, 1, 620);
    p.cgroups
        .lock()
        .insert(60, "/system.slice/docker-ab.scope".into());
    p.cgroups
        .lock()
        .insert(61, "/system.slice/docker-ab.scope/init".into());
    p.cgroups
        .lock()
        .insert(62, "/system.slice/docker-abc.scope".into());
    let (id, flag) = cgroup_grant(&a, "/system.slice/docker-ab.scope", false);
    assert!(a.decide(&caller(60)).allowed);
    assert!(a.decide(&caller(61)).allowed, "a sub-group is inside");
    assert!(
        !a.decide(&caller(62)).allowed,
        "a sibling with a longer name is not"
    );
    assert!(!a.decide(&caller(10)).allowed);
    // The group was removed (or replaced): the grant is void at once.
    flag.0.store(false, Ordering::Release);
    a.changed();
    assert!(!a.decide(&caller(60)).allowed);
    assert!(a.revoke(id));
}

#[test]
fn other_uids_only_through_container_grants_when_allowed() {
    let p = Arc::new(FakeProcs::default());
    p.spawn(1, 0, 1);
    p.spawn(20, 1, 200);
    p.spawn(30, 20, 300);
    p.spawn(60, 1, 600);
    p.cgroups.lock().insert(60, "/c1".into());
    let other = |pid| Caller {
        pid,
        uid: 999,
        gid: 999,
    };
    // Owner-only mount: another uid gets nothing, whatever the grants.
    let strict = Authorizer::new(OWNER, p.clone());
    cgroup_grant(&strict, "/c1", true);
    assert!(!strict.decide(&other(60)).allowed);
    assert!(!strict.may_list(&other(60)));

    let rules = UidRules {
        owner: OWNER,
        allow_root: false,
        allow_other: true,
    };
    let a = Authorizer::with_uids(rules, p.clone());
    a.add(
        GrantKind::Tree {
            pid: 20,
            starttime: 200,
            root: Box::new(Arc::new(Flag(AtomicBool::new(true)))),
        },
        "run".into(),
        None,
    );
    // A run grant is for the owner's processes: uid 999 below it is refused.
    let d = a.decide(&other(30));
    assert!(!d.allowed);
    assert!(d.reason.contains("pid or cgroup grant"));
    assert!(a.decide(&caller(30)).allowed, "the owner still reads");
    // A container grant admits its other-uid processes.
    assert!(!a.decide(&other(60)).allowed);
    cgroup_grant(&a, "/c1", true);
    assert!(a.decide(&other(60)).allowed);
    assert!(a.may_list(&other(60)));
    // Root may list (a runtime bind-mounting the directory) but not read.
    let root = Caller {
        pid: 10,
        uid: 0,
        gid: 0,
    };
    assert!(a.may_list(&root));
    assert!(!a.decide(&root).allowed);
    // A thread that changes uid does not keep a cached decision.
    assert!(a.decide(&caller(30)).allowed);
    assert!(!a.decide(&other(30)).allowed);
}

#[test]
fn allow_root_makes_root_owner_like() {
    let (p, _, _) = setup();
    let rules = UidRules {
        owner: OWNER,
        allow_root: true,
        allow_other: false,
    };
    let a = Authorizer::with_uids(rules, p.clone());
    a.add(
        GrantKind::Tree {
            pid: 20,
            starttime: 200,
            root: Box::new(Arc::new(Flag(AtomicBool::new(true)))),
        },
        "run".into(),
        None,
    );
    let root = |pid| Caller {
        pid,
        uid: 0,
        gid: 0,
    };
    assert!(a.may_list(&root(10)));
    assert!(!a.decide(&root(10)).allowed, "still needs a grant to read");
    assert!(a.decide(&root(30)).allowed);
}

#[test]
fn a_new_descendant_stops_at_a_recently_admitted_ancestor() {
    let (p, a, _) = setup();
    // A chain 20 (root) → 30 → 40 → 1000 → ... → 1019.
    let mut parent = 40;
    for i in 0..20u32 {
        p.spawn(1000 + i, parent, 1000 + u64::from(i));
        parent = 1000 + i;
    }
    assert!(a.decide(&caller(1019)).allowed);
    // A new child of 1019: one step to a known member, not 22 to the root.
    p.spawn(2000, 1019, 5000);
    let before = p.stat_reads.load(Ordering::Relaxed);
    let d = a.decide(&caller(2000));
    assert!(d.allowed);
    // The caller's own re-check goes through its pidfd, not /proc.
    assert!(p.stat_reads.load(Ordering::Relaxed) - before <= 2);
    // The command below the root is the one a full walk finds.
    assert_eq!(d.command.as_ref().map(|c| c.tgid), Some(30));
}

#[test]
fn a_known_member_is_not_trusted_after_pid_reuse_or_a_grant_change() {
    let (p, a, _) = setup();
    assert!(a.decide(&caller(40)).allowed);
    // 40 dies; an outsider (child of 1) gets pid 40 later, then a child.
    p.exit(40);
    p.spawn(40, 1, 900);
    p.spawn(41, 40, 901);
    assert!(!a.decide(&caller(41)).allowed, "reused pid is not a member");
    // Members are forgotten when grants change.
    let (p, a, _) = setup();
    assert!(a.decide(&caller(40)).allowed);
    let id = a.list()[0].id;
    a.revoke(id);
    p.spawn(42, 40, 950);
    assert!(!a.decide(&caller(42)).allowed, "revoked");
}

#[test]
fn a_process_orphaned_while_its_parent_is_read_is_denied() {
    let (p, a, _) = setup();
    // 40's parent 30 is read; at that moment 30 dies away from 40 (40 is
    // reparented to init). The parent read looks fine; only re-reading the
    // child's ppid shows the link is gone.
    *p.race.lock() = Some((30, 40, 1));
    let d = a.decide(&caller(40));
    assert!(!d.allowed);
    assert_eq!(d.reason, "ancestry changed while checking");
}
