//! [`OperatorDetails`]: what an operator publishes of itself beyond its resources (the ADF
//! operator's monitoring budget per factory, a connection pool's size, …). Each section is a
//! JSON value under a name; an elected component's heartbeat carries them, and the
//! orchestrator shows the leader's in `opctl get -t operator -n NAME -d`.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::watch;

/// A handle to the operator's published details; clones share them.
#[derive(Debug, Clone)]
pub struct OperatorDetails(Arc<watch::Sender<Value>>);

impl Default for OperatorDetails {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Value::Null)))
    }
}

impl OperatorDetails {
    /// No details yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the section `name` to `value`, replacing what it held.
    pub fn set(&self, name: &str, value: Value) {
        self.0.send_modify(|details| {
            if !details.is_object() {
                *details = Value::Object(Map::new());
            }
            if let Some(sections) = details.as_object_mut() {
                sections.insert(name.to_string(), value);
            }
        });
    }

    /// Every section as last set (`Null` before the first).
    pub fn get(&self) -> Value {
        self.0.borrow().clone()
    }

    /// Follows the details: what the election's heartbeat reads.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Value> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sections_are_set_and_replaced_by_name_and_seen_by_every_clone() {
        let details = OperatorDetails::new();
        assert_eq!(details.get(), Value::Null);
        let follower = details.subscribe();
        let writer = details.clone();
        writer.set("budget", json!({"used": 1}));
        writer.set("pool", json!(4));
        writer.set("budget", json!({"used": 2}));
        assert_eq!(details.get(), json!({"budget": {"used": 2}, "pool": 4}));
        assert_eq!(*follower.borrow(), details.get());
    }
}
