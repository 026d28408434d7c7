//! cutterctl: the orchestrator's and the operator's client for cutter-backupd.
//!
//! Exit codes: 0 success (selftest PASS, complete envelope); 1 the daemon said
//! no (selftest FAIL, backup refused or failed, incomplete envelope); 2 bad
//! usage; 3 the daemon cannot be reached.

mod drill;
mod offsite;
mod output;
mod progress;
mod prompt;
mod recover;
mod restore;
mod tls_trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The daemon could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// The daemon answered with a failure.
pub const EXIT_FAILED: u8 = 1;
/// Bad usage (also clap's own code).
pub const EXIT_USAGE: u8 = 2;

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
    /// Every backup: run_id, time, size, sha256, key needed, rows, where
    /// (local, remote, both), state.
    List {
        /// Every host's runs in the offsite bucket, straight from the
        /// bucket (no daemon needed; reads --config and its credentials).
        #[arg(long)]
        offsite: bool,
        /// The daemon's config (with --offsite).
        #[arg(long, default_value = cutter_core::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Re-hash artifacts against their manifests and check their OpenPGP
    /// structure; no private key needed. Exit 1 if any FAILED.
    Verify {
        /// The run to verify.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        run_id: Option<String>,
        /// Verify every backup.
        #[arg(long)]
        all: bool,
        /// The manifest signer's cert you pinned (`cutterctl signer export`);
        /// default: the daemon's own signer and restore.trusted_signers.
        #[arg(long)]
        signer: Option<PathBuf>,
        /// The sha256 the orchestrator recorded from the envelope.
        #[arg(long, conflicts_with = "all")]
        expect_sha256: Option<String>,
        /// Check the offsite copies instead: download, authenticate the
        /// signed manifest, re-hash (no daemon needed).
        #[arg(long)]
        offsite: bool,
        /// With --offsite: the host whose copies to check (default: this one).
        #[arg(long, requires = "offsite")]
        host: Option<String>,
        /// With --offsite: the object version the envelope recorded
        /// (`offsite_version`); exactly that version is checked.
        #[arg(long, requires = "offsite", conflicts_with = "all")]
        version: Option<String>,
        /// The daemon's config (with --offsite).
        #[arg(long, default_value = cutter_core::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Apply [retention] (keep_last, keep_days); a dry run unless --confirm.
    Prune {
        /// Really delete.
        #[arg(long)]
        confirm: bool,
    },
    /// Exempt a run from prune (a run under investigation).
    Pin {
        /// The run.
        run_id: String,
        /// Why, kept with the pin.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Lift a pin.
    Unpin {
        /// The run.
        run_id: String,
    },
    /// The daemon's metrics in the Prometheus text format (what
    /// metrics.textfile holds); check them with `promtool check metrics`.
    Metrics,
    /// The daemon's manifest signing key.
    #[command(subcommand)]
    Signer(SignerCommand),
    /// Decrypt a backup with your secret key and load it into a scratch
    /// database (never the live one), then compare row counts with the
    /// manifest. Works without the daemon.
    Restore(restore::Restore),
    /// What a run changed: its pre-write rows (loaded beside live with
    /// `restore --beside-live`) against the live rows, by key.
    Diff(recover::diff::Diff),
    /// Put back exactly the rows a run changed, guarded, in one
    /// transaction: as SQL to review (--sql FILE) or now (--apply).
    Revert(recover::revert::Revert),
    /// Prove the newest backup restores: restore it into a scratch database
    /// cutterctl names, compare every count, drop it; exit 0 PASS, 1 FAIL.
    Drill(drill::Drill),
    /// Shell completions or the man page, for packaging and deploy steps.
    #[command(subcommand, hide = true)]
    Generate(Generate),
}

#[derive(Debug, Subcommand)]
enum Generate {
    /// Completions for bash, zsh, fish, elvish or powershell on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff) on stdout.
    Man,
}

#[derive(Debug, Subcommand)]
enum SignerCommand {
    /// Print the public cert manifests are signed with (armored): save it
    /// and pin it with --signer FILE or restore.trusted_signers.
    Export,
}

fn generate(what: &Generate) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Args::command();
    let mut out = std::io::stdout();
    match what {
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd, "cutterctl", &mut out);
            ExitCode::SUCCESS
        }
        Generate::Man => match clap_mangen::Man::new(cmd).render(&mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cutterctl: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        },
    }
}

/// The offsite commands that go straight to the bucket.
async fn without_daemon(command: &Command, json: bool) -> Option<ExitCode> {
    let result = match command {
        Command::List {
            offsite: true,
            config,
        } => offsite::list(config, json).await,
        Command::Verify {
            run_id,
            all,
            signer,
            expect_sha256,
            offsite: true,
            host,
            version,
            config,
        } => offsite::verify(offsite::VerifyArgs {
            config,
            run_id: run_id.as_deref(),
            all: *all,
            host: host.as_deref(),
            signer: signer.as_slice(),
            expect_sha256: expect_sha256.as_deref(),
            version: version.as_deref(),
        })
        .await
        .map(|r| output::verify(&r, json)),
        _ => return None,
    };
    Some(result.unwrap_or_else(|e| {
        eprintln!("cutterctl: {}", output::clean(&format!("{e:#}")));
        ExitCode::from(EXIT_FAILED)
    }))
}

