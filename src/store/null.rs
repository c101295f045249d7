//! A store that keeps nothing: every ticket is durable as soon as it is given out.
//!
//! Used when persistence is off but a shard still holds acknowledgements behind something
//! other than the disk: a cluster node's QoS 1/2 messages that go to other nodes are
//! acknowledged to their publisher only once the cluster's message stream has them
//! (`cluster::messages`), through the same held-acknowledgement machinery as persistence
//! (`shard::durable`), with the cluster gateway as one more destination. The shard records
//! nothing in its batch in this mode (`Shard::persistent` is false), so this store only
//! counts.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Batch, Recovered, Store, StoreError, StoreStats};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NullStore {
    tickets: AtomicU64,
}

impl Store for NullStore {
    fn submit(&self, _shard: usize, batch: &mut Batch) -> u64 {
        batch.clear();
        self.tickets.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn finished(&self) -> u64 {
        self.tickets.load(Ordering::Acquire)
    }

    fn durable(&self) -> u64 {
        self.tickets.load(Ordering::Acquire)
    }

    fn wait(&self, _ticket: u64) -> Result<(), StoreError> {
        Ok(())
    }

    fn nudge(&self) {}

    fn request_rewrite(&self) -> u64 {
        self.tickets.load(Ordering::Acquire)
    }

    fn set_notify(&self, _shard: usize, _notify: Box<dyn Fn() + Send + Sync>) {}

    fn load(&self) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }

    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    fn dir(&self) -> &Path {
        Path::new("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ticket_is_durable_when_given_out() {
        let s = NullStore::default();
        let mut b = Batch::new();
        assert_eq!(s.durable(), 0);
        let t = s.submit(0, &mut b);
        assert_eq!(t, 1);
        assert_eq!(s.finished(), 1);
        assert_eq!(s.durable(), 1);
        assert_eq!(s.submit(1, &mut b), 2);
        assert!(s.wait(2).is_ok());
    }
}
