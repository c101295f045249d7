//! `memory_limit`: a broker-wide bound on the payload bytes of QoS 1/2 messages held for
//! delivery. midge only: mosquitto's `memory_limit` caps its whole heap, a different measure.

mod common;

use std::time::Duration;

use common::raw::{Connect, Raw};
use common::v5::{rc, V5};
use common::{unique_id, Broker};

const PAYLOAD: usize = 300;
const LIMIT: usize = 3000;

/// An offline subscriber's queue fills until the broker holds `memory_limit` bytes: then
/// 5.0 publishers get PUBACK 0x97 and nothing more is queued; once the subscriber has taken
/// its messages, publishing succeeds again.
#[test]
fn memory_limit_bounds_held_messages_and_tells_5_0_publishers() {
    if !common::is_midge() {
        return;
    }
    let limit = format!("memory_limit {LIMIT}");
    let b = Broker::start_with(&[&limit, "max_queued_messages 100000"]);
    let id = unique_id("memsub");
    let (mut s, _) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    s.subscribe(1, &[("mem/#", 1)]);
    s.disconnect();

    let mut p = V5::connected(b.port(), &unique_id("mempub"));
    let payload = vec![b'm'; PAYLOAD];
    let mut accepted = 0;
    let mut refused = false;
    // The shards exchange their totals once per loop turn: a few messages more may get in.
    for _ in 0..200 {
        match p.publish_simple("mem/t", &payload, 1, false) {
            0 => accepted += 1,
            code => {
                assert_eq!(code, rc::QUOTA_EXCEEDED, "{}", rc::name(code));
                refused = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(refused, "never refused after {accepted} messages");
    assert!(
        accepted * PAYLOAD >= LIMIT,
        "refused before the limit: {accepted} messages"
    );

    let (mut s, present) = Raw::connect(b.port(), &Connect::new(&id).clean(false));
    assert!(present);
    let got = s.collect_publishes_until_quiet(Duration::from_millis(800));
    // Kept up to the limit; a message the publisher's shard accepted while another shard's
    // newest total had not reached it yet may still be dropped at the subscriber's shard (as
    // when a subscriber's own queue is full: the publisher is not told).
    // The subscriber's shard sees its own holdings at once: it keeps exactly up to the limit.
    assert_eq!(got.len(), LIMIT.div_ceil(PAYLOAD), "{accepted} accepted");

    // Delivered and acknowledged: room again (seen by the publisher's shard within a turn).
    let mut ok = false;
    for _ in 0..100 {
        if p.publish_simple("mem/t", &payload, 1, false) == 0 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "still refused after the queue was delivered");
    assert_eq!(s.recv_publish_ack().payload.len(), PAYLOAD);
}
