//! The gRPC contract of cutter-backup: the generated `cutter.backup.v1` types,
//! client and server, a client constructor for the daemon's Unix socket, and
//! the version facts every binary reports.

pub mod json;

/// `cutter.backup.v1`, generated from `proto/cutter/backup/v1/backup.proto`.
#[allow(missing_docs)] // generated code carries the proto's own comments
pub mod v1 {
    tonic::include_proto!("cutter.backup.v1");
}

/// The encoded `FileDescriptorSet` of `cutter.backup.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cutter_descriptor");

/// The fully qualified service name, as health checks and reflection name it.
pub const SERVICE_NAME: &str = "cutter.backup.v1.BackupService";

use std::path::Path;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use v1::backup_service_client::BackupServiceClient;

/// The workspace version, shared by the daemon and the CLI.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binaries were built from ("unknown" outside a checkout).
pub const SOURCE_COMMIT: &str = env!("CUTTER_SOURCE_COMMIT");

/// Connects a client to the daemon listening on `socket`.
pub async fn connect(
    socket: &Path,
) -> Result<BackupServiceClient<Channel>, tonic::transport::Error> {
    Ok(BackupServiceClient::new(channel(socket).await?))
}

/// A channel to the daemon's socket, for any of its services (health,
/// reflection). tonic sends a valid `:authority` (the endpoint's host), which
/// is what the daemon's HTTP/2 stack requires.
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by the API but unused: the connector picks the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}
