//! Verifying an artifact without its private key: the file's sha256 and size
//! against its manifest, then its OpenPGP structure (who can decrypt it, and
//! that it is SEIPDv1 so GnuPG 2.2 can).

use std::collections::BTreeSet;
use std::path::Path;

use sequoia_openpgp as openpgp;

use openpgp::Packet;
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::{Fingerprint, KeyID};

use crate::manifest::Manifest;
use crate::store::{Store, hash_file};

/// Checks `run_id`'s artifact; `Err` says what is wrong, naming the file.
pub fn verify(store: &Store, run_id: &str) -> Result<Manifest, String> {
    let artifact = store.artifact_path(run_id);
    let manifest = store
        .read_manifest(run_id)
        .map_err(|e| format!("manifest unreadable: {e}"))?
        .ok_or_else(|| format!("no manifest {}", store.manifest_path(run_id).display()))?;
    let (sha, size) = hash_file(&artifact).map_err(|e| e.to_string())?;
    if size != manifest.size_bytes {
        return Err(format!(
            "{} is {size} bytes, the manifest says {} (truncated or appended)",
            artifact.display(),
            manifest.size_bytes
        ));
    }
    if sha != manifest.sha256 {
        return Err(format!(
            "{} has sha256 {sha}, the manifest says {} (the file changed)",
            artifact.display(),
            manifest.sha256
        ));
    }
    check_structure(&artifact, &manifest)?;
    Ok(manifest)
}

/// The message must be PKESKs for exactly the manifest's encryption keys,
/// then one SEIPDv1 packet.
fn check_structure(artifact: &Path, manifest: &Manifest) -> Result<(), String> {
    let expected: BTreeSet<KeyID> = manifest
        .recipients
        .iter()
        .flat_map(|r| &r.encryption_keys)
        .filter_map(|hex| Fingerprint::from_hex(hex).ok())
        .map(|f| KeyID::from(&f))
        .collect();
    let mut found = BTreeSet::new();
    let mut ppr = PacketParser::from_file(artifact)
        .map_err(|e| format!("{} is not an OpenPGP message: {e}", artifact.display()))?;
    let mut seip_version = None;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => {
                if let Some(h) = p.recipient() {
                    found.insert(KeyID::from(h));
                }
            }
            Packet::SEIP(s) => {
                seip_version = Some(s.version());
                break;
            }
            other => {
                return Err(format!(
                    "unexpected {} packet before the encrypted data",
                    other.tag()
                ));
            }
        }
        ppr = pp
            .next()
            .map_err(|e| format!("malformed OpenPGP packet: {e}"))?
            .1;
    }
    match seip_version {
        Some(1) => {}
        Some(v) => return Err(format!("encrypted as SEIPDv{v}; GnuPG 2.2 cannot read it")),
        None => return Err("no encrypted data packet".into()),
    }
    if found != expected {
        let show = |s: &BTreeSet<KeyID>| s.iter().map(KeyID::to_hex).collect::<Vec<_>>().join(", ");
        return Err(format!(
            "encrypted to [{}], the manifest names [{}]",
            show(&found),
            show(&expected)
        ));
    }
    Ok(())
}
