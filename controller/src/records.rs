//! What the controller stores, encoded with prost (protobuf) so records
//! can gain fields without a migration: an older field set still decodes.

use proto_control::messages::Endpoint;

/// A registered node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    /// The Noise static key the node authenticates the control channel with.
    #[prost(bytes = "vec", tag = "3")]
    pub machine_key: Vec<u8>,
    /// The node's WireGuard public key (rotatable).
    #[prost(bytes = "vec", tag = "4")]
    pub node_key: Vec<u8>,
    /// Overlay IPv4 address, host order.
    #[prost(uint32, tag = "5")]
    pub address: u32,
    #[prost(string, repeated, tag = "6")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    pub endpoints: Vec<Endpoint>,
    #[prost(uint64, tag = "8")]
    pub created_unix: u64,
    /// The pre-auth key it joined with.
    #[prost(uint64, tag = "9")]
    pub auth_key_id: u64,
    /// What the node last said of its NAT (proto-control's NatKind).
    #[prost(int32, tag = "10")]
    pub nat: i32,
}

/// A pre-auth key. Only a hash of its secret is kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthKeyRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub secret_hash: Vec<u8>,
    #[prost(bool, tag = "3")]
    pub reusable: bool,
    /// Unix seconds; 0: never.
    #[prost(uint64, tag = "4")]
    pub expires_unix: u64,
    #[prost(string, repeated, tag = "5")]
    pub tags: Vec<String>,
    #[prost(uint64, tag = "6")]
    pub created_unix: u64,
    #[prost(uint64, tag = "7")]
    pub uses: u64,
    #[prost(bool, tag = "8")]
    pub revoked: bool,
}
