//! Every NATS subject, stream and bucket name the system uses is built and checked here.
//!
//! Defaults derive from the operator's name; a resource type's `natsApi` overrides the command
//! stream and subject, the query subject and the reply subject, so the seed's subjects work as
//! written. Components publish replies and status events on the reply subject; the orchestrator
//! keeps those in the operator's event stream so none is lost while it is down.

use thiserror::Error;

use crate::entity::EntityKey;
use crate::manifest::ResourceType;

/// Why a subject or stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubjectError {
    /// A subject has an empty token, whitespace, or a wildcard where none may be.
    #[error("subject '{0}' must be dot-separated tokens without spaces or wildcards")]
    BadSubject(String),
    /// A subscription subject has an empty token, whitespace, or a wildcard inside a token.
    #[error(
        "subject '{0}' must be dot-separated tokens, with '*' or a final '>' as whole tokens only"
    )]
    BadSubscription(String),
    /// A stream name has a character JetStream does not allow.
    #[error("stream name '{0}' must be letters, digits, '-' or '_'")]
    BadStream(String),
}

/// Checks a subject used for publishing: non-empty tokens, no whitespace, no wildcards.
pub fn validate_subject(subject: &str) -> Result<(), SubjectError> {
    let ok = !subject.is_empty()
        && subject.len() <= 255
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && c != '*' && c != '>' && !c.is_control())
        });
    ok.then_some(())
        .ok_or_else(|| SubjectError::BadSubject(subject.to_string()))
}

/// Checks a subject to subscribe to: dot-separated tokens, `*` or a final `>` as whole tokens
/// only, no whitespace.
pub fn validate_subscription(subject: &str) -> Result<(), SubjectError> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len().saturating_sub(1);
    let ok = !subject.is_empty()
        && subject.len() <= 255
        && tokens.iter().enumerate().all(|(i, token)| {
            !token.is_empty()
                && (*token == "*"
                    || (*token == ">" && i == last)
                    || token
                        .chars()
                        .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>'))
        });
    ok.then_some(())
        .ok_or_else(|| SubjectError::BadSubscription(subject.to_string()))
}

/// Checks a JetStream stream (or KV bucket, or durable consumer) name.
pub fn validate_stream_name(name: &str) -> Result<(), SubjectError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(())
        .ok_or_else(|| SubjectError::BadStream(name.to_string()))
}

/// The subjects one resource type of one operator uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSubjects {
    pub command_stream: String,
    pub command_subject: String,
    pub query_subject: String,
    pub reply_subject: String,
}

impl TypeSubjects {
    /// The subjects for `resource_type` of `operator`: its `natsApi` where given, else defaults.
    pub fn for_type(operator: &str, resource_type: &ResourceType) -> Self {
        match &resource_type.nats_api {
            Some(api) => Self {
                command_stream: api.command.stream.clone(),
                command_subject: api.command.subject.clone(),
                query_subject: api.query.subject.clone(),
                reply_subject: api.query.reply_subject.clone(),
            },
            None => Self::defaults(operator, &resource_type.name),
        }
    }

    /// The default scheme, derived from the operator's and the type's names.
    pub fn defaults(operator: &str, resource_type: &str) -> Self {
        Self {
            command_stream: default_command_stream(operator),
            command_subject: format!("operator.{operator}.{resource_type}.command"),
            query_subject: format!("operator.{operator}.{resource_type}.query"),
            reply_subject: default_reply_subject(operator),
        }
    }
}

/// The default command stream of an operator.
pub fn default_command_stream(operator: &str) -> String {
    format!("operator-{operator}")
}

/// The default subject a component publishes replies and status events on.
pub fn default_reply_subject(operator: &str) -> String {
    format!("operator.{operator}.reply")
}

/// The subject a component listens to for queries of every type, by default.
pub fn default_query_wildcard(operator: &str) -> String {
    format!("operator.{operator}.*.query")
}

