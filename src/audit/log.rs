//! The writer. Every append happens under an exclusive flock on
//! `<vault id>.log.lock` (a separate file: the log itself is renamed on
//! rotation; the daemon's sink keeps it across a burst of batches, see
//! `Writer::hold_lock`), writes the whole batch with one `write(2)` on an `O_APPEND`
//! descriptor and fsyncs it before the lock is released. A failed or short
//! write is cut back off, so no reader ever sees a writer's partial batch
//! unless the writer dies mid-write; the next writer then keeps the torn
//! bytes, ends them with a newline and records a `recover` entry that binds
//! them by hash.
//!
//! Under the lock a writer learns where the chain continues from the last
//! line, and the key for it from (a) its own memory, (b) the keychain's
//! state, or (c) the vault's data key (one HMAC per entry of the current
//! epoch). Without any of them it cannot append: an error, never an
//! unkeyed fallback.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::chain::{self, Entry, Mac32, Torn, VaultId, ct_eq};
use super::state::{self, State};
use super::{Anchor, Event, Record, note_head};
use crate::error::{Error, Result};
use crate::secret::Key32;

/// Rotate the active file once it reaches this size.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Longest line the tail reader looks back for.
const MAX_LINE: u64 = 4 * 1024 * 1024;
/// Most evolutions a writer performs to catch up (about a minute of HMACs);
/// a head further away is not believed.
const MAX_CATCH_UP: u64 = 1 << 26;

#[derive(Clone, Debug)]
pub struct Options {
    /// Directory of the log files [default: `$XDG_STATE_HOME/hushfs/audit`].
    pub dir: PathBuf,
    /// Size at which the active file is rotated.
    pub max_bytes: u64,
    /// Keep the chain state in the keychain (unless `HUSHFS_KEYCHAIN=off`).
    pub keychain: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: super::log_dir(),
            max_bytes: DEFAULT_MAX_BYTES,
            keychain: true,
        }
    }
}

/// The files of one vault's log: `<id>.log` (active), `<id>.log.<first seq>`
/// (rotated, oldest first) and `<id>.log.lock`.
#[derive(Clone, Debug)]
pub struct Files {
    pub dir: PathBuf,
    stem: String,
}

impl Files {
    pub fn new(dir: &Path, id: &VaultId) -> Files {
        Files {
            dir: dir.to_path_buf(),
            stem: format!("{}.log", chain::hex(id)),
        }
    }

    pub fn active(&self) -> PathBuf {
        self.dir.join(&self.stem)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.stem))
    }

    fn rotated_name(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!("{}.{first_seq:020}", self.stem))
    }

    /// Rotated files, oldest first.
    pub fn rotated(&self) -> Result<Vec<PathBuf>> {
        Ok(self.rotated_by_seq()?.into_iter().map(|(_, p)| p).collect())
    }

    /// Rotated files with the first seq their name gives, oldest first.
    pub fn rotated_by_seq(&self) -> Result<Vec<(u64, PathBuf)>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list the audit directory", &self.dir, e)),
        };
        let prefix = format!("{}.", self.stem);
        let mut v: Vec<(u64, PathBuf)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let n = name.to_str()?.strip_prefix(&prefix)?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((n.parse().ok()?, e.path()))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// Every file of the log in chain order: rotated ones, then the active.
    pub fn all(&self) -> Result<Vec<PathBuf>> {
        let mut v = self.rotated()?;
        if self.active().exists() {
            v.push(self.active());
        }
        Ok(v)
    }
}

/// The end of a log file: its last complete line and any bytes after it
/// (a line torn by an interrupted write).
#[derive(Default)]
pub struct Tail {
    pub last: Option<Vec<u8>>,
    pub torn: Option<Vec<u8>>,
}

