//! SUBSCRIBE and UNSUBSCRIBE: filter validation, the index (this replica and every other),
//! SUBACK/UNSUBACK with 3.x return codes or 5.0 reason codes, and retained messages for new
//! subscriptions (per Retain Handling).

use crate::index::Entry;
use crate::message::SubscriptionIds;
use crate::protocol::reason::{v3, v5};
use crate::protocol::topic::{parse_shared, validate_topic_filter};
use crate::protocol::{
    ByteStr, Packet, QoS, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::retain::{PendingRetained, Work};
use crate::session::Subscription;
use crate::shard::ctx::{Services, SessionCtx};

/// Handles SUBSCRIBE.
pub(super) fn handle_subscribe(cx: &mut SessionCtx<'_>, mut subscribe: Subscribe) -> bool {
    // Updates queued by other shards first, so this replica is current before we add.
    cx.catch_up();
    // The limits, the ACL, the index and the session see full filters (`shard::mount`).
    let mounted = cx.mount_point().is_some();
    if mounted {
        for (f, _) in &mut subscribe.filters {
            *f = cx.mounted_filter(f).unwrap_or_else(|| f.clone());
        }
    }
    let v5 = cx.is_v5();
    let max_qos = QoS::from_u8(cx.config().max_qos).unwrap_or(QoS::ExactlyOnce);
    let identifier = subscribe
        .properties
        .subscription_identifiers
        .first()
        .copied();
    let subscriber = cx.subscriber();
    // Limits first, for the whole packet: one filter past them makes it malformed, as in
    // mosquitto, and nothing of it is applied. (Wildcard placement and empty filters are
    // refused by the decoder.)
    if let Some(e) = filters_over_limits(cx, subscribe.filters.iter().map(|(f, _)| f)) {
        return cx.protocol_error(v5::TOPIC_FILTER_INVALID, e);
    }
    let max_subs = cx.config().max_subscriptions_per_client;
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    let mut retained_for = Vec::new();
    for (filter, mut options) in subscribe.filters {
        // Kept by the session and the index replicas for as long as the subscription
        // lasts: copied out of the read buffer rather than pinning it (ByteStr::unshared).
        let filter = filter.unshared();
        let shared = parse_shared(&filter);
        // The decoder checked the filter; a shared one's group and inner filter are
        // checked here (SUBACK failure, as before).
        // A mount point without a trailing '/' can make a wildcard misplaced ("m" + "#").
        if shared.is_some_and(|r| r.is_err())
            || (mounted && validate_topic_filter(&filter).is_err())
        {
            log::info!("Rejecting subscription to '{filter}': invalid topic filter.");
            codes.push(if v5 {
                v5::TOPIC_FILTER_INVALID
            } else {
                v3::SUBACK_FAILURE
            });
            continue;
        }
        if !super::hooks::may_subscribe(cx, &filter) {
            log::info!("Refusing subscription to '{filter}': not allowed by the ACL.");
            codes.push(if v5 {
                v5::NOT_AUTHORIZED
            } else {
                v3::SUBACK_FAILURE
            });
            continue;
        }
        let held = &cx.session().subscriptions;
        if max_subs != 0 && held.len() >= max_subs && !held.contains_key(&filter) {
            log::info!(
                "Refusing subscription to '{filter}': max_subscriptions_per_client ({max_subs}) reached."
            );
            codes.push(if v5 {
                v5::QUOTA_EXCEEDED
            } else {
                v3::SUBACK_FAILURE
            });
            continue;
        }
        if shared.is_some() && options.no_local {
            // [MQTT-3.8.3-4]
            return cx.protocol_error(
                v5::PROTOCOL_ERROR,
                "No Local on a shared subscription".into(),
            );
        }
        options.qos = options.qos.min(max_qos);
        // [MQTT-3.8.4-3]: a repeated filter replaces the existing subscription.
        let entry = Entry {
            subscriber,
            options,
            identifier,
        };
        let existed = cx.subscription_added(&filter, entry);
        let sub = Subscription {
            options,
            identifier,
        };
        cx.session().subscriptions.insert(filter.clone(), sub);
        super::hooks::subscribed(cx, &filter, options.qos);
        codes.push(options.qos as u8);
        // Retained messages: not for shared subscriptions; per Retain Handling otherwise
        // [MQTT-3.3.1-9..11].
        let send_retained = shared.is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            retained_for.push((filter, options.qos));
        }
    }
    let (session, batch) = cx.session_and_batch();
    session.store_record(batch);
    cx.mark_own_cluster_record();
    // [MQTT-3.8.4-1]: SUBACK with the same packet id, one code per filter [MQTT-3.8.4-5].
    let suback = SubAck {
        packet_id: subscribe.packet_id,
        codes,
        ..Default::default()
    };
    cx.send(&Packet::SubAck(suback));
    // Retained messages go out after the SUBACK, with RETAIN set [MQTT-3.3.1-6], a
    // bounded amount of work per loop turn (see `RetainedBacklog`): the first now.
    let ids: SubscriptionIds = identifier.into_iter().collect();
    cx.send_retained(
        retained_for
            .into_iter()
            .map(|(filter, qos)| PendingRetained {
                subscriber,
                qos,
                ids: ids.clone(),
                work: Work::Lookup(filter),
            }),
    );
    true
}

/// Handles UNSUBSCRIBE; UNSUBACK is sent even when nothing matched [MQTT-3.10.4-5], with
/// 5.0 reason codes "success" or "no subscription existed".
pub(super) fn handle_unsubscribe(cx: &mut SessionCtx<'_>, mut unsubscribe: Unsubscribe) -> bool {
    if cx.mount_point().is_some() {
        for f in &mut unsubscribe.filters {
            *f = cx.mounted_filter(f).unwrap_or_else(|| f.clone());
        }
    }
    if let Some(e) = filters_over_limits(cx, unsubscribe.filters.iter()) {
        return cx.protocol_error(v5::TOPIC_FILTER_INVALID, e);
    }
    let v5 = cx.is_v5();
    let subscriber = cx.subscriber();
    let mut codes = Vec::new();
    for filter in unsubscribe.filters {
        let existed = cx.session().subscriptions.remove(&filter).is_some();
        if existed {
            super::hooks::unsubscribed(cx, &filter);
            cx.subscription_removed(filter, subscriber);
        }
        if v5 {
            codes.push(if existed {
                v5::SUCCESS
            } else {
                v5::NO_SUBSCRIPTION_EXISTED
            });
        }
    }
    let (session, batch) = cx.session_and_batch();
    session.store_record(batch);
    cx.mark_own_cluster_record();
    let unsuback = UnsubAck {
        packet_id: unsubscribe.packet_id,
        codes,
        ..Default::default()
    };
    cx.send(&Packet::UnsubAck(unsuback));
    true
}

/// Why the first of `filters` past `max_topic_levels` / `max_topic_length` is refused.
fn filters_over_limits<'a>(
    sv: &Services<'_>,
    mut filters: impl Iterator<Item = &'a ByteStr>,
) -> Option<String> {
    let limits = sv.config().topic_limits();
    filters.find_map(|f| {
        limits.check(f).err().map(|e| {
            let shown: String = f.chars().take(64).collect();
            format!("topic filter '{shown}...': {e}")
        })
    })
}