/// The stream that keeps an operator's status events until the orchestrator has applied them.
pub fn event_stream(operator: &str) -> String {
    format!("operator-{operator}-events")
}

/// The durable consumer through which the orchestrator reads an operator's status events.
pub fn event_consumer(operator: &str) -> String {
    format!("orchestrator-{operator}")
}

/// The default durable consumer through which an operator's components read commands.
pub fn default_command_consumer(operator: &str) -> String {
    format!("component-{operator}")
}

/// The KV bucket a component keeps its entities in, by default.
pub fn default_entity_bucket(operator: &str) -> String {
    format!("entities-{operator}")
}

/// The KV key of an entity within a component's bucket: `<type>.<workspace>.<name>`.
pub fn entity_kv_key(resource_type: &str, key: &EntityKey) -> String {
    format!("{resource_type}.{}", key.kv_token())
}

/// The subject a KV key is written on, from the bucket's subject prefix (`$KV.<bucket>.`, as
/// the client reports it): what a write that carries its own headers publishes to.
pub fn kv_subject(kv_prefix: &str, key: &str) -> String {
    format!("{kv_prefix}{key}")
}

/// Parses an [`entity_kv_key`] back into its type and key.
pub fn parse_entity_kv_key(kv_key: &str) -> Option<(String, EntityKey)> {
    let mut parts = kv_key.splitn(3, '.');
    let (resource_type, workspace, name) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        resource_type.to_string(),
        EntityKey::new(workspace, name).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{CommandApi, NatsApi, QueryApi};

    fn resource_type(nats_api: Option<NatsApi>) -> ResourceType {
        ResourceType {
            name: "pipeline-run".into(),
            name_jq_filter: None,
            is_runnable: true,
            spec_schema: None,
            nats_api,
        }
    }

    #[test]
    fn defaults_derive_from_operator_and_type_names() {
        let s = TypeSubjects::for_type("adf-operator", &resource_type(None));
        assert_eq!(s.command_stream, "operator-adf-operator");
        assert_eq!(
            s.command_subject,
            "operator.adf-operator.pipeline-run.command"
        );
        assert_eq!(s.query_subject, "operator.adf-operator.pipeline-run.query");
        assert_eq!(s.reply_subject, "operator.adf-operator.reply");
    }

    #[test]
    fn nats_api_overrides_every_subject() {
        let api = NatsApi {
            command: CommandApi {
                stream: "dataos-azure-entities".into(),
                subject: "dataos.operator.adf.command".into(),
            },
            query: QueryApi {
                subject: "dataos.operator.adf.query".into(),
                reply_subject: "dataos.operator.adf.reply".into(),
            },
        };
        let s = TypeSubjects::for_type("adf-operator", &resource_type(Some(api)));
        assert_eq!(s.command_stream, "dataos-azure-entities");
        assert_eq!(s.command_subject, "dataos.operator.adf.command");
        assert_eq!(s.query_subject, "dataos.operator.adf.query");
        assert_eq!(s.reply_subject, "dataos.operator.adf.reply");
    }

    #[test]
    fn subjects_with_wildcards_or_empty_tokens_are_refused() {
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            assert!(validate_subject(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_subject("dataos.operator.adf.command").is_ok());
        assert!(validate_subscription("operator.demo.*.query").is_ok());
        assert!(validate_subscription("operator.demo.>").is_ok());
        for bad in ["", "a..b", "a.>.b", "a.b*", "a b.c", "a.>x"] {
            assert!(validate_subscription(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_stream_name("dataos-azure-entities").is_ok());
        assert!(validate_stream_name("a.b").is_err());
    }

    #[test]
    fn entity_kv_keys_round_trip() {
        let key = EntityKey::new("public", "run-1").expect("valid");
        let kv = entity_kv_key("pipeline-run", &key);
        assert_eq!(kv, "pipeline-run.public.run-1");
        assert_eq!(
            parse_entity_kv_key(&kv),
            Some(("pipeline-run".to_string(), key))
        );
    }
}
