//! The edge's error type and its one mapping to gRPC status codes.
//!
//! What a caller can act on (a bad field, a missing account, a stale revision) is answered in
//! full. What only an operator can act on (a storage failure, a damaged record, a defect) is
//! answered with a plain message and an error id, and logged with the detail under the same id:
//! clients never see paths, OS errors, record layouts, task ids or panic text.

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
    /// The caller does not hold the right the call needs on its account.
    #[error("{0}")]
    PermissionDenied(String),
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
    /// A limit of the server is reached (open streams, a caller's rate): retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The service is stopping or busy: retry later or elsewhere. The message is for the
    /// caller, so it holds no internals.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed: writes are refused until a restart. The detail is for the log only.
    #[error("storage is unavailable: {0}")]
    Storage(String),
    /// Stored data could not be read back. The detail is for the log only.
    #[error("stored data could not be read: {0}")]
    DataLoss(String),
    /// A defect of this service. The detail is for the log only.
    #[error("internal error: {0}")]
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
            ) => ApiError::Storage(message),
        }
    }
}

/// The gRPC status of an error. Exhaustive on purpose: a new kind of error must choose its code.
/// Errors only an operator can act on are logged here, with an error id the client gets too.
pub fn status(error: ApiError) -> tonic::Status {
    let message = error.to_string();
    match error {
        ApiError::Invalid { .. } => tonic::Status::invalid_argument(message),
        ApiError::PermissionDenied(_) => tonic::Status::permission_denied(message),
        ApiError::NotFound(_) => tonic::Status::not_found(message),
        ApiError::AlreadyExists(_) => tonic::Status::already_exists(message),
        ApiError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
        ApiError::Aborted(_) => tonic::Status::aborted(message),
        ApiError::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
        ApiError::Unavailable(_) => tonic::Status::unavailable(message),
        ApiError::Storage(detail) => tonic::Status::unavailable(logged(
            "storage is unavailable; writes are refused until the service restarts",
            tonic::Code::Unavailable,
            &detail,
        )),
        ApiError::DataLoss(detail) => tonic::Status::data_loss(logged(
            "a stored record could not be read",
            tonic::Code::DataLoss,
            &detail,
        )),
        ApiError::Internal(detail) => {
            tonic::Status::internal(logged("internal error", tonic::Code::Internal, &detail))
        }
        ApiError::Unimplemented(_) => tonic::Status::unimplemented(message),
    }
}

/// Logs `detail` under a new error id and returns the client's message: `plain` and the id.
fn logged(plain: &str, code: tonic::Code, detail: &str) -> String {
    let id = error_id();
    tracing::error!(error_id = %id, code = ?code, detail, "{plain}");
    format!("{plain} (error id {id})")
}

/// A new error id: 16 hex digits, unique within the process and unlikely to repeat across
/// restarts (a per-process random seed mixed with a counter).
pub fn error_id() -> String {
    use std::{
        hash::{BuildHasher as _, RandomState},
        sync::{
            OnceLock,
            atomic::{AtomicU64, Ordering},
        },
    };
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", SEED.get_or_init(RandomState::new).hash_one(n))
}

/// `e` and its causes, each said once: tonic's transport errors say only "transport error" and
/// keep the cause in their sources, and some layers repeat their cause's message.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let (mut source, mut previous) = (e.source(), text.clone());
    while let Some(cause) = source {
        let said = cause.to_string();
        if said != previous {
            text.push_str(": ");
            text.push_str(&said);
        }
        (source, previous) = (cause.source(), said);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_errors_reach_the_client_as_a_plain_message_and_an_error_id() {
        for (error, code, plain) in [
            (
                ApiError::Storage(
                    "storage error in /var/lib/licensing/db: Io(No space left on device)".into(),
                ),
                tonic::Code::Unavailable,
                "storage is unavailable; writes are refused until the service restarts",
            ),
            (
                ApiError::DataLoss("corrupt account record: month 0-7".into()),
                tonic::Code::DataLoss,
                "a stored record could not be read",
            ),
            (
                ApiError::Internal("task 17 panicked with 'attempt to add with overflow'".into()),
                tonic::Code::Internal,
                "internal error",
            ),
        ] {
            let status = status(error);
            assert_eq!(status.code(), code);
            let (message, id) = status
                .message()
                .split_once(" (error id ")
                .expect("an error id");
            assert_eq!(message, plain);
            let id = id.strip_suffix(')').expect("closed");
            assert!(
                id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
        }
        assert_ne!(error_id(), error_id());
    }
}
