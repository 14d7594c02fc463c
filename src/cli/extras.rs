//! `completions` and `man`: generated from the clap definitions, so they
//! never drift from the real options.

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, out};
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write hushfs.1 and one hushfs-COMMAND.1 per command into this
    /// directory (e.g. ~/.local/share/man/man1) instead of printing hushfs.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(a: CompletionsArgs) -> Result<i32> {
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "hushfs", &mut buf);
    out(&String::from_utf8_lossy(&buf))?;
    Ok(0)
}

fn render(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| Error::Other(format!("cannot render the man page: {e}")))?;
    Ok(buf)
}

pub fn man(a: ManArgs) -> Result<i32> {
    let cmd = Cli::command();
    let Some(dir) = a.dir else {
        out(&String::from_utf8_lossy(&render(cmd)?))?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
    let mut pages = vec![("hushfs.1".to_string(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("hushfs-{}", sub.get_name());
        pages.push((format!("{name}.1"), render(sub.clone().name(name))?));
    }
    for (file, bytes) in &pages {
        let p = dir.join(file);
        std::fs::write(&p, bytes).map_err(|e| Error::io("cannot write", &p, e))?;
    }
    out(&format!(
        "wrote {} man pages to {}\n",
        pages.len(),
        dir.display()
    ))?;
    Ok(0)
}
