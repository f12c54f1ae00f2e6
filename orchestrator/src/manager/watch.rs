//! `OpenWatch`: a JetStream KV watch on one of the manager's buckets, for the API's streams of
//! changes, and `GetHistory`: the resources' history stream; the manager holds the JetStream
//! context, the streams are the caller's.

use actix::prelude::*;
use async_nats::jetstream::kv;

use super::OperatorManager;
use crate::error::ControlError;
use crate::history::History;

/// A handle on the resources' history stream.
#[derive(Message)]
#[rtype(result = "History")]
pub struct GetHistory;

impl Handler<GetHistory> for OperatorManager {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, _: GetHistory, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(History::new(self.js.clone()))
    }
}

/// Watch the keys of a bucket matching `filter` from now on (new changes only).
#[derive(Message)]
#[rtype(result = "Result<kv::Watch, ControlError>")]
pub struct OpenWatch {
    pub bucket: &'static str,
    pub filter: String,
}

impl Handler<OpenWatch> for OperatorManager {
    type Result = ResponseFuture<Result<kv::Watch, ControlError>>;

    fn handle(&mut self, msg: OpenWatch, _ctx: &mut Self::Context) -> Self::Result {
        let js = self.js.clone();
        Box::pin(async move {
            let unavailable =
                |e: String| ControlError::Unavailable(format!("cannot watch {}: {e}", msg.bucket));
            let store = js
                .get_key_value(msg.bucket)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            store
                .watch(&msg.filter)
                .await
                .map_err(|e| unavailable(e.to_string()))
        })
    }
}
