//! One backup: snapshot → pg_dump → OpenPGP → sha256 → partial file → commit.
//!
//! Three things run at once: a reader thread drains pg_dump's pipe (so the
//! dump never waits on compression), a blocking thread compresses, encrypts,
//! hashes and writes, and the snapshot's connection counts every table's rows.
//! The counts are checked against the rows in the dump's COPY blocks, so the
//! manifest states what the artifact holds. Nothing is held whole in memory:
//! a few fixed-size chunks are in flight. Any failure drops the partial
//! file, so nothing is left behind.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::process::ChildStdout;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Compression, TableName};
use crate::copyrows::CopyRows;
use crate::encrypt::{HashingWriter, Packing, encrypt};
use crate::error::{Error, Result};
use crate::key::UsableKey;
use crate::manifest::{FORMAT, Manifest, Recipient, TableRows};
use crate::offsite::{Backend, PartPlan, Streaming};
use crate::pgdump::Dump;
use crate::runid::RunId;
use crate::selftest::Ready;
use crate::setup::Setup;
use crate::store::ARTIFACT_SUFFIX;
use crate::time::rfc3339;
use crate::verify::{Trust, verify};

/// How often a running dump is checked for stop and stalls.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);
/// Write buffer between the encryptor and the file.
const WRITE_BUFFER: usize = 1 << 20;
/// pg_dump's pipe, enlarged from the default 64 KiB so it rarely blocks.
const PIPE_SIZE: usize = 1 << 20;
/// Bytes the reader hands the encryptor at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks queued between the reader and the encryptor (memory in flight is
/// about QUEUE × CHUNK).
const QUEUE: usize = 4;
/// How long the reader lets pg_dump's pipe fill after a read emptied it.
const COALESCE: Duration = Duration::from_micros(500);

/// Who made the artifact, recorded in the manifest.
#[derive(Debug, Clone)]
pub struct Producer(pub String);

/// Set to abort running backups (the daemon's stop grace period ran out):
/// pg_dump is killed and the partial file removed.
pub type Cancel = Arc<AtomicBool>;

/// What streaming the dump produced.
struct Streamed {
    sha256: String,
    size_bytes: u64,
    plaintext_bytes: u64,
    copy_rows: Vec<(String, u64)>,
}