/// Reads backwards from the end until the last complete line is found.
pub fn read_tail(f: &File) -> io::Result<Tail> {
    let len = f.metadata()?.len();
    let mut want = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(want);
        let mut buf = vec![0u8; (len - start) as usize];
        f.read_exact_at(&mut buf, start)?;
        let whole = start == 0;
        let grow = || -> io::Result<()> {
            if want >= MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the last line of the audit log is longer than 4 MiB",
                ));
            }
            Ok(())
        };
        // End of the last complete line (index of its newline).
        let end = if buf.last() == Some(&b'\n') {
            Some(buf.len() - 1)
        } else {
            buf.iter().rposition(|&b| b == b'\n')
        };
        let Some(end) = end else {
            if whole {
                return Ok(Tail {
                    last: None,
                    torn: (!buf.is_empty()).then_some(buf),
                });
            }
            grow()?;
            want *= 2;
            continue;
        };
        let begin = match buf[..end].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if whole => 0,
            None => {
                grow()?;
                want *= 2;
                continue;
            }
        };
        let torn = (end + 1 < buf.len()).then(|| buf[end + 1..].to_vec());
        return Ok(Tail {
            last: Some(buf[begin..end].to_vec()),
            torn,
        });
    }
}

/// What the last complete line says.
pub(crate) enum Head {
    /// No entry at all: the chain starts at genesis.
    Empty,
    /// A line that is not an entry (edited or planted).
    Garbage,
    Entry {
        seq: u64,
        epoch: u64,
        mac: Mac32,
        canonical: Vec<u8>,
    },
}

pub(crate) fn head_of(line: Option<&[u8]>) -> Head {
    match line {
        None => Head::Empty,
        Some(l) => match chain::parse_line(l) {
            Some(p) => Head::Entry {
                seq: p.entry.seq,
                epoch: p.entry.epoch,
                mac: p.mac,
                canonical: p.canonical,
            },
            None => Head::Garbage,
        },
    }
}

/// Continues from a known state `s` (memory or keychain). Returns the
/// state to write from and, when the log lost entries `s` knows were
/// written, a note to record about it.
fn adopt(s: State, head: &Head) -> std::result::Result<(State, Option<String>), String> {
    let lost = |what: String| Ok((s.clone(), Some(what)));
    match head {
        Head::Empty if s.next == 0 => Ok((s, None)),
        Head::Empty => lost(format!(
            "the audit log is gone: entries up to seq {} had been written",
            s.next - 1
        )),
        Head::Garbage => lost("the last line of the audit log is not an entry".into()),
        Head::Entry {
            seq,
            epoch,
            mac,
            canonical,
        } => {
            let seq = *seq;
            if seq + 1 < s.next {
                lost(format!(
                    "the audit log ends at seq {seq}, but entries up to seq {} had been written",
                    s.next - 1
                ))
            } else if seq + 1 == s.next {
                if ct_eq(mac, &s.prev) {
                    Ok((s, None))
                } else {
                    lost(format!("entry {seq} of the audit log was replaced"))
                }
            } else if *epoch != s.epoch {
                Err("the log moved on under another data key (a rekey)".into())
            } else if seq - s.next > MAX_CATCH_UP {
                Err(format!(
                    "the newest entry claims seq {seq}, implausibly far ahead"
                ))
            } else {
                let k = chain::evolve_n(&s.key, seq - s.next);
                after_head(&k, seq, *epoch, mac, canonical)
                    .map(|s| (s, None))
                    .ok_or_else(|| format!("the newest entry (seq {seq}) does not authenticate"))
            }
        }
    }
}

/// The state after the head entry, if `k` (its key, K_seq) authenticates it.
fn after_head(k: &Key32, seq: u64, epoch: u64, mac: &Mac32, canonical: &[u8]) -> Option<State> {
    ct_eq(&chain::entry_mac(k, canonical), mac).then(|| State {
        next: seq + 1,
        epoch,
        prev: *mac,
        key: chain::evolve(k),
    })
}

/// Derives the state from the vault's data key: the root of the head's
/// epoch, evolved to the head, which must authenticate.
fn derive(id: &VaultId, data_key: &Key32, head: &Head) -> std::result::Result<State, String> {
    match head {
        Head::Empty => {
            let root = chain::epoch_root(data_key, id, 0);
            Ok(State {
                next: 0,
                epoch: 0,
                prev: chain::genesis_prev(&root, id),
                key: root,
            })
        }
        Head::Garbage => Err("the last line of the audit log is not an entry".into()),
        Head::Entry {
            seq,
            epoch,
            mac,
            canonical,
        } => {
            if seq < epoch || seq - epoch > MAX_CATCH_UP {
                return Err(format!("the newest entry (seq {seq}) is implausible"));
            }
            let root = chain::epoch_root(data_key, id, *epoch);
            let k = chain::evolve_n(&root, seq - epoch);
            after_head(&k, *seq, *epoch, mac, canonical).ok_or_else(|| {
                format!("the newest entry (seq {seq}) does not authenticate under this vault's key")
            })
        }
    }
}

