//! Why a relay connection (a node's, a meshed relay's, or the controller
//! feed) ended: one type through every layer, logged as one line.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnError {
    #[error(transparent)]
    Dial(#[from] transport::DialError),
    #[error(transparent)]
    Tls(#[from] transport::TlsError),
    #[error(transparent)]
    Http(#[from] transport::HttpError),
    #[error(transparent)]
    Seed(#[from] cvlan_core::seed::SeedError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] proto_relay::client::ClientError),
    #[error(transparent)]
    Link(#[from] proto_relay::link::LinkError),
    #[error("frame: {0}")]
    Frame(#[from] proto_relay::frame::FrameError),
    #[error("control channel: {0}")]
    Channel(#[from] proto_control::ChannelError),
    #[error("from the controller: {0}")]
    Decode(#[from] proto_control::messages::DecodeError),
    #[error("protocol violation: {0}")]
    Violation(proto_relay::server::ServerError),
    #[error("closed during the handshake")]
    ClosedInHandshake,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("node key not registered")]
    NotRegistered,
    #[error("mesh key not allowed")]
    MeshKeyNotAllowed,
    #[error("idle")]
    Idle,
    #[error("replaced by a newer connection")]
    Replaced,
    #[error("peer not reading")]
    NotReading,
    #[error("the controller closed the connection")]
    ControllerClosed,
    #[error("refused by the controller: {0}")]
    Refused(String),
    #[error("the controller is silent")]
    ControllerSilent,
    #[error("a key is not 32 bytes")]
    BadKey,
    #[error("the controller sent too many keys")]
    TooManyKeys,
}
