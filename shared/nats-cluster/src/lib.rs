//! Running on a NATS cluster: the seed list every binary reads from `NATS_URL`, the replication
//! factor of the streams and buckets the system creates, and the stream settings that keep reads
//! leader-consistent once a stream has replicas.
//!
//! Reads that decide a write (a leader's snapshot of its bucket, a record loaded at start) must
//! not be served by a lagging follower. JetStream's direct gets may be answered by any replica,
//! so a replicated stream of ours has `allow_direct` off: gets then go through the stream
//! leader's message API. Compare-and-set writes always go through the stream leader.

#[cfg(feature = "test-server")]
pub mod test_server;

use async_nats::jetstream::{self, stream};
use async_nats::ServerAddr;
use tracing::{info, warn};

/// The variable that names the replication factor (the orchestrator's; components get it too).
pub const JETSTREAM_REPLICAS_ENV: &str = "ORCHESTRATOR_JETSTREAM_REPLICAS";
/// The component's own name for it, for a component run by hand.
pub const COMPONENT_JETSTREAM_REPLICAS_ENV: &str = "OPERATOR_JETSTREAM_REPLICAS";
/// JetStream's largest replication factor.
pub const MAX_REPLICAS: usize = 5;
/// The replication factor chosen on a cluster of at least this many servers.
pub const CLUSTER_REPLICAS: usize = 3;

/// A bad `NATS_URL`, a bad replication factor, or a stream whose replicas cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The list is empty, or has an empty entry.
    #[error("NATS_URL entry {position} is empty (expected a comma-separated list such as nats://a:4222,nats://b:4222)")]
    EmptyEntry { position: usize },
    /// An entry is not a NATS server address.
    #[error("NATS_URL entry {position} '{entry}' is not a NATS server address: {source}")]
    BadEntry {
        position: usize,
        entry: String,
        #[source]
        source: std::io::Error,
    },
    /// A replication factor outside 1..=5, or larger than the cluster.
    #[error("JetStream replicas {requested}: {reason}")]
    BadReplicas { requested: usize, reason: String },
    /// JetStream refused to read or change a stream.
    #[error("stream {stream}: cannot {operation}: {reason}")]
    Stream {
        stream: String,
        operation: &'static str,
        reason: String,
    },
}

/// Parses `NATS_URL`: one server address, or a comma-separated list of seed servers (the NATS
/// convention). Each bad entry is named with its position.
pub fn parse_server_list(list: &str) -> Result<Vec<ServerAddr>, ClusterError> {
    list.split(',')
        .enumerate()
        .map(|(i, entry)| {
            let (position, entry) = (i + 1, entry.trim());
            if entry.is_empty() {
                return Err(ClusterError::EmptyEntry { position });
            }
            entry
                .parse::<ServerAddr>()
                .map_err(|source| ClusterError::BadEntry {
                    position,
                    entry: entry.to_string(),
                    source,
                })
        })
        .collect()
}

/// How many servers the connected server says its cluster has: the client URLs it advertises
/// (its own among them), or 1 when it is not clustered. A cluster started with
/// `no_advertise` says nothing: set the replication factor explicitly there.
pub fn cluster_size(info: &async_nats::ServerInfo) -> usize {
    if info.cluster.as_deref().unwrap_or_default().is_empty() {
        return 1;
    }
    let mut urls: Vec<&str> = info.connect_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    urls.dedup();
    urls.len().max(1)
}

/// The replication factor to use: `requested` when set (refused above the cluster's size or
/// JetStream's maximum), else R3 on a cluster of three or more servers and R1 otherwise.
pub fn choose_replicas(requested: Option<usize>, cluster: usize) -> Result<usize, ClusterError> {
    let Some(requested) = requested else {
        return Ok(if cluster >= CLUSTER_REPLICAS {
            CLUSTER_REPLICAS
        } else {
            1
        });
    };
    let bad = |reason: String| ClusterError::BadReplicas { requested, reason };
    if requested == 0 || requested > MAX_REPLICAS {
        return Err(bad(format!("must be between 1 and {MAX_REPLICAS}")));
    }
    if requested > cluster {
        return Err(bad(format!(
            "the NATS server reports a cluster of {cluster} server(s); a stream cannot have more replicas than servers"
        )));
    }
    Ok(requested)
}

