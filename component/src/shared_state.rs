//! A NATS connection made as the component's own (same server, same user, same inbox prefix),
//! for an operator that keeps state of its own in a KV bucket where the next leader finds it
//! (the ADF operator's monitoring budget). Additive: the component's connection is unchanged.

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
        .connect(settings.nats_url.as_str())
        .await
        .map_err(|source| SharedStateError::Connect {
            url: settings.nats_url.clone(),
            source,
        })
}
