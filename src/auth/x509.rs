//! Certificate identity: just enough DER to read a certificate's subject, for
//! `use_identity_as_username` (the first Common Name) and `use_subject_as_username` (the whole
//! subject as OpenSSL prints it in RFC 2253 form, as mosquitto uses it). The certificate is one
//! whose chain rustls has already verified; every length is still checked and anything
//! unexpected gives `None`.

use std::fmt::Write as _;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// id-at-commonName, 2.5.4.3.
const CN: &[u8] = &[0x55, 0x04, 0x03];

/// OpenSSL's short names (what `-nameopt RFC2253` prints) for the usual attributes.
const SHORT_NAMES: &[(&[u8], &str)] = &[
    (CN, "CN"),
    (&[0x55, 0x04, 0x04], "SN"),
    (&[0x55, 0x04, 0x05], "serialNumber"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x09], "street"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x0c], "title"),
    (&[0x55, 0x04, 0x0f], "businessCategory"),
    (&[0x55, 0x04, 0x11], "postalCode"),
    (&[0x55, 0x04, 0x29], "name"),
    (&[0x55, 0x04, 0x2a], "GN"),
    (&[0x55, 0x04, 0x2b], "initials"),
    (&[0x55, 0x04, 0x2c], "generationQualifier"),
    (&[0x55, 0x04, 0x2e], "dnQualifier"),
    (&[0x55, 0x04, 0x41], "pseudonym"),
    (&[0x55, 0x04, 0x61], "organizationIdentifier"),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        "UID",
    ),
];

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// One attribute of the subject.
#[derive(Debug)]
struct Ava<'a> {
    /// Index of its relative distinguished name (several attributes may share one).
    rdn: usize,
    oid: &'a [u8],
    tag: u8,
    value: &'a [u8],
    /// The value's whole DER element (for `#hex` dumps).
    der: &'a [u8],
}

