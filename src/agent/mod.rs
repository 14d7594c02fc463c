//! The per-user agent: after `hushfs unlock` the only process that holds
//! the cached data key (in a possessor-only session keyring of its own).
//! Commands that would use the cached key do not get it: they hand their
//! arguments, environment and stdin/stdout/stderr to the agent, which runs
//! them as its own non-dumpable children (`forward`), so neither the key
//! nor a value nor the command `run` starts is ever within reach of the
//! caller or of any other process of the user.
//!
//! - protocol.rs: the versioned messages; no answer carries a key or value.
//! - wire.rs: JSON lines with fds, bounded and with deadlines.
//! - server.rs: `hushfs __agent`.
//! - client.rs: find, start, store, forward.

pub mod client;
pub mod protocol;
pub mod server;
pub mod wire;

use std::path::PathBuf;

/// The PATH the agent and the daemons run with, so that a program they
/// start (fusermount3) is the system's, not one planted earlier in the
/// caller's PATH.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `$XDG_RUNTIME_DIR/hushfs/agent.sock` (the directory is 0700).
pub fn socket_path() -> PathBuf {
    crate::sys::paths::runtime_dir().join("agent.sock")
}
