//! The daemon's sink: `record` queues the event and a background thread
//! writes the queue as one batch every `flush_interval`, or at once when
//! the queue is long or someone waits.
//!
//! Who waits: an event that lets something happen (an allowed open or
//! read, a run, a grant) returns only once its batch is in the log file, so
//! `Ok` from `record` means "recorded" and the caller may proceed; many
//! concurrent callers share one write (group commit). A denial returns at
//! once: the access is refused whether or not the line is written yet, so a
//! burst of 10,000 denials costs a few batched writes, not 10,000.
//!
//! "In the log file" means written with `write(2)`: in the page cache, so a
//! crash of the daemon loses nothing. The fsync follows within one
//! `flush_interval` (at most ten per second by default); waiting for it on
//! every allowed read would add milliseconds to each (about 4 ms here).
//!
//! When a batch cannot be written, its events stay queued for the next
//! attempt, the waiters get `Err` (the daemon denies), and their events are
//! rewritten as denials so the log says what actually happened. `health`
//! then reports the reason, and a note in the runtime directory lets
//! `hushfs status` say it too. Dropping the sink (or `flush`) writes what is
//! queued: nothing is lost on a clean exit.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chain::{self, VaultId};
use super::log::{Files, Options, Writer};
use super::{Anchor, AuditSink, Event, Record};
use crate::error::{Error, Result};
use crate::secret::Key32;

#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub log: Options,
    /// Longest time an event waits in the queue.
    pub flush_interval: Duration,
    /// Queue length that triggers a write at once.
    pub batch_max: usize,
    /// Events kept while the log cannot be written; beyond, `record` fails
    /// and the loss is noted once the log works again.
    pub queue_max: usize,
    /// Where a failing sink leaves a note for `hushfs status`
    /// [default: the runtime directory].
    pub runtime_dir: PathBuf,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            log: Options::default(),
            flush_interval: Duration::from_millis(100),
            batch_max: 4096,
            queue_max: 100_000,
            runtime_dir: crate::sys::paths::runtime_dir(),
        }
    }
}

struct Item {
    ticket: u64,
    rec: Record,
    wait: bool,
}

#[derive(Default)]
struct Queue {
    pending: VecDeque<Item>,
    next_ticket: u64,
    /// Every ticket below this is in the log.
    written: u64,
    /// Every ticket below this was part of a write attempt.
    attempted: u64,
    /// Waiting tickets whose write failed: their callers get `Err`.
    failed: HashSet<u64>,
    failure: Option<String>,
    /// The failure is the disk refusing an fsync: lines reach the file but
    /// may not last, so allows are refused until a sync succeeds.
    sync_failed: bool,
    /// Events refused because the queue was full.
    dropped: u64,
    oldest: Option<Instant>,
    urgent: bool,
    shutdown: bool,
    /// The writer thread is gone (panicked or exited).
    dead: bool,
    head: Option<Anchor>,
}

