//! Peer authorisation: the socket is 0600 root, and on top of that every
//! request's SO_PEERCRED uid must be in `server.allowed_uids`.

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// The peer's uid, if the transport knows it.
pub fn uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
}

/// PERMISSION_DENIED unless the peer's uid is allowed; refusals are logged.
pub fn authorize<T>(req: &Request<T>, allowed: &[u32]) -> Result<(), Status> {
    match uid(req) {
        Some(u) if allowed.contains(&u) => Ok(()),
        Some(u) => {
            tracing::warn!(
                peer_uid = u,
                "refused a peer whose uid is not in server.allowed_uids"
            );
            Err(Status::permission_denied(format!(
                "uid {u} is not allowed; add it to server.allowed_uids"
            )))
        }
        None => {
            tracing::warn!("refused a peer without credentials");
            Err(Status::permission_denied("peer credentials unavailable"))
        }
    }
}
