//! The kernel keyring calls the per-user agent needs and the keyutils crate
//! does not offer: joining a fresh session keyring, restricting it to its
//! possessors, leaving it before a child execs, and the serial of the
//! session keyring this process possesses.
//!
//! Why a session keyring: a key in it is *possessed* only by the processes
//! that share that keyring (the agent and the hushfs processes it starts,
//! which inherit it across fork and exec). With possessor-only permissions
//! no other process of the uid can read, search, list or join it — unlike
//! the user keyring (`@u`), which every process of the uid possesses.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

// keyctl(2) operations and special ids: the kernel's stable ABI
// (include/uapi/linux/keyctl.h).
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
/// Possessor: view, read, write, search, link, setattr. Nothing for the
/// uid, the group or others.
pub const POSSESSOR_ONLY: u32 = 0x3f00_0000;

/// The session keyring serial this process was verified to share with the
/// agent (0: none). Set once at start, read by the keychain.
static TRUSTED: AtomicI32 = AtomicI32::new(0);

fn keyctl(op: libc::c_long, a: libc::c_long, b: libc::c_long) -> io::Result<libc::c_long> {
    // SAFETY: the keyctl operations used here take integer arguments only
    // (a NULL name for JOIN); no memory is passed to the kernel.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, op, a, b, 0 as libc::c_long) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Joins a new anonymous session keyring and makes it possessor-only.
/// Returns its serial.
pub fn join_new_session() -> io::Result<i32> {
    let id = keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0)?;
    keyctl(KEYCTL_SETPERM, id, POSSESSOR_ONLY as libc::c_long)?;
    Ok(id as i32)
}

/// The serial of the session keyring this process has, if any (never
/// creates one).
pub fn session_serial() -> Option<i32> {
    keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
        .ok()
        .map(|s| s as i32)
}

/// For a `pre_exec` closure: the child leaves the agent's session keyring
/// for a new anonymous one before it execs, so a program hushfs starts (the
/// command of `run`, git) possesses none of hushfs's keys. Only calls the
/// keyctl syscall, so it is async-signal-safe.
pub fn detach_in_child() -> io::Result<()> {
    if TRUSTED.load(Ordering::Relaxed) == 0 {
        return Ok(());
    }
    keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0, 0).map(|_| ())
}

/// Records that this process shares the agent's keyring `serial`.
pub fn set_trusted(serial: i32) {
    TRUSTED.store(serial, Ordering::Relaxed);
}

/// The agent's keyring, when this process was verified to possess it.
pub fn trusted() -> Option<i32> {
    match TRUSTED.load(Ordering::Relaxed) {
        0 => None,
        s => Some(s),
    }
}
