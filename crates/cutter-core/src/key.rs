//! The OpenPGP public key backups are encrypted to: fingerprint parsing, cert
//! lookup (armored file or the GnuPG keyring), and the validity checks of
//! SPEC §3.2. The daemon only ever holds public key material.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::cert::amalgamation::key::ValidKeyAmalgamationIter;
use openpgp::cert::prelude::*;
use openpgp::packet::key;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::types::RevocationStatus;

use crate::config::KeyConfig;

/// WARN when the key expires sooner than this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A well-formed primary-key fingerprint: 40 upper-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Parses `s`, ignoring spaces and case; `None` when not 40 hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let hex: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let hex = hex.strip_prefix("0x").unwrap_or(&hex).to_ascii_uppercase();
        (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(Self(hex))
    }

    /// The full 40-digit form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last 8 digits: the only part printed in reports and logs.
    pub fn tail(&self) -> &str {
        &self.0[32..]
    }
}

/// Shows only the tail, `…1A2B3C4D`: the full fingerprint is never printed
/// in reports and logs, and formatting one cannot forget that rule.
impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "…{}", self.tail())
    }
}

/// The shown form of a fingerprint: `…1A2B3C4D`.
pub fn shown(fpr: &Fingerprint) -> String {
    fpr.to_string()
}

/// Where a cert was found, for the selftest detail.
#[derive(Debug, Clone)]
pub enum CertOrigin {
    /// `key.cert_file`.
    File(std::path::PathBuf),
    /// `gpg --export` from the keyring.
    Keyring,
}

impl std::fmt::Display for CertOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertOrigin::File(p) => write!(f, "{}", p.display()),
            CertOrigin::Keyring => f.write_str("the GnuPG keyring"),
        }
    }
}

/// A cert found for the configured fingerprint, public parts only.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The configured fingerprint (matches the cert's primary key).
    pub fingerprint: Fingerprint,
    /// The certificate with any secret key material stripped.
    pub cert: Arc<Cert>,
    /// Where it came from.
    pub origin: CertOrigin,
}

/// Finds the cert for `fpr`: in `key.cert_file` when configured, else in the
/// GnuPG keyring. The error text tells the operator how to provide it.
pub fn load_cert(key: &KeyConfig, fpr: &Fingerprint) -> Result<LoadedCert, String> {
    let (certs, origin) = match &key.cert_file {
        Some(path) => (certs_from_file(path)?, CertOrigin::File(path.clone())),
        None => (certs_from_keyring(key, fpr)?, CertOrigin::Keyring),
    };
    let cert = certs
        .into_iter()
        .find(|c| c.fingerprint().to_hex() == fpr.as_str())
        .ok_or_else(|| match &origin {
            CertOrigin::File(p) => format!(
                "no certificate with fingerprint {} in {}; export it with `gpg --export --armor \"$BACKUP_GPG_FPR\" >> {}`",
                shown(fpr),
                p.display(),
                p.display()
            ),
            CertOrigin::Keyring => format!(
                "no public key {} in the GnuPG keyring; import it with `gpg --import cutter-backup-public.asc` or set key.cert_file",
                shown(fpr)
            ),
        })?;
    Ok(LoadedCert {
        fingerprint: fpr.clone(),
        cert: Arc::new(cert.strip_secret_key_material()),
        origin,
    })
}

fn certs_from_file(path: &Path) -> Result<Vec<Cert>, String> {
    let parser = CertParser::from_file(path)
        .map_err(|e| format!("cannot read key.cert_file {}: {e}", path.display()))?;
    parser.collect::<openpgp::Result<Vec<Cert>>>().map_err(|e| {
        format!(
            "key.cert_file {} is not an OpenPGP certificate: {e}",
            path.display()
        )
    })
}

fn certs_from_keyring(key: &KeyConfig, fpr: &Fingerprint) -> Result<Vec<Cert>, String> {
    let gpg = crate::trusted::program(&key.gpg, "key.gpg").map_err(|e| {
        format!("no key.cert_file configured and {e}; set key.cert_file to an armored public key")
    })?;
    let mut cmd = Command::new(&gpg);
    cmd.args(["--batch", "--no-tty", "--export", fpr.as_str()])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    if let Some(home) = &key.gnupg_home {
        cmd.env("GNUPGHOME", home);
    }
    let out = cmd.output().map_err(|e| {
        format!(
            "no key.cert_file configured and {} cannot run ({e}); set key.cert_file to an armored public key",
            key.gpg.display()
        )
    })?;
    if out.stdout.is_empty() {
        return Ok(Vec::new());
    }
    CertParser::from_bytes(&out.stdout)
        .and_then(|p| p.collect::<openpgp::Result<Vec<Cert>>>())
        .map_err(|e| format!("gpg --export {} gave unreadable data: {e}", shown(fpr)))
}

