//! cutter-backupd: holds the resolved public key and the database pool and
//! serves `cutter.backup.v1.BackupService` on a root-only Unix socket.
//!
//! args → config → logging → runtime → run → exit code.

mod admin;
mod daemon;
mod grpc;
mod listener;
mod logging;
mod notify;
mod offsite_ops;
mod ops;
mod peer;
mod server;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cutter_core::config::{Config, DEFAULT_CONFIG_PATH};

/// Exit codes: 0 clean stop, 2 bad usage or config, 1 anything else.
const EXIT_CONFIG: u8 = 2;
const EXIT_RUNTIME: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "cutter-backupd", version = cutter_backup::VERSION, about = "The cutter pre-write backup daemon")]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Validate the config file and exit.
    #[arg(long)]
    check_config: bool,
    /// Ask the daemon with this pid to reload (SIGHUP) and exit: the unit's
    /// ExecReload, which works where /bin/kill is not installed.
    #[arg(long, value_name = "PID")]
    signal_reload: Option<i32>,
    /// Print the man page (roff) and exit: for packaging.
    #[arg(long, hide = true)]
    print_man: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(pid) = args.signal_reload {
        return signals::send_reload(pid);
    }
    if args.print_man {
        use clap::CommandFactory;
        // Section 8: a system daemon (the package installs it in man8).
        let man = clap_mangen::Man::new(Args::command()).section("8");
        return match man.render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cutter-backupd: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        };
    }
    logging::init();
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start: fix the config");
            eprintln!("cutter-backupd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        println!("config {} OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    // Before any thread exists: taking the fds edits the environment.
    let activated = match listener::take_activated() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cutter-backupd: the socket passed by systemd is unusable: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("backupd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutter-backupd: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(server::run(args.config, config, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped with an error");
            eprintln!("cutter-backupd: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
