//! Compiles `proto/` with a vendored `protoc` (nobody needs a system one) and
//! embeds the source commit so `Status` can report what is running.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut prost_config = prost_build::Config::new();
    prost_config.protoc_executable(protoc);
    // The encoded descriptors feed gRPC server reflection (grpcurl list/describe).
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("cutter_descriptor.bin");
    // `--json` output is the generated types themselves (serde), so a field
    // added to the contract cannot be left out of it; enums print as the
    // lower-case names the text output uses.
    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .type_attribute(".cutter.backup.v1", "#[derive(serde::Serialize)]");
    for (field, with) in [
        ("cutter.backup.v1.Check.status", "check_status"),
        (
            "cutter.backup.v1.ArtifactInfo.artifact_state",
            "artifact_state",
        ),
        (
            "cutter.backup.v1.PruneDecision.prune_action",
            "prune_action",
        ),
    ] {
        builder = builder.field_attribute(
            field,
            format!("#[serde(serialize_with = \"crate::json::{with}\")]"),
        );
    }
    builder.compile_with_config(
        prost_config,
        &["proto/cutter/backup/v1/backup.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");

    let commit = std::env::var("CUTTER_SOURCE_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!(
        "cargo:rustc-env=CUTTER_SOURCE_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
    println!("cargo:rerun-if-env-changed=CUTTER_SOURCE_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    Ok(())
}
