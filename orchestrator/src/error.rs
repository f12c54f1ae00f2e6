//! The one error type the control plane's actors answer with; the API maps each variant to an
//! HTTP status.

use thiserror::Error;

/// Why a request to the control plane failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// The named operator, resource or secret does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The input is wrong; `details` lists every problem (e.g. each schema violation).
    #[error("{reason}")]
    Invalid {
        reason: String,
        details: Vec<String>,
    },
    /// The request clashes with what exists (a resource still uses the operator, a name is
    /// taken by another operator's resource).
    #[error("{reason}")]
    Conflict {
        reason: String,
        details: Vec<String>,
    },
    /// Something the request needs did not answer in time (no component, NATS down).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed; the request changed nothing that was acknowledged.
    #[error("{0}")]
    Internal(String),
    /// The request carries no valid API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's roles do not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// Too much work is under way; the request changed nothing and may be sent again after
    /// `retry_after_s` seconds.
    #[error(
        "the orchestrator is busy ({in_flight} requests in flight); retry in {retry_after_s} s"
    )]
    Busy {
        in_flight: usize,
        retry_after_s: u64,
    },
}

impl ControlError {
    /// An invalid-input error with no further details.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
            details: Vec::new(),
        }
    }

    /// The details list, empty for variants that have none.
    pub fn details(&self) -> &[String] {
        match self {
            Self::Invalid { details, .. } | Self::Conflict { details, .. } => details,
            _ => &[],
        }
    }
}

/// A store that cannot be reached, or a write refused because this orchestrator no longer leads,
/// is a 503: the request may be sent again (opctl does, to the next replica). A record that
/// cannot be encoded or read back is a 500.
impl From<crate::store::StoreError> for ControlError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match &e {
            StoreError::AlreadyExists { .. } | StoreError::WrongRevision { .. } => Self::Conflict {
                reason: e.to_string(),
                details: Vec::new(),
            },
            StoreError::Failed {
                operation: "encode" | "decode",
                ..
            } => Self::Internal(e.to_string()),
            StoreError::OpenFailed { .. }
            | StoreError::Fenced { .. }
            | StoreError::Failed { .. } => Self::Unavailable(e.to_string()),
        }
    }
}

/// A name that cannot be a subject token, a key or a container name: invalid input.
impl From<operator_contract::names::NameError> for ControlError {
    fn from(e: operator_contract::names::NameError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<actix::MailboxError> for ControlError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Internal(format!("control plane actor unavailable: {e}"))
    }
}
