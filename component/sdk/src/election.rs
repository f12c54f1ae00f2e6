//! The fenced leader election among a component's replicas: the shared `operator-election`
//! crate, which the orchestrator's replicas use too.

pub use operator_election::*;
