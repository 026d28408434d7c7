//! Decryption for operators (restore): the operator's secret key, unlocked
//! with a passphrase they supply, decrypts an artifact into a writer. The
//! daemon never calls this: it only ever holds the public key.

use std::io::{self, Read, Write};
use std::path::Path;

use sequoia_openpgp as openpgp;

use openpgp::KeyHandle;
use openpgp::cert::prelude::*;
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::policy::StandardPolicy;
use openpgp::types::SymmetricAlgorithm;

pub use openpgp::Cert;
pub use openpgp::crypto::Password;

/// Reads the operator's secret key file (armored or binary, one or more
/// certs); refuses one that group or others can read.
pub fn read_secret_keys(path: &Path) -> Result<Vec<Cert>, String> {
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot read secret key {}: {e}", path.display()))?;
    crate::signer::check_secret_mode(&f, path).map_err(|e| format!("secret key: {e}"))?;
    let certs = CertParser::from_reader(f)
        .map_err(|e| format!("cannot read secret key {}: {e}", path.display()))?
        .collect::<openpgp::Result<Vec<Cert>>>()
        .map_err(|e| format!("{} is not an OpenPGP key: {e}", path.display()))?;
    if !certs.iter().any(Cert::is_tsk) {
        return Err(format!(
            "{} holds no secret key; export one with `gpg --export-secret-keys --armor FPR`",
            path.display()
        ));
    }
    Ok(certs)
}

/// Decrypts the message `artifact` yields into `out` with `keys`; returns
/// the plaintext size. An `Err` may come after some plaintext was written
/// (sequoia streams large messages before their MDC is checked): callers
/// must treat `out` as garbage on error.
pub fn decrypt(
    artifact: impl Read + Send + Sync,
    keys: &[Cert],
    passphrase: Option<Password>,
    out: &mut dyn Write,
) -> Result<u64, String> {
    let policy = StandardPolicy::new();
    let helper = Helper {
        keys,
        passphrase,
        problem: None,
    };
    // Sequoia holds back up to 25 MiB of plaintext (its default) until it
    // can check the MDC; every caller already treats `out` as garbage
    // until this returns Ok, so a small window keeps memory flat.
    let mut decryptor = DecryptorBuilder::from_reader(artifact)
        .map_err(|e| format!("cannot read the artifact: {e}"))?
        .buffer_size(DECRYPT_WINDOW)
        .with_policy(&policy, None, helper)
        .map_err(|e| format!("cannot decrypt: {e}"))?;
    let n = io::copy(&mut decryptor, out).map_err(|e| format!("decrypting: {e}"))?;
    Ok(n)
}

/// Plaintext sequoia may hold before releasing it (see `decrypt`).
const DECRYPT_WINDOW: usize = 1 << 20;

/// A reader that hashes (sha256) and counts what passes through it, so a
/// restore can prove the bytes it decrypted are the ones the signed
/// manifest names, whatever happened to the file after verify read it.
pub struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: sha2::Digest::new(),
            bytes: 0,
        }
    }

    /// Reads what is left, then returns the lowercase hex sha256 and size
    /// of everything read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            crate::encrypt::hex(&sha2::Digest::finalize(self.hasher)),
            self.bytes,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

struct Helper<'a> {
    keys: &'a [Cert],
    passphrase: Option<Password>,
    problem: Option<String>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        // Artifacts carry no signature of their own: the signed manifest's
        // sha256 covers them (checked on the very bytes decrypted, see
        // `HashingReader`), and the MDC is checked by the parser.
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            let Some(recipient) = pkesk.recipient() else {
                continue;
            };
            for cert in self.keys {
                for ka in cert.keys().secret().key_handle(recipient.clone()) {
                    let key = ka.key().clone();
                    let key = if key.has_unencrypted_secret() {
                        key
                    } else {
                        let Some(p) = &self.passphrase else {
                            self.problem =
                                Some("the secret key is protected: give its passphrase".into());
                            continue;
                        };
                        match key.decrypt_secret(p) {
                            Ok(k) => k,
                            Err(_) => {
                                self.problem = Some("wrong passphrase for the secret key".into());
                                continue;
                            }
                        }
                    };
                    let mut pair = key.into_keypair()?;
                    if pkesk
                        .decrypt(&mut pair, sym_algo)
                        .is_some_and(|(algo, sk)| decrypt(algo, &sk))
                    {
                        return Ok(Some(cert.clone()));
                    }
                }
            }
        }
        Err(openpgp::anyhow::anyhow!(
            "{}",
            self.problem
                .take()
                .unwrap_or_else(|| "none of the given secret keys is a recipient of this artifact (see `cutterctl list` for the key it needs)".into())
        ))
    }
}
