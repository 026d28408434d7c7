//! `cutterctl restore`: verify (signature, checksum, structure), decrypt with
//! the operator's secret key into a private temp file while hashing the bytes
//! consumed, and only when the whole plaintext is authenticated load it into
//! a scratch database with psql in restricted mode, as a non-superuser role
//! that owns that database; then check that the load stayed in its box and
//! compare every table's row count with the manifest. Runs without the
//! daemon; never touches the live database. `scratch.rs` is the box (sqlx
//! sessions, bound names), `psql.rs` the loader.

mod psql;
pub(crate) mod scratch;

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cutter_core::config::Config;
use cutter_core::db::{ConnTarget, read_password};
use cutter_core::decrypt::{Cert, HashingReader, Password, decrypt, read_secret_keys};
use cutter_core::manifest::Manifest;
use cutter_core::runid::RunId;
use cutter_core::signer::{self, check_secret_mode};
use cutter_core::store::Store;
use cutter_core::verify::{self, Trust};

use crate::prompt;
use psql::Loader;
use scratch::{Counts, Scratch};

/// What to restore and where (`cutterctl restore …`).
#[derive(Debug, clap::Args)]
pub struct Restore {
    /// The run.
    pub run_id: String,
    /// Your secret key (gpg --export-secret-keys --armor FPR > FILE, mode 0600).
    #[arg(long, required_unless_present = "drop_beside")]
    pub secret_key: Option<PathBuf>,
    /// File with the key's passphrase (mode 0600); without it you are asked (no echo).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Scratch database URL (an admin role that may create roles and
    /// databases); created when missing, refused when not empty or live.
    #[arg(long, required_unless_present_any = ["to_file", "beside_live", "drop_beside"])]
    pub into: Option<String>,
    /// Only decrypt, into this new file (mode 0600).
    #[arg(long, conflicts_with = "into")]
    pub to_file: Option<PathBuf>,
    /// Load the run's tables into the live database (--live) under a new
    /// schema, beside the live tables, which are not touched.
    #[arg(long, conflicts_with_all = ["into", "to_file"], requires = "live")]
    pub beside_live: bool,
    /// Drop what --beside-live made for this run (only a schema it marked).
    #[arg(long, conflicts_with_all = ["into", "to_file", "beside_live"], requires = "live")]
    pub drop_beside: bool,
    #[command(flatten)]
    pub beside: crate::recover::BesideArgs,
    /// The daemon's config: where backups are and which database is live.
    #[arg(long, default_value = cutter_core::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// psql to load with (default: the newest installed).
    #[arg(long)]
    pub psql: Option<PathBuf>,
    /// The manifest signer's cert (`cutterctl signer export`); default:
    /// restore.trusted_signers in the config. Repeatable.
    #[arg(long)]
    pub signer: Vec<PathBuf>,
    /// The sha256 the orchestrator recorded from the backup's envelope.
    #[arg(long)]
    pub expect_sha256: Option<String>,
    /// The non-superuser role the dump is loaded as; created when missing.
    #[arg(long, default_value = "cutter_restore")]
    pub load_role: String,
    /// The live database is gone (a lost host): restore without comparing
    /// the target with it. Without this flag, a live database that cannot
    /// be reached makes restore refuse.
    #[arg(long)]
    pub live_database_gone: bool,
    /// Fetch the backup from the offsite bucket ([offsite] in the config and
    /// its credentials) instead of backup.dir: for a host that lost its
    /// disk. The signed manifest and sha256 are checked the same way.
    #[arg(long)]
    pub from_offsite: bool,
    /// With --from-offsite: the host whose backup it is (default: this
    /// host's name, or offsite.host). `cutterctl list --offsite` shows them.
    #[arg(long, requires = "from_offsite")]
    pub host: Option<String>,
    /// With --from-offsite: the object version the envelope recorded
    /// (`offsite_version`); exactly that version is fetched.
    #[arg(long, requires = "from_offsite")]
    pub version: Option<String>,
}

