//! One backup: snapshot → pg_dump → OpenPGP → sha256 → partial file → commit.
//!
//! The dump streams through a fixed-size buffer; nothing is held whole in
//! memory. Any failure drops the partial file, so nothing is left behind.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Compression;
use crate::db::Snapshot;
use crate::encrypt::{HashingWriter, Packing, encrypt};
use crate::error::{Error, Result};
use crate::key::UsableKey;
use crate::manifest::{FORMAT, Manifest, Recipient, TableRows};
use crate::pgdump::Dump;
use crate::selftest::Ready;
use crate::setup::Setup;
use crate::time::rfc3339;

/// How often a running dump is checked for stop and stalls.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

/// Write buffer between the encryptor and the file.
const WRITE_BUFFER: usize = 1 << 20;

/// Who made the artifact, recorded in the manifest.
#[derive(Debug, Clone)]
pub struct Producer(pub String);

/// Set to abort running backups (the daemon's stop grace period ran out):
/// pg_dump is killed and the partial file removed.
pub type Cancel = Arc<AtomicBool>;

/// Takes the backup for `run_id` (already validated) and returns its manifest.
pub async fn take(
    setup: &Setup,
    ready: &Ready,
    run_id: &str,
    producer: &Producer,
    cancel: &Cancel,
    progress: &Arc<AtomicU64>,
) -> Result<Manifest> {
    let started = Instant::now();
    let snapshot = setup.db.snapshot(&ready.tables).await?;
    let mut partial = setup.store.create_partial_artifact(run_id)?;
    let file = partial
        .take_file()
        .ok_or_else(|| Error::Internal("partial file already taken".into()))?;
    let packing = Packing {
        compression: setup.config.backup.compression,
        level: setup.config.backup.compression_level,
    };
    let dump = Dump::start(
        &ready.pg_dump,
        setup.db.target(),
        &snapshot.id,
        &ready.tables,
    )
    .map_err(|e| Error::PgDump(format!("cannot start {}: {e}", ready.pg_dump.display())));
    let result = match dump {
        Ok(dump) => {
            let stall = Duration::from_secs(setup.config.backup.stall_timeout_secs);
            supervise(dump, file, ready, packing, cancel, progress, stall).await
        }
        Err(e) => Err(e),
    };
    let tables = snapshot
        .counts
        .iter()
        .map(|(t, rows)| TableRows {
            table: t.to_string(),
            rows: *rows,
        })
        .collect();
    release(snapshot).await;
    let (sha256, size_bytes, plaintext_bytes) = result?;
    let manifest = Manifest {
        format: FORMAT,
        run_id: run_id.to_owned(),
        created_at: rfc3339(SystemTime::now()),
        artifact: setup
            .store
            .artifact_path(run_id)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256,
        size_bytes,
        gpg_fpr: ready.key.fingerprint.to_string(),
        recipients: ready
            .keys()
            .map(|k| Recipient {
                fingerprint: k.fingerprint.to_string(),
                encryption_keys: k.encryption_keys.clone(),
            })
            .collect(),
        tables,
        plaintext_bytes,
        compression: match packing.compression {
            Compression::None => "none".to_owned(),
            Compression::Zip => format!("zip-{}", packing.level),
            Compression::Zlib => format!("zlib-{}", packing.level),
        },
        server_version: ready.server.version.clone(),
        pg_dump_version: ready.pg_dump_version.line.clone(),
        producer: producer.0.clone(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let store = setup.store.clone();
    let m = manifest.clone();
    tokio::task::spawn_blocking(move || store.commit(partial, &m))
        .await
        .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
    Ok(manifest)
}

/// Runs the dump on a blocking thread while watching it from here (its
/// plaintext bytes so far are published in `progress`): the stop
/// flag or a dump that yields nothing for `stall` kills pg_dump's process
/// group, which ends the stream; the partial file is then dropped.
async fn supervise(
    dump: Dump,
    file: File,
    ready: &Ready,
    packing: Packing,
    cancel: &Cancel,
    progress: &Arc<AtomicU64>,
    stall: Duration,
) -> Result<(String, u64, u64)> {
    let killer = dump.killer();
    let mut job = {
        let ready = ready.clone();
        let progress = Arc::clone(progress);
        tokio::task::spawn_blocking(move || run_dump(dump, file, &ready, packing, &progress))
    };
    let mut aborted = None;
    let mut seen = (0, Instant::now());
    let joined = loop {
        tokio::select! {
            r = &mut job => break r,
            () = tokio::time::sleep(SUPERVISE_EVERY), if aborted.is_none() => {
                let bytes = progress.load(Ordering::Relaxed);
                if bytes != seen.0 {
                    seen = (bytes, Instant::now());
                }
                if cancel.load(Ordering::SeqCst) {
                    aborted = Some(Error::Stopping);
                } else if seen.1.elapsed() >= stall {
                    aborted = Some(Error::PgDump(format!(
                        "no output for {} s (backup.stall_timeout_secs); aborted",
                        stall.as_secs()
                    )));
                }
                if aborted.is_some() {
                    killer.kill();
                }
            }
        }
    };
    let result = joined.map_err(|e| Error::Internal(format!("dump task failed: {e}")))?;
    match aborted {
        Some(e) => Err(e),
        None => result,
    }
}

fn run_dump(
    mut dump: Dump,
    file: File,
    ready: &Ready,
    packing: Packing,
    progress: &AtomicU64,
) -> Result<(String, u64, u64)> {
    match stream(&mut dump, file, ready, packing, progress) {
        Ok(out) => {
            let warnings = dump.finish().map_err(Error::PgDump)?;
            if !warnings.trim().is_empty() {
                tracing::warn!(pg_dump_stderr = %warnings.trim(), "pg_dump printed warnings");
            }
            Ok(out)
        }
        Err(e) => {
            dump.kill();
            Err(e)
        }
    }
}

async fn release(snapshot: Snapshot) {
    if let Err(e) = snapshot.release().await {
        tracing::warn!(error = %e, "closing the snapshot transaction failed");
    }
}

/// Pipes the dump through encryption into `file`, fsyncs it, and returns
/// (sha256, artifact bytes, plaintext bytes).
fn stream(
    dump: &mut Dump,
    file: File,
    ready: &Ready,
    packing: Packing,
    progress: &AtomicU64,
) -> Result<(String, u64, u64)> {
    let stdout = dump
        .stdout()
        .ok_or_else(|| Error::PgDump("pg_dump stdout was not captured".into()))?;
    let mut stdout = Counting {
        inner: stdout,
        progress,
    };
    let mut sink = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file));
    let keys: Vec<UsableKey> = ready.keys().cloned().collect();
    let plain = encrypt(&mut stdout, &mut sink, &keys, packing).map_err(Error::Encrypt)?;
    drop(stdout);
    let (mut writer, sha256, size) = sink.finish();
    writer
        .flush()
        .map_err(|e| Error::Encrypt(format!("writing the artifact: {e}")))?;
    let file = writer
        .into_inner()
        .map_err(|e| Error::Encrypt(format!("writing the artifact: {}", e.error())))?;
    file.sync_all()
        .map_err(|e| Error::Encrypt(format!("fsync of the artifact: {e}")))?;
    Ok((sha256, size, plain))
}

/// A reader that publishes how many bytes it has read.
struct Counting<'a, R> {
    inner: R,
    progress: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
