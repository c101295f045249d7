//! Return codes (3.x CONNACK, SUBACK) and MQTT 5 reason codes.
