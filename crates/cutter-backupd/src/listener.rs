//! The root-only Unix socket: directory 0700 when we create it, socket 0600,
//! a stale socket from a crashed daemon replaced (only ever a socket: a
//! file that stands there is refused, not deleted), a live one never stolen;
//! and a cap on open connections.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt, wrappers::UnixListenerStream};
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The listening socket systemd passed (LISTEN_FDS/LISTEN_PID), if any.
/// Must run before threads start: it removes those variables.
pub fn take_activated() -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    fds.take_unix_listener(0)
}

/// Binds `path` and restricts it to its owner.
pub async fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating socket directory {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket: move it away or set server.socket (it is never deleted for you)",
                path.display()
            );
        }
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "{} is in use by a running daemon; stop it first or set server.socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

/// An accepted connection holding one of the capped slots until it closes.
pub struct Conn {
    stream: UnixStream,
    _slot: OwnedSemaphorePermit,
}

/// The listener's connections, at most `max` open at once: one over the
/// cap is closed at once (and logged), so idle or slow clients cannot pile
/// up without bound.
pub fn incoming(listener: UnixListener, max: usize) -> impl Stream<Item = io::Result<Conn>> {
    let slots = Arc::new(Semaphore::new(max));
    UnixListenerStream::new(listener).map(move |accepted| {
        let stream = accepted?;
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Ok(Conn {
                stream,
                _slot: slot,
            }),
            Err(_) => {
                tracing::warn!(max, "connection refused: server.max_connections reached");
                Err(io::Error::other("connection cap reached"))
            }
        }
    })
}

impl Connected for Conn {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
