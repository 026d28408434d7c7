//! `cutterctl backup` on a terminal: a progress line (bytes, rate, elapsed)
//! on stderr for backups that take more than a moment, fed by the daemon's
//! cheap `Status{running_only}` (no selftest, no directory scan). Nothing extra with `--json` or when stderr is not a terminal.

use std::io::Write;
use std::time::{Duration, Instant};

use cutter_backup::v1::backup_service_client::BackupServiceClient;
use cutter_backup::v1::{BackupEnvelope, PreWriteBackupRequest, StatusRequest};
use tonic::transport::Channel;
use tonic::{Response, Status};

/// Quiet for backups shorter than this.
const QUIET_FOR: Duration = Duration::from_secs(2);

/// True when a progress line may be drawn.
pub fn wanted(json: bool) -> bool {
    !json && rustix::termios::isatty(std::io::stderr())
}

/// Runs the backup, drawing progress when `show`.
pub async fn backup(
    client: &mut BackupServiceClient<Channel>,
    run_id: String,
    show: bool,
) -> Result<Response<BackupEnvelope>, Status> {
    let mut poller = client.clone();
    let call = client.pre_write_backup(PreWriteBackupRequest {
        run_id: run_id.clone(),
    });
    if !show {
        return call.await;
    }
    tokio::pin!(call);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut drew = false;
    loop {
        tokio::select! {
            r = &mut call => {
                if drew {
                    eprint!("\r\x1b[K");
                }
                return r;
            }
            _ = tick.tick() => {
                if started.elapsed() < QUIET_FOR {
                    continue;
                }
                let Ok(st) = poller.status(StatusRequest { running_only: true }).await else { continue };
                if let Some(r) = st.into_inner().running.into_iter().find(|r| r.run_id == run_id) {
                    let secs = (r.elapsed_ms as f64 / 1000.0).max(0.001);
                    eprint!(
                        "\r\x1b[K{run_id}: {:.1} MiB dumped, {:.1} MiB/s, {:.0} s",
                        r.bytes as f64 / 1048576.0,
                        r.bytes as f64 / 1048576.0 / secs,
                        secs
                    );
                    let _ = std::io::stderr().flush();
                    drew = true;
                }
            }
        }
    }
}
