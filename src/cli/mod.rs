//! The command line: clap definitions and one module per command group.
//! Each command turns raw arguments into calls on the library and returns
//! an exit code; `main.rs` only parses and maps errors to exit codes.

mod allow;
mod audit;
mod demo;
mod extras;
mod hook;
pub mod mount;
mod policy;
mod run;
mod scan;
mod secrets;
mod source;
mod status;
mod unlock;
mod vault_cmds;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::vault::unlock::KeyOpts;

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 denied or not found (wrong passphrase, locked vault, \
no such secret); 2 usage or input error (bad argument, damaged vault, I/O). \
`hushfs run` exits with its command's status (128+N when killed by signal N).";

#[derive(Parser, Debug)]
#[command(
    name = "hushfs",
    version,
    about = "Serve a project's secrets as files only an authorized process tree can read",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Vault file [default: $XDG_DATA_HOME/hushfs/vault]
    #[arg(long, global = true, env = "HUSHFS_VAULT", value_name = "PATH")]
    pub vault: Option<PathBuf>,

    /// Read the passphrase from this open file descriptor (e.g. `3<pass.txt`)
    #[arg(long, global = true, value_name = "N")]
    pub passphrase_fd: Option<i32>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new, empty vault
    Init(vault_cmds::InitArgs),
    /// Store a secret read from stdin or a file (never from argv)
    Set(secrets::SetArgs),
    /// List secret names, sizes and last change (never values)
    Ls(secrets::LsArgs),
    /// Remove a secret
    Rm(secrets::RmArgs),
    /// Import every key of a dotenv file into a project
    Import(secrets::ImportArgs),
    /// Change the passphrase (re-wraps the data key)
    Passwd(vault_cmds::PasswdArgs),
    /// Replace the data key and re-encrypt the vault
    Rekey,
    /// Unlock once: cache the key in the OS keychain
    Unlock(unlock::UnlockArgs),
    /// Forget the cached key
    Lock,
    /// Show the vault, whether it is unlocked, projects and counts
    Status(status::StatusArgs),
    /// Serve a project's files at DIR, readable only by granted process trees
    Mount(mount::MountArgs),
    /// Stop serving DIR
    Umount(mount::UmountArgs),
    /// Run a command whose process tree may read the project's files
    Run(run::RunArgs),
    /// Grant a process tree or a cgroup (a container) that run did not start
    Allow(allow::AllowArgs),
    /// Remove grants from a mount
    Revoke(allow::RevokeArgs),
    /// Look for managed secret values (and encodings) in changes or files
    Scan(scan::ScanArgs),
    /// Git hooks that block commits and pushes carrying secret values
    #[command(subcommand)]
    Hook(hook::HookCmd),
    /// Which commands `run` may start for a project, and what they may read
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Where a project's values come from: the local vault or an OpenBao/Vault server
    Source(source::SourceArgs),
    /// A guided tour on a throwaway vault
    Demo,
    /// Print shell completions (see README: Install)
    Completions(extras::CompletionsArgs),
    /// Print the man page, or write all of them with --dir
    Man(extras::ManArgs),
    /// The mount daemon (started by `mount` and `run`)
    #[command(name = "__serve", hide = true)]
    Serve(mount::ServeArgs),
    /// Verify, anchor, show and follow the tamper-evident audit log
    Audit(audit::AuditArgs),
    /// The per-user agent that holds the cached key (started by `unlock`)
    #[command(name = "__agent", hide = true)]
    Agent,
}

/// How a command relates to the agent: run by it whenever it holds the
/// vault's key (`Unlocked`), whenever it runs (`Reachable`: `lock` must
/// clear the agent's cache), or always here.
enum Via {
    Unlocked,
    Reachable,
    /// Starts a daemon: by the agent even while locked (the key, from the
    /// passphrase, handed to that one command), so that every mount lives
    /// in the agent's keyring session and `unlock` revives it after `lock`.
    Daemon,
    Here,
}

fn via(c: &Command) -> Via {
    match c {
        // Both keep the log keyed from the agent's copy of its state, which
        // outlives the unlock.
        Command::Lock
        | Command::Audit(audit::AuditArgs {
            command: audit::AuditCommand::Anchor,
        }) => Via::Reachable,
        Command::Set(_)
        | Command::Ls(_)
        | Command::Rm(_)
        | Command::Import(_)
        | Command::Status(_)
        | Command::Run(run::RunArgs { mount: Some(_), .. })
        | Command::Scan(_)
        | Command::Source(_)
        | Command::Audit(_)
        | Command::Policy(policy::PolicyCmd::Show { .. }) => Via::Unlocked,
        Command::Mount(_) | Command::Run(_) => Via::Daemon,
        _ => Via::Here,
    }
}

/// Whether the agent runs this command line for a client: only the
/// commands the CLI hands it (never `demo`, `__serve`, `unlock`...), and
/// never with `--passphrase-fd`.
fn agent_may_run(args: &[Vec<u8>]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let argv = std::iter::once(std::ffi::OsStr::new("hushfs"))
        .chain(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)));
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli.passphrase_fd.is_none() && !matches!(via(&cli.command), Via::Here),
        Err(_) => false,
    }
}

