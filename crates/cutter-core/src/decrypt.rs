//! Decryption for operators (restore): the operator's secret key, unlocked
//! with a passphrase they supply, decrypts an artifact into a writer. The
//! daemon never calls this: it only ever holds the public key.

use std::io::{self, Write};
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

/// Reads the operator's secret key file (armored or binary, one or more certs).
pub fn read_secret_keys(path: &Path) -> Result<Vec<Cert>, String> {
    let certs = CertParser::from_file(path)
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

/// Decrypts `artifact` into `out` with `keys`; returns the plaintext size.
pub fn decrypt(
    artifact: &Path,
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
    let mut decryptor = DecryptorBuilder::from_file(artifact)
        .map_err(|e| format!("cannot open {}: {e}", artifact.display()))?
        .with_policy(&policy, None, helper)
        .map_err(|e| format!("cannot decrypt {}: {e}", artifact.display()))?;
    let n = io::copy(&mut decryptor, out)
        .map_err(|e| format!("decrypting {}: {e}", artifact.display()))?;
    Ok(n)
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
        // Artifacts are not signed; their integrity is the manifest's sha256
        // (checked before decrypting) and the MDC (checked by the parser).
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
