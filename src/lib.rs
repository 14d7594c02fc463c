//! hushfs: a project's secrets as files on a FUSE mount that only an
//! authorized process tree can read. See docs/ARCHITECTURE.md for the map.

pub mod agent;
pub mod audit;
pub mod authz;
pub mod broker;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod policy;
pub mod project;
pub mod render;
pub mod scan;
pub mod secret;
pub mod source;
pub mod sys;
pub mod vault;
