//! Thin wrappers over the operating system: randomness, process hardening,
//! XDG paths, pidfds.

pub mod harden;
pub mod keyring;
pub mod paths;
pub mod pidfd;
pub mod random;
