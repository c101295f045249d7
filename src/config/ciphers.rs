//! The TLS cipher suites midge offers, by name: what `ciphers` and `ciphers_tls1.3` accept.
//! Kept with the configuration (which validates the names) rather than in `transport`, which
//! maps them to rustls suites: `transport` depends on `config`, never the reverse.

/// TLS 1.2 cipher suites midge (rustls + ring) offers: (IANA name, OpenSSL name).
/// `ciphers` accepts either spelling.
pub const TLS12_CIPHERS: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
];

/// TLS 1.3 cipher suites midge offers (OpenSSL uses the IANA names for these too).
pub const TLS13_CIPHERS: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The IANA name of a TLS 1.2 suite given by its IANA or OpenSSL name.
pub fn tls12_cipher(name: &str) -> Option<&'static str> {
    TLS12_CIPHERS
        .iter()
        .find(|(iana, openssl)| name.eq_ignore_ascii_case(iana) || name == *openssl)
        .map(|(iana, _)| *iana)
}

/// The IANA name of a TLS 1.3 suite.
pub fn tls13_cipher(name: &str) -> Option<&'static str> {
    TLS13_CIPHERS
        .iter()
        .find(|iana| name.eq_ignore_ascii_case(iana))
        .copied()
}
