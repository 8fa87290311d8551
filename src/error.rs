//! The edge's error type and its one mapping to gRPC status codes.

use licensing_core::InvalidSettings;

/// Why a call was refused, in transport-neutral terms; [`status`] picks the gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A request field is missing or malformed.
    #[error("invalid {field} {value}: {problem}")]
    Invalid {
        /// The field's path in the request, e.g. `settings.skills[1].id`.
        field: String,
        /// The offending value, rendered (strings quoted).
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The method, or this use of it, is part of the contract but not served by this version.
    #[error("{0}")]
    Unimplemented(&'static str),
}

impl ApiError {
    /// A malformed field.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ApiError::Invalid {
            field: field.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }
}

impl From<InvalidSettings> for ApiError {
    fn from(e: InvalidSettings) -> Self {
        ApiError::Invalid {
            field: e.field,
            value: e.value,
            problem: e.problem,
        }
    }
}

/// The gRPC status of an error. Exhaustive on purpose: a new kind of error must choose its code.
pub fn status(error: ApiError) -> tonic::Status {
    let message = error.to_string();
    match error {
        ApiError::Invalid { .. } => tonic::Status::invalid_argument(message),
        ApiError::Unimplemented(_) => tonic::Status::unimplemented(message),
    }
}