/// Reads `requested` (the variable's value, if set) and chooses the replication factor for the
/// cluster `client` is connected to.
pub fn replicas_for(
    client: &async_nats::Client,
    requested: Option<usize>,
) -> Result<usize, ClusterError> {
    let info = client.server_info();
    let cluster = cluster_size(&info);
    let replicas = choose_replicas(requested, cluster)?;
    info!(
        cluster = info.cluster.as_deref().unwrap_or("none"),
        servers = cluster,
        replicas,
        "JetStream replication chosen"
    );
    Ok(replicas)
}

/// How long each pull request of the system's pull consumers lasts. A pull lost with its NATS
/// node (killed, cut off) is pulled again when it expires or after two missed heartbeats: with
/// the client's defaults (30 s, 15 s) a command or status event then waited 30 s; an idle
/// consumer pays one request per expiry and a heartbeat a second.
pub const PULL_EXPIRES: std::time::Duration = std::time::Duration::from_secs(5);
/// The idle heartbeat the server sends on a pending pull (below half of [`PULL_EXPIRES`]).
pub const PULL_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// True when a pull consumer's message stream will deliver nothing more until it is attached
/// again: its consumer is gone or has no leader yet (just made, or its node died), a request was
/// refused, or its heartbeats stopped. A new replicated consumer answers its first pulls with no
/// responders until it has elected a leader; left alone, the client waits for two missed
/// heartbeats before pulling again.
pub fn must_reattach(error: &jetstream::consumer::pull::MessagesError) -> bool {
    use jetstream::consumer::pull::MessagesErrorKind;
    matches!(
        error.kind(),
        MessagesErrorKind::ConsumerDeleted
            | MessagesErrorKind::NoResponders
            | MessagesErrorKind::RequestLimitExceeded
            | MessagesErrorKind::PushBasedConsumer
            | MessagesErrorKind::MissingHeartbeat
    )
}

/// True when only the pull was lost (its heartbeats stopped: the NATS node it went through, or
/// the consumer's leader, was killed or cut off): pulling again on the same consumer suffices.
/// After any other error that ends the stream, the consumer may be gone and is looked up again.
pub fn only_the_pull_lost(error: &jetstream::consumer::pull::MessagesError) -> bool {
    error.kind() == jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat
}

/// The settings a stream of ours gets for `replicas`: leader-consistent gets once replicated.
pub fn apply_replication(config: &mut stream::Config, replicas: usize) {
    config.num_replicas = replicas;
    if replicas > 1 {
        config.allow_direct = false;
    }
}

/// Opens the KV bucket `config` names, creating it when absent (or taking the one another
/// process has just created), with at least `config.num_replicas` replicas and, replicated, gets
/// served by the stream leader. Errors are the server's words.
pub async fn open_or_create_bucket(
    js: &jetstream::Context,
    config: jetstream::kv::Config,
) -> Result<jetstream::kv::Store, String> {
    let bucket = config.bucket.clone();
    let replicas = config.num_replicas.max(1);
    if js.get_key_value(&bucket).await.is_err() {
        match js.create_key_value(config).await {
            Ok(_) => info!(bucket = %bucket, replicas, "KV bucket created"),
            // Another process may have created it in the meantime.
            Err(create_error) => {
                if js.get_key_value(&bucket).await.is_err() {
                    return Err(create_error.to_string());
                }
            }
        }
    }
    ensure_replication(js, &format!("KV_{bucket}"), replicas)
        .await
        .map_err(|e| e.to_string())?;
    // Read again: the store decides between direct and leader gets from the stream's config.
    js.get_key_value(&bucket).await.map_err(|e| e.to_string())
}

/// The replication factor to create or update `stream_name` with: `wanted`, or what the stream
/// has when that is more (a factor is raised, never lowered).
pub async fn replicas_to_keep(js: &jetstream::Context, stream_name: &str, wanted: usize) -> usize {
    let existing = match js.get_stream(stream_name).await {
        Ok(mut stream) => stream
            .info()
            .await
            .map(|info| info.config.num_replicas)
            .unwrap_or(1),
        Err(_) => 1,
    };
    if existing < wanted {
        info!(stream = %stream_name, from = existing, to = wanted, "raising the stream's replicas");
    }
    existing.max(wanted)
}

