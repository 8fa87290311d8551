//! The gRPC edge of the licensing service: the generated API, handlers, conversions between wire
//! and domain types, configuration, telemetry and serving. Only this crate knows gRPC.

/// The generated wire types and service stubs of `proto/licensing/v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod api {
    tonic::include_proto!("licensing.v1");

    /// The encoded descriptor set of the contract, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("licensing_descriptor");
}

pub mod auth;
pub mod collector;
pub mod config;
pub mod convert;
pub mod decode_errors;
pub mod error;
pub mod foreground;
pub mod health;
pub mod ingest;
pub mod outbox;
pub mod price_list;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tls;
pub mod transport;
