//! Peer authorisation: the socket is 0600 root, and on top of that every
//! request's SO_PEERCRED uid must be in `server.allowed_uids`. The check runs
//! as an interceptor, on the request's headers, before its body is read or
//! decoded; and at start, [`reachable`] refuses uids that a user namespace
//! (`PrivateUsers=yes`) would show as nobody.

use tonic::{Request, Status};

use crate::listener::ConnInfo;

/// The peer's uid, if the transport knows it.
pub fn uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|info| info.uds.peer_cred)
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

/// Checks that every allowed uid is mapped into this process's user
/// namespace: under `PrivateUsers=yes` only root and the service's own uid
/// are, and every other peer shows up as 65534 (nobody), so such an entry
/// could never admit anyone.
pub fn reachable(allowed: &[u32]) -> Result<(), String> {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => reachable_in(&map, allowed),
        Err(_) => Ok(()),
    }
}

/// [`reachable`] against a `uid_map` text.
fn reachable_in(map: &str, allowed: &[u32]) -> Result<(), String> {
    let ranges: Vec<(u64, u64)> = map
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u64>);
            match (f.next(), f.next(), f.next()) {
                (Some(Ok(inside)), Some(Ok(_)), Some(Ok(count))) => Some((inside, count)),
                _ => None,
            }
        })
        .collect();
    let unmapped: Vec<String> = allowed
        .iter()
        .filter(|&&u| {
            !ranges
                .iter()
                .any(|&(inside, count)| (inside..inside + count).contains(&u64::from(u)))
        })
        .map(ToString::to_string)
        .collect();
    if unmapped.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "server.allowed_uids {} cannot be seen from this user namespace (the unit's PrivateUsers=yes maps only root and the service user; everyone else appears as 65534): set PrivateUsers=no in a drop-in, or allow only uid 0",
            unmapped.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_outside_the_user_namespace_are_refused() {
        // What PrivateUsers=yes leaves: root and the service user (998).
        let private = "         0          0          1\n       998        998          1\n";
        assert!(reachable_in(private, &[0]).is_ok());
        assert!(reachable_in(private, &[0, 998]).is_ok());
        let e = reachable_in(private, &[0, 1000]).expect_err("1000 is nobody there");
        assert!(e.contains("1000") && e.contains("PrivateUsers"), "{e}");
        let host = "         0          0 4294967295\n";
        assert!(reachable_in(host, &[0, 1000, 65533]).is_ok());
    }
}