fn main() -> ExitCode {
    // Before anything reads the environment or builds a TLS client.
    if let Err(e) = tls_trust::drop_overrides() {
        eprintln!("cutterctl: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
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

/// Runs an operator command that works without the daemon on a blocking
/// thread: exit 0 when it returns true, 1 when false or on an error.
async fn blocking(
    name: &'static str,
    f: impl FnOnce() -> anyhow::Result<bool> + Send + 'static,
) -> ExitCode {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::from(EXIT_FAILED),
        Ok(Err(e)) => {
            eprintln!("cutterctl {name}: {}", output::clean(&format!("{e:#}")));
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("cutterctl {name}: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Replaces the default (terminate) action of SIGINT, SIGTERM and SIGHUP
/// while the returned handles live; each arrival is noted on stderr.
fn hold_signals() -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ]
    .into_iter()
    .filter_map(|kind| signal(kind).ok())
    .map(|mut s| {
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                eprintln!("cutterctl: finishing so that the load role is locked first");
            }
        })
    })
    .collect()
}

async fn run(args: Args) -> ExitCode {
    if let Command::Generate(what) = args.command {
        return generate(&what);
    }
    if let Command::Restore(r) = args.command {
        // Between the load role's password and its lock, a signal must not
        // end cutterctl: SIGINT still reaches psql (same process group),
        // which stops, so the restore fails and the role is locked.
        let _held = hold_signals();
        return blocking("restore", move || restore::run(&r)).await;
    }
    if let Command::Diff(d) = args.command {
        let json = args.json;
        return blocking("diff", move || recover::diff::run(&d, json)).await;
    }
    if let Command::Drill(d) = args.command {
        let json = args.json;
        let _held = hold_signals();
        return blocking("drill", move || drill::run(&d, json)).await;
    }
    if let Command::Revert(r) = args.command {
        let socket = args.socket.clone();
        let _held = hold_signals();
        return blocking("revert", move || recover::revert::run(&r, &socket)).await;
    }
    if let Some(code) = without_daemon(&args.command, args.json).await {
        return code;
    }
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
            .status(cutter_backup::v1::StatusRequest {
                running_only: false,
            })
            .await
            .map(|r| output::status(&r.into_inner(), args.json)),
        Command::Backup { run_id } => {
            progress::backup(&mut client, run_id, progress::wanted(args.json))
                .await
                .map(|r| output::envelope(&r.into_inner()))
        }
        Command::List { .. } => client
            .list(cutter_backup::v1::ListRequest {})
            .await
            .map(|r| output::list(&r.into_inner(), args.json)),
        Command::Verify {
            run_id,
            all,
            signer,
            expect_sha256,
            ..
        } => {
            let signer_certs = match signer.map(std::fs::read).transpose() {
                Ok(c) => c.unwrap_or_default(),
                Err(e) => {
                    eprintln!("cutterctl: reading --signer: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            client
                .verify(cutter_backup::v1::VerifyRequest {
                    run_id: run_id.unwrap_or_default(),
                    all,
                    expect_sha256: expect_sha256.unwrap_or_default(),
                    signer_certs,
                })
                .await
                .map(|r| output::verify(&r.into_inner(), args.json))
        }
        Command::Metrics => client
            .metrics(cutter_backup::v1::MetricsRequest {})
            .await
            .map(|r| {
                print!("{}", r.into_inner().text);
                ExitCode::SUCCESS
            }),
        Command::Signer(SignerCommand::Export) => client
            .get_signer(cutter_backup::v1::GetSignerRequest {})
            .await
            .map(|r| output::signer(&r.into_inner(), args.json)),
        Command::Prune { confirm } => client
            .prune(cutter_backup::v1::PruneRequest { confirm })
            .await
            .map(|r| output::prune(&r.into_inner(), args.json)),
        Command::Pin { run_id, note } => client
            .pin(cutter_backup::v1::PinRequest {
                run_id,
                pinned: true,
                note,
            })
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Unpin { run_id } => client
            .pin(cutter_backup::v1::PinRequest {
                run_id,
                pinned: false,
                note: String::new(),
            })
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Restore(_)
        | Command::Diff(_)
        | Command::Revert(_)
        | Command::Drill(_)
        | Command::Generate(_) => {
            unreachable!("handled above")
        }
    };
    match result {
        Ok(code) => code,
        Err(status) => output::rpc_error(&status, args.json),
    }
}
