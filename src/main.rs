use clap::Parser;

fn main() {
    // Before anything secret is in memory: no core files, no ptrace attach.
    if let Err(e) = hushfs::sys::harden::no_dumps() {
        eprintln!("hushfs: warning: cannot disable core dumps: {e}");
    }
    let cli = match hushfs::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                hushfs::error::exit::USAGE
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = match hushfs::cli::run(cli, &args) {
        Ok(code) => code,
        Err(hushfs::error::Error::BrokenPipe) => 0,
        Err(e) => {
            eprintln!("hushfs: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
