//! The gRPC edge of the licensing service.

/// The generated wire types and service stubs of `proto/licensing/v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("licensing.v1");

    /// The encoded descriptor set of the contract, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("licensing_descriptor");
}
