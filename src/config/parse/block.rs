//! What the parser holds for a listener block until the file is read.

use std::net::IpAddr;
use std::path::PathBuf;

use super::values::Pos;
use super::{ProxyProtocol, TlsSettings};

/// `socket_domain`: restricts a listener to one address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Domain {
    V4,
    V6,
}

/// One listener block (or the default listener) while parsing.
#[derive(Debug, Default)]
pub(super) struct Block {
    /// Where the block was started (its `listener` line, or the first default-listener option).
    pub(super) pos: Option<Pos>,
    pub(super) port: Option<u16>,
    /// `None` = every interface (0.0.0.0 and ::).
    pub(super) addrs: Option<Vec<IpAddr>>,
    pub(super) allow_anonymous: Option<bool>,
    pub(super) domain: Option<(Domain, Pos)>,
    pub(super) tls: TlsBlock,
    /// `password_file` / `acl_file` said in this block under `per_listener_settings true`.
    pub(super) password_file: Option<PathBuf>,
    pub(super) acl_file: Option<PathBuf>,
    /// `protocol websockets` said in this block.
    pub(super) websockets: bool,
    /// `http_dir` said in this block, and where.
    pub(super) http_dir: Option<(PathBuf, Pos)>,
    /// `bind_interface`.
    pub(super) bind_interface: Option<String>,
    /// `proxy_protocol` / `enable_proxy_protocol`, and where.
    pub(super) proxy_protocol: Option<(ProxyProtocol, Pos)>,
    /// `proxy_protocol_v2_require_tls true` said here.
    pub(super) proxy_require_tls: Option<Pos>,
    /// `websockets_trust_x_forwarded_for true` said here.
    pub(super) trust_x_forwarded_for: Option<Pos>,
    /// `mount_point`.
    pub(super) mount_point: Option<String>,
}

/// A block's TLS options while parsing, with where they were said (for the checks that need
/// the whole block: certfile without keyfile, require_certificate without a CA, ...).
#[derive(Debug, Default)]
pub(super) struct TlsBlock {
    pub(super) settings: TlsSettings,
    /// The block's first TLS option: the block is a TLS listener.
    pub(super) first: Option<Pos>,
    pub(super) certfile: Option<Pos>,
    pub(super) keyfile: Option<Pos>,
    pub(super) require_certificate: Option<Pos>,
    /// `use_identity_as_username` or `use_subject_as_username` said true.
    pub(super) identity: Option<Pos>,
}

impl Block {
    pub(super) fn touch(&mut self, pos: &Pos) {
        if self.pos.is_none() {
            self.pos = Some(pos.clone());
        }
    }
}
