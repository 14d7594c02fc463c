//! The daemon's watchers of what it serves: the vault file (a save means
//! reload) and a remote source's refresh time.

use super::*;

/// The vault file's identity: a change means somebody saved.
fn vault_stamp(p: &Path) -> Option<(u64, u64, i64, i64, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Asks the source again when it wants (remote sources: every refresh
/// interval, before the token expires, when stale values run out).
pub(super) fn watch_source(d: Arc<Daemon>) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let due = d.source.lock().next_poll();
        if due.is_some_and(|t| Instant::now() >= t) {
            d.poll_source();
        }
    }
}

pub(super) fn watch_vault(d: Arc<Daemon>) {
    let mut last = vault_stamp(&d.vault);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = vault_stamp(&d.vault);
        if now != last {
            last = now;
            d.reload();
        }
    }
}