/// Finds the state to continue from: memory, then keychain, then data key.
fn resolve(
    id: &VaultId,
    head: &Head,
    mem: Option<State>,
    keychain: bool,
    data_key: Option<&Key32>,
) -> std::result::Result<(State, Option<String>), String> {
    let mut why = Vec::new();
    if let Some(s) = mem {
        match adopt(s, head) {
            Ok(r) => return Ok(r),
            Err(w) => why.push(w),
        }
    }
    if let Some(s) = keychain.then(|| state::load(id)).flatten() {
        match adopt(s, head) {
            Ok(r) => return Ok(r),
            Err(w) => why.push(format!("keychain state: {w}")),
        }
    }
    match data_key {
        Some(k) => derive(id, k, head).map(|s| (s, None)).map_err(|w| {
            why.push(w);
            why.join("; ")
        }),
        None => {
            why.push("no key to continue the chain: the vault is locked and the keychain holds no audit state (run `hushfs unlock`)".into());
            Err(why.join("; "))
        }
    }
}

/// Identity and size of the active file after our own last write: when it
/// is unchanged, nobody else appended and the head is ours.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Mark {
    dev: u64,
    ino: u64,
    len: u64,
}

impl Mark {
    fn of(m: &fs::Metadata) -> Mark {
        Mark {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
        }
    }
}

enum Pending<'a> {
    Event(&'a Record),
    /// Starts a new epoch keyed by `new`; `prev` keys the current one.
    Epoch {
        rec: &'a Record,
        prev: &'a Key32,
        new: &'a Key32,
    },
}

/// A synchronous writer for one vault's log. Holds the current evolving key
/// in memory; never the data key.
pub struct Writer {
    id: VaultId,
    files: Files,
    max_bytes: u64,
    keychain: bool,
    state: State,
    seen: Option<Mark>,
    /// The active file as last written (its identity is `seen`'s), kept
    /// open: reopening it for every batch of the daemon's sink cost more
    /// than the write.
    active: Option<File>,
    /// The lock file, kept open for the same reason.
    lockf: Option<File>,
    /// We hold the exclusive lock on `lockf` now.
    locked: bool,
    /// Keep the lock after a batch, until `release_lock` (the daemon's
    /// sink, across a burst of batches); otherwise it is released at once.
    hold: bool,
    /// `append_unsynced` wrote lines not yet synced.
    unsynced: bool,
}

