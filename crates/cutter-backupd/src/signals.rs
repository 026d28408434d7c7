//! The process's signals, registered once at start: SIGTERM/SIGINT stop the
//! daemon, SIGHUP reloads it. They are handed to the server as a future and a
//! stream, so the server itself never touches OS signal APIs.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Registered handlers. Needs a running tokio runtime.
pub struct Signals {
    term: Signal,
    int: Signal,
    /// SIGHUP: one item per reload request.
    pub hup: Signal,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP.
    pub fn register() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Splits into the shutdown future and the reload stream.
    pub fn split(self) -> (impl Future<Output = ()> + Send, Signal) {
        let (mut term, mut int) = (self.term, self.int);
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
            }
        };
        (shutdown, self.hup)
    }
}

/// `cutter-backupd --signal-reload PID`: SIGHUP to the daemon, as the unit's
/// ExecReload (a minimal Debian has no /bin/kill).
pub fn send_reload(pid: i32) -> std::process::ExitCode {
    let sent = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::other("pid must be positive"))
        .and_then(|p| {
            rustix::process::kill_process(p, rustix::process::Signal::HUP).map_err(io::Error::from)
        });
    match sent {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutter-backupd: cannot signal pid {pid} to reload: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
