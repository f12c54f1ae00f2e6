//! The orchestrator: the actor tree that keeps operators and their resources, the HTTP API, the
//! component runtimes. The daemon (`src/main.rs`) wires these together.

#[cfg(test)]
mod actor_testing;
pub mod admission;
pub mod api;
pub mod auth;
pub mod bridge;
pub mod config;
pub mod entity;
pub mod error;
pub mod history;
pub mod manager;
pub mod metrics;
pub mod nats_auth;
pub mod records;
pub mod replicas;
pub mod replication;
pub mod runtime;
pub mod secret_keys;
pub mod store;
pub mod stream_view;
pub mod supervisor;
pub mod ui;
pub mod watch;