impl Writer {
    /// Learns where the chain continues and how to key it, or fails with
    /// the reason (nothing is written). `data_key` is the vault's, when the
    /// caller holds it.
    pub fn open(id: &VaultId, data_key: Option<&Key32>, opts: &Options) -> Result<Writer> {
        let files = Files::new(&opts.dir, id);
        prepare_dir(&opts.dir)?;
        // The head is read under the lock (so it is a committed entry, not
        // part of a batch about to be cut back), but the catch-up from the
        // data key runs after it is released: other writers need not wait.
        // The first `write` catches up the rest from memory.
        let (head, _) = {
            let _lock = lock(&files)?;
            let f = open_active(&files)?;
            snapshot(&files, &f)?
        };
        let (state, note) =
            resolve(id, &head, None, opts.keychain, data_key).map_err(Error::Denied)?;
        // A head that lost entries is not one to put into the vault header.
        if let Some(a) = state.anchor().filter(|_| note.is_none()) {
            note_head(id, a);
        }
        Ok(Writer {
            id: *id,
            files,
            max_bytes: opts.max_bytes,
            keychain: opts.keychain,
            state,
            seen: None,
            active: None,
            lockf: None,
            locked: false,
            hold: false,
            unsynced: false,
        })
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    #[cfg(test)]
    pub(crate) fn state_for_tests(&self) -> &State {
        &self.state
    }

    /// The last entry written or authenticated by this writer.
    pub fn head(&self) -> Option<Anchor> {
        self.state.anchor()
    }

    /// Appends the records as one batch and fsyncs it. All or nothing.
    pub fn append(&mut self, recs: &[Record]) -> Result<Anchor> {
        self.write(recs.iter().map(Pending::Event).collect(), true)
    }

    /// Appends the records as one batch without waiting for the disk: on
    /// `Ok` every line is in the file (the page cache; a crash of this
    /// process loses nothing), and `sync` makes it durable. For the
    /// daemon's sink, where an fsync per allowed read would cost
    /// milliseconds on every access.
    pub fn append_unsynced(&mut self, recs: &[Record]) -> Result<Anchor> {
        self.append_unsynced_refs(recs.iter())
    }

    /// `append_unsynced` of records the caller holds elsewhere (the sink's
    /// queue items), without copying them.
    pub fn append_unsynced_refs<'a>(
        &mut self,
        recs: impl Iterator<Item = &'a Record>,
    ) -> Result<Anchor> {
        self.write(recs.map(Pending::Event).collect(), false)
    }

