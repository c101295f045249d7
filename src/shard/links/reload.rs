//! Bridges on a SIGHUP reload: the new configuration's `connection` blocks against the links
//! this shard runs, compared by name. An unchanged bridge is not touched (its connection, its
//! session and its index stay); a removed one says goodbye as at shutdown (the remote's
//! notification "0", DISCONNECT), its local notification says "0" and its session ends; a
//! changed one is removed and started again with its new settings, keeping its local session
//! (what it still owes the remote) when its local client id is the same; a new one starts.

use std::time::Instant;

use super::LINK_BASE;
use crate::config::BridgeConfig;
use crate::protocol::ByteStr;
use crate::shard::Shard;

impl Shard {
    /// Applies the bridges of a reloaded configuration (`all`: every block of the new file;
    /// this shard takes those homed here). Shard thread only.
    pub(crate) fn reload_links(&mut self, all: &[BridgeConfig]) {
        let mut new = self.my_bridges(all);
        let now = Instant::now();
        let mut restarts = Vec::new();
        for i in 0..self.links.slots.len() {
            let Some(l) = self.links.get(i) else {
                continue;
            };
            let old = l.bridge.config();
            let Some(at) = new.iter().position(|c| c.name == old.name) else {
                log::info!("Reload: bridge {} removed.", old.name);
                let slot = self.remove_link(i);
                self.end_session(slot);
                continue;
            };
            let cfg = new.swap_remove(at);
            if cfg.same_settings(old) {
                continue;
            }
            log::info!("Reload: bridge {} changed; restarting it.", old.name);
            let same_session = cfg.local_clientid == old.local_clientid;
            let slot = self.remove_link(i);
            if same_session {
                restarts.push((cfg, Some(slot)));
            } else {
                self.end_session(slot);
                restarts.push((cfg, None));
            }
        }
        for cfg in new {
            log::info!("Reload: bridge {} added.", cfg.name);
            self.add_link(cfg, None, now);
        }
        for (cfg, kept) in restarts {
            self.add_link(cfg, kept, now);
        }
    }

    /// Stops link `i` as at shutdown and takes it out: the remote's notification "0" and
    /// DISCONNECT, the local notification "0", its local subscriptions removed. Returns its
    /// session's slot (still holding what it owes the remote), detached from the link.
    fn remove_link(&mut self, i: usize) -> usize {
        let was_up = self.links.at(i).bridge.is_up();
        self.links.at(i).bridge.stop(&self.registry);
        if was_up {
            self.notify_local(i, false);
        }
        let l = self.links.slots[i].take().expect("a live link");
        if let Some(d) = &mut self.durable {
            // Acknowledgements owed on that connection die with it (the remote resends).
            d.forget(LINK_BASE + i);
        }
        let subscriber = self.subscriber_id(l.session);
        let filters: Vec<ByteStr> = l
            .bridge
            .topics()
            .local_filters()
            .map(|(_, f)| ByteStr::from(f))
            .collect();
        for filter in filters {
            self.subscription_removed(filter, subscriber);
        }
        let s = &mut self.sessions[l.session].session;
        s.conn = None;
        if !s.queue.is_empty() || !s.inflight.is_empty() {
            log::info!(
                "Bridge {}: {} message(s) for the remote were waiting.",
                l.bridge.config().name,
                s.queue.len() + s.inflight.len()
            );
        }
        l.session
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridges(text: &str) -> Vec<BridgeConfig> {
        crate::config::Config::parse_str(text, "t.conf")
            .unwrap()
            .bridges
    }

    #[test]
    fn a_block_moved_in_the_file_is_the_same_bridge_and_a_changed_option_is_not() {
        let a = bridges("connection b\naddress 127.0.0.1:1\ntopic a\n");
        let moved = bridges("\n\n# moved\nconnection b\naddress 127.0.0.1:1\ntopic a\n");
        let changed = bridges("connection b\naddress 127.0.0.1:1\ntopic a\nkeepalive_interval 9\n");
        assert_ne!(a[0].source, moved[0].source);
        assert!(a[0].same_settings(&moved[0]));
        assert!(!a[0].same_settings(&changed[0]));
    }
}
