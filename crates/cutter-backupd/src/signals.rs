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
