//! Return codes (3.x CONNACK, SUBACK) and MQTT 5 reason codes.
//!
//! MQTT 3.x has two small code sets: the CONNACK return code and the SUBACK failure code
//! ([`v3`]). MQTT 5 replaces both with one set of reason codes shared by every
//! acknowledgement ([`v5`], section 2.4 of the 5.0 specification); several values have more than
//! one name depending on the packet they appear in (0x00 is Success, Normal disconnection and
//! Granted QoS 0).

/// MQTT 3.1 / 3.1.1 codes.
pub mod v3 {
    /// CONNACK: connection accepted.
    pub const ACCEPTED: u8 = 0x00;
    /// CONNACK: the server does not support the protocol level requested by the client.
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    /// CONNACK: the client identifier is correct UTF-8 but not allowed by the server.
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    /// CONNACK: the network connection was made but the MQTT service is unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    /// CONNACK: the data in the user name or password is malformed or wrong.
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
    /// CONNACK: the client is not authorized to connect.
    pub const NOT_AUTHORIZED: u8 = 0x05;
    /// SUBACK: the subscription failed (3.1.1 only; 3.1 has no failure code).
    pub const SUBACK_FAILURE: u8 = 0x80;
}

/// MQTT 5.0 reason codes (section 2.4, table 2-6).
pub mod v5 {
    pub const SUCCESS: u8 = 0x00;
    pub const NORMAL_DISCONNECTION: u8 = 0x00;
    pub const GRANTED_QOS_0: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL_MESSAGE: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub const RE_AUTHENTICATE: u8 = 0x19;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC_ERROR: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_IDENTIFIER_NOT_VALID: u8 = 0x85;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_IDENTIFIER_IN_USE: u8 = 0x91;
    pub const PACKET_IDENTIFIER_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0xA2;

    /// The specification's name of `code`, for logs. A code with several names (0x00) gets
    /// the most general one; an unknown code is "Unknown reason code".
    pub fn name(code: u8) -> &'static str {
        match code {
            SUCCESS => "Success",
            GRANTED_QOS_1 => "Granted QoS 1",
            GRANTED_QOS_2 => "Granted QoS 2",
            DISCONNECT_WITH_WILL_MESSAGE => "Disconnect with Will Message",
            NO_MATCHING_SUBSCRIBERS => "No matching subscribers",
            NO_SUBSCRIPTION_EXISTED => "No subscription existed",
            CONTINUE_AUTHENTICATION => "Continue authentication",
            RE_AUTHENTICATE => "Re-authenticate",
            UNSPECIFIED_ERROR => "Unspecified error",
            MALFORMED_PACKET => "Malformed Packet",
            PROTOCOL_ERROR => "Protocol Error",
            IMPLEMENTATION_SPECIFIC_ERROR => "Implementation specific error",
            UNSUPPORTED_PROTOCOL_VERSION => "Unsupported Protocol Version",
            CLIENT_IDENTIFIER_NOT_VALID => "Client Identifier not valid",
            BAD_USER_NAME_OR_PASSWORD => "Bad User Name or Password",
            NOT_AUTHORIZED => "Not authorized",
            SERVER_UNAVAILABLE => "Server unavailable",
            SERVER_BUSY => "Server busy",
            BANNED => "Banned",
            SERVER_SHUTTING_DOWN => "Server shutting down",
            BAD_AUTHENTICATION_METHOD => "Bad authentication method",
            KEEP_ALIVE_TIMEOUT => "Keep Alive timeout",
            SESSION_TAKEN_OVER => "Session taken over",
            TOPIC_FILTER_INVALID => "Topic Filter invalid",
            TOPIC_NAME_INVALID => "Topic Name invalid",
            PACKET_IDENTIFIER_IN_USE => "Packet Identifier in use",
            PACKET_IDENTIFIER_NOT_FOUND => "Packet Identifier not found",
            RECEIVE_MAXIMUM_EXCEEDED => "Receive Maximum exceeded",
            TOPIC_ALIAS_INVALID => "Topic Alias invalid",
            PACKET_TOO_LARGE => "Packet too large",
            MESSAGE_RATE_TOO_HIGH => "Message rate too high",
            QUOTA_EXCEEDED => "Quota exceeded",
            ADMINISTRATIVE_ACTION => "Administrative action",
            PAYLOAD_FORMAT_INVALID => "Payload format invalid",
            RETAIN_NOT_SUPPORTED => "Retain not supported",
            QOS_NOT_SUPPORTED => "QoS not supported",
            USE_ANOTHER_SERVER => "Use another server",
            SERVER_MOVED => "Server moved",
            SHARED_SUBSCRIPTIONS_NOT_SUPPORTED => "Shared Subscriptions not supported",
            CONNECTION_RATE_EXCEEDED => "Connection rate exceeded",
            MAXIMUM_CONNECT_TIME => "Maximum connect time",
            SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED => "Subscription Identifiers not supported",
            WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED => "Wildcard Subscriptions not supported",
            _ => "Unknown reason code",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v5;

    #[test]
    fn every_named_v5_code_has_a_name() {
        for code in [
            0x00u8, 0x01, 0x02, 0x04, 0x10, 0x11, 0x18, 0x19, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85,
            0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x91, 0x92, 0x93,
            0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
            0xA2,
        ] {
            assert_ne!(v5::name(code), "Unknown reason code", "{code:#04x}");
        }
        assert_eq!(v5::name(0x03), "Unknown reason code");
        assert_eq!(v5::name(v5::PACKET_TOO_LARGE), "Packet too large");
    }
}