/// The idempotent-retry rule: `Ok(None)` when nothing stands under the
/// run's names; its manifest when a finished run fully verifies (signed by
/// this daemon, naming this run, the bytes it names, encrypted to today's
/// keys, with today's tables); `AlreadyExists` with the reason otherwise, so
/// a retry never returns junk or a different backup, and never overwrites.
pub fn reusable(setup: &Setup, ready: &Ready, id: &RunId) -> Result<Option<Manifest>> {
    if !setup.store.has_any(id)? {
        return Ok(None);
    }
    let exists = |reason: String| Error::AlreadyExists {
        run_id: id.to_string(),
        reason,
    };
    let trust = Trust {
        signers: vec![ready.signer().public_cert()],
        expect_sha256: None,
    };
    let m = verify(&setup.store, id, &trust).map_err(exists)?;
    let want: Vec<Recipient> = recipients(ready);
    if m.recipients != want {
        let show = |r: &[Recipient]| {
            r.iter()
                .map(|r| format!("…{}", r.fingerprint.get(32..).unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(exists(format!(
            "it is encrypted to [{}], today's keys are [{}]",
            show(&m.recipients),
            show(&want)
        )));
    }
    let tables: Vec<String> = ready.tables().iter().map(ToString::to_string).collect();
    let had: Vec<String> = m.tables.iter().map(|t| t.table.to_string()).collect();
    if had != tables {
        return Err(exists(format!(
            "it holds tables [{}], today's scope is [{}]",
            had.join(", "),
            tables.join(", ")
        )));
    }
    Ok(Some(m))
}

fn recipients(ready: &Ready) -> Vec<Recipient> {
    ready
        .keys()
        .map(|k| Recipient {
            fingerprint: k.fingerprint.as_str().to_owned(),
            encryption_keys: k.encryption_keys.clone(),
        })
        .collect()
}

/// A committed backup, and its offsite upload when it streamed.
pub struct Taken {
    /// The manifest.
    pub manifest: Manifest,
    /// The streamed upload, to finish after the commit (see
    /// [`crate::offsite::Streaming`]).
    pub upload: Option<Box<dyn Streaming>>,
}

/// Takes the backup for `run_id` and returns its manifest.
/// `progress` counts plaintext bytes as they are dumped. With `offsite`,
/// the artifact is sent while it is written; a failed backup aborts that
/// upload before it returns, so nothing is left behind offsite either.
pub async fn take(
    setup: &Setup,
    ready: &Ready,
    run_id: &RunId,
    producer: &Producer,
    cancel: &Cancel,
    progress: &Arc<AtomicU64>,
    offsite: Option<&dyn Backend>,
) -> Result<Taken> {
    let started = Instant::now();
    crate::failpoint::pause("backup-before-snapshot").await;
    let mut snapshot = setup.db.snapshot(ready.tables()).await?;
    let mut partial = setup.store.create_partial_artifact(run_id)?;
    let file = partial
        .take_file()
        .ok_or_else(|| Error::Internal("partial file already taken".into()))?;
    // A file that cannot be shared is sent after the commit instead.
    let upload = offsite.and_then(|b| b.stream(run_id, file.try_clone().ok()?));
    let parts = upload.as_ref().map(|u| u.parts());
    // Everything from here on fails as one, so the upload is aborted on
    // any error.
    let written = async {
        let packing = Packing {
            compression: setup.config.backup.compression,
            level: setup.config.backup.compression_level,
            encryptor: setup.config.backup.encryptor,
        };
        let dump = Dump::start(
            ready.pg_dump(),
            setup.db.target(),
            &snapshot.id,
            ready.tables(),
        )
        .map_err(|e| Error::PgDump(format!("cannot start {}: {e}", ready.pg_dump().display())))?;
        let stall = Duration::from_secs(setup.config.backup.stall_timeout_secs);
        let (streamed, counts) = tokio::join!(
            supervise(dump, (file, parts), ready, packing, cancel, progress, stall),
            snapshot.count(ready.tables())
        );
        if let Err(e) = snapshot.release().await {
            tracing::warn!(error = %e, "closing the snapshot transaction failed");
        }
        // When both fail, the count's error is often the cause (a failed query
        // aborts the snapshot's transaction, and pg_dump then cannot import it).
        let streamed = match (streamed, &counts) {
            (Err(Error::PgDump(dump)), Err(count)) => {
                return Err(Error::PgDump(format!(
                    "{dump}; counting rows in the snapshot failed too: {count}"
                )));
            }
            (s, _) => s?,
        };
        let counts = counts?;
        check_counts(&counts, &streamed.copy_rows)?;
        let manifest = Manifest {
            format: FORMAT,
            run_id: run_id.to_string(),
            created_at: rfc3339(SystemTime::now()),
            artifact: format!("{run_id}{ARTIFACT_SUFFIX}"),
            sha256: streamed.sha256,
            size_bytes: streamed.size_bytes,
            gpg_fpr: ready.key().fingerprint.as_str().to_owned(),
            recipients: recipients(ready),
            tables: counts
                .iter()
                .map(|(t, rows)| TableRows {
                    table: t.clone(),
                    rows: *rows,
                })
                .collect(),
            plaintext_bytes: streamed.plaintext_bytes,
            compression: match packing.compression {
                Compression::None => "none".to_owned(),
                Compression::Zip => format!("zip-{}", packing.level),
                Compression::Zlib => format!("zlib-{}", packing.level),
            },
            server_version: ready.server().version.clone(),
            pg_dump_version: ready.pg_dump_version().line.clone(),
            producer: producer.0.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            host: setup
                .config
                .offsite
                .as_ref()
                .and_then(|o| o.host.clone())
                .or_else(|| crate::offsite::system_host().ok())
                .unwrap_or_default(),
        };
        let bytes = manifest.to_bytes().map_err(Error::Internal)?;
        let signature = ready.signer().sign(&bytes).map_err(Error::Internal)?;
        let store = setup.store.clone();
        let m = manifest.clone();
        tokio::task::spawn_blocking(move || store.commit(partial, &m, &signature))
            .await
            .map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
        Ok(manifest)
    }
    .await;
    match written {
        Ok(manifest) => Ok(Taken { manifest, upload }),
        Err(e) => {
            if let Some(u) = upload {
                u.abort().await;
            }
            Err(e)
        }
    }
}

/// The snapshot's counts must be the rows in the dump, table by table.
fn check_counts(counts: &[(TableName, u64)], copy_rows: &[(String, u64)]) -> Result<()> {
    for (table, rows) in counts {
        let name = table.to_string();
        if copy_rows.iter().filter(|(t, _)| *t == name).count() > 1 {
            return Err(Error::PgDump(format!(
                "the dump holds more than one COPY block for {name}; the artifact was discarded"
            )));
        }
        let dumped = copy_rows.iter().find(|(t, _)| *t == name).map(|(_, n)| *n);
        if dumped != Some(*rows) {
            return Err(Error::PgDump(format!(
                "{name} has {rows} rows in the snapshot but {} in the dump; the artifact was discarded",
                dumped.map_or_else(|| "no COPY block".to_owned(), |n| n.to_string())
            )));
        }
    }
    Ok(())
}

/// Runs the dump on a blocking thread while watching it from here: the stop
/// flag, or a dump that yields nothing for `stall`, kills pg_dump's process
/// group, which ends the stream; the partial file is then dropped.
async fn supervise(
    dump: Dump,
    file: (File, Option<PartPlan>),
    ready: &Ready,
    packing: Packing,
    cancel: &Cancel,
    progress: &Arc<AtomicU64>,
    stall: Duration,
) -> Result<Streamed> {
    let killer = dump.killer();
    let mut job = {
        let ready = ready.clone();
        let progress = Arc::clone(progress);
        tokio::task::spawn_blocking(move || run_dump(dump, file, &ready, packing, progress))
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
    file: (File, Option<PartPlan>),
    ready: &Ready,
    packing: Packing,
    progress: Arc<AtomicU64>,
) -> Result<Streamed> {
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

/// Pipes the dump through encryption into `file` and fsyncs it, cutting
/// offsite parts when given a plan.
fn stream(
    dump: &mut Dump,
    (file, parts): (File, Option<PartPlan>),
    ready: &Ready,
    packing: Packing,
    progress: Arc<AtomicU64>,
) -> Result<Streamed> {
    let stdout = dump
        .stdout()
        .ok_or_else(|| Error::PgDump("pg_dump stdout was not captured".into()))?;
    // Best effort: a smaller pipe is slower, not wrong.
    let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_SIZE);
    let (full_tx, full_rx) = sync_channel(QUEUE);
    let (empty_tx, empty_rx) = sync_channel(QUEUE + 2);
    let reader = std::thread::Builder::new()
        .name("dump-reader".into())
        .spawn(move || read_dump(stdout, &full_tx, &empty_rx, &progress))
        .map_err(|e| Error::Internal(format!("cannot start the reader thread: {e}")))?;
    let mut sink = HashingWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file)).cutting(parts);
    let keys: Vec<UsableKey> = ready.keys().cloned().collect();
    let encrypted = encrypt(
        full_rx.iter(),
        |used| {
            let _ = empty_tx.try_send(used);
        },
        &mut sink,
        &keys,
        packing,
    )
    .map_err(|e| match sink.write_error() {
        // The file, not the encryption, failed: say which and why.
        Some(kind) => Error::io("write", "the partial artifact", io::Error::new(kind, e)),
        None => Error::Encrypt(e),
    });
    if encrypted.is_err() {
        // The reader may be waiting on the pipe: end pg_dump before joining it.
        dump.killer().kill();
    }
    drop(full_rx);
    drop(empty_tx);
    let read = reader
        .join()
        .map_err(|_| Error::Internal("the reader thread panicked".into()))?
        .map_err(|e| Error::PgDump(format!("reading pg_dump's output: {e}")))?;
    let plaintext_bytes = encrypted?;
    let last = sink.last_part();
    let (mut writer, sha256, size_bytes) = sink.finish();
    let io = |action: &'static str, e: io::Error| Error::io(action, "the partial artifact", e);
    writer.flush().map_err(|e| io("write", e))?;
    let file = writer
        .into_inner()
        .map_err(|e| io("write", e.into_error()))?;
    file.sync_all().map_err(|e| io("fsync", e))?;
    if let Some(last) = last {
        last.send();
    }
    Ok(Streamed {
        sha256,
        size_bytes,
        plaintext_bytes,
        copy_rows: read.finish(),
    })
}

/// The reader thread: fills chunks from pg_dump's pipe, counts COPY rows and
/// bytes, and queues the chunks; stops when the encryptor hangs up.
///
/// A chunk is queued only when full (or at the end). pg_dump writes 4 KiB
/// at a time; handing on whatever one read returned meant, when pg_dump is
/// fast, one channel hand-off (and an encryptor wake-up) per few KiB, and
/// re-zeroing the rest of the 256 KiB buffer each time. Buffers come back
/// from the encryptor full length, so they are zeroed only once.
///
/// A read that returns less than asked has emptied the pipe. Reading again
/// at once would block until pg_dump's next 4 KiB write, wake this thread
/// for it, and so again for every write: a context switch per 4 KiB on both
/// sides (27,700 of them in an 800 MB dump, measured). Instead the reader
/// sleeps [`COALESCE`] and then takes what gathered meanwhile. 500 µs is
/// under a third of the time pg_dump needs to fill the 1 MiB pipe even at
/// 600 MB/s, so pg_dump does not wait on it; a dump that trickles only
/// gets its rows half a millisecond later.
fn read_dump(
    mut stdout: ChildStdout,
    full: &SyncSender<Vec<u8>>,
    empty: &Receiver<Vec<u8>>,
    progress: &AtomicU64,
) -> io::Result<CopyRows> {
    let mut rows = CopyRows::default();
    loop {
        let mut buf = empty.try_recv().unwrap_or_default();
        // Only a new buffer (or the short last one) needs this.
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            let want = CHUNK - filled;
            let n = match stdout.read(&mut buf[filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            if n == 0 {
                break;
            }
            rows.feed(&buf[filled..filled + n]);
            progress.fetch_add(n as u64, Ordering::Relaxed);
            filled += n;
            if n < want {
                // The pipe is empty: let it fill.
                std::thread::sleep(COALESCE);
            }
        }
        let end = filled < CHUNK;
        buf.truncate(filled);
        if filled > 0 && full.send(buf).is_err() {
            return Ok(rows);
        }
        if end {
            return Ok(rows);
        }
    }
}
