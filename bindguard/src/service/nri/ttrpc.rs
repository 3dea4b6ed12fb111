//! ttrpc's envelope around every NRI call (containerd/ttrpc `request.proto`), written by hand:
//! three small messages, where the `ttrpc` crate would bring protobuf 3, its own codegen and
//! an async server that wants a socket to itself, not one connection of a multiplexer.

use bytes::Bytes;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub payload: Bytes,
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
}

/// google.rpc.Status without its details: code 0 is success.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC status codes the plugin answers with.
pub mod code {
    /// The request named a method this plugin does not serve.
    pub const UNIMPLEMENTED: i32 = 12;
    /// The request could not be decoded.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The binding the container asked for cannot be made: the container must not run.
    pub const FAILED_PRECONDITION: i32 = 9;
}