/// The subject's attributes in certificate (DER) order.
fn subject(cert: &[u8]) -> Option<Vec<Ava<'_>>> {
    let (tag, cert, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    if tlv(rest)?.0 == VERSION {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (tag, mut rdns, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut avas = Vec::new();
    let mut rdn = 0;
    while !rdns.is_empty() {
        let (tag, mut set, next) = tlv(rdns)?;
        if tag != SET {
            return None;
        }
        rdns = next;
        while !set.is_empty() {
            let (tag, atv, next) = tlv(set)?;
            if tag != SEQUENCE {
                return None;
            }
            set = next;
            let (tag, oid, after_oid) = tlv(atv)?;
            if tag != OID {
                return None;
            }
            let (vtag, value, after_value) = tlv(after_oid)?;
            let der = &after_oid[..after_oid.len() - after_value.len()];
            avas.push(Ava {
                rdn,
                oid,
                tag: vtag,
                value,
                der,
            });
        }
        rdn += 1;
    }
    Some(avas)
}

/// A directory string as text (UTF8String, PrintableString, IA5String, TeletexString as
/// Latin-1, BMPString, UniversalString, ...); `None` for other types.
fn text(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0c => String::from_utf8(value.to_vec()).ok(),
        // Numeric, Printable, T61/Teletex, IA5, Visible: one byte per character.
        0x12 | 0x13 | 0x14 | 0x16 | 0x1a => Some(value.iter().map(|&b| char::from(b)).collect()),
        0x1e => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        0x1c => {
            if !value.len().is_multiple_of(4) {
                return None;
            }
            value
                .chunks(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// The subject's first Common Name (as OpenSSL's `X509_NAME_get_index_by_NID` finds it),
/// for `use_identity_as_username`. `None` without one, or if it holds a NUL.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let avas = subject(cert)?;
    let cn = avas.iter().find(|a| a.oid == CN)?;
    text(cn.tag, cn.value).filter(|s| !s.is_empty() && !s.contains('\0'))
}

/// The subject as OpenSSL prints it with `XN_FLAG_RFC2253` (what mosquitto uses for
/// `use_subject_as_username`): attributes in reverse order, `,` between RDNs and `+`
/// within one, RFC 2253 escapes, bytes above 0x7f and control characters as `\XX` of
/// their UTF-8 encoding, unknown attributes as `OID=#HEX` of the DER value.
pub fn subject_rfc2253(cert: &[u8]) -> Option<String> {
    let avas = subject(cert)?;
    let mut out = String::new();
    let mut previous: Option<usize> = None;
    for ava in avas.iter().rev() {
        if let Some(p) = previous {
            out.push(if p == ava.rdn { '+' } else { ',' });
        }
        previous = Some(ava.rdn);
        let name = SHORT_NAMES.iter().find(|(oid, _)| *oid == ava.oid);
        match name {
            Some((_, short)) => out.push_str(short),
            None => out.push_str(&dotted(ava.oid)?),
        }
        out.push('=');
        match (name, text(ava.tag, ava.value)) {
            (Some(_), Some(value)) => escape_into(&mut out, &value),
            _ => {
                out.push('#');
                for b in ava.der {
                    let _ = write!(out, "{b:02X}");
                }
            }
        }
    }
    Some(out)
}

fn escape_into(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                out.push('\\');
                out.push(char::from(b));
            }
            b'#' if first => out.push_str("\\#"),
            b' ' if first || last => out.push_str("\\ "),
            0..=0x1f | 0x7f..=0xff => {
                let _ = write!(out, "\\{b:02X}");
            }
            _ => out.push(char::from(b)),
        }
    }
}

/// An OID in dotted form.
fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut v: u64 = 0;
    for &b in rest {
        v = v.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            let _ = write!(out, ".{v}");
            v = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    /// `openssl req -utf8 -multivalue-rdn -x509 ... -subj
    /// "/C=GB/ST=Some, State/O=Midge \+ Co/OU=unit+UID=42/CN=client-één/emailAddress=a@b.c"`
    const RICH: &str = "-----BEGIN CERTIFICATE-----
MIICZjCCAgugAwIBAgIUXCC0/TT4PYopHw8yE0N48e8yoagwCgYIKoZIzj0EAwIw
gYYxCzAJBgNVBAYTAkdCMRQwEgYDVQQIDAtTb21lLCBTdGF0ZTETMBEGA1UECgwK
TWlkZ2UgKyBDbzEfMAsGA1UECwwEdW5pdDAQBgoJkiaJk/IsZAEBDAI0MjEVMBMG
A1UEAwwMY2xpZW50LcOpw6luMRQwEgYJKoZIhvcNAQkBFgVhQGIuYzAgFw0yNjEx
MjUwOTAzMjZaGA8yMTI2MTEwMTA5MDMyNlowgYYxCzAJBgNVBAYTAkdCMRQwEgYD
VQQIDAtTb21lLCBTdGF0ZTETMBEGA1UECgwKTWlkZ2UgKyBDbzEfMAsGA1UECwwE
dW5pdDAQBgoJkiaJk/IsZAEBDAI0MjEVMBMGA1UEAwwMY2xpZW50LcOpw6luMRQw
EgYJKoZIhvcNAQkBFgVhQGIuYzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABMB9
i+ESbz+7wjvf4pP72sNH3fo6dqGRCUy8VPznyisz1kaquv1ovn0txzcNaq8x+Zxm
tti3E/2mN6O2fqTSpESjUzBRMB0GA1UdDgQWBBTCfrklOBVauBcY/zCNeG1WEDd3
sDAfBgNVHSMEGDAWgBTCfrklOBVauBcY/zCNeG1WEDd3sDAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0kAMEYCIQD9bpSvCil6y0AGJ1tPXNyHqPqKRwiGWtGP
1PXXw71a0AIhALRJQaZOFI6ITEdM7wOBBxop74BOEOufpTID5YbnhzWg
-----END CERTIFICATE-----";

    /// `-subj "/O=NoCN"`.
    const NO_CN: &str = "-----BEGIN CERTIFICATE-----
MIIBdTCCARugAwIBAgIUGQEagiO/guZUvLenMtNlthlhuKswCgYIKoZIzj0EAwIw
DzENMAsGA1UECgwETm9DTjAgFw0yNjExMjUwOTAzMjdaGA8yMTI2MTEwMTA5MDMy
N1owDzENMAsGA1UECgwETm9DTjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABAUI
8PALfB8aRVz47WdFwSy8zAKk23TjVSRo/wZHhENBHnt3betnTDZnGcgpoJP6zYQI
cg/elHP2FSVhXIjJYhCjUzBRMB0GA1UdDgQWBBSwpnBkoUGeDaAxfu3SB5xSvRzG
tDAfBgNVHSMEGDAWgBSwpnBkoUGeDaAxfu3SB5xSvRzGtDAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0gAMEUCIQDNsSU06Jc1nybxN2oL8HYtyNp2idmpnGq9
imZ8HNDvbAIgGX6o1sI1NA8F1SsY9uA0F9zEXTQg65ZMYglz2//Spq0=
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("test certificate")
            .to_vec()
    }

    #[test]
    fn common_name_is_the_subjects_cn_decoded_as_utf8() {
        assert_eq!(common_name(&der(RICH)).as_deref(), Some("client-één"));
    }

    #[test]
    fn common_name_is_none_without_a_cn() {
        assert_eq!(common_name(&der(NO_CN)), None);
    }

    #[test]
    fn subject_matches_openssl_rfc2253_output() {
        // `openssl x509 -noout -subject -nameopt RFC2253` prints exactly this.
        assert_eq!(
            subject_rfc2253(&der(RICH)).as_deref(),
            Some(
                "emailAddress=a@b.c,CN=client-\\C3\\A9\\C3\\A9n,UID=42+OU=unit,\
                 O=Midge \\+ Co,ST=Some\\, State,C=GB"
            )
        );
        assert_eq!(subject_rfc2253(&der(NO_CN)).as_deref(), Some("O=NoCN"));
    }

    #[test]
    fn garbage_and_truncated_input_give_none() {
        let cert = der(RICH);
        for cut in [0, 1, 2, 10, 100, cert.len() / 2] {
            assert_eq!(common_name(&cert[..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_rfc2253(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(common_name(&[0x1f, 0x00]), None);
    }

    #[test]
    fn escapes_follow_rfc2253() {
        let mut s = String::new();
        escape_into(&mut s, "#a,b+c\"d\\e<f>g;h ");
        assert_eq!(s, "\\#a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\ ");
        let mut s = String::new();
        escape_into(&mut s, " x\u{1}");
        assert_eq!(s, "\\ x\\01");
    }

    #[test]
    fn unknown_oids_are_dotted() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).as_deref(),
            Some("1.2.840.113549.1.9.1")
        );
    }
}
