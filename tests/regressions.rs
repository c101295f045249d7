//! One test per fixed bug.

mod common;

use common::raw::{self, Connect, Raw};
use common::Broker;

/// A takeover adopted from another shard while the home shard was handling a packet of the
/// connection being taken over (the inbox is drained before each SUBSCRIBE and each route)
/// closed that connection under its own handler, which then indexed a removed slot and
/// panicked the shard. Adoption now waits for the top of the loop. With two shards about half
/// of the new connections arrive on the other shard and are moved over.
#[test]
fn takeover_arriving_during_a_subscribe_burst_does_not_crash_the_shard() {
    let mut b = Broker::start_with(&["shards 2"]);
    for round in 0..40 {
        let id = format!("racer-{round}");
        let mut first = Raw::connected(b.port(), &id);
        let mut burst = Vec::new();
        for i in 1..=200u16 {
            burst.extend(raw::subscribe(i, &[("race/t", 1)]));
            burst.extend(raw::publish("race/t", b"x", 1, false, i));
        }
        first.send(&burst);
        let mut second = Raw::tcp(b.port());
        let (_, rc) = second.handshake(&Connect::new(&id));
        assert_eq!(rc, 0, "round {round}: the takeover is accepted");
        second.ping();
    }
    b.assert_running();
}
