//! The daemon's manifest signing key, and checking manifest signatures.
//!
//! Anyone who can write the backups directory can write a manifest, so a
//! manifest is only believed when it carries a detached OpenPGP signature by
//! a signer the operator pinned. The manifest holds the artifact's sha256, so
//! the signature authenticates the artifact too, at no per-byte cost.
//!
//! The key is an Ed25519 OpenPGP key the daemon makes on its first start,
//! kept 0600 in its own state directory, never in the backups directory (an
//! attacker who can write there must not be able to read or swap it). Its
//! public cert is what operators pin (`cutterctl signer export`); the
//! signatures are ordinary OpenPGP, so `gpg --verify` checks them as well.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sequoia_openpgp as openpgp;

use openpgp::KeyHandle;
use openpgp::armor;
use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Armorer, Message, Signer as StreamSigner};
use openpgp::types::KeyFlags;

pub use openpgp::Cert;

/// The largest signing key or signer cert file read.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// The user id of the generated key, so `gpg --list-keys` says what it is.
const USER_ID: &str = "cutter-backupd manifest signer";

/// The daemon's signing key (secret half included; never leaves the daemon).
pub struct Signer {
    cert: Cert,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the key at `path`, or makes one there when nothing exists yet.
    /// Refuses a key inside `backup_dir`, behind a link, not a regular file,
    /// or readable by anyone but its owner.
    pub fn load_or_create(path: &Path, backup_dir: &Path) -> Result<Self, String> {
        let path = std::path::absolute(path).map_err(|e| format!("signer.key_file: {e}"))?;
        let backups = std::path::absolute(backup_dir).unwrap_or_else(|_| backup_dir.to_owned());
        if path.starts_with(&backups) {
            return Err(format!(
                "signer.key_file {} is inside backup.dir: anyone who can write backups could swap it; keep it in the state directory (e.g. /var/lib/cutter/signer/)",
                path.display()
            ));
        }
        match open_secret_file(&path) {
            Ok(mut f) => {
                let mut text = Vec::new();
                f.read_to_end(&mut text)
                    .map_err(|e| format!("reading signer.key_file {}: {e}", path.display()))?;
                let cert = Cert::from_bytes(&text).map_err(|e| {
                    format!(
                        "signer.key_file {} is not an OpenPGP key: {e}",
                        path.display()
                    )
                })?;
                if !cert.is_tsk() {
                    return Err(format!(
                        "signer.key_file {} holds no secret key; move it aside and reload, a new key is made",
                        path.display()
                    ));
                }
                Ok(Self { cert })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(format!("signer.key_file {}: {e}", path.display())),
        }
    }

    fn create(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| match dir.parent() {
                    Some(state) if e.kind() == std::io::ErrorKind::NotFound => format!(
                        "creating {}: the state directory {} does not exist: create it (`install -d -m 0750 -o cutter-backup -g cutter-backup {}`, as the package does) or set signer.key_file to a path in a directory that exists",
                        dir.display(),
                        state.display(),
                        state.display()
                    ),
                    _ => format!("creating {}: {e}", dir.display()),
                })?;
        }
        let (cert, _revocation) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_primary_key_flags(KeyFlags::empty().set_signing().set_certification())
            .set_validity_period(None)
            .add_userid(USER_ID)
            .generate()
            .map_err(|e| format!("generating the signing key: {e}"))?;
        let armored = cert
            .as_tsk()
            .armored()
            .to_vec()
            .map_err(|e| format!("serialising the signing key: {e}"))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|e| format!("creating signer.key_file {}: {e}", path.display()))?;
        f.write_all(&armored)
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("writing signer.key_file {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), fingerprint = %cert.fingerprint().to_hex(), "made a new manifest signing key");
        Ok(Self { cert })
    }

    /// The signing key's primary fingerprint (40 upper hex).
    pub fn fingerprint(&self) -> String {
        self.cert.fingerprint().to_hex()
    }

    /// The public cert operators pin.
    pub fn public_cert(&self) -> Cert {
        self.cert.clone().strip_secret_key_material()
    }

    /// The public cert, ASCII-armored.
    pub fn public_armored(&self) -> Result<String, String> {
        self.public_cert()
            .armored()
            .to_vec()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .map_err(|e| format!("serialising the signer cert: {e}"))
    }

    /// An ASCII-armored detached signature over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        let policy = StandardPolicy::new();
        let keypair = self
            .cert
            .keys()
            .with_policy(&policy, None)
            .secret()
            .for_signing()
            .next()
            .ok_or("the signing key has no usable signing key")?
            .key()
            .clone()
            .into_keypair()
            .map_err(|e| format!("unlocking the signing key: {e}"))?;
        let mut out = Vec::new();
        let e = |err: openpgp::anyhow::Error| format!("signing: {err}");
        let message = Message::new(&mut out);
        let message = Armorer::new(message)
            .kind(armor::Kind::Signature)
            .build()
            .map_err(e)?;
        let mut signer = StreamSigner::new(message, keypair)
            .map_err(e)?
            .detached()
            .build()
            .map_err(e)?;
        signer
            .write_all(data)
            .map_err(|err| format!("signing: {err}"))?;
        signer.finalize().map_err(e)?;
        Ok(out)
    }
}