/// The one rule for which keys of a cert are encrypted to: supported, alive,
/// not revoked, and flagged for storage and transport encryption.
pub fn encryption_keys_of<'a>(
    vc: &ValidCert<'a>,
) -> ValidKeyAmalgamationIter<'a, key::PublicParts, key::UnspecifiedRole> {
    vc.keys()
        .supported()
        .alive()
        .revoked(false)
        .for_storage_encryption()
        .for_transport_encryption()
}

/// A cert that is valid now, with the encryption subkeys that will be used.
#[derive(Debug, Clone)]
pub struct UsableKey {
    /// Primary-key fingerprint.
    pub fingerprint: Fingerprint,
    /// The cert.
    pub cert: Arc<Cert>,
    /// When encryption to this cert stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// Fingerprints of the encryption-capable keys valid now.
    pub encryption_keys: Vec<String>,
}

impl UsableKey {
    /// True when the key expires within [`EXPIRY_WARNING`] of `now`.
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        self.expires_at
            .is_some_and(|t| t.duration_since(now).unwrap_or_default() < EXPIRY_WARNING)
    }
}

/// Checks that `loaded` can be encrypted to at `now`: v4, not revoked, not
/// expired, with at least one valid encryption-capable key.
pub fn usable(loaded: &LoadedCert, now: SystemTime) -> Result<UsableKey, String> {
    let policy = StandardPolicy::new();
    let fpr = &loaded.fingerprint;
    let cert = &loaded.cert;
    if cert.primary_key().key().version() != 4 {
        return Err(format!(
            "key {} is an OpenPGP v{} key; GnuPG 2.2 cannot decrypt to it: use a v4 key (made by gpg)",
            shown(fpr),
            cert.primary_key().key().version()
        ));
    }
    if let RevocationStatus::Revoked(_) = cert.revocation_status(&policy, now) {
        return Err(format!(
            "key {} is revoked; generate a new key (docs/operations.md) and update BACKUP_GPG_FPR",
            shown(fpr)
        ));
    }
    let vc = cert.with_policy(&policy, now).map_err(|e| {
        format!(
            "key {} is not valid under the standard policy now: {e}",
            shown(fpr)
        )
    })?;
    if let Err(e) = vc.alive() {
        let when = vc
            .primary_key()
            .key_expiration_time()
            .map(crate::time::rfc3339)
            .unwrap_or_else(|| "an unknown time".into());
        return Err(format!(
            "key {} expired ({e}) at {when}; extend it (`gpg --quick-set-expire \"$BACKUP_GPG_FPR\" 2y`, then re-export) or rotate to a new key",
            shown(fpr)
        ));
    }
    let mut encryption_keys = Vec::new();
    let mut subkey_expiries = Vec::new();
    for ka in encryption_keys_of(&vc) {
        encryption_keys.push(ka.key().fingerprint().to_hex());
        subkey_expiries.push(ka.key_expiration_time());
    }
    if encryption_keys.is_empty() {
        return Err(format!(
            "key {} has no encryption-capable subkey valid now; add one (`gpg --quick-add-key \"$BACKUP_GPG_FPR\" cv25519 encr 2y`) and re-export",
            shown(fpr)
        ));
    }
    // Encryption works until the primary key or the last encryption key expires.
    let last_subkey = if subkey_expiries.iter().any(Option::is_none) {
        None
    } else {
        subkey_expiries.into_iter().flatten().max()
    };
    let expires_at = match (vc.primary_key().key_expiration_time(), last_subkey) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(UsableKey {
        fingerprint: fpr.clone(),
        cert: Arc::clone(cert),
        expires_at,
        encryption_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parsing_normalises_and_rejects() {
        let f = Fingerprint::parse("0123 4567 89ab cdef 0123  4567 89AB CDEF 0123 4567")
            .expect("valid");
        assert_eq!(f.as_str(), "0123456789ABCDEF0123456789ABCDEF01234567");
        assert_eq!(f.tail(), "01234567");
        assert!(Fingerprint::parse("0123").is_none());
        assert!(Fingerprint::parse(&"G".repeat(40)).is_none());
    }
}