/// Brings an existing stream (a KV bucket's is `KV_<bucket>`) up to `replicas`: raises its
/// replication factor when lower (JetStream moves the data) and turns direct gets off once
/// replicated. A stream with more replicas than asked keeps them (logged).
pub async fn ensure_replication(
    js: &jetstream::Context,
    stream_name: &str,
    replicas: usize,
) -> Result<(), ClusterError> {
    let failed = |operation, e: &dyn std::fmt::Display| ClusterError::Stream {
        stream: stream_name.to_string(),
        operation,
        reason: e.to_string(),
    };
    let mut stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| failed("read its configuration", &e))?;
    let current = stream
        .info()
        .await
        .map_err(|e| failed("read its configuration", &e))?
        .config
        .clone();
    let mut wanted = current.clone();
    if current.num_replicas > replicas {
        warn!(stream = %stream_name, replicas = current.num_replicas, asked = replicas, "stream keeps more replicas than asked");
        apply_replication(&mut wanted, current.num_replicas);
    } else {
        apply_replication(&mut wanted, replicas);
    }
    if wanted.num_replicas == current.num_replicas && wanted.allow_direct == current.allow_direct {
        return Ok(());
    }
    js.update_stream(&wanted)
        .await
        .map_err(|e| failed("update its replicas", &e))?;
    info!(stream = %stream_name, from = current.num_replicas, to = wanted.num_replicas, "stream replication raised");
    // A replicated stream just updated elects its leader again; a publish before that finds
    // "no stream" (a new orchestrator's first write failed so and it exited).
    if wanted.num_replicas > 1 {
        wait_for_leader(&mut stream, stream_name).await;
    }
    Ok(())
}

/// How long a stream just created or updated may take to elect its leader.
const LEADER_ELECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits, bounded, until `stream`'s info names a cluster leader; past the bound the first
/// write says what is wrong, so this only logs.
async fn wait_for_leader(stream: &mut jetstream::stream::Stream, stream_name: &str) {
    let deadline = tokio::time::Instant::now() + LEADER_ELECTION_WAIT;
    loop {
        let led = stream
            .info()
            .await
            .is_ok_and(|info| info.cluster.as_ref().is_some_and(|c| c.leader.is_some()));
        if led {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            warn!(stream = %stream_name, "the stream has no leader yet; writes to it may fail until it has one");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_gives_every_seed_server() {
        let servers =
            parse_server_list("nats://127.0.0.1:14221, nats://127.0.0.1:14222,127.0.0.1:14223")
                .expect("list");
        assert_eq!(servers.len(), 3);
        assert_eq!(servers[1].port(), 14222);
        assert_eq!(parse_server_list("nats://one:4222").expect("one").len(), 1);
    }

    #[test]
    fn a_bad_entry_is_named_with_its_position() {
        let e = parse_server_list("nats://a:4222,nats://b:notaport").expect_err("bad");
        let text = e.to_string();
        assert!(
            text.contains("entry 2") && text.contains("nats://b:notaport"),
            "{text}"
        );
        let e = parse_server_list("nats://a:4222,,nats://c:4222").expect_err("empty");
        assert!(e.to_string().contains("entry 2 is empty"), "{e}");
        assert!(parse_server_list("").is_err());
    }

    #[test]
    fn three_servers_or_more_get_three_replicas_by_default() {
        assert_eq!(choose_replicas(None, 1).expect("r1"), 1);
        assert_eq!(choose_replicas(None, 2).expect("r1"), 1);
        assert_eq!(choose_replicas(None, 3).expect("r3"), 3);
        assert_eq!(choose_replicas(None, 5).expect("r3"), 3);
        assert_eq!(choose_replicas(Some(2), 3).expect("r2"), 2);
    }

    #[test]
    fn more_replicas_than_servers_is_refused_with_the_numbers() {
        let e = choose_replicas(Some(3), 1).expect_err("too many");
        let text = e.to_string();
        assert!(
            text.contains("replicas 3") && text.contains("cluster of 1"),
            "{text}"
        );
        assert!(choose_replicas(Some(0), 3).is_err());
        assert!(choose_replicas(Some(7), 9).is_err());
    }

    #[test]
    fn the_cluster_size_counts_the_advertised_servers() {
        let mut info = async_nats::ServerInfo::default();
        assert_eq!(cluster_size(&info), 1);
        info.cluster = Some("c1".into());
        info.connect_urls = vec![
            "127.0.7.1:4222".into(),
            "127.0.7.3:4222".into(),
            "127.0.7.2:4222".into(),
        ];
        assert_eq!(cluster_size(&info), 3);
    }

    #[test]
    fn replicated_streams_read_through_their_leader() {
        let mut config = stream::Config::default();
        apply_replication(&mut config, 1);
        assert_eq!(config.num_replicas, 1);
        config.allow_direct = true;
        apply_replication(&mut config, 3);
        assert_eq!(config.num_replicas, 3);
        assert!(!config.allow_direct);
    }
}
