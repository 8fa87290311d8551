//! The edge's error type and its one mapping to gRPC status codes.

use licensing_core::{InvalidAccountSettings, InvalidSettings};
use licensing_store::{OpError, StoreError};

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
    /// The account or member named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the state forbids it; the message says what is missing.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A confirm lost a race or named a stale revision: read again, then retry.
    #[error("{0}")]
    Aborted(String),
    /// Storage failed or the service is stopping: retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("{0}")]
    DataLoss(String),
    /// A defect of this service.
    #[error("{0}")]
    Internal(String),
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

impl From<InvalidAccountSettings> for ApiError {
    fn from(e: InvalidAccountSettings) -> Self {
        ApiError::Invalid {
            field: e.field,
            value: e.value,
            problem: e.problem,
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let message = e.to_string();
        match e {
            OpError::AccountNotFound(_)
            | OpError::MemberNotFound { .. }
            | OpError::StatementNotFound { .. } => ApiError::NotFound(message),
            OpError::AccountExists(_) => ApiError::AlreadyExists(message),
            OpError::Precondition(_) => ApiError::FailedPrecondition(message),
            OpError::StaleRevision { .. } => ApiError::Aborted(message),
            OpError::Invalid {
                field,
                value,
                problem,
            } => ApiError::Invalid {
                field,
                value,
                problem,
            },
            OpError::Store(StoreError::Corrupt(_)) => ApiError::DataLoss(message),
            OpError::Store(
                StoreError::Storage { .. }
                | StoreError::Failed { .. }
                | StoreError::UnsupportedFormat { .. },
            ) => ApiError::Unavailable(message),
        }
    }
}

/// The gRPC status of an error. Exhaustive on purpose: a new kind of error must choose its code.
pub fn status(error: ApiError) -> tonic::Status {
    let message = error.to_string();
    match error {
        ApiError::Invalid { .. } => tonic::Status::invalid_argument(message),
        ApiError::NotFound(_) => tonic::Status::not_found(message),
        ApiError::AlreadyExists(_) => tonic::Status::already_exists(message),
        ApiError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
        ApiError::Aborted(_) => tonic::Status::aborted(message),
        ApiError::Unavailable(_) => tonic::Status::unavailable(message),
        ApiError::DataLoss(_) => tonic::Status::data_loss(message),
        ApiError::Internal(_) => tonic::Status::internal(message),
        ApiError::Unimplemented(_) => tonic::Status::unimplemented(message),
    }
}