    /// Makes what `append_unsynced` wrote durable, then records the chain
    /// state in the keychain (only now: the keychain's anchor never claims
    /// more than the disk holds).
    pub fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        // A sync leaves the lock as it found it: only batches start a hold
        // (the sink times holds from its batches).
        let held = self.locked;
        self.lock()?;
        let r = self.sync_locked();
        if !held {
            self.unlock();
        }
        r
    }

    fn sync_locked(&mut self) -> Result<()> {
        let synced = match &self.active {
            Some(f) => f.sync_data(),
            // Lost on an error path: sync whatever is active now.
            None => File::open(self.files.active()).and_then(|f| f.sync_data()),
        };
        if let Err(e) = synced {
            return Err(Error::io(
                "cannot sync the audit log",
                &self.files.active(),
                e,
            ));
        }
        self.unsynced = false;
        // Only while the head is still ours: a later writer stored a newer
        // state when it synced.
        let current = fs::metadata(self.files.active()).ok().map(|m| Mark::of(&m));
        if current.is_some() && current == self.seen {
            self.store_state();
        }
        Ok(())
    }

    /// Whether `append_unsynced` wrote something not yet synced.
    pub fn needs_sync(&self) -> bool {
        self.unsynced
    }

    /// Takes the exclusive audit lock on the kept lock file (nothing to do
    /// while it is held).
    fn lock(&mut self) -> Result<()> {
        if self.locked {
            return Ok(());
        }
        let f = match self.lockf.take() {
            Some(f) => f,
            None => open_lock(&self.files)?,
        };
        let r = acquire(&f, &self.files);
        self.lockf = Some(f);
        r?;
        self.locked = true;
        Ok(())
    }

    fn unlock(&mut self) {
        if self.locked {
            if let Some(f) = &self.lockf {
                let _ = f.unlock();
            }
            self.locked = false;
        }
    }

    /// Keep the lock across batches until `release_lock` (`on`), or
    /// release it after each batch as CLI writers do: a burst of batches
    /// then costs one `flock` pair, not one per batch. Whoever holds it
    /// must release it within a bounded time: other writers (CLI
    /// commands) wait for it.
    pub fn hold_lock(&mut self, on: bool) {
        self.hold = on;
        if !on {
            self.unlock();
        }
    }

    /// Lets other writers in; the next batch takes the lock again.
    pub fn release_lock(&mut self) {
        self.unlock();
    }

    /// Whether this writer holds the lock now.
    pub fn holds_lock(&self) -> bool {
        self.locked
    }

    /// The active file and its metadata: the kept descriptor while the
    /// path still names the file it has open, else a fresh open (another
    /// writer rotated, or this is the first batch). Asked even while the
    /// lock is held across batches: a log moved or replaced by hand (not
    /// by a writer) must be noticed at the next batch, not written past.
    fn active_file(&mut self) -> Result<(File, Mark)> {
        let p = self.files.active();
        if let (Some(f), Ok(m)) = (self.active.take(), fs::metadata(&p)) {
            let now = Mark::of(&m);
            if self
                .seen
                .is_some_and(|s| s.dev == now.dev && s.ino == now.ino)
            {
                return Ok((f, now));
            }
        }
        let f = open_active(&self.files)?;
        let m = f
            .metadata()
            .map_err(|e| Error::io("cannot inspect", &p, e))?;
        Ok((f, Mark::of(&m)))
    }

    fn store_state(&self) {
        if self.keychain
            && let Err(why) = state::store(&self.id, &self.state)
        {
            // The chain is intact; only a locked writer's fallback is lost.
            ::log::warn!("cannot keep the audit state in the keychain: {why}");
        }
    }

    /// Appends `rec` as the first entry of a new epoch keyed by `new_key`
    /// (after `rekey`). `prev_key` is the data key the chain is keyed by
    /// now; the new entry carries the old root sealed under the new one so
    /// that `verify` with the new key can still check every earlier entry.
    pub fn start_epoch(
        &mut self,
        rec: &Record,
        prev_key: &Key32,
        new_key: &Key32,
    ) -> Result<Anchor> {
        self.write(
            vec![Pending::Epoch {
                rec,
                prev: prev_key,
                new: new_key,
            }],
            true,
        )
    }

    fn write(&mut self, items: Vec<Pending>, sync: bool) -> Result<Anchor> {
        self.lock()?;
        let r = self.write_locked(items, sync);
        // After a failure the next batch looks at the file afresh.
        if r.is_err() || !self.hold {
            self.unlock();
        }
        r
    }

    fn write_locked(&mut self, items: Vec<Pending>, sync: bool) -> Result<Anchor> {
        let (mut f, mut mark) = self.active_file()?;
        let mut buf = Vec::new();
        let mut st = self.state.clone();
        let mut torn = false;
        if self.seen != Some(mark) {
            // Someone else wrote since (or this is our first batch): learn
            // the head again and continue from it.
            let (head, t) = snapshot(&self.files, &f)?;
            let (s, note) =
                resolve(&self.id, &head, Some(st), self.keychain, None).map_err(Error::Denied)?;
            st = s;
            if let Some(t) = t {
                torn = true;
                buf.push(b'\n');
                let ev = Event {
                    event: "recover".into(),
                    reason: Some(
                        "the line before this one was torn by an interrupted write".into(),
                    ),
                    ..Event::default()
                };
                push_entry(
                    &mut buf,
                    &mut st,
                    &Record::now(ev),
                    None,
                    Some(Torn::of(&t)),
                );
            }
            if let Some(n) = note {
                let ev = Event {
                    event: "audit-gap".into(),
                    reason: Some(n),
                    ..Event::default()
                };
                push_entry(&mut buf, &mut st, &Record::now(ev), None, None);
            }
        }
        // Torn bytes stay in the file they were written to: rotate later.
        if !torn && mark.len >= self.max_bytes {
            f = self.rotate(&f, st.next)?;
            let m = f
                .metadata()
                .map_err(|e| Error::io("cannot inspect", &self.files.active(), e))?;
            mark = Mark::of(&m);
        }
        for item in items {
            match item {
                Pending::Event(rec) => push_entry(&mut buf, &mut st, rec, None, None),
                Pending::Epoch { rec, prev, new } => {
                    let prev_root = chain::epoch_root(prev, &self.id, st.epoch);
                    let cur = chain::evolve_n(&prev_root, st.next - st.epoch);
                    if !ct_eq(cur.expose(), st.key.expose()) {
                        return Err(Error::Denied(
                            "the audit chain is not keyed by this vault's current data key".into(),
                        ));
                    }
                    let new_root = chain::epoch_root(new, &self.id, st.next);
                    let bridge =
                        chain::seal_bridge(&new_root, &self.id, st.next, st.epoch, &prev_root);
                    st.epoch = st.next;
                    st.key = new_root;
                    push_entry(&mut buf, &mut st, rec, Some(bridge), None);
                }
            }
        }
        // We hold the lock: nobody else appends, so the length is known.
        let start = mark.len;
        let written = f
            .write_all(&buf)
            .and_then(|_| if sync { f.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Not recorded: take back whatever part reached the file so
            // the next writer finds whole lines.
            let _ = f.set_len(start);
            self.active = Some(f);
            return Err(Error::io(
                "cannot write the audit log",
                &self.files.active(),
                e,
            ));
        }
        self.seen = Some(Mark {
            len: start + buf.len() as u64,
            ..mark
        });
        self.active = Some(f);
        self.state = st;
        if sync {
            self.store_state();
        } else {
            self.unsynced = true;
        }
        let a = self.state.anchor().expect("at least one entry was written");
        note_head(&self.id, a);
        Ok(a)
    }

    /// Renames the active file to `<id>.log.<first seq>` and starts a new
    /// one. The chain simply continues: the new file's first entry links to
    /// the old file's last mac.
    fn rotate(&self, f: &File, next: u64) -> Result<File> {
        let active = self.files.active();
        let first = first_seq(f).unwrap_or(next);
        let target = self.files.rotated_name(first);
        if target.exists() {
            return Err(Error::Other(format!(
                "cannot rotate the audit log: {} exists",
                target.display()
            )));
        }
        // The file leaves the writers' hands complete and on disk.
        f.sync_data()
            .map_err(|e| Error::io("cannot sync the audit log", &active, e))?;
        fs::rename(&active, &target).map_err(|e| Error::io("cannot rotate", &active, e))?;
        let f = open_active(&self.files)?;
        sync_dir(&self.files.dir)?;
        Ok(f)
    }
}

