//! Thin wrappers over the operating system: randomness, process hardening,
//! XDG paths, pidfds. Everything `unsafe` in hushfs that is not FUSE lives here.

pub mod harden;
pub mod paths;
pub mod pidfd;
pub mod random;