impl Restore {
    /// A restore of `run_id` with `secret_key`, every other flag at its
    /// default (no target yet): what `diff` and `drill` start from.
    pub fn of(
        run_id: &str,
        secret_key: &Path,
        passphrase_file: Option<&Path>,
        config: &Path,
    ) -> Self {
        Self {
            run_id: run_id.to_owned(),
            secret_key: Some(secret_key.to_owned()),
            passphrase_file: passphrase_file.map(Path::to_owned),
            into: None,
            to_file: None,
            beside_live: false,
            drop_beside: false,
            beside: crate::recover::BesideArgs::default(),
            config: config.to_owned(),
            psql: None,
            signer: Vec::new(),
            expect_sha256: None,
            load_role: "cutter_restore".into(),
            live_database_gone: false,
            from_offsite: false,
            host: None,
            version: None,
        }
    }
}

/// Runs the restore; `Ok(false)` when row counts differ.
pub fn run(r: &Restore) -> anyhow::Result<bool> {
    let (id, config) = start(r)?;
    if r.drop_beside {
        return crate::recover::drop_beside(&r.beside, &config, &id).map(|()| true);
    }
    match (&r.into, &r.to_file) {
        (Some(_), None) => {
            let o = into_scratch_measured(r, &config, &id)?;
            return Ok(compare(&o.manifest, &o.counts, &o.database));
        }
        (None, Some(_)) => {}
        (None, None) if r.beside_live => {}
        _ => bail!(
            "give exactly one of --into URL (a scratch database), --to-file PATH or --beside-live"
        ),
    }
    let (manifest, artifact) = authenticated(r, &config, &id)?;
    let (keys, passphrase) = unlock(r)?;
    if r.beside_live {
        let live = crate::recover::Live::connect(&r.beside, &config)?;
        let mut plain = tempfile::tempfile().context("creating an unnamed temp file")?;
        decrypt_checked(artifact, &id, &manifest, &keys, passphrase, &mut plain)?;
        plain.rewind()?;
        crate::recover::beside::load(&live, &r.beside, &id, &manifest, &config, plain)?;
        return Ok(true);
    }
    let Some(path) = &r.to_file else {
        bail!("no target");
    };
    let mut out = create_0600_new(path)?;
    let done = decrypt_checked(artifact, &id, &manifest, &keys, passphrase, &mut out)
        .and_then(|n| out.sync_all().map(|()| n).map_err(Into::into));
    let n = done.inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })?;
    eprintln!("decrypted {id} ({n} bytes of SQL) to {}", path.display());
    Ok(true)
}

/// What every restore does first: no core dump and no ptrace by other
/// users (the passphrase and the plaintext pass through this process), the
/// run id checked, the config loaded.
fn start(r: &Restore) -> anyhow::Result<(RunId, Config)> {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    Ok((RunId::parse(&r.run_id)?, Config::load(&r.config)?))
}

/// The operator's secret keys and, when one is protected, the passphrase.
fn unlock(r: &Restore) -> anyhow::Result<(Vec<Cert>, Option<Password>)> {
    let Some(secret_key) = &r.secret_key else {
        bail!("--secret-key FILE is needed to decrypt");
    };
    let keys = read_secret_keys(secret_key).map_err(anyhow::Error::msg)?;
    let passphrase = passphrase(r, &keys)?;
    Ok((keys, passphrase))
}

/// What a measured scratch restore found (`restore --into`, `drill`).
pub struct Outcome {
    /// The authenticated manifest.
    pub manifest: Manifest,
    /// Rows per table as restored.
    pub counts: Counts,
    /// The scratch database.
    pub database: String,
    /// Verifying (and, from the bucket, downloading) the run.
    pub fetch: Duration,
    /// Decrypting it.
    pub decrypt: Duration,
    /// Loading it and counting.
    pub load: Duration,
    /// Fingerprints of the supplied secret keys the artifact is encrypted to.
    pub keys: Vec<String>,
}

/// `restore --into` with its phases timed: verify, decrypt, load, count.
pub fn measured(r: &Restore) -> anyhow::Result<Outcome> {
    let (id, config) = start(r)?;
    into_scratch_measured(r, &config, &id)
}