impl Drop for Writer {
    /// Whatever `append_unsynced` wrote reaches the disk on a clean exit.
    fn drop(&mut self) {
        let _ = self.sync();
        self.unlock();
    }
}

fn push_entry(
    buf: &mut Vec<u8>,
    st: &mut State,
    rec: &Record,
    bridge: Option<String>,
    torn: Option<Torn>,
) {
    let mut ev = rec.ev.clone();
    ev.bound();
    let e = Entry {
        seq: st.next,
        time: rec.time.clone(),
        epoch: st.epoch,
        ev,
        bridge,
        torn,
        prev: chain::hex(&st.prev),
    };
    let c = e.canonical();
    let mac = chain::entry_mac(&st.key, &c);
    buf.extend_from_slice(&chain::seal_line(&c, &mac));
    st.prev = mac;
    st.next += 1;
    st.key = chain::evolve(&st.key);
}

/// The head of the chain (the active file's last line, or the newest
/// rotated file's when the active one has none) and the active file's torn
/// tail, if any.
fn snapshot(files: &Files, active: &File) -> Result<(Head, Option<Vec<u8>>)> {
    let t = read_tail(active).map_err(|e| Error::io("cannot read", &files.active(), e))?;
    if t.last.is_some() {
        return Ok((head_of(t.last.as_deref()), t.torn));
    }
    let last = match files.rotated()?.last() {
        Some(p) => {
            let rf = File::open(p).map_err(|e| Error::io("cannot open", p, e))?;
            read_tail(&rf)
                .map_err(|e| Error::io("cannot read", p, e))?
                .last
        }
        None => None,
    };
    Ok((head_of(last.as_deref()), t.torn))
}

/// Reads a whole log file into `buf` (reused between files: sizing it
/// once avoids the copies and page faults of growing it).
pub(crate) fn read_file_into(p: &Path, buf: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    buf.clear();
    File::open(p)
        .and_then(|mut f| {
            buf.reserve(f.metadata()?.len() as usize + 1);
            f.read_to_end(buf)
        })
        .map_err(|e| Error::io("cannot read", p, e))?;
    Ok(())
}

fn first_seq(f: &File) -> Option<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read_at(&mut buf, 0).ok()?;
    let end = buf[..n].iter().position(|&b| b == b'\n')?;
    chain::parse_line(&buf[..end]).map(|p| p.entry.seq)
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        crate::sys::paths::ensure_private_dir(parent)?;
    }
    crate::sys::paths::ensure_private_dir(dir)
}

