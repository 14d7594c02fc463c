//! The agent's protocol: one JSON line per message over its Unix socket,
//! versioned. One request enum, one response enum with an `err` variant
//! (rbw's protocol.rs is the model). No response carries a key or a value:
//! keys and values only ever travel *to* the agent (`Store`, the stdin of
//! an `Exec`).

use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

/// The signals a client passes on to its command: those a terminal or a
/// supervisor sends.
pub const SIGNALS: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Largest message either side reads (an `Exec` carries argv and the
/// environment).
pub const MAX_LINE: usize = 1024 * 1024;

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who is there: the agent's pid and keyring serial.
    Hello,
    /// Cache the data key of the vault at `vault` (an absolute path) for
    /// `ttl_secs`. The 32-byte key comes in a pipe whose read end is the
    /// message's fd, never in the message itself.
    Store { vault: String, ttl_secs: u64 },
    /// Whether the vault at `vault` is unlocked here.
    Unlocked { vault: String },
    /// Drop the cached key of the vault at `vault` (passwd, rekey). Only
    /// takes away, so any client of the uid may ask.
    Forget { vault: String },
    /// Run `hushfs ARGS` as a child of the agent with the three fds that
    /// come with the message as its stdin, stdout and stderr (and a fourth,
    /// a pipe holding a key for that command alone). Followed on the same
    /// connection by `Signal`s from the client.
    Exec(Exec),
    /// Deliver a signal to the command of this connection's `Exec`.
    Signal { signal: i32 },
}

impl std::fmt::Debug for Request {
    // Only the operation: a Store carries a key, an Exec an environment.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self {
            Request::Hello => "hello",
            Request::Store { .. } => "store",
            Request::Unlocked { .. } => "unlocked",
            Request::Forget { .. } => "forget",
            Request::Exec(_) => "exec",
            Request::Signal { .. } => "signal",
        };
        f.write_str(op)
    }
}

/// A command for the agent to run.
#[derive(Clone, Serialize, Deserialize)]
pub struct Exec {
    /// Arguments after the program name, as bytes.
    pub args: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    pub umask: u32,
    /// Only if the vault at this path is unlocked here; otherwise the
    /// answer is `Unlocked { unlocked: false }` and nothing runs (one
    /// round trip instead of asking first).
    #[serde(default)]
    pub if_unlocked: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Response {
    Hello {
        pid: u32,
        keyring: i32,
    },
    Ok,
    Unlocked {
        unlocked: bool,
        expires_in_secs: Option<u64>,
    },
    /// The command of an `Exec` started.
    Started {
        pid: u32,
    },
    /// ... and ended with this exit code (128+N for signal N).
    Exit {
        code: i32,
    },
    Err {
        error: String,
    },
}

impl Response {
    pub fn err(msg: impl Into<String>) -> Response {
        Response::Err { error: msg.into() }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}
