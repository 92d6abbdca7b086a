//! Code generated from proto/ by build.rs, and the descriptor sets served by
//! reflection.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("chatbot.v1");

/// The RPC a request message belongs to, by its gRPC method name (the
/// audit log names refused RPCs by it). Implemented by build.rs for each
/// chatbot.v1 RPC's request.
pub trait RpcRequest {
    const METHOD: &'static str;
}

include!(concat!(env!("OUT_DIR"), "/rpc_methods.rs"));

impl RpcRequest for envoy_types::ext_authz::v3::pb::CheckRequest {
    const METHOD: &'static str = "Check";
}

/// Descriptors of every chatbot.v1 file (and the well-known types it uses).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/chatbot_v1_descriptor.bin"));

/// Descriptors of google.rpc.Status and the error-detail messages, so grpcurl
/// can decode `grpc-status-details-bin`.
pub const GOOGLE_RPC_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc_descriptor.bin"));

/// Descriptors of Envoy's external authorization API
/// (`envoy.service.auth.v3`), served by reflection beside ours; the types
/// themselves come from the envoy-types crate.
pub const ENVOY_EXT_AUTHZ_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_ext_authz_descriptor.bin"));