fn into_scratch_measured(r: &Restore, config: &Config, id: &RunId) -> anyhow::Result<Outcome> {
    let target =
        ConnTarget::parse(r.into.as_deref().unwrap_or_default(), None).context("--into")?;
    let database = target.database.clone();
    let started = Instant::now();
    let (manifest, artifact) = authenticated(r, config, id)?;
    let fetch = started.elapsed();
    let (keys, passphrase) = unlock(r)?;
    let used: Vec<String> = keys
        .iter()
        .map(|c| c.fingerprint().to_hex())
        .filter(|f| manifest.recipients.iter().any(|r| r.fingerprint == *f))
        .collect();
    let (counts, decrypt, load) = into_scratch(
        r, config, target, id, &manifest, artifact, &keys, passphrase,
    )?;
    Ok(Outcome {
        manifest,
        counts,
        database,
        fetch,
        decrypt,
        load,
        keys: used,
    })
}

/// Decrypts all of the artifact, then loads it into the scratch database
/// in the box (`scratch.rs`); the counts, and how long decrypting and
/// loading took.
#[allow(clippy::too_many_arguments)]
fn into_scratch(
    r: &Restore,
    config: &Config,
    target: ConnTarget,
    id: &RunId,
    manifest: &Manifest,
    artifact: File,
    keys: &[Cert],
    passphrase: Option<Password>,
) -> anyhow::Result<(Counts, Duration, Duration)> {
    let loader = Loader::new(r.psql.clone())?;
    let scratch = Scratch::new(target, &r.load_role, r.live_database_gone)?;
    scratch.refuse_live(live_target(config).as_ref())?;
    // Decrypt all of it before anything loads: a failed MDC or a checksum
    // mismatch then creates and commits nothing. The plaintext goes to an
    // unnamed file (O_TMPFILE): no name anyone could swap or read.
    let started = Instant::now();
    let mut plain = tempfile::tempfile().context("creating an unnamed temp file")?;
    decrypt_checked(artifact, id, manifest, keys, passphrase, &mut plain)?;
    plain.rewind()?;
    let decrypted = started.elapsed();
    let started = Instant::now();
    let tables: Vec<_> = manifest.tables.iter().map(|t| t.table.clone()).collect();
    let mut role = scratch.prepare()?;
    let counts = (|| {
        scratch.create_schemas(&role, &tables)?;
        loader.load(&scratch.target, &scratch.role, &role.password, plain)?;
        scratch.after_load(&mut role, &tables)
    })();
    let locked = role.lock();
    let counts = match counts {
        Ok(c) => c,
        Err(e) => {
            if role.created_database {
                match role.drop_database() {
                    Ok(()) => eprintln!(
                        "dropped the scratch database {} this restore made",
                        scratch.target.database
                    ),
                    Err(d) => eprintln!(
                        "WARNING: could not drop the scratch database {}: {d:#}",
                        scratch.target.database
                    ),
                }
            }
            return Err(e);
        }
    };
    locked?;
    Ok((counts, decrypted, started.elapsed()))
}

/// Prints manifest vs restored counts; `false` when any differs.
pub fn compare(manifest: &Manifest, counts: &Counts, database: &str) -> bool {
    println!("{:<50} {:>12} {:>12}", "table", "manifest", "restored");
    let mut all_match = manifest.tables.len() == counts.len();
    for (t, (table, got)) in manifest.tables.iter().zip(counts) {
        let ok = *got == i64::try_from(t.rows).ok() && t.table == *table;
        all_match &= ok;
        println!(
            "{:<50} {:>12} {:>12}{}",
            crate::output::clean(&table.to_string()),
            t.rows,
            got.map_or_else(|| "not a table".to_owned(), |n| n.to_string()),
            if ok { "" } else { "  MISMATCH" }
        );
    }
    if all_match {
        println!("RESTORE: OK — {} tables into {database}", counts.len());
    } else {
        println!("RESTORE: MISMATCH — row counts differ from the manifest");
    }
    all_match
}

/// The run's signed manifest and its artifact, authenticated (local, or
/// from the bucket with --from-offsite) before anything decrypts.
fn authenticated(r: &Restore, config: &Config, id: &RunId) -> anyhow::Result<(Manifest, File)> {
    let trust = trust(r, config)?;
    if r.from_offsite {
        return fetch_offsite(r, config, id, &trust);
    }
    let store = Store::new(&config.backup.dir)?;
    let m = verify::verify(&store, id, &trust)
        .map_err(|why| anyhow::anyhow!("verify FAILED for {id}: {why}; nothing was restored"))?;
    Ok((m, store.open_artifact(id)?))
}