struct Shared {
    q: Mutex<Queue>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Wakes callers waiting for their batch.
    done: Condvar,
    id: VaultId,
    opts: SinkOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The audit log as the mount daemon uses it. See the module docs.
pub struct AuditLog {
    shared: Arc<Shared>,
    files: Files,
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Opens the log of vault `id`. The chain's key comes from the
    /// keychain's audit state or, when given, the vault's data key (the
    /// daemon may drop its copy of the data key afterwards: the sink keeps
    /// only the evolving audit key). Fails when neither is available.
    pub fn open(id: &VaultId, data_key: Option<&Key32>, opts: SinkOptions) -> Result<AuditLog> {
        let writer = Writer::open(id, data_key, &opts.log)?;
        let files = writer.files().clone();
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue {
                head: writer.head(),
                ..Queue::default()
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            id: *id,
            opts,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hushfs-audit".into())
            .spawn(move || run(s, writer))
            .map_err(|e| Error::Other(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditLog {
            shared,
            files,
            thread: Some(thread),
        })
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The newest entry written by this sink (or found when it opened).
    pub fn head(&self) -> Option<Anchor> {
        self.shared.lock().head
    }

    /// Writes everything queued so far and waits for it.
    pub fn flush(&self) -> Result<(), String> {
        let mut q = self.shared.lock();
        let target = q.next_ticket;
        q.urgent = true;
        self.shared.wake.notify_one();
        loop {
            if q.written >= target {
                return Ok(());
            }
            if q.attempted >= target || q.dead {
                return Err(reason(&q));
            }
            q = self.shared.done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn reason(q: &Queue) -> String {
    match (&q.failure, q.dead) {
        (Some(f), _) => format!("the audit log cannot be written: {f}"),
        (None, true) => "the audit writer has stopped".into(),
        (None, false) => "the audit log could not record this".into(),
    }
}

impl AuditSink for AuditLog {
    fn record(&self, ev: Event) -> Result<(), String> {
        let wait = !ev.is_denial();
        let rec = Record::now(ev);
        let sh = &self.shared;
        let mut q = sh.lock();
        if q.shutdown || q.dead {
            return Err(reason(&q));
        }
        if q.pending.len() >= sh.opts.queue_max {
            q.dropped += 1;
            return Err(format!("audit queue full; {}", reason(&q)));
        }
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push_back(Item { ticket, rec, wait });
        q.oldest.get_or_insert_with(Instant::now);
        if wait || q.pending.len() >= sh.opts.batch_max {
            q.urgent = true;
            sh.wake.notify_one();
        }
        if !wait {
            return match q.failure {
                Some(_) => Err(reason(&q)),
                None => Ok(()),
            };
        }
        loop {
            if q.failed.remove(&ticket) {
                return Err(reason(&q));
            }
            if q.written > ticket {
                // Recorded, but on a disk that fails to sync: the log says
                // allow while the caller denies, which over-reports.
                return if q.sync_failed {
                    Err(reason(&q))
                } else {
                    Ok(())
                };
            }
            if q.dead {
                return Err(reason(&q));
            }
            q = sh.done.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn health(&self) -> Result<(), String> {
        let q = self.shared.lock();
        if q.failure.is_some() || q.dead {
            return Err(reason(&q));
        }
        if q.dropped > 0 {
            return Err(format!(
                "{} audit events were refused (queue full)",
                q.dropped
            ));
        }
        Ok(())
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        {
            let mut q = self.shared.lock();
            q.shutdown = true;
            self.shared.wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Marks the sink dead if the writer thread unwinds, so no caller waits
/// forever for a batch that will never be written.
struct DeadOnExit(Arc<Shared>);

impl Drop for DeadOnExit {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.dead = true;
        self.0.done.notify_all();
    }
}

fn run(sh: Arc<Shared>, mut writer: Writer) {
    let _dead = DeadOnExit(sh.clone());
    let interval = sh.opts.flush_interval;
    let mut final_attempt_failed = false;
    let note = failure_path(&sh.opts.runtime_dir, &sh.id);
    // A note left by an earlier run is stale once a batch goes through.
    let mut stale_note = true;
    // Batches are acknowledged once written and fsynced at most once per
    // interval: an fsync costs milliseconds, an allowed read must not.
    let mut synced_at = Instant::now();
    loop {
        let batch: Vec<Item> = {
            let mut q = sh.lock();
            loop {
                if q.shutdown && (q.pending.is_empty() || final_attempt_failed) {
                    if !q.pending.is_empty() {
                        ::log::error!(
                            "hushfs: {} audit events were not written: {}",
                            q.pending.len(),
                            reason(&q)
                        );
                    }
                    drop(q);
                    sync(&sh, &mut writer, &note);
                    return;
                }
                if writer.needs_sync() && synced_at.elapsed() >= interval {
                    drop(q);
                    sync(&sh, &mut writer, &note);
                    synced_at = Instant::now();
                    q = sh.lock();
                    continue;
                }
                let due = q.urgent
                    || q.shutdown
                    || q.pending.len() >= sh.opts.batch_max
                    || q.oldest.is_some_and(|t| t.elapsed() >= interval);
                if due && !q.pending.is_empty() {
                    break;
                }
                let mut wait = q
                    .oldest
                    .map_or(interval, |t| interval.saturating_sub(t.elapsed()));
                if writer.needs_sync() {
                    wait = wait.min(interval.saturating_sub(synced_at.elapsed()));
                }
                q.urgent = false;
                q = sh
                    .wake
                    .wait_timeout(q, wait.max(Duration::from_millis(1)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            q.urgent = false;
            q.oldest = None;
            if q.dropped > 0 {
                let ev = Event {
                    event: "audit-gap".into(),
                    reason: Some(format!(
                        "{} events were not recorded: the queue was full while the log could not be written",
                        q.dropped
                    )),
                    ..Event::default()
                };
                q.dropped = 0;
                let ticket = q.pending.front().map_or(q.next_ticket, |i| i.ticket);
                // Shares the first item's ticket: it is written with it.
                q.pending.push_front(Item {
                    ticket,
                    rec: Record::now(ev),
                    wait: false,
                });
            }
            q.pending.drain(..).collect()
        };
        let recs: Vec<Record> = batch.iter().map(|i| i.rec.clone()).collect();
        let res = writer.append_unsynced(&recs);
        let mut q = sh.lock();
        let end = batch.last().map_or(q.attempted, |i| i.ticket + 1);
        q.attempted = q.attempted.max(end);
        match res {
            Ok(a) => {
                q.written = q.written.max(end);
                q.head = Some(a);
                // A sync failure stays until a sync succeeds.
                if !q.sync_failed && (q.failure.take().is_some() || stale_note) {
                    stale_note = false;
                    let _ = std::fs::remove_file(&note);
                }
            }
            Err(e) => {
                let why = e.to_string();
                if q.failure.is_none() {
                    write_failure_note(&note, &why);
                }
                q.failure = Some(why.clone());
                if q.shutdown {
                    final_attempt_failed = true;
                }
                for mut it in batch.into_iter().rev() {
                    if it.wait {
                        // Its caller is told to deny: say so in the log.
                        q.failed.insert(it.ticket);
                        it.wait = false;
                        it.rec.ev.decision = Some("deny".into());
                        it.rec.ev.reason = Some(format!(
                            "denied because the audit log could not record it in time ({why})"
                        ));
                    }
                    if q.pending.len() < sh.opts.queue_max {
                        q.pending.push_front(it);
                    } else {
                        q.dropped += 1;
                    }
                }
                // Retry after one interval, not in a tight loop.
                q.oldest = Some(Instant::now());
            }
        }
        sh.done.notify_all();
    }
}

/// fsyncs what was written; a failure makes the sink unhealthy until a
/// later sync succeeds.
fn sync(sh: &Shared, writer: &mut Writer, note: &std::path::Path) {
    let r = writer.sync();
    let mut q = sh.lock();
    match r {
        Ok(()) if q.sync_failed => {
            q.sync_failed = false;
            q.failure = None;
            let _ = std::fs::remove_file(note);
        }
        Ok(()) => {}
        Err(e) => {
            let why = e.to_string();
            if q.failure.is_none() {
                write_failure_note(note, &why);
            }
            q.sync_failed = true;
            q.failure = Some(why);
        }
    }
}

fn failure_path(dir: &std::path::Path, id: &VaultId) -> PathBuf {
    dir.join(format!("audit-{}.failing", chain::hex(id)))
}

fn write_failure_note(path: &std::path::Path, why: &str) {
    if let Some(dir) = path.parent()
        && crate::sys::paths::ensure_private_dir(dir).is_ok()
    {
        let _ = std::fs::write(path, format!("since {}: {why}\n", super::now_rfc3339()));
    }
}

/// What a sink that could not write this vault's log left for `status`
/// (in the default runtime directory).
pub fn failure_note(id: &VaultId) -> Option<String> {
    std::fs::read_to_string(failure_path(&crate::sys::paths::runtime_dir(), id))
        .ok()
        .map(|s| s.trim().to_string())
}
