//! cutterctl: the orchestrator's and the operator's client for cutter-backupd.
//!
//! Exit codes: 0 success (selftest PASS, complete envelope); 1 the daemon said
//! no (selftest FAIL, backup refused or failed, incomplete envelope); 2 bad
//! usage; 3 the daemon cannot be reached.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The daemon could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The daemon answered with a failure.
pub const EXIT_FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "cutterctl", version = cutter_backup::VERSION, about = "Drive cutter-backupd")]
struct Args {
    /// The daemon's socket.
    #[arg(long, global = true, default_value = "/run/cutter/backupd.sock")]
    socket: PathBuf,
    /// Print JSON for scripts instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every fail-closed check; exit 0 on PASS, 1 on FAIL.
    Selftest,
    /// Version, readiness, key, last backup, artifacts, disk.
    Status,
    /// Take the pre-write backup for a run and print its envelope as JSON.
    Backup {
        /// The orchestrator's run id.
        #[arg(long)]
        run_id: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutterctl: cannot start: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let mut client = match cutter_backup::connect(&args.socket).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cutterctl: cannot reach cutter-backupd at {}: {e}. Is it running (systemctl status cutter-backupd)? Wrong path (--socket)?",
                args.socket.display()
            );
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let result = match args.command {
        Command::Selftest => client
            .selftest(cutter_backup::v1::SelftestRequest {})
            .await
            .map(|r| output::selftest(&r.into_inner(), args.json)),
        Command::Status => client
            .status(cutter_backup::v1::StatusRequest {})
            .await
            .map(|r| output::status(&r.into_inner(), args.json)),
        Command::Backup { run_id } => client
            .pre_write_backup(cutter_backup::v1::PreWriteBackupRequest { run_id })
            .await
            .map(|r| output::envelope(&r.into_inner())),
    };
    match result {
        Ok(code) => code,
        Err(status) => output::rpc_error(&status, args.json),
    }
}