/// Runs the command in the agent when the agent should run it; `None`
/// when it runs here. Never with `--passphrase-fd` (the user chose the
/// passphrase), `HUSHFS_KEYCHAIN=off`, or in a process the agent started.
fn through_agent(cli: &Cli, ctx: &Ctx, args: &[std::ffi::OsString]) -> Option<Result<i32>> {
    if ctx.keys.passphrase_fd.is_some()
        || crate::vault::keychain::disabled()
        || std::env::var_os(crate::agent::server::KEYRING_ENV).is_some()
    {
        return None;
    }
    use crate::agent::client::forward;
    // Run by the agent if it holds the key; `None`: here.
    let if_unlocked = || forward(args, None, Some(&ctx.vault)).transpose();
    match via(&cli.command) {
        Via::Here => None,
        Via::Reachable => match crate::agent::client::hello() {
            Some(_) => Some(forward(args, None, None).map(|c| c.unwrap_or(1))),
            // An agent that does not answer may still hold the key: `lock`
            // must not say "already locked" then.
            None if matches!(cli.command, Command::Lock)
                && crate::agent::socket_path().exists() =>
            {
                Some(Err(Error::Denied(
                    "the agent did not answer, so the cached key may remain: run `hushfs lock` again \
                     (or stop the agent: `pkill -f 'hushfs __agent'`)"
                        .into(),
                )))
            }
            None => None,
        },
        Via::Unlocked => if_unlocked(),
        Via::Daemon => if_unlocked().or_else(|| {
            Some((|| {
                // Asked here, on the caller's terminal; used there, not cached.
                let v = crate::vault::unlock::open(&ctx.vault, &ctx.keys)?;
                crate::agent::client::ensure_running()?;
                forward(args, Some(v.key()), None).map(|c| c.unwrap_or(1))
            })())
        }),
    }
}

/// What every command needs: where the vault is and how to get its key.
pub struct Ctx {
    pub vault: PathBuf,
    pub keys: KeyOpts,
}

/// Runs the parsed command line; `args` are the raw arguments after the
/// program name (what the agent re-parses when it runs the command).
pub fn run(cli: Cli, args: &[std::ffi::OsString]) -> Result<i32> {
    // A process the agent started may use the agent's keyring.
    crate::agent::client::adopt_session();
    let ctx = Ctx {
        vault: cli
            .vault
            .clone()
            .unwrap_or_else(crate::sys::paths::default_vault),
        keys: KeyOpts {
            passphrase_fd: cli.passphrase_fd,
            new_passphrase_fd: None,
        },
    };
    if let Some(r) = through_agent(&cli, &ctx, args) {
        return r;
    }
    match cli.command {
        Command::Agent => {
            crate::agent::server::serve(crate::daemon::spawn::ready_fd(), agent_may_run)
        }
        Command::Init(a) => vault_cmds::init(&ctx, a),
        Command::Set(a) => secrets::set(&ctx, a),
        Command::Ls(a) => secrets::ls(&ctx, a),
        Command::Rm(a) => secrets::rm(&ctx, a),
        Command::Import(a) => secrets::import(&ctx, a),
        Command::Passwd(a) => vault_cmds::passwd(&ctx, a),
        Command::Rekey => vault_cmds::rekey(&ctx),
        Command::Unlock(a) => unlock::unlock(&ctx, a),
        Command::Lock => unlock::lock(&ctx),
        Command::Status(a) => status::status(&ctx, a),
        Command::Mount(a) => mount::mount(&ctx, a),
        Command::Umount(a) => mount::umount(&ctx, a),
        Command::Run(a) => run::run(&ctx, a),
        Command::Allow(a) => allow::allow(&ctx, a),
        Command::Revoke(a) => allow::revoke(&ctx, a),
        Command::Scan(a) => scan::scan(&ctx, a),
        Command::Hook(c) => hook::hook(&ctx, c),
        Command::Policy(c) => policy::policy(&ctx, c),
        Command::Source(a) => source::source(&ctx, a),
        Command::Demo => demo::demo(),
        Command::Completions(a) => extras::completions(a),
        Command::Man(a) => extras::man(a),
        Command::Serve(a) => mount::serve(a),
        Command::Audit(a) => audit::audit(&ctx, a),
    }
}

/// Writes to stdout; a closed pipe (`hushfs ls | head`) ends the command
/// quietly with success instead of an error.
pub fn out(s: &str) -> Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::BrokenPipe),
        Err(e) => Err(Error::Other(format!("cannot write to stdout: {e}"))),
    }
}

/// Formats Unix seconds as RFC 3339 UTC; a time RFC 3339 cannot show
/// (after the year 9999) as plain Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs)) {
        Some(t) if write!(s, "{}", humantime::format_rfc3339_seconds(t)).is_ok() => s,
        _ => format!("unix time {secs}"),
    }
}

pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30m, 8h, 1d)"))
}