/// The signers manifests must be signed by: `--signer` files, else
/// `restore.trusted_signers`; none is an error (fail closed).
fn trust(r: &Restore, config: &Config) -> anyhow::Result<Trust> {
    let files = if r.signer.is_empty() {
        &config.restore.trusted_signers
    } else {
        &r.signer
    };
    if files.is_empty() {
        bail!(
            "no trusted manifest signer: pass --signer FILE (save it once with `cutterctl signer export > FILE`) or list it in restore.trusted_signers"
        );
    }
    Ok(Trust {
        signers: signer::read_all(files).map_err(anyhow::Error::msg)?,
        expect_sha256: r.expect_sha256.clone(),
    })
}

fn passphrase(r: &Restore, keys: &[Cert]) -> anyhow::Result<Option<Password>> {
    Ok(match &r.passphrase_file {
        Some(p) => {
            let f = File::open(p).with_context(|| format!("reading {}", p.display()))?;
            check_secret_mode(&f, p)?;
            Some(prompt::from_file(p)?)
        }
        None if keys.iter().any(has_protected_secret) => {
            Some(prompt::no_echo("passphrase for the backup key: ")?)
        }
        None => None,
    })
}

/// Decrypts the artifact into `out`, hashing every byte read from it, and
/// fails unless those bytes are exactly the ones the signed manifest names
/// (the file could have been swapped after verify read it).
fn decrypt_checked(
    artifact: File,
    id: &RunId,
    manifest: &Manifest,
    keys: &[Cert],
    passphrase: Option<Password>,
    out: &mut File,
) -> anyhow::Result<u64> {
    let mut reader = HashingReader::new(artifact);
    let n = decrypt(&mut reader, keys, passphrase, out)
        .map_err(|e| anyhow::anyhow!("{id}: {e}; nothing was restored"))?;
    let (sha, size) = reader.finish()?;
    manifest.check_bytes(&sha, size).map_err(|e| {
        anyhow::anyhow!("{id} changed while it was read: {e}; nothing was restored")
    })?;
    out.flush()?;
    Ok(n)
}

/// Downloads and authenticates the run from the bucket (the signed
/// manifest against the pinned signers, the artifact against its sha256);
/// returns the manifest and the artifact in an unnamed temp file.
fn fetch_offsite(
    r: &Restore,
    config: &Config,
    id: &RunId,
    trust: &Trust,
) -> anyhow::Result<(Manifest, File)> {
    let o = crate::offsite::client(config)?;
    let host = r.host.clone().unwrap_or_else(|| o.host().to_owned());
    cutter_core::config::check_host(&host).map_err(anyhow::Error::msg)?;
    let fetched = tokio::runtime::Handle::current()
        .block_on(o.fetch(cutter_core::offsite::FetchRequest {
            host: &host,
            id,
            signers: &trust.signers,
            expect_sha256: trust.expect_sha256.as_deref(),
            version: r.version.as_deref(),
        }))
        .map_err(|why| {
            anyhow::anyhow!(
                "offsite verify FAILED for {id} (host {host}): {why}; nothing was restored"
            )
        })?;
    if let Some(want) = &trust.expect_sha256
        && !want.eq_ignore_ascii_case(&fetched.manifest.sha256)
    {
        bail!(
            "{id}: the manifest says sha256 {}, the recorded envelope says {want}; nothing was restored",
            fetched.manifest.sha256
        );
    }
    eprintln!(
        "fetched {id} from {}{} ({} bytes, sha256 {}; signed manifest and sha256 verified)",
        fetched.url,
        fetched
            .version
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default(),
        fetched.manifest.size_bytes,
        fetched.manifest.sha256
    );
    for w in &fetched.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok((fetched.manifest, fetched.file))
}

/// The daemon's live database, to refuse as a target (and, for
/// `--beside-live`, to recognise).
pub fn live_target(config: &Config) -> Option<ConnTarget> {
    let password = config
        .database
        .password_file
        .as_deref()
        .and_then(|p| read_password(p).ok());
    ConnTarget::parse(&config.database.url, password).ok()
}

fn has_protected_secret(cert: &Cert) -> bool {
    cert.keys()
        .secret()
        .any(|ka| !ka.key().has_unencrypted_secret())
}

fn create_0600_new(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}
