//! The server's life: load, recover, listen (socket-activated or bound),
//! READY, watchdog, reload on SIGHUP, graceful stop on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;
use tonic::service::interceptor::InterceptedService;

use cutter_backup::v1::backup_service_server::BackupServiceServer;
use cutter_core::config::Config;
use cutter_core::manifest::SignedManifest;
use cutter_core::runid::RunId;
use cutter_core::setup::{Setup, shown_key};
use cutter_core::verify;

use crate::admin::Admin;
use crate::daemon::Daemon;
use crate::grpc::Service;
use crate::{listener, notify, peer, signals::Signals};

/// The largest request decoded (a Verify carrying pinned signer certs is
/// the largest legitimate one, a few KiB).
const MAX_REQUEST: usize = 256 * 1024;

/// Loads, listens, serves until SIGTERM/SIGINT, reloading on SIGHUP.
/// `activated` is the socket systemd passed, if any.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    activated: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<()> {
    let (stop_signal, hup) = Signals::register()
        .context("registering signal handlers")?
        .split();
    peer::reachable(&config.server.allowed_uids).map_err(anyhow::Error::msg)?;
    let setup = Setup::load(config, Setup::env_fingerprint(), cutter_offsite::connect)
        .context("loading the config")?;
    recover(&setup);
    let socket = setup.config.server.socket.clone();
    let grace = Duration::from_secs(setup.config.server.stop_grace_secs);
    let (listener, owns_socket) = match activated {
        Some(l) => {
            l.set_nonblocking(true).context("socket from systemd")?;
            (
                UnixListener::from_std(l).context("socket from systemd")?,
                false,
            )
        }
        None => (listener::bind(&socket).await?, true),
    };
    tracing::info!(
        socket = %socket.display(),
        activated = !owns_socket,
        key = %shown_key(&setup.key),
        tables = setup.tables.len(),
        "listening"
    );
    let status = format!(
        "starting: first selftest running (key {}, {} tables)",
        shown_key(&setup.key),
        setup.tables.len()
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    let admin = Admin::new(health).await;
    seed_last_success(&setup, &admin).await;
    let daemon = Arc::new(Daemon::new(config_path, setup, admin));
    notify::ready(&status);
    spawn_selftest_timer(&daemon);
    spawn_reloader(&daemon, hup);
    spawn_watchdog(&daemon);
    tokio::spawn(Arc::clone(&daemon).run_uploader());

    let stop = {
        let daemon = Arc::clone(&daemon);
        async move {
            stop_signal.await;
            daemon.begin_stop();
            notify::stopping();
            daemon.admin().stopping().await;
            spawn_grace_timer(&daemon, grace);
        }
    };
    let max_connections = daemon.setup().config.server.max_connections;
    let service = BackupServiceServer::new(Service(Arc::clone(&daemon)))
        .max_decoding_message_size(MAX_REQUEST);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cutter_backup::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Every service sits behind the same peer check.
    let auth = authorizer(Arc::clone(&daemon));
    tonic::transport::Server::builder()
        .layer(listener::TrackLayer)
        .add_service(InterceptedService::new(service, auth.clone()))
        .add_service(InterceptedService::new(health_service, auth.clone()))
        .add_service(InterceptedService::new(
            reflection().build_v1().context("reflection")?,
            auth.clone(),
        ))
        .add_service(InterceptedService::new(
            reflection().build_v1alpha().context("reflection")?,
            auth,
        ))
        .serve_with_incoming_shutdown(listener::incoming(listener, max_connections), stop)
        .await
        .context("serving gRPC")?;
    // Backups whose caller went away still run in their own tasks.
    while daemon.running() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon.setup().db.close().await;
    if owns_socket {
        let _ = std::fs::remove_file(&socket);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Seeds the metrics' last success from the newest manifest this daemon
/// signed (the directory may be missing: selftest says so). The first use
/// of the store's census: the one listing at start.
async fn seed_last_success(setup: &Setup, admin: &Admin) {
    let own = crate::ops::own_signer(setup);
    let store = setup.store.clone();
    let newest = tokio::task::spawn_blocking(move || {
        let m = crate::ops::newest_own(&store, &own)?;
        cutter_core::time::parse_rfc3339(&m.created_at).map(|t| (t, m.duration_ms, m.size_bytes))
    })
    .await
    .ok()
    .flatten();
    if let Some((at, duration_ms, size)) = newest {
        admin.seed_last_success(at, duration_ms, size);
    }
}

/// The peer check every service runs on a request's headers, before its
/// body is read.
fn authorizer(
    d: Arc<Daemon>,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req| peer::authorize(&req, &d.setup().config.server.allowed_uids).map(|()| req)
}

/// Selftest at start and then every `server.selftest_interval_secs` (read
/// anew each round, so a reload changes it): health, STATUS and metrics
/// follow the host while the daemon is idle.
fn spawn_selftest_timer(daemon: &Arc<Daemon>) {
    let d = Arc::clone(daemon);
    tokio::spawn(async move {
        let summary = d.summary().await;
        tracing::info!(status = %summary, "first selftest: {summary}");
        loop {
            let every = d.setup().config.server.selftest_interval_secs;
            tokio::time::sleep(Duration::from_secs(every)).await;
            if d.is_stopping() {
                return;
            }
            let setup = d.setup();
            d.selftest(&setup).await;
        }
    });
}

fn spawn_reloader(daemon: &Arc<Daemon>, mut hup: tokio::signal::unix::Signal) {
    let d = Arc::clone(daemon);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            d.reload().await;
        }
    });
}

/// WATCHDOG=1 at half of WATCHDOG_USEC, from a task on the same runtime that
/// serves requests, after touching the daemon's shared state: a wedged
/// runtime or a poisoned lock stops the pings and systemd restarts us.
fn spawn_watchdog(daemon: &Arc<Daemon>) {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    let d = Arc::clone(daemon);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            let alive = tokio::task::spawn_blocking(|| ()).await.is_ok();
            let _ = d.setup();
            if alive {
                notify::watchdog();
            }
        }
    });
}

/// After `grace`, running backups are aborted; systemd is told how long the
/// stop may take so it does not SIGKILL a backup that is finishing.
fn spawn_grace_timer(daemon: &Arc<Daemon>, grace: Duration) {
    if daemon.running() > 0 {
        notify::extend_timeout(grace + Duration::from_secs(10));
        tracing::info!(
            running = daemon.running(),
            grace_secs = grace.as_secs(),
            "waiting for running backups"
        );
    }
    let d = Arc::clone(daemon);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if d.running() > 0 {
            tracing::warn!(
                running = d.running(),
                "stop grace period over: aborting running backups"
            );
            d.cancel_running();
        }
    });
}

/// Start-up recovery of partial files; a missing directory is selftest's job.
fn recover(setup: &Setup) {
    if !setup.store.dir().is_dir() {
        return;
    }
    // Only a manifest this daemon signed is rolled forward.
    let own = setup.signer.as_ref().ok().map(|s| s.public_cert());
    let accept = |signed: &SignedManifest| match (&own, RunId::parse(&signed.manifest.run_id)) {
        (Some(cert), Ok(id)) => {
            verify::authenticate(&id, signed, std::slice::from_ref(cert)).is_ok()
        }
        _ => false,
    };
    match setup.store.recover(&accept) {
        Ok(r) => {
            for name in &r.removed {
                tracing::info!(file = %name, "removed a leftover partial file");
            }
            for id in &r.completed {
                tracing::info!(run_id = %id, "completed a backup interrupted between renames");
            }
        }
        Err(e) => tracing::error!(error = %e, "start-up recovery failed"),
    }
}
