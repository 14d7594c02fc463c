//! The daemon's sink: `record` queues the event; events are written in
//! batches, each batch by whoever needs it written first.
//!
//! Who waits: an event that lets something happen (an allowed open or
//! read, a run, a grant) returns only once its batch is in the log file, so
//! `Ok` from `record` means "recorded" and the caller may proceed. The
//! caller writes the queue itself when nobody else is writing (no hand-off
//! to another thread: two context switches would cost more than the write);
//! when someone is, it waits and the next writer takes its event along
//! (group commit). A denial returns at once: the access is refused whether
//! or not the line is written yet, so a burst of 10,000 denials costs a few
//! batched writes, not 10,000. A background thread writes queued denials
//! every `flush_interval` and syncs.
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
    /// A batch is being written; whoever finishes it wakes `done`.
    writing: bool,
    /// Callers asleep on `done`.
    sleepers: usize,
    /// Written but not yet fsynced.
    unsynced: bool,
    shutdown: bool,
    /// The last write during shutdown failed: give up on what is queued.
    final_attempt_failed: bool,
    /// A writer panicked or the background thread is gone.
    dead: bool,
    head: Option<Anchor>,
    /// Since when the writer holds the log lock across batches (`None`:
    /// it does not), and when the last batch was written.
    held_since: Option<Instant>,
    last_batch: Option<Instant>,
}

/// The log lock is kept across a burst of batches (no `flock` pair per
/// batch) and released once no batch came for `HOLD_IDLE`, or
/// `HOLD_MAX` after it was taken even under load, so that a CLI command
/// appending to the same log waits at most about that long.
const HOLD_IDLE: Duration = Duration::from_millis(1);
const HOLD_MAX: Duration = Duration::from_millis(10);

struct Shared {
    q: Mutex<Queue>,
    /// Wakes the background thread.
    wake: Condvar,
    /// Wakes callers waiting for a batch to be written.
    done: Condvar,
    /// The log writer. Lock order: `w` before `q`; whoever holds `q` never
    /// waits for `w` (a batch's owner takes `w` only after releasing `q`).
    w: Mutex<WriterState>,
    opts: SinkOptions,
}

struct WriterState {
    writer: Writer,
    note: PathBuf,
    /// A note left by an earlier run is stale once a batch goes through.
    stale_note: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, WriterState> {
        self.w.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes everything queued and writes it as one batch; `q` is released
    /// during the write and returned re-acquired. Call only when
    /// `!q.writing` and something is pending.
    fn write_batch<'a>(&'a self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.writing = true;
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
        let batch: Vec<Item> = q.pending.drain(..).collect();
        drop(q);
        // If anything below panics, nobody may wait for this batch forever.
        let mut guard = PanicGuard {
            sh: self,
            armed: true,
        };
        let mut w = self.writer();
        let res = w.writer.append_unsynced_refs(batch.iter().map(|i| &i.rec));
        let held = w.writer.holds_lock();
        let mut q = self.lock();
        let now = Instant::now();
        q.last_batch = Some(now);
        if !held {
            q.held_since = None;
        } else if q.held_since.is_none() {
            q.held_since = Some(now);
            // The background thread may sleep for a whole interval: it
            // must let go of the lock within HOLD_IDLE.
            self.wake.notify_one();
        }
        let end = batch.last().map_or(q.attempted, |i| i.ticket + 1);
        q.attempted = q.attempted.max(end);
        match res {
            Ok(a) => {
                q.written = q.written.max(end);
                q.head = Some(a);
                q.unsynced = true;
                // A sync failure stays until a sync succeeds.
                if !q.sync_failed && (q.failure.take().is_some() || w.stale_note) {
                    w.stale_note = false;
                    let _ = std::fs::remove_file(&w.note);
                }
            }
            Err(e) => {
                let why = e.to_string();
                if q.failure.is_none() {
                    write_failure_note(&w.note, &why);
                }
                q.failure = Some(why.clone());
                if q.shutdown {
                    q.final_attempt_failed = true;
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
                    if q.pending.len() < self.opts.queue_max {
                        q.pending.push_front(it);
                    } else {
                        q.dropped += 1;
                    }
                }
                // The background thread retries after one interval.
                q.oldest = Some(Instant::now());
            }
        }
        drop(w);
        guard.armed = false;
        q.writing = false;
        // A wake-up costs a syscall even with nobody asleep: only for some.
        if q.sleepers > 0 {
            self.done.notify_all();
        }
        q
    }

    /// Sleeps until a batch is done (or something else wakes `done`).
    fn sleep<'a>(&'a self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.sleepers += 1;
        let mut q = self.done.wait(q).unwrap_or_else(|e| e.into_inner());
        q.sleepers -= 1;
        q
    }

    /// fsyncs what was written; a failure makes the sink unhealthy until a
    /// later sync succeeds.
    fn sync(&self) {
        let mut w = self.writer();
        let r = w.writer.sync();
        let mut q = self.lock();
        match r {
            Ok(()) => {
                q.unsynced = w.writer.needs_sync();
                if q.sync_failed {
                    q.sync_failed = false;
                    q.failure = None;
                    let _ = std::fs::remove_file(&w.note);
                }
            }
            Err(e) => {
                let why = e.to_string();
                if q.failure.is_none() {
                    write_failure_note(&w.note, &why);
                }
                q.sync_failed = true;
                q.failure = Some(why);
            }
        }
    }
}

