//! A NATS connection made as the component's own (same servers, same user, same inbox prefix),
//! for an operator that keeps state of its own in a KV bucket where the next leader finds it
//! (the ADF operator's monitoring budget), and that bucket opened with the component's
//! replication factor. Additive: the component's connection is unchanged.

use thiserror::Error;

use crate::{ComponentConfig, ConfigError};

/// Why the connection could not be made.
#[derive(Debug, Error)]
pub enum SharedStateError {
    /// The component's settings do not check.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The NATS credentials could not be read.
    #[error("cannot read the NATS credentials: {0}")]
    Credentials(#[source] std::io::Error),
    /// The replication factor cannot be used on this cluster.
    #[error(transparent)]
    Replicas(#[from] operator_nats_cluster::ClusterError),
    /// The name is not a shared bucket's (`OPERATOR_SHARED_BUCKETS`).
    #[error("{0}")]
    NotShared(String),
    /// The bucket could not be opened or created.
    #[error("cannot open KV bucket {bucket}: {reason}")]
    Bucket { bucket: String, reason: String },
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Connects to the component's NATS server as the component does.
pub async fn connect_as_component(
    config: &ComponentConfig,
) -> Result<async_nats::Client, SharedStateError> {
    let settings = config.settings()?;
    let options = settings
        .nats_options(async_nats::ConnectOptions::new())
        .await
        .map_err(SharedStateError::Credentials)?;
    options
        .connect(settings.nats_servers.as_slice())
        .await
        .map_err(|source| SharedStateError::Connect {
            url: settings.nats_url.clone(),
            source,
        })
}

/// Opens (or creates) the KV bucket `bucket` as the component would its own: connected as the
/// component, with its replication factor, gets through the stream leader once replicated.
/// `bucket` is a shared bucket's name (`shared-…`); under NATS isolation the component's
/// `OPERATOR_SHARED_BUCKETS` must list it for the minted user to be allowed it.
pub async fn open_shared_bucket(
    config: &ComponentConfig,
    bucket: &str,
) -> Result<async_nats::jetstream::kv::Store, SharedStateError> {
    operator_contract::env::shared_buckets(bucket).map_err(SharedStateError::NotShared)?;
    let client = connect_as_component(config).await?;
    let replicas =
        operator_nats_cluster::replicas_for(&client, config.jetstream_replicas.map(usize::from))?;
    let js = async_nats::jetstream::new(client);
    let kv_config = async_nats::jetstream::kv::Config {
        bucket: bucket.to_string(),
        history: 1,
        num_replicas: replicas,
        ..Default::default()
    };
    crate::store::open_or_create(&js, kv_config)
        .await
        .map_err(|reason| SharedStateError::Bucket {
            bucket: bucket.to_string(),
            reason,
        })
}
