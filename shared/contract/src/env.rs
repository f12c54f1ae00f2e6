//! The environment variables a component reads its settings from (the seed's names), set by
//! the orchestrator when it starts a component and read by the SDK.

/// The NATS server URL.
pub const NATS_URL_ENV: &str = "NATS_URL";
/// The operator's name; default subjects, streams and buckets derive from it.
pub const OPERATOR_NAME_ENV: &str = "OPERATOR_NAME";
/// The port `GET /metrics` (Prometheus text) and `GET /healthz` are served on, on every
/// interface; unset, nothing listens.
pub const METRIC_PORT_ENV: &str = "METRIC_PORT";
/// The leader-election cluster: set, the replicas elect a leader in bucket `election-<name>`.
pub const ELECTION_CLUSTER_NAME_ENV: &str = "ELECTION_CLUSTER_NAME";
/// How many replicas are expected (the orchestrator warns when fewer are alive).
pub const ELECTION_CLUSTER_SIZE_ENV: &str = "ELECTION_CLUSTER_SIZE";
/// The file each leadership transition of this replica is appended to.
pub const ELECTION_STATE_FILE_ENV: &str = "ELECTION_STATE_FILE";
/// This replica's name in the election [default: `<hostname>-<pid>`].
pub const ELECTION_REPLICA_ID_ENV: &str = "ELECTION_REPLICA_ID";
/// How long a lease lasts without a renewal, in milliseconds.
pub const ELECTION_LEASE_TTL_ENV: &str = "ELECTION_LEASE_TTL_MS";
/// How often the leader renews its lease (and every replica heartbeats), in milliseconds.
pub const ELECTION_RENEW_INTERVAL_ENV: &str = "ELECTION_RENEW_INTERVAL_MS";
/// How often the leader reconciles every entity again to see drift, in seconds (0: never).
pub const RESYNC_INTERVAL_ENV: &str = "OPERATOR_RESYNC_INTERVAL_S";
/// How many reconciles may run at once.
pub const MAX_WORKERS_ENV: &str = "OPERATOR_MAX_WORKERS";
/// `memory` or `jetstream_kv`.
pub const STATE_STORE_TYPE_ENV: &str = "OPERATOR_STATE_STORE_TYPE";
/// The KV bucket of the `jetstream_kv` store.
pub const STATE_STORE_BUCKET_ENV: &str = "OPERATOR_STATE_STORE_BUCKET";
/// `true` for a durable command consumer, `false` for one that goes away with the component.
pub const MESSAGE_DURABILITY_ENV: &str = "MESSAGE_DURABILITY";
/// The name of the command consumer (and of the query queue group).
pub const MESSAGE_QUEUE_ENV: &str = "ENTITY_OF_INTEREST_MESSAGE_QUEUE";
/// The command stream.
pub const MESSAGE_STREAM_ENV: &str = "ENTITY_OF_INTEREST_MESSAGE_STREAM";
/// The subject queries arrive on (wildcards allowed).
pub const QUERY_SUBJECT_ENV: &str = "ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT";
/// The subject status events are published on.
pub const QUERY_REPLY_SUBJECT_ENV: &str = "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT";
/// The KV buckets, comma-separated, a component shares with other operators' components (the
/// ADF operator's monitoring budget per factory): every key, read and write. Only names that
/// start with [`SHARED_BUCKET_PREFIX`] are accepted, so no operator can be granted another's
/// bucket or the orchestrator's.
pub const SHARED_BUCKETS_ENV: &str = "OPERATOR_SHARED_BUCKETS";
/// The prefix of every bucket named in [`SHARED_BUCKETS_ENV`].
pub const SHARED_BUCKET_PREFIX: &str = "shared-";

/// The buckets named in a [`SHARED_BUCKETS_ENV`] value, each checked: `Err` names the first
/// that is not a shared bucket's name, with the reason.
pub fn shared_buckets(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let rest = name.strip_prefix(SHARED_BUCKET_PREFIX).unwrap_or_default();
            if rest.is_empty() {
                Err(format!(
                    "{name:?} is not a shared bucket: its name must start with {SHARED_BUCKET_PREFIX:?} and go on"
                ))
            } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                Err(format!(
                    "{name:?} is not a valid bucket name: letters, digits, '-' and '_' only"
                ))
            } else {
                Ok(name.to_string())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buckets_are_listed_and_only_shared_names_pass() {
        assert_eq!(
            shared_buckets(" shared-a, shared-b_2 ,,"),
            Ok(vec!["shared-a".to_string(), "shared-b_2".to_string()])
        );
        let refused = shared_buckets("orchestrator-resources").expect_err("not shared");
        assert!(refused.contains("must start with \"shared-\""), "{refused}");
        assert!(shared_buckets("shared-").is_err());
        let refused = shared_buckets("shared-a.>").expect_err("not a bucket name");
        assert!(refused.contains("not a valid bucket name"), "{refused}");
    }
}
