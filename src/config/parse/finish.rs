//! The checks made once every line is read: each listener block's TLS options as a whole,
//! the default listener, and the options that depend on one another.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    Config, ConfigError, Domain, Listener, Parser, Pos, ProxyProtocol, TlsBlock, TlsSettings,
    WebSocketSettings, DEFAULT_PORT,
};

impl Parser {
    /// Checks a block's TLS options as a whole; returns its settings if it is a TLS listener.
    pub(super) fn finish_tls(
        config: &mut Config,
        tls: TlsBlock,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        let Some(first) = tls.first else {
            return Ok(None);
        };
        if tls.certfile.is_none() || tls.keyfile.is_none() {
            // As mosquitto: "Both certfile and keyfile must be provided if one of them is set".
            return Err(first.invalid(
                "a TLS listener needs both certfile and keyfile (TLS options were given without them)",
            ));
        }
        let s = tls.settings;
        if let Some(pos) = &tls.require_certificate {
            if s.cafile.is_none() && s.capath.is_none() {
                return Err(pos.invalid("require_certificate true needs cafile or capath"));
            }
        }
        if let (Some(pos), false) = (&tls.identity, s.require_certificate) {
            pos.warn(
                config,
                "without 'require_certificate true' no client certificate is asked for, so no \
                 client of this listener has a certificate identity",
            );
        }
        Ok(Some(s))
    }

    /// A block's WebSocket settings if it is a WebSocket listener; `http_dir` on an MQTT
    /// listener is ignored with a warning (nothing there speaks HTTP).
    fn finish_websockets(
        config: &mut Config,
        websockets: bool,
        http_dir: Option<(std::path::PathBuf, Pos)>,
        trust_x_forwarded_for: Option<Pos>,
    ) -> Option<WebSocketSettings> {
        if !websockets {
            if let Some((_, pos)) = http_dir {
                pos.warn(
                    config,
                    "'http_dir' only applies to a 'protocol websockets' listener",
                );
            }
            if let Some(pos) = trust_x_forwarded_for {
                pos.warn(
                    config,
                    "'websockets_trust_x_forwarded_for' only applies to a 'protocol websockets' \
                     listener",
                );
            }
            return None;
        }
        Some(WebSocketSettings {
            http_dir: http_dir.map(|(dir, _)| dir),
            trust_x_forwarded_for: trust_x_forwarded_for.is_some(),
        })
    }

    /// A block's PROXY protocol settings; `proxy_protocol_v2_require_tls` needs version 2.
    fn finish_proxy(
        proxy: Option<(ProxyProtocol, Pos)>,
        require_tls: Option<Pos>,
    ) -> Result<Option<ProxyProtocol>, ConfigError> {
        match (proxy, require_tls) {
            (Some((p, _)), Some(_)) if p.v2 => Ok(Some(ProxyProtocol {
                v1: false,
                require_tls: true,
                ..p
            })),
            (_, Some(pos)) => Err(pos.invalid(
                "proxy_protocol_v2_require_tls needs 'enable_proxy_protocol 2' or \
                 'proxy_protocol true' on its listener",
            )),
            (p, None) => Ok(p.map(|(p, _)| p)),
        }
    }

    /// Turns the blocks into listeners, checks them, and returns the config.
    pub(super) fn finish(mut self) -> Result<Config, ConfigError> {
        let mut config = std::mem::take(&mut self.config);
        config.bridges = std::mem::take(&mut self.bridges).finish()?;
        if let (Some(pos), Err(e)) = (&self.cluster_auth_pos, config.cluster_nats_auth.check()) {
            return Err(pos.invalid(e));
        }
        if let Some(dest) = self.log_dest {
            config.log_dest = dest;
        }
        let ports: Vec<u16> = self
            .blocks
            .iter()
            .map(|b| b.port.unwrap_or(DEFAULT_PORT))
            .collect();
        let default_port = self.default.port.unwrap_or(DEFAULT_PORT);
        config.plugins =
            Self::finish_plugins(std::mem::take(&mut self.plugins), &ports, default_port);
        let mut seen: Vec<(SocketAddr, Pos)> = Vec::new();
        // mosquitto appends the default listener after the `listener` blocks.
        let default = std::mem::take(&mut self.default);
        for block in self.blocks.into_iter().chain(Some(default)) {
            let Some(pos) = block.pos else { continue };
            let port = block.port.unwrap_or(DEFAULT_PORT);
            let mut addrs = block.addrs.unwrap_or_else(|| {
                vec![
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ]
            });
            if let Some((domain, domain_pos)) = &block.domain {
                addrs.retain(|a| a.is_ipv4() == (*domain == Domain::V4));
                if addrs.is_empty() {
                    let value = if *domain == Domain::V4 {
                        "ipv4"
                    } else {
                        "ipv6"
                    };
                    return Err(domain_pos.bad(
                        "socket_domain",
                        value,
                        "the listener's address is not of this family",
                    ));
                }
            }
            let tls = Self::finish_tls(&mut config, block.tls)?;
            let websockets = Self::finish_websockets(
                &mut config,
                block.websockets,
                block.http_dir,
                block.trust_x_forwarded_for,
            );
            let proxy_protocol = Self::finish_proxy(block.proxy_protocol, block.proxy_require_tls)?;
            for ip in addrs {
                let addr = SocketAddr::new(ip, port);
                if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                    return Err(pos.invalid(format!(
                        "listener {addr} is already defined at {}:{}",
                        first.file, first.line
                    )));
                }
                seen.push((addr, pos.clone()));
                config.listeners.push(Listener {
                    addr,
                    allow_anonymous: block.allow_anonymous,
                    tls: tls.clone(),
                    password_file: block.password_file.clone(),
                    acl_file: block.acl_file.clone(),
                    websockets: websockets.clone(),
                    bind_interface: block.bind_interface.clone(),
                    proxy_protocol,
                    mount_point: block.mount_point.clone(),
                });
            }
            // A connection knows its listener by a one-byte index (`shard::conn`); the
            // listeners past it could not find their mount point.
            if block.mount_point.is_some() && config.listeners.len() > 255 {
                return Err(pos
                    .invalid("mount_point: only the first 255 listeners may have one".to_owned()));
            }
        }
        Ok(config)
    }
}
