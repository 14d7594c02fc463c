//! hushfs: a project's secrets as files on a FUSE mount that only an
//! authorized process tree can read. See docs/ARCHITECTURE.md for the map.

pub mod audit;
pub mod cli;
pub mod error;
pub mod render;
pub mod secret;
pub mod sys;
pub mod vault;