/// Opens an existing secret file without following links, and refuses it
/// unless it is a regular file readable by its owner only.
fn open_secret_file(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    check_secret_mode(&f, path)?;
    Ok(f)
}

/// A secret file must be a regular file that neither group nor others can
/// read or write; the error says which `chmod` fixes it.
pub fn check_secret_mode(f: &File, path: &Path) -> std::io::Result<()> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is mode {mode:04o}, readable beyond its owner (uid {}): run chmod 600 {}",
            path.display(),
            meta.uid(),
            path.display()
        )));
    }
    Ok(())
}

/// Reads pinned signer certs (public; armored or binary; one or more).
pub fn read_signer_certs(path: &Path) -> Result<Vec<Cert>, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read signer cert {}: {e}", path.display()))?;
    parse_certs(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses pinned signer certs from bytes (armored or binary).
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<Cert>, String> {
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(format!(
            "{} bytes of signer certs; a cert is a few hundred",
            bytes.len()
        ));
    }
    let certs = CertParser::from_bytes(bytes)
        .and_then(|p| p.collect::<openpgp::Result<Vec<Cert>>>())
        .map_err(|e| format!("signer certs are not OpenPGP certs: {e}"))?;
    if certs.is_empty() {
        return Err("no signer cert given".into());
    }
    Ok(certs
        .into_iter()
        .map(Cert::strip_secret_key_material)
        .collect())
}

/// Reads every file in `paths` as pinned signer certs.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Cert>, String> {
    let mut out = Vec::new();
    for p in paths {
        crate::trusted::check(p, "the manifest signer cert")?;
        out.extend(read_signer_certs(p)?);
    }
    Ok(out)
}

/// Checks that `signature` is a good detached signature over `data` by one
/// of `signers`; returns that signer's fingerprint.
pub fn verify_detached(data: &[u8], signature: &[u8], signers: &[Cert]) -> Result<String, String> {
    if signers.is_empty() {
        return Err("no trusted signer cert: pin one (--signer FILE or restore.trusted_signers; `cutterctl signer export` prints the daemon's)".into());
    }
    let policy = StandardPolicy::new();
    let helper = Checker {
        signers,
        good: None,
    };
    let mut v = DetachedVerifierBuilder::from_bytes(signature)
        .map_err(|e| format!("the manifest signature is not an OpenPGP signature: {e}"))?
        .with_policy(&policy, None, helper)
        .map_err(|e| format!("manifest signature: {e}"))?;
    v.verify_bytes(data)
        .map_err(|e| format!("manifest signature does not verify: {e}"))?;
    v.into_helper()
        .good
        .ok_or_else(|| "manifest signature does not verify".into())
}

struct Checker<'a> {
    signers: &'a [Cert],
    good: Option<String>,
}

impl VerificationHelper for Checker<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self.signers.to_vec())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                let mut why = "no signature".to_owned();
                for r in results {
                    match r {
                        Ok(good) => {
                            self.good = Some(good.ka.cert().fingerprint().to_hex());
                            return Ok(());
                        }
                        Err(e) => why = e.to_string(),
                    }
                }
                return Err(openpgp::anyhow::anyhow!(
                    "not signed by a trusted signer ({why})"
                ));
            }
        }
        Err(openpgp::anyhow::anyhow!("no signature"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_with_its_signer_and_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backups = dir.path().join("backups");
        let a = Signer::load_or_create(&dir.path().join("a/key.asc"), &backups).expect("a");
        let b = Signer::load_or_create(&dir.path().join("b/key.asc"), &backups).expect("b");
        let sig = a.sign(b"manifest bytes").expect("sign");
        assert_eq!(
            verify_detached(b"manifest bytes", &sig, &[a.public_cert()]).expect("good"),
            a.fingerprint()
        );
        assert!(verify_detached(b"manifest bytez", &sig, &[a.public_cert()]).is_err());
        assert!(verify_detached(b"manifest bytes", &sig, &[b.public_cert()]).is_err());
        assert!(verify_detached(b"manifest bytes", &sig, &[]).is_err());
        // The same file loads as the same key.
        let again = Signer::load_or_create(&dir.path().join("a/key.asc"), &backups).expect("a");
        assert_eq!(again.fingerprint(), a.fingerprint());
    }

    #[test]
    fn a_key_in_the_backups_directory_or_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backups = dir.path().join("backups");
        assert!(Signer::load_or_create(&backups.join("key.asc"), &backups).is_err());
        let path = dir.path().join("key.asc");
        Signer::load_or_create(&path, &backups).expect("made");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Signer::load_or_create(&path, &backups).expect_err("0644 refused");
        assert!(err.contains("chmod 600"), "{err}");
    }
}
