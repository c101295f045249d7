//! Properties: every field, tagged with its MQTT property identifier.

use bytes::Bytes;

use super::*;
fn put_str_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: &Option<ByteStr>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_bytes(out, v.as_bytes());
        *n += 1;
    }
}
fn put_bin_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: &Option<Bytes>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_bytes(out, v);
        *n += 1;
    }
}
fn put_u8_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: Option<u8>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_u8(out, v);
        *n += 1;
    }
}
fn put_u16_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: Option<u16>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_u16(out, v);
        *n += 1;
    }
}
fn put_u32_prop(out: &mut Vec<u8>, n: &mut u32, pid: u8, v: Option<u32>) {
    if let Some(v) = v {
        put_u8(out, pid);
        put_u32(out, v);
        *n += 1;
    }
}

/// Encodes `p` as a count and `(id, value)` pairs. Empty properties take 4 bytes.
pub fn put_properties(out: &mut Vec<u8>, p: &Properties) {
    let at = out.len();
    put_u32(out, 0);
    if p.is_empty() {
        return;
    }
    let mut n = 0u32;
    put_u8_prop(
        out,
        &mut n,
        id::PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    put_u32_prop(
        out,
        &mut n,
        id::MESSAGE_EXPIRY_INTERVAL,
        p.message_expiry_interval,
    );
    put_str_prop(out, &mut n, id::CONTENT_TYPE, &p.content_type);
    put_str_prop(out, &mut n, id::RESPONSE_TOPIC, &p.response_topic);
    put_bin_prop(out, &mut n, id::CORRELATION_DATA, &p.correlation_data);
    for &s in &p.subscription_identifiers {
        put_u32_prop(out, &mut n, id::SUBSCRIPTION_IDENTIFIER, Some(s));
    }
    put_u32_prop(
        out,
        &mut n,
        id::SESSION_EXPIRY_INTERVAL,
        p.session_expiry_interval,
    );
    put_str_prop(
        out,
        &mut n,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
    );
    put_u16_prop(out, &mut n, id::SERVER_KEEP_ALIVE, p.server_keep_alive);
    put_str_prop(
        out,
        &mut n,
        id::AUTHENTICATION_METHOD,
        &p.authentication_method,
    );
    put_bin_prop(out, &mut n, id::AUTHENTICATION_DATA, &p.authentication_data);
    put_u8_prop(
        out,
        &mut n,
        id::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    put_u32_prop(out, &mut n, id::WILL_DELAY_INTERVAL, p.will_delay_interval);
    put_u8_prop(
        out,
        &mut n,
        id::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    put_str_prop(
        out,
        &mut n,
        id::RESPONSE_INFORMATION,
        &p.response_information,
    );
    put_str_prop(out, &mut n, id::SERVER_REFERENCE, &p.server_reference);
    put_str_prop(out, &mut n, id::REASON_STRING, &p.reason_string);
    put_u16_prop(out, &mut n, id::RECEIVE_MAXIMUM, p.receive_maximum);
    put_u16_prop(out, &mut n, id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    put_u16_prop(out, &mut n, id::TOPIC_ALIAS, p.topic_alias);
    put_u8_prop(out, &mut n, id::MAXIMUM_QOS, p.maximum_qos);
    put_u8_prop(out, &mut n, id::RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        put_u8(out, id::USER_PROPERTY);
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
        n += 1;
    }
    put_u32_prop(out, &mut n, id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    put_u8_prop(
        out,
        &mut n,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    put_u8_prop(
        out,
        &mut n,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    put_u8_prop(
        out,
        &mut n,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
}

/// Decodes what [`put_properties`] wrote.
pub fn read_properties(r: &mut Reader<'_>) -> Result<Properties> {
    let n = r.u32()?;
    let mut p = Properties::default();
    for _ in 0..n {
        let pid = r.u8()?;
        match pid {
            id::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = Some(r.u8()?),
            id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
            id::CONTENT_TYPE => p.content_type = Some(r.string()?),
            id::RESPONSE_TOPIC => p.response_topic = Some(r.string()?),
            id::CORRELATION_DATA => p.correlation_data = Some(r.bytes()?),
            id::SUBSCRIPTION_IDENTIFIER => p.subscription_identifiers.push(r.u32()?),
            id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
            id::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
            id::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
            id::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
            id::AUTHENTICATION_DATA => p.authentication_data = Some(r.bytes()?),
            id::REQUEST_PROBLEM_INFORMATION => p.request_problem_information = Some(r.u8()?),
            id::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
            id::REQUEST_RESPONSE_INFORMATION => p.request_response_information = Some(r.u8()?),
            id::RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
            id::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
            id::REASON_STRING => p.reason_string = Some(r.string()?),
            id::RECEIVE_MAXIMUM => p.receive_maximum = Some(r.u16()?),
            id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
            id::TOPIC_ALIAS => p.topic_alias = Some(r.u16()?),
            id::MAXIMUM_QOS => p.maximum_qos = Some(r.u8()?),
            id::RETAIN_AVAILABLE => p.retain_available = Some(r.u8()?),
            id::USER_PROPERTY => {
                let k = r.string()?;
                let v = r.string()?;
                p.user_properties.push((k, v));
            }
            id::MAXIMUM_PACKET_SIZE => p.maximum_packet_size = Some(r.u32()?),
            id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(r.u8()?)
            }
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available = Some(r.u8()?)
            }
            id::SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = Some(r.u8()?),
            other => return bad(format!("unknown property id {other:#04x}")),
        }
    }
    Ok(p)
}