/// Exclusive lock on `<id>.log.lock`, released when the file is dropped.
fn lock(files: &Files) -> Result<File> {
    let f = open_lock(files)?;
    acquire(&f, files)?;
    Ok(f)
}

/// Longest wait for the log lock. A holder that stops (SIGSTOP, a debugger)
/// must not hang every other writer — `lock` among them — forever: past
/// this the write fails, and the access it would record is denied.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the exclusive lock, waiting at most `LOCK_WAIT`.
fn acquire(f: &File, files: &Files) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(100);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if t0.elapsed() < LOCK_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Other(format!(
                    "the audit log {} has been locked by another writer for {} s (a stopped hushfs process?): \
                     find it with `fuser {}`",
                    files.active().display(),
                    LOCK_WAIT.as_secs(),
                    files.lock_path().display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(
                    "cannot lock the audit log",
                    &files.lock_path(),
                    e,
                ));
            }
        }
    }
}

fn open_lock(files: &Files) -> Result<File> {
    let p = files.lock_path();
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| Error::io("cannot open the audit lock", &p, e))
}

fn open_active(files: &Files) -> Result<File> {
    let p = files.active();
    let existed = p.exists();
    let f = OpenOptions::new()
        .append(true)
        .read(true)
        .create(true)
        .mode(0o600)
        .open(&p)
        .map_err(|e| Error::io("cannot open the audit log", &p, e))?;
    if !existed {
        sync_dir(&files.dir)?;
    }
    Ok(f)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", dir, e))
}

/// The seq of the newest complete entry, read without a key (for
/// `status`: what the log claims, not what it proves).
pub fn last_seq(files: &Files) -> Result<Option<u64>> {
    let active = files.active();
    let mut candidates = files.rotated()?;
    candidates.push(active);
    for p in candidates.iter().rev() {
        let f = match File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("cannot open", p, e)),
        };
        let t = read_tail(&f).map_err(|e| Error::io("cannot read", p, e))?;
        if let Head::Entry { seq, .. } = head_of(t.last.as_deref()) {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

/// Whether a writer could append now, as far as can be seen without
/// writing: the log (or its directory) is writable and the disk not full.
pub fn probe(files: &Files) -> std::result::Result<(), String> {
    let active = files.active();
    if active.exists() {
        OpenOptions::new()
            .append(true)
            .open(&active)
            .map_err(|e| format!("cannot open {} for appending: {e}", active.display()))?;
    } else if files.dir.exists() && !writable(&files.dir) {
        return Err(format!("cannot create files in {}", files.dir.display()));
    }
    let at = if files.dir.exists() {
        files.dir.clone()
    } else {
        files
            .dir
            .ancestors()
            .find(|p| p.exists())
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    match free_bytes(&at) {
        Some(n) if n < 1024 * 1024 => Err(format!(
            "only {n} bytes free on the file system of {}",
            at.display()
        )),
        _ => Ok(()),
    }
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call;
    // access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

fn free_bytes(p: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid, writable
    // statvfs; both outlive the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(bytes: &[u8]) -> Tail {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        read_tail(&f).unwrap()
    }

    #[test]
    fn tail_finds_last_line_and_torn_bytes() {
        let t = tail_of(b"");
        assert!(t.last.is_none() && t.torn.is_none());
        let t = tail_of(b"a\nbb\n");
        assert_eq!(t.last.as_deref(), Some(&b"bb"[..]));
        assert!(t.torn.is_none());
        let t = tail_of(b"a\nbb\ncc");
        assert_eq!(t.last.as_deref(), Some(&b"bb"[..]));
        assert_eq!(t.torn.as_deref(), Some(&b"cc"[..]));
        let t = tail_of(b"only");
        assert!(t.last.is_none());
        assert_eq!(t.torn.as_deref(), Some(&b"only"[..]));
        let t = tail_of(b"one\n");
        assert_eq!(t.last.as_deref(), Some(&b"one"[..]));
        // A last line longer than the first read window.
        let long = vec![b'x'; 200_000];
        let mut b = b"first\n".to_vec();
        b.extend_from_slice(&long);
        b.push(b'\n');
        assert_eq!(tail_of(&b).last.unwrap().len(), 200_000);
    }
}
