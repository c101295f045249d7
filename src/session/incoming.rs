//! Incoming QoS 2 state: packet ids awaiting PUBREL ([`PacketIdSet`]).

use std::collections::{HashSet, VecDeque};

use crate::protocol::Publish;

/// Incoming QoS 2 state: the packet ids awaiting PUBREL and the 3.x PUBLISHes waiting for one
/// of them to be released. Allocates nothing until its first id: an empty `HashSet` is 48
/// bytes inline, paid by every session, while only QoS 2 publishers ever hold an id
/// (memory per idle connection).
#[derive(Debug, Default)]
pub struct PacketIdSet(pub(super) Option<Box<IncomingQos2>>);

#[derive(Debug, Default)]
pub(super) struct IncomingQos2 {
    pub(super) ids: HashSet<u16>,
    /// See [`Session::wait_incoming_qos2`].
    pub(super) waiting: VecDeque<Publish>,
}

impl PacketIdSet {
    /// Adds `id`; false if it was there already.
    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_with(Default::default).ids.insert(id)
    }

    /// Removes `id`; false if it was not there.
    pub fn remove(&mut self, id: &u16) -> bool {
        let removed = self.0.as_mut().is_some_and(|s| s.ids.remove(id));
        self.free_if_empty();
        removed
    }

    pub fn contains(&self, id: &u16) -> bool {
        self.0.as_ref().is_some_and(|s| s.ids.contains(id))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.ids.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every id and waiting PUBLISH (and the allocation).
    pub fn clear(&mut self) {
        self.0 = None;
    }

    pub(super) fn free_if_empty(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|s| s.ids.is_empty() && s.waiting.is_empty())
        {
            self.0 = None;
        }
    }
}
