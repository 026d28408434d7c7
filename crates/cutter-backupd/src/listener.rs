//! The root-only Unix socket: directory 0700 when we create it, socket 0600,
//! a stale socket from a crashed daemon replaced (only ever a socket: a
//! file that stands there is refused, not deleted), a live one never stolen;
//! and a cap on open connections that idle or slow clients cannot fill: at
//! the cap, the connection idle the longest is closed to admit a new one.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::{Stream, StreamExt, wrappers::UnixListenerStream};
use tonic::codegen::http;
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

/// What the daemon knows about one open connection: how many requests are
/// in flight on it, when it last started or finished one, and whether it
/// has been chosen to make room for a newer connection.
#[derive(Debug)]
pub struct ConnState {
    active: AtomicUsize,
    last_busy: Mutex<Instant>,
    evicted: AtomicBool,
    reader: Mutex<Option<Waker>>,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            active: AtomicUsize::new(0),
            last_busy: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            reader: Mutex::new(None),
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_busy.lock() {
            *t = Instant::now();
        }
    }

    fn last_busy(&self) -> Instant {
        self.last_busy
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
    }

    fn evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Closes the connection: its next read fails, and hyper drops it.
    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.reader.lock()
            && let Some(w) = w.take()
        {
            w.wake();
        }
    }

    /// Marks a request in flight until the returned guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(Arc::clone(self))
    }
}

/// A request in flight on a connection; the connection is not idle while
/// one exists.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a request knows of its connection (tonic puts it in the request's
/// extensions): the peer's credentials, and the connection's state.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's SO_PEERCRED.
    pub uds: UdsConnectInfo,
    state: Arc<ConnState>,
}

/// An accepted connection, tracked by [`incoming`] while it is open.
pub struct Conn {
    stream: UnixStream,
    state: Arc<ConnState>,
}

/// The open connections, oldest first.
struct Registry {
    conns: Vec<Weak<ConnState>>,
    last_warning: Option<Instant>,
    evicted_since_warning: u64,
}

impl Registry {
    /// Makes room for one more connection: at the cap, the connection idle
    /// the longest (no request in flight) is closed. `false` when every
    /// open connection is busy.
    fn admit(&mut self, max: usize) -> bool {
        self.conns.retain(|w| w.strong_count() > 0);
        let open: Vec<Arc<ConnState>> = self
            .conns
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.evicted())
            .collect();
        if open.len() < max {
            return true;
        }
        let Some(victim) = open
            .iter()
            .filter(|c| c.idle())
            .min_by_key(|c| c.last_busy())
        else {
            tracing::warn!(
                max,
                "connection refused: server.max_connections reached and every connection has a request in flight"
            );
            return false;
        };
        victim.evict();
        self.evicted_since_warning += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(
                max,
                closed = self.evicted_since_warning,
                "server.max_connections reached: closed the longest-idle connections to admit new ones"
            );
            self.last_warning = Some(now);
            self.evicted_since_warning = 0;
        }
        true
    }
}

/// At most one eviction warning per this interval (a flood of idle
/// connections must not flood the journal too).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The listener's connections, at most `max` open at once. A new
/// connection at the cap closes the one idle the longest (no request in
/// flight), so idle or slow clients cannot lock others out; only when all
/// `max` have a request in flight is the new one refused.
pub fn incoming(listener: UnixListener, max: usize) -> impl Stream<Item = io::Result<Conn>> {
    let registry = Mutex::new(Registry {
        conns: Vec::new(),
        last_warning: None,
        evicted_since_warning: 0,
    });
    UnixListenerStream::new(listener).map(move |accepted| {
        let stream = accepted?;
        let mut registry = registry
            .lock()
            .map_err(|_| io::Error::other("connection registry poisoned"))?;
        if !registry.admit(max) {
            return Err(io::Error::other("connection cap reached"));
        }
        let state = Arc::new(ConnState::new());
        registry.conns.push(Arc::downgrade(&state));
        Ok(Conn { stream, state })
    })
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            uds: self.stream.connect_info(),
            state: Arc::clone(&self.state),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Ok(mut w) = self.state.reader.lock() {
            *w = Some(cx.waker().clone());
        }
        if self.state.evicted() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
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

/// Counts a connection's requests in flight (see [`ConnState`]): a tower
/// layer around every service.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track(inner)
    }
}

/// The service [`TrackLayer`] makes.
#[derive(Debug, Clone)]
pub struct Track<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let busy = req.extensions().get::<ConnInfo>().map(|c| c.state.begin());
        let fut = self.0.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(busy);
            out
        })
    }
}
