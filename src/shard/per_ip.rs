//! Connections open per client IP address, broker-wide (`max_connections_per_ip`).
//!
//! Shards are separate threads and a connection may be closed on another shard than the one
//! that accepted it (it moves to its client id's home shard), so the count is shared: a small
//! map behind a mutex, touched once at accept and once at close, never per message. With no
//! limit set it is not touched at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Open connections per peer address. Shared by all shards.
#[derive(Debug, Default)]
pub struct PerIpConnections {
    /// 0 = no limit (nothing is counted).
    limit: u32,
    /// Addresses with at least one open connection (entries at 0 are removed, so the map is
    /// bounded by the connections open).
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIpConnections {
    /// A counter that lets at most `limit` connections per address in (0 = no limit).
    pub fn new(limit: u32) -> PerIpConnections {
        PerIpConnections {
            limit,
            open: Mutex::default(),
        }
    }

    /// An IPv4 client seen through an IPv6 listener counts as its IPv4 address.
    fn key(ip: IpAddr) -> IpAddr {
        ip.to_canonical()
    }

    /// Counts a new connection from `ip`; false (nothing counted) when `ip` is at the limit.
    pub fn try_open(&self, ip: IpAddr) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(Self::key(ip)).or_insert(0);
        if *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection from `ip` that [`PerIpConnections::try_open`] counted is closed.
    pub fn closed(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&Self::key(ip)) {
            *n -= 1;
            if *n == 0 {
                open.remove(&Self::key(ip));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_limit_and_a_slot_back_when_one_closes() {
        let per_ip = PerIpConnections::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(per_ip.try_open(a) && per_ip.try_open(a));
        assert!(!per_ip.try_open(a), "third from a");
        assert!(per_ip.try_open(b), "b has its own count");
        // The same address seen through an IPv6 listener.
        assert!(!per_ip.try_open("::ffff:10.0.0.1".parse().unwrap()));
        per_ip.closed(a);
        assert!(per_ip.try_open(a), "a slot came back");
        per_ip.closed(a);
        per_ip.closed(a);
        per_ip.closed(b);
        assert!(
            per_ip.open.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn no_limit_counts_nothing() {
        let per_ip = PerIpConnections::new(0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..10_000).all(|_| per_ip.try_open(a)));
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
