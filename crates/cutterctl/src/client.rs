//! A gRPC channel over the daemon's Unix socket.

use std::path::Path;

use cutter_backup::v1::backup_service_client::BackupServiceClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to the daemon at `socket`.
pub async fn connect(socket: &Path) -> Result<BackupServiceClient<Channel>, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by the API but unused: the connector picks the socket.
    let channel = Endpoint::from_static("http://cutter-backupd.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(BackupServiceClient::new(channel)
        .max_decoding_message_size(16 << 20))
}
