//! Retained-message work spread over loop turns ([`RetainedBacklog`]).

use super::{Found, RetainedStore};

/// Retained-message work for new subscriptions not done yet: lookups and deliveries.
///
/// A SUBSCRIBE to `#` with 100k retained messages, or 2,000 pipelined SUBSCRIBEs whose `+`
/// each spans 100k topics, must not hold its shard's loop until all is done. The shard does
/// a bounded amount per loop turn ([`RetainedBacklog::VISITS_PER_TURN`] trie nodes, at least
/// one lookup; [`RetainedBacklog::DELIVERIES_PER_TURN`] deliveries), taking turns between
/// subscriptions, and serves its other clients in between. The SUBACK is not delayed.
#[derive(Debug, Default)]
pub struct RetainedBacklog {
    pending: std::collections::VecDeque<PendingRetained>,
    /// What is left of this turn's budgets (see [`RetainedBacklog::new_turn`]).
    visits: usize,
    deliveries: usize,
    /// Messages found by lookups and not offered yet.
    pub(super) found: usize,
}

/// The retained work of one new subscription.
#[derive(Debug)]
pub struct PendingRetained {
    pub subscriber: crate::index::SubscriberId,
    /// The granted QoS (a delivery gets the lower of it and the message's).
    pub qos: crate::protocol::QoS,
    pub ids: crate::message::SubscriptionIds,
    pub work: Work,
}

/// What is left to do for one subscription.
#[derive(Debug)]
pub enum Work {
    /// Look the filter up (done when the turn's budget allows).
    Lookup(crate::protocol::ByteStr),
    /// Offer these, in order (with their publisher when `check_retain_source` kept it).
    Deliver(std::vec::IntoIter<Found>),
}

impl RetainedBacklog {
    /// Trie nodes visited by lookups per loop turn (one lookup may exceed it: lookups are
    /// not split). About a millisecond of work.
    pub const VISITS_PER_TURN: usize = 64 * 1024;
    /// Deliveries offered per loop turn, over all pending subscriptions.
    pub const DELIVERIES_PER_TURN: usize = 1024;
    /// No new lookup while this many found messages wait (bounds the backlog's memory to
    /// this plus one lookup's result, at most the store).
    pub const MAX_FOUND: usize = 64 * 1024;

    /// Restores the per-turn budgets: the shard calls it once at the start of each loop
    /// turn, so all the SUBSCRIBEs handled in one turn share one budget.
    pub fn new_turn(&mut self) {
        self.visits = Self::VISITS_PER_TURN;
        self.deliveries = Self::DELIVERIES_PER_TURN;
    }

    /// Queues one subscription's lookup.
    pub fn push(&mut self, p: PendingRetained) {
        self.pending.push_back(p);
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Does one turn's worth of work: lookups in `store` and, through `offer`, deliveries
    /// (message and its source, subscriber, granted QoS, subscription ids).
    pub fn run_turn(
        &mut self,
        store: &RetainedStore,
        mut offer: impl FnMut(
            Found,
            crate::index::SubscriberId,
            crate::protocol::QoS,
            &crate::message::SubscriptionIds,
        ),
    ) {
        let (mut visits, mut deliveries) = (self.visits, self.deliveries);
        // Each pending subscription is looked at at most once per call.
        for _ in 0..self.pending.len() {
            if deliveries == 0 {
                break;
            }
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            if let Work::Lookup(filter) = &p.work {
                // Lookups wait while the turn's visits are spent, or while enough found
                // messages wait to be offered: a client repeating SUBSCRIBE `#` must not
                // pile up copies of the whole store faster than they are delivered.
                if visits == 0 || self.found >= Self::MAX_FOUND {
                    self.pending.push_back(p);
                    continue;
                }
                let mut msgs = Vec::new();
                visits = visits.saturating_sub(store.matching_with_source(filter, &mut msgs));
                self.found += msgs.len();
                p.work = Work::Deliver(msgs.into_iter());
            }
            let Work::Deliver(msgs) = &mut p.work else {
                unreachable!("looked up above")
            };
            for msg in msgs.by_ref().take(deliveries) {
                deliveries -= 1;
                self.found -= 1;
                offer(msg, p.subscriber, p.qos, &p.ids);
            }
            if msgs.len() > 0 {
                self.pending.push_back(p);
            }
        }
        (self.visits, self.deliveries) = (visits, deliveries);
    }
}
