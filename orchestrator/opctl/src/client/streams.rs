//! The streaming calls of the API (JSON lines that last as long as the user wants): the changes
//! of operators or resources, and a resource's history.

use anyhow::Result;
use operator_contract::ManifestKind;
use reqwest::Url;
use serde_json::Value;

use super::{clean_query, collection, ApiError, OrchestratorClient};

impl OrchestratorClient {
    /// Opens the stream of changes of operators or resources (`GET /api/v1/watch/...`): the
    /// answer, its body (JSON lines) unread.
    pub async fn open_watch(
        &self,
        kind: ManifestKind,
        workspace: Option<&str>,
        name: Option<&str>,
        all_owners: bool,
    ) -> Result<reqwest::Response> {
        let mut url = self.url(&["api", "v1", "watch", collection(kind)]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(ws) = workspace {
                query.append_pair("workspace", ws);
            }
            if let Some(name) = name {
                query.append_pair("name", name);
            }
            if all_owners {
                query.append_pair("all", "true");
            }
        }
        self.open_stream(url).await
    }

    /// The same lines as `logs`, then every new one, as JSON lines: the answer, body unread.
    pub async fn follow_logs(
        &self,
        operator: &str,
        component: Option<&str>,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<reqwest::Response> {
        let mut url = self.logs_url(operator, component, replica, tail);
        url.query_pairs_mut().append_pair("follow", "true");
        self.open_stream(url).await
    }

    /// Opens a list as JSON lines (`GET /api/v1/{collection}?stream=true`), one record a line
    /// in workspace then name order: the answer, its body unread.
    pub async fn open_list(
        &self,
        kind: ManifestKind,
        workspace: Option<&str>,
        all_owners: bool,
    ) -> Result<reqwest::Response> {
        let mut url = self.url(&["api", "v1", collection(kind)]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(ws) = workspace {
                query.append_pair("workspace", ws);
            }
            if all_owners {
                query.append_pair("all", "true");
            }
            query.append_pair("stream", "true");
        }
        self.open_stream(url).await
    }

    /// A resource's history, oldest first (`{"items": [...]}`).
    pub async fn events(&self, workspace: &str, name: &str) -> Result<Value> {
        let url = self.url(&events_path(workspace, name));
        self.send(self.http.get(url)).await
    }

    /// Opens the stream of a resource's history: the events kept, `synced`, then new ones.
    pub async fn open_events(&self, workspace: &str, name: &str) -> Result<reqwest::Response> {
        let mut url = self.url(&events_path(workspace, name));
        url.query_pairs_mut().append_pair("watch", "true");
        self.open_stream(url).await
    }

    /// Sends a GET whose answer is a stream of JSON lines; the answer, its body unread.
    async fn open_stream(&self, url: Url) -> Result<reqwest::Response> {
        let mut request = self.stream_http.get(clean_query(url));
        if let Some(key) = &self.apikey {
            request = request.bearer_auth(key);
        }
        let request = request.build().map_err(|e| self.transport_error(&e))?;
        let response = self
            .execute(&self.stream_http, request)
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ApiError::from_response(status, &body).into());
        }
        Ok(response)
    }
}

/// The path of a resource's history.
fn events_path<'a>(workspace: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "api",
        "v1",
        "workspaces",
        workspace,
        "resources",
        name,
        "events",
    ]
}
