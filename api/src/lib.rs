//! Apache Mesos's v1 HTTP APIs as Strata speaks them: the JSON of Mesos's
//! messages ([`mesos`]), the scheduler API's calls and events
//! ([`scheduler`]) and the RecordIO framing of event streams
//! ([`recordio`]), each with its translation to and from Strata's own
//! protocol. Client libraries written for Mesos (Python, Go, Java,
//! JavaScript) send and read exactly these shapes.
//!
//! Nothing here does IO: the master's and agents' HTTP endpoints parse
//! with these types, translate, and hand the result to their cores.

pub mod executor;
pub mod listed;
pub mod mesos;
pub mod metrics;
pub mod operator;
pub mod recordio;
pub mod scheduler;
pub mod views;

pub use strata_runtime::http::MESOS_COMPATIBLE_VERSION;

/// Why a request cannot be taken: each is answered 4xx with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("not supported: {0}")]
    Unsupported(String),
}

impl ApiError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Json(_) | ApiError::Invalid { .. } => 400,
            ApiError::Unsupported(_) => 501,
        }
    }
}

#[cfg(test)]
mod tests;