/// Marks the sink dead when a batch's write unwinds, so no caller waits
/// forever for it.
struct PanicGuard<'a> {
    sh: &'a Shared,
    armed: bool,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The queue guard (declared after this one) is dropped first.
        let mut q = self.sh.lock();
        q.dead = true;
        q.writing = false;
        self.sh.done.notify_all();
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
        let mut writer = Writer::open(id, data_key, &opts.log)?;
        writer.hold_lock(true);
        let files = writer.files().clone();
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue {
                head: writer.head(),
                ..Queue::default()
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            w: Mutex::new(WriterState {
                writer,
                note: failure_path(&opts.runtime_dir, id),
                stale_note: true,
            }),
            opts,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("hushfs-audit".into())
            .spawn(move || run(s))
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
        let sh = &self.shared;
        let mut q = sh.lock();
        let target = q.next_ticket;
        loop {
            if q.written >= target {
                return Ok(());
            }
            if q.attempted >= target || q.dead {
                return Err(reason(&q));
            }
            q = if !q.writing && !q.pending.is_empty() {
                sh.write_batch(q)
            } else {
                sh.sleep(q)
            };
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

impl AuditLog {
    fn push(&self, ev: Event, wait: bool) -> Result<(), String> {
        let mut rec = Record::now(ev);
        let sh = &self.shared;
        let mut q = sh.lock();
        if q.shutdown || q.dead {
            return Err(reason(&q));
        }
        if q.pending.len() >= sh.opts.queue_max {
            q.dropped += 1;
            return Err(format!("audit queue full; {}", reason(&q)));
        }
        if !wait && q.failure.is_some() && !rec.ev.is_denial() {
            // A queued allow the caller is about to refuse (the log is known
            // to be failing): say so in the log, as a failed batch does.
            rec.ev.decision = Some("deny".into());
            rec.ev.reason = Some(format!(
                "denied because the audit log could not record it ({})",
                reason(&q)
            ));
        }
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push_back(Item { ticket, rec, wait });
        q.oldest.get_or_insert_with(Instant::now);
        if !wait {
            if q.pending.len() >= sh.opts.batch_max {
                sh.wake.notify_one();
            }
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
            // Write it ourselves, or wait for the batch in progress (ours
            // is in it, or goes with the next one).
            q = if q.writing {
                sh.sleep(q)
            } else {
                sh.write_batch(q)
            };
        }
    }
}

impl AuditSink for AuditLog {
    fn record(&self, ev: Event) -> Result<(), String> {
        let wait = !ev.is_denial();
        self.push(ev, wait)
    }

    fn record_follow_up(&self, ev: Event) -> Result<(), String> {
        self.push(ev, false)
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

/// Marks the sink dead if the background thread unwinds, so no caller
/// waits forever for a batch that will never be written.
struct DeadOnExit(Arc<Shared>);

impl Drop for DeadOnExit {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.dead = true;
        self.0.done.notify_all();
    }
}

/// The background thread: writes queued denials once they are
/// `flush_interval` old (or `batch_max` many), syncs at most once per
/// interval, and writes the rest at shutdown.
fn run(sh: Arc<Shared>) {
    let _dead = DeadOnExit(sh.clone());
    let interval = sh.opts.flush_interval;
    // Batches are acknowledged once written and fsynced at most once per
    // interval: an fsync costs milliseconds, an allowed read must not.
    let mut synced_at = Instant::now();
    let mut q = sh.lock();
    loop {
        if q.shutdown && !q.writing && (q.pending.is_empty() || q.final_attempt_failed) {
            if !q.pending.is_empty() {
                ::log::error!(
                    "hushfs: {} audit events were not written: {}",
                    q.pending.len(),
                    reason(&q)
                );
            }
            drop(q);
            sh.sync();
            return;
        }
        if let Some(since) = q.held_since
            && !q.writing
            && (q.shutdown
                || since.elapsed() >= HOLD_MAX
                || q.last_batch.is_none_or(|t| t.elapsed() >= HOLD_IDLE))
        {
            drop(q);
            // Lock order `w` before `q`: with both held, nobody can take
            // the lock again between the release and the note of it.
            let mut w = sh.writer();
            w.writer.release_lock();
            q = sh.lock();
            q.held_since = None;
            drop(w);
            continue;
        }
        if q.unsynced && synced_at.elapsed() >= interval {
            drop(q);
            sh.sync();
            synced_at = Instant::now();
            q = sh.lock();
            continue;
        }
        let due = q.shutdown
            || q.pending.len() >= sh.opts.batch_max
            || q.oldest.is_some_and(|t| t.elapsed() >= interval);
        if due && !q.pending.is_empty() && !q.writing {
            q = sh.write_batch(q);
            continue;
        }
        let mut wait = q
            .oldest
            .map_or(interval, |t| interval.saturating_sub(t.elapsed()));
        if q.writing {
            // A caller is writing (maybe blocked on the lock): look again
            // later rather than every millisecond.
            wait = interval;
        }
        if q.unsynced {
            wait = wait.min(interval.saturating_sub(synced_at.elapsed()));
        }
        if let Some(since) = q.held_since {
            let idle = q
                .last_batch
                .map_or(Duration::ZERO, |t| HOLD_IDLE.saturating_sub(t.elapsed()));
            wait = wait
                .min(idle.max(Duration::from_micros(200)))
                .min(HOLD_MAX.saturating_sub(since.elapsed()));
        }
        let floor = if q.held_since.is_some() {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(1)
        };
        q = sh
            .wake
            .wait_timeout(q, wait.max(floor))
            .unwrap_or_else(|e| e.into_inner())
            .0;
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
